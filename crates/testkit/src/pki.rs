//! A throwaway PKI for TLS tests: a CA, a server certificate and a client certificate signed
//! by it, written as PEM files into a directory the test owns. Every call makes new keys, so
//! two [`TestPki`]s do not trust each other (the "wrong certificate" case).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of one test PKI.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA certificate: what clients (and servers checking clients) trust.
    pub ca_cert: PathBuf,
    /// Server certificate for `localhost`, `127.0.0.1` and `::1`, signed by the CA.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Client certificate signed by the CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates a CA and its two leaves into `dir` (created if missing); files are named
    /// `<prefix>-ca.pem`, `<prefix>-server.pem`, `<prefix>-server.key`, ...
    pub fn generate(dir: &Path, prefix: &str) -> TestPki {
        std::fs::create_dir_all(dir).expect("create the PKI directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{prefix} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let leaf = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose, cn: &str| {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![purpose];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().expect("leaf key");
            let cert = params
                .signed_by(&key, &ca, &ca_key)
                .expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(
            vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
            "apogee test server",
        );
        let (client_pem, client_key_pem) = leaf(
            vec!["client.test".to_string()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "apogee test client",
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(format!("{prefix}-{name}"));
            std::fs::write(&path, text).expect("write a PKI file");
            path
        };
        TestPki {
            ca_cert: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key_pem),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key_pem),
        }
    }
}
