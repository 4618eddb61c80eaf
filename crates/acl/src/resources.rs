//! Which permission a request needs on which resource (upstream `PlainAccessValidator.parse`):
//! sends need PUB on their topic (a send to a retry topic, SUB on the group), pulls and offset
//! updates SUB on the topic and the group, heartbeats SUB on every group and subscribed topic.
//! A group is named by its retry topic, `%RETRY%group`. Other request codes need no resource
//! permission (only a valid signature, or admin for the admin codes).

use remoting::broker_headers::HeartbeatData;
use remoting::message::{retry_topic, RETRY_GROUP_TOPIC_PREFIX};
use remoting::{RemotingCommand, RequestCode};

use crate::perm::{PUB, SUB};

/// `(resource, permission)` pairs `cmd` needs; an undecodable heartbeat body is an error with
/// the decoder's message.
pub fn needed(cmd: &RemotingCommand) -> Result<Vec<(String, u8)>, String> {
    let field = |k: &str| cmd.ext(k).map(str::to_string);
    let group = |k: &str| cmd.ext(k).map(retry_topic);
    let mut out = Vec::new();
    let mut add = |resource: Option<String>, perm: u8| {
        if let Some(r) = resource {
            out.push((r, perm));
        }
    };
    match cmd.code {
        RequestCode::SEND_MESSAGE
        | RequestCode::SEND_MESSAGE_V2
        | RequestCode::SEND_BATCH_MESSAGE => {
            let (topic_key, group_key) = if cmd.code == RequestCode::SEND_MESSAGE_V2
                || (cmd.code == RequestCode::SEND_BATCH_MESSAGE && cmd.ext("b").is_some())
            {
                ("b", "a")
            } else {
                ("topic", "group")
            };
            let topic = field(topic_key);
            if topic
                .as_deref()
                .is_some_and(|t| t.starts_with(RETRY_GROUP_TOPIC_PREFIX))
            {
                add(group(group_key), SUB);
            } else {
                add(topic, PUB);
            }
        }
        RequestCode::CONSUMER_SEND_MSG_BACK => add(group("group"), SUB),
        RequestCode::PULL_MESSAGE => {
            add(field("topic"), SUB);
            add(group("consumerGroup"), SUB);
        }
        RequestCode::QUERY_MESSAGE => add(field("topic"), SUB),
        RequestCode::HEART_BEAT => {
            let hb = HeartbeatData::decode(&cmd.body).map_err(|e| e.to_string())?;
            for data in hb.consumer_data_set {
                add(Some(retry_topic(&data.group_name)), SUB);
                for sub in data.subscription_data_set {
                    add(Some(sub.topic), SUB);
                }
            }
        }
        RequestCode::UNREGISTER_CLIENT | RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
            add(group("consumerGroup"), SUB)
        }
        RequestCode::UPDATE_CONSUMER_OFFSET => {
            add(group("consumerGroup"), SUB);
            add(field("topic"), SUB);
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_pulls_and_heartbeats() {
        let send = RemotingCommand::request(RequestCode::SEND_MESSAGE_V2)
            .with_ext("a", "PG")
            .with_ext("b", "TopicA");
        assert_eq!(needed(&send).unwrap(), vec![("TopicA".to_string(), PUB)]);
        let retry = RemotingCommand::request(RequestCode::SEND_MESSAGE_V2)
            .with_ext("a", "G1")
            .with_ext("b", "%RETRY%G1");
        assert_eq!(
            needed(&retry).unwrap(),
            vec![("%RETRY%G1".to_string(), SUB)]
        );
        let pull = RemotingCommand::request(RequestCode::PULL_MESSAGE)
            .with_ext("consumerGroup", "G1")
            .with_ext("topic", "TopicA");
        assert_eq!(
            needed(&pull).unwrap(),
            vec![("TopicA".to_string(), SUB), ("%RETRY%G1".to_string(), SUB)]
        );
        let bad = RemotingCommand::request(RequestCode::HEART_BEAT)
            .with_body(bytes::Bytes::from_static(b"{not json"));
        assert!(needed(&bad).is_err());
        let other = RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC);
        assert!(needed(&other).unwrap().is_empty());
    }
}
