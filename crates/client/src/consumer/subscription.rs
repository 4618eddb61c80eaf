//! Subscriptions: a topic plus a tag expression (upstream `FilterAPI.buildSubscriptionData`).
//! `*` (or an empty expression) takes every message; `TagA || TagB` takes those tags, sent to
//! the broker as tags and their Java hash codes so it can filter on consume-queue units.

use remoting::broker_headers::{
    SubscriptionData, EXPRESSION_TYPE_SQL92, EXPRESSION_TYPE_TAG, SUB_ALL,
};
use remoting::message::{now_millis, tags_hash_code, MessageExt};

use crate::error::{ClientError, Result};

/// Builds the subscription of `topic` to the tag expression `expression`.
///
/// ```
/// use client::consumer::subscription::build_subscription;
///
/// let s = build_subscription("T", " TagA || TagB ||").unwrap();
/// assert_eq!(s.tags_set.len(), 2);
/// assert_eq!(s.code_set.len(), 2);
/// assert_eq!(build_subscription("T", "").unwrap().sub_string, "*");
/// ```
pub fn build_subscription(topic: &str, expression: &str) -> Result<SubscriptionData> {
    let mut sub = SubscriptionData {
        topic: topic.to_string(),
        sub_version: now_millis(),
        expression_type: EXPRESSION_TYPE_TAG.to_string(),
        ..Default::default()
    };
    let expr = expression.trim();
    if expr.is_empty() || expr == SUB_ALL {
        sub.sub_string = SUB_ALL.to_string();
        return Ok(sub);
    }
    sub.sub_string = expression.to_string();
    for tag in expr.split("||").map(str::trim).filter(|t| !t.is_empty()) {
        sub.tags_set.insert(tag.to_string());
        sub.code_set.insert(tags_hash_code(tag) as i32);
    }
    if sub.tags_set.is_empty() {
        return Err(ClientError::Config(format!(
            "tag expression `{expression}` names no tag"
        )));
    }
    Ok(sub)
}

/// A SQL92 subscription (filtered by the broker only; needs `enablePropertyFilter`).
pub fn build_sql_subscription(topic: &str, sql: &str) -> SubscriptionData {
    SubscriptionData {
        topic: topic.to_string(),
        sub_string: sql.to_string(),
        sub_version: now_millis(),
        expression_type: EXPRESSION_TYPE_SQL92.to_string(),
        ..Default::default()
    }
}

/// Whether `msg` passes the client-side tag filter of `sub` (the broker filters by hash
/// code, so collisions are removed here, as upstream's `PullAPIWrapper` does).
pub fn matches(sub: &SubscriptionData, msg: &MessageExt) -> bool {
    if sub.tags_set.is_empty()
        || sub.class_filter_mode
        || sub.expression_type != EXPRESSION_TYPE_TAG
    {
        return true;
    }
    msg.message.tags().is_some_and(|t| sub.tags_set.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoting::message::Message;

    #[test]
    fn expressions() {
        let all = build_subscription("T", "*").unwrap();
        assert!(all.tags_set.is_empty() && all.sub_version > 0);
        let two = build_subscription("T", "TagA||TagB").unwrap();
        assert!(two.code_set.contains(&(tags_hash_code("TagA") as i32)));
        assert!(build_subscription("T", "||").is_err());
        let tagged = |t: &str| MessageExt::new(Message::new("T", &b"x"[..]).with_tags(t));
        assert!(matches(&two, &tagged("TagB")));
        assert!(!matches(&two, &tagged("TagC")));
        assert!(!matches(
            &two,
            &MessageExt::new(Message::new("T", &b"x"[..]))
        ));
        assert!(matches(&all, &tagged("anything")));
        assert!(matches(&build_sql_subscription("T", "a > 1"), &tagged("x")));
    }
}
