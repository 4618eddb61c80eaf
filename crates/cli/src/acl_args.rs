//! `--access-key` / `--secret-key` (or `ROCKETMQ_ACCESS_KEY` / `ROCKETMQ_SECRET_KEY`): the
//! ACL 1.0 account `apogee admin`, `apogee bench` and `apogee console` sign their requests
//! with, for brokers with `aclEnable=true`.

use anyhow::bail;
use clap::Args;
use remoting::acl::Credentials;

/// ACL flags shared by the client tools.
#[derive(Args, Debug, Clone, Default)]
pub struct AclArgs {
    /// Access key of the ACL account to sign requests with.
    #[arg(long = "access-key", env = "ROCKETMQ_ACCESS_KEY", global = true)]
    pub access_key: Option<String>,
    /// Its secret key (never printed).
    #[arg(
        long = "secret-key",
        env = "ROCKETMQ_SECRET_KEY",
        global = true,
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
}

impl AclArgs {
    /// The credentials the flags name; `None` when neither is given.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        match (&self.access_key, &self.secret_key) {
            (None, None) => Ok(None),
            (Some(ak), Some(sk)) => Ok(Some(Credentials::new(ak.clone(), sk.clone()))),
            _ => bail!("--access-key and --secret-key go together"),
        }
    }

    /// `config` signing with the flags' account.
    pub fn apply(&self, mut config: client::ClientConfig) -> anyhow::Result<client::ClientConfig> {
        config.credentials = self.credentials()?;
        Ok(config)
    }
}
