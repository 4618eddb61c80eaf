//! TLS on real servers on 127.0.0.1: the three server modes, certificate checks on both
//! sides, and the failures a misconfigured client meets (an error, never a hang).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::codec::encode;
use remoting::server::{Connection, Dispatcher, RemotingServer, ServerConfig};
use remoting::tls::{
    ClientAuth, ClientTls, ServerTls, TlsClientSettings, TlsMode, TlsServerSettings,
};
use remoting::{BrokerAddr, RemotingCommand, RemotingError, ResponseCode};
use testkit::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound for what should happen at once; only reached when a test fails.
const LONG: Duration = Duration::from_secs(10);
const ECHO: i32 = 1001;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "apogee-tls-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn echo_dispatcher() -> Dispatcher {
    let mut d = Dispatcher::new();
    d.register(
        ECHO,
        Arc::new(|_conn: Connection, req: RemotingCommand| async move {
            Some(
                RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None)
                    .with_body(req.body.clone()),
            )
        }),
    )
    .unwrap();
    d
}

fn server_settings(mode: TlsMode, pki: Option<&TestPki>) -> TlsServerSettings {
    TlsServerSettings {
        mode,
        cert_path: pki.map(|p| p.server_cert.clone()),
        key_path: pki.map(|p| p.server_key.clone()),
        ..TlsServerSettings::default()
    }
}

async fn start(settings: &TlsServerSettings) -> RemotingServer {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: ServerTls::new(settings).unwrap(),
        ..ServerConfig::default()
    };
    RemotingServer::start(config, echo_dispatcher())
        .await
        .unwrap()
}

fn client(tls: Option<ClientTls>) -> RemotingClient {
    RemotingClient::new(ClientConfig {
        tls,
        ..ClientConfig::default()
    })
}

fn trusting(ca: &Path) -> Option<ClientTls> {
    Some(
        ClientTls::new(&TlsClientSettings {
            trust_cert_path: Some(ca.to_path_buf()),
            ..TlsClientSettings::default()
        })
        .unwrap(),
    )
}

fn insecure() -> Option<ClientTls> {
    Some(
        ClientTls::new(&TlsClientSettings {
            insecure: true,
            ..TlsClientSettings::default()
        })
        .unwrap(),
    )
}

fn addr(server: &RemotingServer) -> BrokerAddr {
    BrokerAddr::parse(&server.local_addr().to_string()).unwrap()
}

/// Sends an echo request with `body` and returns the answered body.
async fn echo(
    client: &RemotingClient,
    server: &RemotingServer,
    body: Bytes,
) -> Result<Bytes, RemotingError> {
    let req = RemotingCommand::request(ECHO).with_body(body);
    let resp = tokio::time::timeout(LONG, client.invoke(&addr(server), req, LONG))
        .await
        .expect("the call ends by itself")?;
    assert_eq!(resp.code, ResponseCode::SUCCESS);
    Ok(resp.body)
}

/// A body larger than the writer's batch, so that a response spans several TLS records.
fn big_body() -> Bytes {
    Bytes::from(
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test]
async fn enforcing_refuses_plaintext_and_serves_tls() {
    let dir = TempDir::new("enforcing");
    let pki = TestPki::generate(dir.path(), "a");
    let server = start(&server_settings(TlsMode::Enforcing, Some(&pki))).await;

    // A plaintext client gets its connection closed, no answer.
    let err = echo(&client(None), &server, Bytes::from_static(b"hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::ConnectionClosed(_)),
        "unexpected error {err}"
    );

    // The same at the byte level: a whole frame, then EOF from the server.
    let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut frame = bytes::BytesMut::new();
    encode(&RemotingCommand::request(ECHO), &mut frame).unwrap();
    raw.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(LONG, raw.read(&mut buf))
        .await
        .expect("the server closes at once");
    assert!(matches!(read, Ok(0) | Err(_)), "server answered {read:?}");

    // TLS is served, big bodies included.
    let tls = client(trusting(&pki.ca_cert));
    assert_eq!(
        echo(&tls, &server, Bytes::from_static(b"hello"))
            .await
            .unwrap(),
        Bytes::from_static(b"hello")
    );
    assert_eq!(echo(&tls, &server, big_body()).await.unwrap(), big_body());
    tls.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn permissive_serves_plaintext_and_tls_on_one_port() {
    let dir = TempDir::new("permissive");
    let pki = TestPki::generate(dir.path(), "a");
    let server = start(&server_settings(TlsMode::Permissive, Some(&pki))).await;
    let plain = client(None);
    let tls = client(trusting(&pki.ca_cert));
    for _ in 0..3 {
        assert_eq!(
            echo(&plain, &server, Bytes::from_static(b"plain"))
                .await
                .unwrap(),
            Bytes::from_static(b"plain")
        );
        assert_eq!(
            echo(&tls, &server, Bytes::from_static(b"tls"))
                .await
                .unwrap(),
            Bytes::from_static(b"tls")
        );
    }
    assert_eq!(echo(&plain, &server, big_body()).await.unwrap(), big_body());
    assert_eq!(echo(&tls, &server, big_body()).await.unwrap(), big_body());
    plain.shutdown().await;
    tls.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn disabled_serves_plaintext_only() {
    let server = start(&server_settings(TlsMode::Disabled, None)).await;
    let plain = client(None);
    assert_eq!(
        echo(&plain, &server, Bytes::from_static(b"x"))
            .await
            .unwrap(),
        Bytes::from_static(b"x")
    );
    // The ClientHello reads as a frame far over the limit: the server closes, the handshake
    // fails with an error.
    let err = echo(&client(insecure()), &server, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::Connect { .. }),
        "unexpected error {err}"
    );
    plain.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_trusting_another_certificate_fails_cleanly() {
    let dir = TempDir::new("wrong");
    let good = TestPki::generate(dir.path(), "good");
    let other = TestPki::generate(dir.path(), "other");
    let server = start(&server_settings(TlsMode::Enforcing, Some(&good))).await;
    let wrong = client(trusting(&other.ca_cert));
    let err = echo(&wrong, &server, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    match &err {
        RemotingError::Connect { source, .. } => assert!(
            source.to_string().contains("certificate"),
            "the error says why: {err}"
        ),
        other => panic!("unexpected error {other}"),
    }
    // The client is still usable, and a self-signed server is refused the same way.
    let self_signed = start(&server_settings(TlsMode::Enforcing, None)).await;
    let err = echo(&wrong, &self_signed, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::Connect { .. }),
        "unexpected error {err}"
    );
    // ... which an insecure client accepts.
    let any = client(insecure());
    assert_eq!(
        echo(&any, &self_signed, Bytes::from_static(b"ok"))
            .await
            .unwrap(),
        Bytes::from_static(b"ok")
    );
    // And the server still serves a client that trusts it.
    let right = client(trusting(&good.ca_cert));
    assert!(echo(&right, &server, Bytes::from_static(b"x"))
        .await
        .is_ok());
    for c in [wrong, any, right] {
        c.shutdown().await;
    }
    server.shutdown().await;
    self_signed.shutdown().await;
}

#[tokio::test]
async fn required_client_certificates_are_checked() {
    let dir = TempDir::new("mtls");
    let pki = TestPki::generate(dir.path(), "a");
    let other = TestPki::generate(dir.path(), "b");
    let settings = TlsServerSettings {
        need_client_auth: ClientAuth::Require,
        trust_cert_path: Some(pki.ca_cert.clone()),
        ..server_settings(TlsMode::Enforcing, Some(&pki))
    };
    let server = start(&settings).await;
    let with_cert = |p: &TestPki| {
        client(Some(
            ClientTls::new(&TlsClientSettings {
                trust_cert_path: Some(pki.ca_cert.clone()),
                cert_path: Some(p.client_cert.clone()),
                key_path: Some(p.client_key.clone()),
                ..TlsClientSettings::default()
            })
            .unwrap(),
        ))
    };
    let good = with_cert(&pki);
    assert!(echo(&good, &server, Bytes::from_static(b"x")).await.is_ok());
    // Without a certificate, or with one from another CA: refused (at the handshake in
    // TLS 1.2, at the first read in TLS 1.3), an error either way.
    for bad in [client(trusting(&pki.ca_cert)), with_cert(&other)] {
        assert!(echo(&bad, &server, Bytes::from_static(b"x")).await.is_err());
        bad.shutdown().await;
    }
    good.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn settings_come_from_the_tls_config_file() {
    let dir = TempDir::new("file");
    let pki = TestPki::generate(dir.path(), "a");
    let file = dir.path().join("tls.properties");
    std::fs::write(
        &file,
        format!(
            "# as upstream's tls.properties\ntls.server.mode=enforcing\n\
             tls.server.certPath={}\ntls.server.keyPath={}\n",
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
    .unwrap();
    let settings = TlsServerSettings {
        config_file: Some(file),
        ..TlsServerSettings::default()
    };
    let server = start(&settings).await;
    let tls = client(trusting(&pki.ca_cert));
    assert!(echo(&tls, &server, Bytes::from_static(b"x")).await.is_ok());
    assert!(echo(&client(None), &server, Bytes::from_static(b"x"))
        .await
        .is_err());
    tls.shutdown().await;
    server.shutdown().await;
}
