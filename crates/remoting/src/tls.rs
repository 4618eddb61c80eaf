//! TLS on remoting connections, with upstream's settings (`TlsSystemConfig`, `TlsHelper`).
//!
//! The server side ([`ServerTls`]) runs in one of three modes ([`TlsMode`], key
//! `tls.server.mode`):
//! - `disabled`: plaintext only, as before TLS existed;
//! - `permissive` (upstream's default): each connection is looked at before anything is read
//!   from it: a first byte of `0x16` (a TLS handshake record) starts a TLS handshake, anything
//!   else is served as plaintext. The byte is peeked, not consumed. A plaintext frame never
//!   starts with `0x16`: its first byte is the top byte of the big-endian frame length, and a
//!   frame of `0x16000000` bytes (352 MiB) or more is refused by every frame limit anyway;
//! - `enforcing`: the same detection, and a plaintext connection is closed without an answer.
//!
//! The server's certificate chain and key come from `tls.server.certPath` and
//! `tls.server.keyPath` (PEM). Without them a self-signed certificate for `localhost` is
//! generated at start (upstream does the same in its test mode): clients then have to connect
//! insecurely (`--tls-insecure`) or trust nothing in particular. `tls.server.need.client.auth`
//! (`none`, `optional`, `require`) asks clients for a certificate, checked against
//! `tls.server.trustCertPath`.
//!
//! The client side ([`ClientTls`]) verifies the server's chain against a trust file
//! (`tls.client.trustCertPath`, `--tls-trust-cert`) or accepts any certificate
//! (`--tls-insecure`, or upstream's `tls.test.mode.enable` / `tls.client.authServer=false`).
//! Like upstream's clients (Netty without endpoint identification), it does not check that
//! the certificate names the host it dialled: brokers are dialled by the IP address they
//! register, which certificates rarely list.
//!
//! Keys that rustls cannot load are refused at start with an error naming the key:
//! encrypted private keys (`tls.server.keyPassword` / `tls.client.keyPassword`) in particular,
//! since rustls reads only unencrypted PKCS#8, PKCS#1 and SEC1 keys.
//!
//! Crypto comes from rustls's `ring` provider, passed explicitly to every config (no
//! process-wide default is installed).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::properties::{parse_properties, InvalidSetting, Plain, SettingFormat};

/// First byte of a TLS record carrying a handshake message (a ClientHello opens with it).
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Longest a client may take over its TLS handshake once it has started one.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Names of the TLS settings, as upstream's `TlsSystemConfig` spells them.
pub mod keys {
    pub const SERVER_MODE: &str = "tls.server.mode";
    pub const ENABLE: &str = "tls.enable";
    pub const CONFIG_FILE: &str = "tls.config.file";
    pub const TEST_MODE_ENABLE: &str = "tls.test.mode.enable";
    pub const SERVER_NEED_CLIENT_AUTH: &str = "tls.server.need.client.auth";
    pub const SERVER_KEY_PATH: &str = "tls.server.keyPath";
    pub const SERVER_KEY_PASSWORD: &str = "tls.server.keyPassword";
    pub const SERVER_CERT_PATH: &str = "tls.server.certPath";
    pub const SERVER_TRUST_CERT_PATH: &str = "tls.server.trustCertPath";
    pub const CLIENT_KEY_PATH: &str = "tls.client.keyPath";
    pub const CLIENT_KEY_PASSWORD: &str = "tls.client.keyPassword";
    pub const CLIENT_CERT_PATH: &str = "tls.client.certPath";
    pub const CLIENT_AUTH_SERVER: &str = "tls.client.authServer";
    pub const CLIENT_TRUST_CERT_PATH: &str = "tls.client.trustCertPath";
}

/// What a TLS setting cannot do, found when a server or client is built.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read `{key}` file {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{key}` file {path} holds no PEM certificate")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("`{key}` file {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { key: &'static str, path: PathBuf },
    #[error(
        "`{key}` file {path} holds an encrypted private key, which Apogee cannot read \
         (`{password_key}` is not supported); store it unencrypted, e.g. \
         `openssl pkcs8 -in {path} -out plain.key -nocrypt`, and protect the file instead"
    )]
    EncryptedKey {
        key: &'static str,
        password_key: &'static str,
        path: PathBuf,
    },
    #[error("`{0}` is set without `{1}`; set both or neither")]
    Incomplete(&'static str, &'static str),
    #[error(
        "`{key}`={value} needs `{needs}`: the certificates client certificates are checked against"
    )]
    NoTrust {
        key: &'static str,
        value: String,
        needs: &'static str,
    },
    #[error("`{key}` file {path} does not hold a usable trust certificate: {reason}")]
    BadTrust {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("invalid TLS setting: {0}")]
    Setting(#[from] InvalidSetting),
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// `tls.server.mode`: whether a server speaks TLS, plaintext or both on one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext only.
    Disabled,
    /// TLS or plaintext, told apart by the first byte of the connection.
    #[default]
    Permissive,
    /// TLS only; a plaintext connection is closed.
    Enforcing,
}

impl SettingFormat<TlsMode> for Plain {
    const EXPECTED: &'static str = "disabled, permissive or enforcing";
    fn parse(raw: &str) -> Option<TlsMode> {
        match raw.to_ascii_lowercase().as_str() {
            "disabled" => Some(TlsMode::Disabled),
            "permissive" => Some(TlsMode::Permissive),
            "enforcing" => Some(TlsMode::Enforcing),
            _ => None,
        }
    }
    fn format(value: &TlsMode) -> String {
        match value {
            TlsMode::Disabled => "disabled",
            TlsMode::Permissive => "permissive",
            TlsMode::Enforcing => "enforcing",
        }
        .to_string()
    }
}

/// `tls.server.need.client.auth`: whether a TLS client must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    None,
    /// Asked for; a client without one is served, one with a bad one is refused.
    Optional,
    /// Required and checked.
    Require,
}

impl SettingFormat<ClientAuth> for Plain {
    const EXPECTED: &'static str = "none, optional or require";
    fn parse(raw: &str) -> Option<ClientAuth> {
        match raw.to_ascii_lowercase().as_str() {
            "none" => Some(ClientAuth::None),
            "optional" => Some(ClientAuth::Optional),
            "require" => Some(ClientAuth::Require),
            _ => None,
        }
    }
    fn format(value: &ClientAuth) -> String {
        match value {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Require => "require",
        }
        .to_string()
    }
}

/// Text form of a password setting: read like a string, never written back (a configuration
/// dump such as GET_BROKER_CONFIG shows it empty).
pub struct Secret;

impl SettingFormat<Option<String>> for Secret {
    const EXPECTED: &'static str = "a string";
    fn parse(raw: &str) -> Option<Option<String>> {
        Some((!raw.is_empty()).then(|| raw.to_string()))
    }
    fn format(_: &Option<String>) -> String {
        String::new()
    }
}

/// The settings of a server's TLS (the `tls.server.*` keys, `tls.test.mode.enable` and
/// `tls.config.file`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsServerSettings {
    pub mode: TlsMode,
    /// PEM certificate chain; with `key_path`. Neither: a self-signed certificate.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (unencrypted).
    pub key_path: Option<PathBuf>,
    /// Password of an encrypted key: refused (see [`TlsError::EncryptedKey`]).
    pub key_password: Option<String>,
    /// PEM certificates that client certificates are checked against.
    pub trust_cert_path: Option<PathBuf>,
    pub need_client_auth: ClientAuth,
    /// `tls.config.file`: a properties file whose TLS keys override these.
    pub config_file: Option<PathBuf>,
}

impl fmt::Debug for TlsServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerSettings")
            .field("mode", &self.mode)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("key_password", &self.key_password.as_ref().map(|_| "***"))
            .field("trust_cert_path", &self.trust_cert_path)
            .field("need_client_auth", &self.need_client_auth)
            .field("config_file", &self.config_file)
            .finish()
    }
}

impl TlsServerSettings {
    /// These settings with the TLS keys of `tls.config.file` (when set) applied over them, as
    /// upstream's `TlsHelper` reads that file. A missing file is an error (upstream skips it
    /// silently, which hides a typo in the path).
    pub fn with_config_file(mut self) -> Result<TlsServerSettings, TlsError> {
        let Some(path) = self.config_file.clone() else {
            return Ok(self);
        };
        let props = read_config_file(&path)?;
        let mut keys: Vec<&String> = props.keys().collect();
        keys.sort();
        for key in keys {
            let raw = props[key].trim();
            match key.as_str() {
                keys::SERVER_MODE => self.mode = parse::<TlsMode>(key, raw)?,
                keys::SERVER_CERT_PATH => self.cert_path = parse(key, raw)?,
                keys::SERVER_KEY_PATH => self.key_path = parse(key, raw)?,
                keys::SERVER_KEY_PASSWORD => self.key_password = parse(key, raw)?,
                keys::SERVER_TRUST_CERT_PATH => self.trust_cert_path = parse(key, raw)?,
                keys::SERVER_NEED_CLIENT_AUTH => self.need_client_auth = parse(key, raw)?,
                _ => {}
            }
        }
        Ok(self)
    }
}

/// The settings of a client's TLS: whether to use it and how to check the server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsClientSettings {
    /// PEM certificates the server's chain must lead to. Required unless `insecure`.
    pub trust_cert_path: Option<PathBuf>,
    /// Accept any server certificate (upstream's test mode): encryption without
    /// authentication, for self-signed servers.
    pub insecure: bool,
    /// Client certificate chain and key (PEM), for servers that ask for one.
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    pub key_password: Option<String>,
}

impl fmt::Debug for TlsClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientSettings")
            .field("trust_cert_path", &self.trust_cert_path)
            .field("insecure", &self.insecure)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("key_password", &self.key_password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The client-side `tls.*` keys as upstream's `TlsSystemConfig` has them, for a process whose
/// own outgoing connections may use TLS (a broker, a controller). [`TlsClientKeys::settings`]
/// applies `tls.config.file` and upstream's rule for checking servers: only with
/// `tls.client.authServer=true` and `tls.test.mode.enable=false`, otherwise any certificate is
/// accepted (`TlsHelper` with `InsecureTrustManagerFactory`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsClientKeys {
    /// `tls.enable`: use TLS at all.
    pub enable: bool,
    /// `tls.test.mode.enable`.
    pub test_mode: bool,
    /// `tls.client.authServer`.
    pub auth_server: bool,
    /// `tls.client.trustCertPath`.
    pub trust_cert_path: Option<PathBuf>,
    /// `tls.client.certPath`.
    pub cert_path: Option<PathBuf>,
    /// `tls.client.keyPath`.
    pub key_path: Option<PathBuf>,
    /// `tls.client.keyPassword`.
    pub key_password: Option<String>,
    /// `tls.config.file`.
    pub config_file: Option<PathBuf>,
}

impl fmt::Debug for TlsClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientKeys")
            .field("enable", &self.enable)
            .field("test_mode", &self.test_mode)
            .field("auth_server", &self.auth_server)
            .field("trust_cert_path", &self.trust_cert_path)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("key_password", &self.key_password.as_ref().map(|_| "***"))
            .field("config_file", &self.config_file)
            .finish()
    }
}

impl TlsClientKeys {
    /// The client settings these keys ask for (`tls.config.file` applied first); `None`
    /// unless `tls.enable`.
    pub fn settings(&self) -> Result<Option<TlsClientSettings>, TlsError> {
        let mut keys = self.clone();
        if let Some(path) = &self.config_file {
            let props = read_config_file(path)?;
            let mut names: Vec<&String> = props.keys().collect();
            names.sort();
            for key in names {
                let raw = props[key].trim();
                match key.as_str() {
                    keys::TEST_MODE_ENABLE => keys.test_mode = parse(key, raw)?,
                    keys::CLIENT_AUTH_SERVER => keys.auth_server = parse(key, raw)?,
                    keys::CLIENT_TRUST_CERT_PATH => keys.trust_cert_path = parse(key, raw)?,
                    keys::CLIENT_CERT_PATH => keys.cert_path = parse(key, raw)?,
                    keys::CLIENT_KEY_PATH => keys.key_path = parse(key, raw)?,
                    keys::CLIENT_KEY_PASSWORD => keys.key_password = parse(key, raw)?,
                    _ => {}
                }
            }
        }
        if !keys.enable {
            return Ok(None);
        }
        Ok(Some(TlsClientSettings {
            insecure: keys.test_mode || !keys.auth_server,
            trust_cert_path: keys.trust_cert_path,
            cert_path: keys.cert_path,
            key_path: keys.key_path,
            key_password: keys.key_password,
        }))
    }
}

fn parse<T>(key: &str, raw: &str) -> Result<T, InvalidSetting>
where
    Plain: SettingFormat<T>,
{
    crate::properties::parse_setting::<T, Plain>(key, raw)
}

fn read_config_file(path: &Path) -> Result<HashMap<String, String>, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        key: keys::CONFIG_FILE,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_properties(&text))
}

/// The `ring` provider: it builds with a C compiler alone (aws-lc-rs wants cmake or
/// prebuilt objects). rustls marks it deprecated for lacking post-quantum key exchange; the
/// classic suites it offers are what upstream's Java clients negotiate anyway.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file (at least one).
fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(key, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file; an encrypted one is refused with a clear error.
fn load_key(
    key: &'static str,
    password_key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(key, path)?;
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
        || pem
            .windows(b"Proc-Type: 4,ENCRYPTED".len())
            .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsError::EncryptedKey {
            key,
            password_key,
            path: path.to_path_buf(),
        });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey {
        key,
        path: path.to_path_buf(),
    })
}

fn load_roots(key: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| TlsError::BadTrust {
            key,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// A self-signed certificate for `localhost` and the loopback addresses, with its key.
pub fn self_signed() -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    Ok((certified.cert.der().clone(), PrivateKeyDer::Pkcs8(key)))
}

/// A server's TLS: its mode and handshake configuration. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    mode: TlsMode,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS of a server with `settings` (`tls.config.file` applied first); `None` when the
    /// mode is `disabled`. Reads the certificate files, or generates a self-signed certificate
    /// when none is configured.
    pub fn new(settings: &TlsServerSettings) -> Result<Option<ServerTls>, TlsError> {
        let settings = settings.clone().with_config_file()?;
        if settings.mode == TlsMode::Disabled {
            return Ok(None);
        }
        let (certs, key) = match (&settings.cert_path, &settings.key_path) {
            (Some(cert), Some(key)) => {
                let certs = load_certs(keys::SERVER_CERT_PATH, cert)?;
                let private = load_key(keys::SERVER_KEY_PATH, keys::SERVER_KEY_PASSWORD, key)?;
                if settings.key_password.is_some() {
                    tracing::warn!(
                        "tls.server.keyPassword is set but {} is not encrypted: the password is \
                         not used",
                        key.display()
                    );
                }
                (certs, private)
            }
            (Some(_), None) => {
                return Err(TlsError::Incomplete(
                    keys::SERVER_CERT_PATH,
                    keys::SERVER_KEY_PATH,
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete(
                    keys::SERVER_KEY_PATH,
                    keys::SERVER_CERT_PATH,
                ))
            }
            (None, None) => {
                // Permissive is the default: most servers never see a TLS client, so only an
                // enforcing one, which every client reaches through this certificate, warns.
                if settings.mode == TlsMode::Enforcing {
                    tracing::warn!(
                        "no tls.server.certPath/keyPath: serving TLS with a self-signed \
                         certificate generated at start (clients must connect with --tls-insecure)"
                    );
                } else {
                    tracing::info!(
                        "tls.server.mode=permissive without tls.server.certPath/keyPath: TLS \
                         clients get a self-signed certificate generated at start"
                    );
                }
                let (cert, key) = self_signed()?;
                (vec![cert], key)
            }
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match settings.need_client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            auth => {
                let Some(trust) = &settings.trust_cert_path else {
                    return Err(TlsError::NoTrust {
                        key: keys::SERVER_NEED_CLIENT_AUTH,
                        value: Plain::format(&auth),
                        needs: keys::SERVER_TRUST_CERT_PATH,
                    });
                };
                let roots = load_roots(keys::SERVER_TRUST_CERT_PATH, trust)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| TlsError::BadTrust {
                    key: keys::SERVER_TRUST_CERT_PATH,
                    path: trust.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(certs, key)?;
        Ok(Some(ServerTls {
            mode: settings.mode,
            config: Arc::new(config),
        }))
    }

    /// The same TLS offering `protocols` by ALPN, most preferred first (a gRPC server offers
    /// `h2`: gRPC clients refuse a TLS server that negotiates no protocol).
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> ServerTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        ServerTls {
            mode: self.mode,
            config: Arc::new(config),
        }
    }

    /// `permissive` or `enforcing` (a disabled server has no [`ServerTls`]).
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// Tells a TLS connection from a plaintext one by its first byte (peeked, left in the
    /// socket) and runs the handshake if it is TLS, within [`TLS_HANDSHAKE_TIMEOUT`]. `None`
    /// (logged) when the connection closed before a byte, the handshake failed or timed out,
    /// or it is plaintext and the mode is enforcing (closed without an answer).
    pub async fn accept(&self, stream: TcpStream, remote: SocketAddr) -> Option<ServerStream> {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return None, // closed before saying anything
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%remote, "read failed before the first byte: {e}");
                return None;
            }
        }
        if first[0] != TLS_HANDSHAKE_BYTE {
            if self.mode == TlsMode::Enforcing {
                tracing::info!(%remote, "plaintext connection refused: tls.server.mode=enforcing");
                return None;
            }
            return Some(ServerStream::Plain(stream));
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                tracing::debug!(%remote, "TLS handshake done");
                Some(ServerStream::Tls(Box::new(stream)))
            }
            Ok(Err(e)) => {
                tracing::info!(%remote, "TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::info!(
                    %remote,
                    "TLS handshake not finished within {TLS_HANDSHAKE_TIMEOUT:?}"
                );
                None
            }
        }
    }
}

/// A server connection as [`ServerTls::accept`] found it.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(s) => s.is_write_vectored(),
            ServerStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A client's TLS: how it checks servers and which certificate it shows. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// A client TLS configuration from `settings`. Without a trust file and without
    /// `insecure` there is nothing to check a server against: an error naming the key.
    pub fn new(settings: &TlsClientSettings) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = if settings.insecure {
            Arc::new(AcceptAnyServerCert(provider.clone()))
        } else {
            let Some(path) = &settings.trust_cert_path else {
                return Err(TlsError::NoTrust {
                    key: keys::CLIENT_AUTH_SERVER,
                    value: "true".to_string(),
                    needs: keys::CLIENT_TRUST_CERT_PATH,
                });
            };
            let roots = load_roots(keys::CLIENT_TRUST_CERT_PATH, path)?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsError::BadTrust {
                key: keys::CLIENT_TRUST_CERT_PATH,
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Arc::new(ChainOnly(inner))
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&settings.cert_path, &settings.key_path) {
            (Some(cert), Some(key)) => builder.with_client_auth_cert(
                load_certs(keys::CLIENT_CERT_PATH, cert)?,
                load_key(keys::CLIENT_KEY_PATH, keys::CLIENT_KEY_PASSWORD, key)?,
            )?,
            (Some(_), None) => {
                return Err(TlsError::Incomplete(
                    keys::CLIENT_CERT_PATH,
                    keys::CLIENT_KEY_PATH,
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete(
                    keys::CLIENT_KEY_PATH,
                    keys::CLIENT_CERT_PATH,
                ))
            }
            (None, None) => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// The same TLS asking for `protocols` by ALPN (`h2` for a gRPC server).
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> ClientTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        ClientTls {
            config: Arc::new(config),
        }
    }

    /// Runs the TLS handshake on `stream`, connected to `addr` (`host:port`, whose host is
    /// sent as the server name). No time limit: the caller sets one.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(server_name(addr), stream)
            .await
    }
}

/// The name sent in the ClientHello (SNI) for `addr` (`host:port`); verification does not
/// depend on it (see the module docs).
fn server_name(addr: &str) -> ServerName<'static> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
        // A constant valid DNS name: this conversion cannot fail.
        ServerName::DnsName(
            "localhost"
                .try_into()
                .expect("`localhost` is a valid DNS name"),
        )
    })
}

/// Checks the server's chain against the trust anchors, but not the host name (see the module
/// docs).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any server certificate (upstream's `InsecureTrustManagerFactory`); the handshake
/// signatures are still checked, so the session is encrypted to whoever holds that key.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_any_case_and_round_trip() {
        for mode in [TlsMode::Disabled, TlsMode::Permissive, TlsMode::Enforcing] {
            let text = <Plain as SettingFormat<TlsMode>>::format(&mode);
            assert_eq!(<Plain as SettingFormat<TlsMode>>::parse(&text), Some(mode));
        }
        assert_eq!(
            <Plain as SettingFormat<TlsMode>>::parse("ENFORCING"),
            Some(TlsMode::Enforcing)
        );
        assert_eq!(<Plain as SettingFormat<TlsMode>>::parse("strict"), None);
        assert_eq!(
            <Plain as SettingFormat<ClientAuth>>::parse("Require"),
            Some(ClientAuth::Require)
        );
        assert_eq!(TlsMode::default(), TlsMode::Permissive);
    }

    #[test]
    fn passwords_are_never_written_back() {
        assert_eq!(Secret::format(&Some("hunter2".to_string())), "");
        let s = TlsServerSettings {
            key_password: Some("hunter2".to_string()),
            ..TlsServerSettings::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn server_name_is_the_host_of_the_address() {
        assert_eq!(
            server_name("127.0.0.1:10911"),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("broker-a.example:10911"),
            ServerName::try_from("broker-a.example").unwrap()
        );
        assert_eq!(
            server_name("[::1]:9876"),
            ServerName::try_from("::1").unwrap()
        );
    }

    #[test]
    fn disabled_builds_nothing_and_self_signed_is_generated() {
        let disabled = TlsServerSettings {
            mode: TlsMode::Disabled,
            ..TlsServerSettings::default()
        };
        assert!(ServerTls::new(&disabled).unwrap().is_none());
        let tls = ServerTls::new(&TlsServerSettings::default())
            .unwrap()
            .expect("permissive by default");
        assert_eq!(tls.mode(), TlsMode::Permissive);
    }

    #[test]
    fn client_keys_follow_upstream_and_the_config_file() {
        let off = TlsClientKeys::default();
        assert_eq!(off.settings().unwrap(), None);
        let test_mode = TlsClientKeys {
            enable: true,
            test_mode: true,
            auth_server: true,
            ..TlsClientKeys::default()
        };
        assert!(test_mode.settings().unwrap().unwrap().insecure);
        let dir = std::env::temp_dir().join(format!("apogee-tls-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tls.properties");
        std::fs::write(
            &file,
            "tls.test.mode.enable=false\ntls.client.authServer=true\n\
             tls.client.trustCertPath=/pki/ca.pem\n",
        )
        .unwrap();
        let from_file = TlsClientKeys {
            enable: true,
            test_mode: true,
            config_file: Some(file.clone()),
            ..TlsClientKeys::default()
        };
        let settings = from_file.settings().unwrap().unwrap();
        assert!(!settings.insecure);
        assert_eq!(settings.trust_cert_path, Some(PathBuf::from("/pki/ca.pem")));
        std::fs::write(&file, "tls.client.authServer=maybe\n").unwrap();
        let err = from_file.settings().unwrap_err().to_string();
        assert!(err.contains("tls.client.authServer"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_settings_are_errors_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("apogee-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("enc.key");
        std::fs::write(
            &key,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let cert = dir.join("cert.pem");
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        let settings = TlsServerSettings {
            cert_path: Some(cert.clone()),
            key_path: Some(key),
            key_password: Some("secret".to_string()),
            ..TlsServerSettings::default()
        };
        let err = ServerTls::new(&settings).unwrap_err().to_string();
        assert!(err.contains("tls.server.keyPath"), "{err}");
        assert!(err.contains("tls.server.keyPassword"), "{err}");

        let only_cert = TlsServerSettings {
            cert_path: Some(cert),
            ..TlsServerSettings::default()
        };
        let err = ServerTls::new(&only_cert).unwrap_err().to_string();
        assert!(err.contains("tls.server.keyPath"), "{err}");

        let auth = TlsServerSettings {
            need_client_auth: ClientAuth::Require,
            ..TlsServerSettings::default()
        };
        let err = ServerTls::new(&auth).unwrap_err().to_string();
        assert!(err.contains("tls.server.trustCertPath"), "{err}");

        let file = dir.join("tls.properties");
        std::fs::write(&file, "tls.server.mode=sometimes\n").unwrap();
        let from_file = TlsServerSettings {
            config_file: Some(file),
            ..TlsServerSettings::default()
        };
        let err = ServerTls::new(&from_file).unwrap_err().to_string();
        assert!(err.contains("tls.server.mode"), "{err}");

        let err = ClientTls::new(&TlsClientSettings::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.client.trustCertPath"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
