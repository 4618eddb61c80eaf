//! ACL 1.0 request signing, as upstream's `AclClientRPCHook`, `AclUtils` and `AclSigner`
//! compute it, so that requests from upstream clients verify here and ours verify there.
//!
//! A signed request carries the ext fields `AccessKey`, optionally `SecurityToken`, and
//! `Signature` = Base64(HmacSHA1(secretKey, content)), where `content` is the values of every
//! other ext field in the order of their names (Java `TreeMap`, i.e. by code unit; names here
//! are ASCII, so byte order), UTF-8, followed by the body bytes. The verifier leaves out the
//! same fields upstream's `PlainAccessValidator` does: `Signature` itself and
//! `_UNIQUE_KEY_QUERY`.

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::command::RemotingCommand;

/// Ext field naming the account (`SessionCredentials.ACCESS_KEY`).
pub const ACCESS_KEY: &str = "AccessKey";
/// Ext field holding the request's signature (`SessionCredentials.SIGNATURE`).
pub const SIGNATURE: &str = "Signature";
/// Ext field of a temporary credential's token (`SessionCredentials.SECURITY_TOKEN`).
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// Ext field the verifier skips (`MixAll.UNIQUE_MSG_QUERY_FLAG`).
const UNIQUE_MSG_QUERY_FLAG: &str = "_UNIQUE_KEY_QUERY";

/// An account's credentials, as a client signs with them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub security_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .finish()
    }
}

impl Credentials {
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Credentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        }
    }
}

fn mac(secret: &str, content: &[u8]) -> Hmac<Sha1> {
    // HMAC accepts a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(content);
    mac
}

/// HmacSHA1 keyed with `secret` over the signed content: the values of `fields` in name
/// order, skipping `skip`, then `body`. The content is fed to the MAC piece by piece, never
/// copied into one buffer (a send's body is signed in place).
fn mac_of<'a>(
    secret: &str,
    fields: impl Iterator<Item = (&'a String, &'a String)>,
    skip: &[&str],
    body: &[u8],
) -> Hmac<Sha1> {
    let mut sorted: Vec<(&str, &str)> = fields
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut mac = mac(secret, &[]);
    for (_, v) in sorted {
        mac.update(v.as_bytes());
    }
    mac.update(body);
    mac
}

/// Base64(HmacSHA1(`secret`, `content`)) (upstream `AclSigner.calSignature`).
pub fn signature(secret: &str, content: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(secret, content).finalize().into_bytes())
}

/// Adds `AccessKey` (and `SecurityToken`) to `cmd` and signs every ext field and the body
/// with `creds`, replacing any earlier `Signature`.
pub fn sign(cmd: &mut RemotingCommand, creds: &Credentials) {
    cmd.ext_fields.remove(SIGNATURE);
    cmd.ext_fields
        .insert(ACCESS_KEY.to_string(), creds.access_key.clone());
    if let Some(token) = &creds.security_token {
        cmd.ext_fields
            .insert(SECURITY_TOKEN.to_string(), token.clone());
    }
    let sig = base64::engine::general_purpose::STANDARD.encode(
        mac_of(&creds.secret_key, cmd.ext_fields.iter(), &[], &cmd.body)
            .finalize()
            .into_bytes(),
    );
    cmd.ext_fields.insert(SIGNATURE.to_string(), sig);
}

/// Whether `cmd`'s `Signature` is the one `secret` gives its fields and body, compared in
/// constant time. A request without a signature (or with one that is not Base64) fails.
pub fn verify(fields: &HashMap<String, String>, body: &[u8], secret: &str) -> bool {
    let Some(sig) = fields.get(SIGNATURE) else {
        return false;
    };
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(sig.trim()) else {
        return false;
    };
    mac_of(
        secret,
        fields.iter(),
        &[SIGNATURE, UNIQUE_MSG_QUERY_FLAG],
        body,
    )
    .verify_slice(&expected)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestCode;

    /// mqadmin 4.9.8 with upstream's default tools account (`rocketmq2` / `12345678`), from
    /// `../shared/captures/mqadmin-4.9.8.jsonl`: GET_ROUTEINFO_BY_TOPIC for TBW102 signs
    /// "rocketmq2" (AccessKey) then "TBW102" (topic): `AccessKey` < `topic` by code unit.
    #[test]
    fn golden_signatures_of_mqadmin() {
        assert_eq!(
            signature("12345678", b"rocketmq2TBW102"),
            "/u5P/wZUbhjanu4LM/UzEdo2u2I="
        );
        let mut cmd = RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC)
            .with_ext("topic", "TBW102");
        sign(&mut cmd, &Credentials::new("rocketmq2", "12345678"));
        assert_eq!(cmd.ext(SIGNATURE), Some("/u5P/wZUbhjanu4LM/UzEdo2u2I="));
        // GET_BROKER_CLUSTER_INFO: only the access key is signed.
        let mut cmd = RemotingCommand::request(RequestCode::GET_BROKER_CLUSTER_INFO);
        sign(&mut cmd, &Credentials::new("rocketmq2", "12345678"));
        assert_eq!(cmd.ext(SIGNATURE), Some("Ou1T58RIcyZWaTIwzkhJZWn/Zvs="));
        assert!(verify(&cmd.ext_fields, &cmd.body, "12345678"));
        assert!(!verify(&cmd.ext_fields, &cmd.body, "87654321"));
    }

    #[test]
    fn body_and_every_field_are_signed() {
        let creds = Credentials::new("RocketMQ", "12345678");
        let mut cmd = RemotingCommand::request(RequestCode::SEND_MESSAGE_V2)
            .with_ext("b", "TopicA")
            .with_ext("a", "PG")
            .with_body(bytes::Bytes::from_static(b"hello"));
        sign(&mut cmd, &creds);
        assert!(verify(&cmd.ext_fields, &cmd.body, "12345678"));
        // Values in name order (AccessKey, a, b), then the body.
        assert_eq!(
            cmd.ext(SIGNATURE).map(str::to_string),
            Some(signature("12345678", b"RocketMQPGTopicAhello"))
        );
        let mut changed = cmd.clone();
        changed.ext_fields.insert("b".into(), "TopicB".into());
        assert!(!verify(&changed.ext_fields, &changed.body, "12345678"));
        let mut changed = cmd.clone();
        changed.body = bytes::Bytes::from_static(b"hellO");
        assert!(!verify(&changed.ext_fields, &changed.body, "12345678"));
        // The verifier ignores `_UNIQUE_KEY_QUERY`, as upstream's.
        let mut extra = cmd.clone();
        extra
            .ext_fields
            .insert(UNIQUE_MSG_QUERY_FLAG.into(), "true".into());
        assert!(verify(&extra.ext_fields, &extra.body, "12345678"));
        let mut unsigned = cmd;
        unsigned.ext_fields.remove(SIGNATURE);
        assert!(!verify(&unsigned.ext_fields, &unsigned.body, "12345678"));
        assert!(!format!("{creds:?}").contains("12345678"));
    }
}
