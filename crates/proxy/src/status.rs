//! gRPC `Status` values, and the mapping of remoting failures to upstream's `Code`s.

use client::ClientError;
use proto::v2::{Code, Status};
use remoting::ResponseCode;

/// A status with `code` and `message`.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// `OK`, with the code's name as message (as upstream).
pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// A status for a method Apogee does not serve yet.
pub fn not_implemented(what: &str) -> Status {
    status(
        Code::NotImplemented,
        format!("{what} is not implemented by this proxy yet"),
    )
}

/// The status of a failed remoting call (upstream's `ProxyException` / `MQBrokerException`
/// mapping: the broker's response code decides; transport failures are the proxy's fault).
pub fn from_client_error(e: &ClientError) -> Status {
    let message = e.to_string();
    let code = match e {
        ClientError::Broker { code, .. } => match *code {
            ResponseCode::TOPIC_NOT_EXIST => Code::TopicNotFound,
            ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST => Code::ConsumerGroupNotFound,
            ResponseCode::NO_PERMISSION => Code::Forbidden,
            ResponseCode::MESSAGE_ILLEGAL => Code::BadRequest,
            ResponseCode::SYSTEM_BUSY | ResponseCode::POLLING_FULL => Code::TooManyRequests,
            ResponseCode::NO_MESSAGE => Code::InvalidReceiptHandle,
            ResponseCode::SERVICE_NOT_AVAILABLE => Code::HaNotAvailable,
            _ => Code::InternalServerError,
        },
        ClientError::NoRoute(_) => Code::TopicNotFound,
        ClientError::Timeout(_) => Code::ProxyTimeout,
        ClientError::InvalidMessage(_) => Code::BadRequest,
        _ => Code::InternalServerError,
    };
    status(code, message)
}

/// The overall status of several results: theirs when all agree, else `MULTIPLE_RESULTS`.
pub fn overall<'a>(mut statuses: impl Iterator<Item = &'a Status>) -> Status {
    let Some(first) = statuses.next() else {
        return ok();
    };
    if statuses.all(|s| s.code == first.code) {
        first.clone()
    } else {
        status(Code::MultipleResults, "multiple results")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(code: i32) -> ClientError {
        ClientError::Broker {
            addr: "127.0.0.1:10911".into(),
            code,
            remark: String::new(),
        }
    }

    #[test]
    fn broker_refusals_map_to_upstream_codes() {
        let c = |code| from_client_error(&broker(code)).code;
        assert_eq!(c(ResponseCode::TOPIC_NOT_EXIST), Code::TopicNotFound as i32);
        assert_eq!(
            c(ResponseCode::NO_MESSAGE),
            Code::InvalidReceiptHandle as i32
        );
        assert_eq!(c(ResponseCode::SYSTEM_BUSY), Code::TooManyRequests as i32);
        assert_eq!(c(ResponseCode::NO_PERMISSION), Code::Forbidden as i32);
        assert_eq!(
            c(ResponseCode::SYSTEM_ERROR),
            Code::InternalServerError as i32
        );
    }

    #[test]
    fn overall_status_of_several_results() {
        assert_eq!(overall([ok(), ok()].iter()).code, Code::Ok as i32);
        let mixed = [ok(), status(Code::BadRequest, "x")];
        assert_eq!(overall(mixed.iter()).code, Code::MultipleResults as i32);
        assert_eq!(overall([].iter()).code, Code::Ok as i32);
    }
}
