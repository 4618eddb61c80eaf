//! `--tls`, `--tls-trust-cert PATH` and `--tls-insecure`: how `apogee admin` and
//! `apogee bench` connect to servers whose `tls.server.mode` is `permissive` or `enforcing`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use remoting::tls::{ClientTls, TlsClientSettings};

/// TLS flags shared by the client tools.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Connect to NameServers and brokers with TLS; needs --tls-trust-cert or --tls-insecure.
    #[arg(long, global = true)]
    pub tls: bool,
    /// PEM file of the CA certificates that servers' certificates must chain to (implies --tls).
    #[arg(long = "tls-trust-cert", value_name = "PATH", global = true)]
    pub trust_cert: Option<PathBuf>,
    /// Accept any server certificate, e.g. a server's generated self-signed one: encrypted but
    /// not authenticated (implies --tls).
    #[arg(long = "tls-insecure", global = true, conflicts_with = "trust_cert")]
    pub insecure: bool,
}

impl TlsArgs {
    /// The client TLS the flags ask for; `None` for plaintext.
    pub fn client_tls(&self) -> anyhow::Result<Option<ClientTls>> {
        if !self.tls && self.trust_cert.is_none() && !self.insecure {
            return Ok(None);
        }
        if self.trust_cert.is_none() && !self.insecure {
            bail!(
                "--tls needs --tls-trust-cert PATH (the CA that signed the servers' \
                 certificates) or --tls-insecure (accept any certificate)"
            );
        }
        let settings = TlsClientSettings {
            trust_cert_path: self.trust_cert.clone(),
            insecure: self.insecure,
            ..TlsClientSettings::default()
        };
        ClientTls::new(&settings)
            .map(Some)
            .context("cannot set up TLS")
    }

    /// `config` connecting with the TLS the flags ask for.
    pub fn apply(&self, config: client::ClientConfig) -> anyhow::Result<client::ClientConfig> {
        Ok(match self.client_tls()? {
            Some(tls) => config.tls(tls),
            None => config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_by_default_and_tls_needs_a_way_to_check_the_server() {
        assert!(TlsArgs::default().client_tls().unwrap().is_none());
        let bare = TlsArgs {
            tls: true,
            ..TlsArgs::default()
        };
        let err = bare.client_tls().unwrap_err().to_string();
        assert!(err.contains("--tls-trust-cert"), "{err}");
        let insecure = TlsArgs {
            insecure: true,
            ..TlsArgs::default()
        };
        assert!(insecure.client_tls().unwrap().is_some());
        let missing = TlsArgs {
            trust_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsArgs::default()
        };
        let err = format!("{:#}", missing.client_tls().unwrap_err());
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
