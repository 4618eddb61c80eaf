//! The receipt handle the proxy hands to a client: the broker's POP handle
//! ([`ExtraInfo`], with the message's queue offset) followed by the message's CommitLog offset,
//! which a forward to the DLQ (CONSUMER_SEND_MSG_BACK) needs. Space-separated, as the POP
//! handle itself:
//!
//! | field | from |
//! |---|---|
//! | 1-8 | [`ExtraInfo`]: start offset, pop time, invisible time, revive queue, retry mark, broker name, queue id, queue offset |
//! | 9 | the message's CommitLog offset (absent in handles of older proxies) |

use std::fmt;

use remoting::pop::ExtraInfo;
use remoting::RemotingError;

/// A parsed receipt handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub info: ExtraInfo,
    pub commit_log_offset: Option<i64>,
}

impl Receipt {
    /// Parses a handle; a malformed one is an error naming it.
    pub fn parse(s: &str) -> Result<Receipt, RemotingError> {
        let fields = s.split(' ').count();
        if fields == 9 {
            if let Some((info, clo)) = s.rsplit_once(' ') {
                let info = ExtraInfo::parse(info)?;
                let commit_log_offset = clo.parse().ok();
                if commit_log_offset.is_some() && info.queue_offset.is_some() {
                    return Ok(Receipt {
                        info,
                        commit_log_offset,
                    });
                }
            }
            return Err(RemotingError::InvalidField {
                field: "receiptHandle",
                value: s.to_string(),
            });
        }
        Ok(Receipt {
            info: ExtraInfo::parse(s)?,
            commit_log_offset: None,
        })
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.info)?;
        if let Some(o) = self.commit_log_offset {
            write!(f, " {o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_with_and_without_commit_log_offset() {
        let s = "10 1700000000000 30000 3 0 broker-a 1 12 4096";
        let r = Receipt::parse(s).unwrap();
        assert_eq!(r.commit_log_offset, Some(4096));
        assert_eq!(r.info.queue_offset, Some(12));
        assert_eq!(r.info.broker_name, "broker-a");
        assert_eq!(r.to_string(), s);
        let old = Receipt::parse("10 1700000000000 30000 3 0 broker-a 1 12").unwrap();
        assert_eq!(old.commit_log_offset, None);
        for bad in ["", "x", "10 1700000000000 30000 3 0 broker-a 1 12 x"] {
            assert!(Receipt::parse(bad).is_err(), "{bad}");
        }
    }
}
