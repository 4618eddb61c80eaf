//! Group commands: updateSubGroup (200, JSON body), deleteSubGroup (207), consumerProgress
//! (208 to each master of `%RETRY%group`), consumerConnection (203), producerConnection (204)
//! and resetOffsetByTime (222 to each master of the topic).

use anyhow::Context;
use clap::Args;
use remoting::broker_headers::ResetOffsetBody;
use remoting::protocol::from_fastjson;
use remoting::{RemotingCommand, RequestCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::topic::{mq_str, mq_table};
use super::{format_millis, parse_time, table, Admin};

#[derive(Args, Debug)]
pub struct UpdateSubGroupArgs {
    /// Consumer group name.
    #[arg(short = 'g', long = "groupName")]
    group: String,
    /// Broker address (`host:port`).
    #[arg(short = 'b', long = "brokerAddr")]
    broker: Option<String>,
    /// Every master of this cluster.
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
    /// Consuming allowed.
    #[arg(short = 's', long = "consumeEnable", default_value_t = true, action = clap::ArgAction::Set)]
    consume_enable: bool,
    /// Start from the queue's minimum offset.
    #[arg(short = 'm', long = "consumeFromMinEnable", default_value_t = false, action = clap::ArgAction::Set)]
    consume_from_min: bool,
    /// Broadcast consumption allowed.
    #[arg(short = 'd', long = "consumeBroadcastEnable", default_value_t = false, action = clap::ArgAction::Set)]
    broadcast: bool,
    /// Retry queue count.
    #[arg(short = 'q', long = "retryQueueNums", default_value_t = 1)]
    retry_queues: i32,
    /// Deliveries before a message goes to the DLQ.
    #[arg(short = 'r', long = "retryMaxTimes", default_value_t = 16)]
    retry_max: i32,
    /// Broker id consumers pull from.
    #[arg(short = 'i', long = "brokerId", default_value_t = 0)]
    broker_id: i64,
    /// Broker id to pull from when consumption is slow.
    #[arg(
        short = 'w',
        long = "whichBrokerWhenConsumeSlowly",
        default_value_t = 1
    )]
    slow_broker: i64,
    /// Notify consumers when the group's membership changes.
    #[arg(short = 'a', long = "notifyConsumerIdsChanged", default_value_t = true, action = clap::ArgAction::Set)]
    notify: bool,
    /// A FIFO group: 5.x clients receive its messages in order per message group.
    #[arg(short = 'o', long = "consumeMessageOrderly", default_value_t = false, action = clap::ArgAction::Set)]
    orderly: bool,
}

#[derive(Args, Debug)]
pub struct DeleteSubGroupArgs {
    /// Consumer group name.
    #[arg(short = 'g', long = "groupName")]
    group: String,
    /// Broker address (`host:port`).
    #[arg(short = 'b', long = "brokerAddr")]
    broker: Option<String>,
    /// Every master of this cluster.
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
    /// Also remove the group's committed offsets.
    #[arg(short = 'r', long = "removeOffset", default_value_t = false, action = clap::ArgAction::Set)]
    remove_offset: bool,
}

#[derive(Args, Debug)]
pub struct ConsumerProgressArgs {
    /// Consumer group; without it, a summary of every group.
    #[arg(short = 'g', long = "groupName")]
    group: Option<String>,
    /// Only this topic.
    #[arg(short = 't', long = "topicName")]
    topic: Option<String>,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    /// Consumer group name.
    #[arg(short = 'g', long = "consumerGroup")]
    group: String,
}

#[derive(Args, Debug)]
pub struct ProducerConnectionArgs {
    /// Producer group name.
    #[arg(short = 'g', long = "producerGroup")]
    group: String,
    /// A topic the group produces to (locates the broker).
    #[arg(short = 't', long = "topic")]
    topic: String,
}

#[derive(Args, Debug)]
pub struct ResetOffsetArgs {
    /// Consumer group name.
    #[arg(short = 'g', long = "group")]
    group: String,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Time to reset to: `now`, epoch ms or yyyy-MM-dd#HH:mm:ss:SSS.
    #[arg(short = 's', long = "timestamp")]
    timestamp: String,
    /// Also move offsets backwards past the committed position.
    #[arg(short = 'f', long = "force", default_value_t = true, action = clap::ArgAction::Set)]
    force: bool,
}

/// `SubscriptionGroupConfig` as `mqadmin` writes it (fields in fastjson's alphabetical order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionGroupConfig<'a> {
    broker_id: i64,
    consume_broadcast_enable: bool,
    consume_enable: bool,
    consume_from_min_enable: bool,
    /// A FIFO group (upstream 5.x `consumeMessageOrderly`); left out when false, as 4.x
    /// `mqadmin` writes the body.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    consume_message_orderly: bool,
    group_name: &'a str,
    notify_consumer_ids_changed_enable: bool,
    retry_max_times: i32,
    retry_queue_nums: i32,
    which_broker_when_consume_slowly: i64,
}

impl SubscriptionGroupConfig<'_> {
    /// The UPDATE_AND_CREATE_SUBSCRIPTIONGROUP body.
    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

pub(super) async fn update(admin: &Admin, a: UpdateSubGroupArgs) -> anyhow::Result<()> {
    let config = SubscriptionGroupConfig {
        broker_id: a.broker_id,
        consume_broadcast_enable: a.broadcast,
        consume_enable: a.consume_enable,
        consume_from_min_enable: a.consume_from_min,
        consume_message_orderly: a.orderly,
        group_name: &a.group,
        notify_consumer_ids_changed_enable: a.notify,
        retry_max_times: a.retry_max,
        retry_queue_nums: a.retry_queues,
        which_broker_when_consume_slowly: a.slow_broker,
    };
    let body = config.encode()?;
    let mut done = Vec::new();
    for (_, addr) in admin
        .targets(a.broker.as_deref(), a.cluster.as_deref())
        .await?
    {
        let cmd = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(body.clone());
        admin.broker_ok(&addr, cmd).await?;
        done.push(addr.to_string());
    }
    let out = serde_json::json!({"group": config, "brokers": done});
    admin.print(&out, || {
        done.iter()
            .map(|b| format!("create subscription group to {b} success."))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub(super) async fn delete(admin: &Admin, a: DeleteSubGroupArgs) -> anyhow::Result<()> {
    let mut done = Vec::new();
    for (_, addr) in admin
        .targets(a.broker.as_deref(), a.cluster.as_deref())
        .await?
    {
        let cmd = RemotingCommand::request(RequestCode::DELETE_SUBSCRIPTIONGROUP)
            .with_ext("groupName", &a.group)
            .with_ext("removeOffset", a.remove_offset);
        admin.broker_ok(&addr, cmd).await?;
        done.push(addr.to_string());
    }
    let out = serde_json::json!({"group": a.group, "brokers": done});
    admin.print(&out, || {
        done.iter()
            .map(|b| format!("delete subscription group [{}] from {b} success.", a.group))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// One queue of a GET_CONSUME_STATS answer.
#[derive(Serialize)]
pub(crate) struct Progress {
    topic: String,
    broker_name: String,
    queue_id: i64,
    broker_offset: i64,
    consumer_offset: i64,
    pub(crate) diff: i64,
    /// Messages popped (POP consumption) and not acked yet.
    pub(crate) inflight: i64,
    last_timestamp: i64,
}

/// GET_CONSUME_STATS of `group` from every master of its retry topic (of `topic` for a
/// group that only pops, which has no `%RETRY%<group>` topic).
pub(crate) async fn consume_stats(
    admin: &Admin,
    group: &str,
    topic: Option<&str>,
) -> anyhow::Result<Vec<Progress>> {
    let masters = match (
        admin.route_masters(&client::retry_topic(group)).await,
        topic,
    ) {
        (Ok(m), _) => Ok(m),
        (Err(_), Some(t)) => admin.route_masters(t).await,
        (Err(e), None) => Err(e),
    }
    .with_context(|| format!("consumer group `{group}` not found"))?;
    let mut rows = Vec::new();
    for (_, addr) in &masters {
        let mut cmd = RemotingCommand::request(RequestCode::GET_CONSUME_STATS)
            .with_ext("consumerGroup", group);
        if let Some(t) = topic {
            cmd = cmd.with_ext("topic", t);
        }
        let resp = admin.broker_ok(addr, cmd).await?;
        for (mq, v) in mq_table(&resp.body, "offsetTable")? {
            let broker_offset = v["brokerOffset"].as_i64().unwrap_or(0);
            let consumer_offset = v["consumerOffset"].as_i64().unwrap_or(0);
            rows.push(Progress {
                topic: mq_str(&mq, "topic"),
                broker_name: mq_str(&mq, "brokerName"),
                queue_id: mq["queueId"].as_i64().unwrap_or(-1),
                broker_offset,
                consumer_offset,
                diff: broker_offset - consumer_offset,
                inflight: v["popInflight"].as_i64().unwrap_or(0),
                last_timestamp: v["lastTimestamp"].as_i64().unwrap_or(0),
            });
        }
    }
    rows.sort_by(|x, y| {
        (&x.topic, &x.broker_name, x.queue_id).cmp(&(&y.topic, &y.broker_name, y.queue_id))
    });
    Ok(rows)
}

/// Every consumer group with its total lag: one per `%RETRY%<group>` topic (push and pull
/// groups), and one per POP retry topic `%RETRY%<group>_<topic>` (or `+`) whose `<topic>` is
/// a topic of the cluster (groups that pop; their in-flight count too). Groups whose stats
/// cannot be read are left out.
pub(crate) async fn group_totals(admin: &Admin) -> anyhow::Result<Vec<serde_json::Value>> {
    let names = super::topic::topic_names(admin).await?;
    let plain: std::collections::BTreeSet<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|t| !t.starts_with(client::RETRY_GROUP_TOPIC_PREFIX))
        .collect();
    let mut groups = Vec::new();
    for topic in &names {
        let Some(rest) = topic.strip_prefix(client::RETRY_GROUP_TOPIC_PREFIX) else {
            continue;
        };
        let pop = pop_retry_parts(rest, &plain);
        let (group, of_topic) = match pop {
            Some((g, t)) => (g, Some(t)),
            None => (rest, None),
        };
        let rows = match consume_stats(admin, group, of_topic).await {
            Ok(rows) => rows,
            Err(_) => continue,
        };
        let diff: i64 = rows.iter().map(|r| r.diff).sum();
        let inflight: i64 = rows.iter().map(|r| r.inflight).sum();
        groups.push(serde_json::json!({
            "group": group,
            "mode": if pop.is_some() { "POP" } else { "PUSH" },
            "topic": of_topic,
            "diff_total": diff,
            "inflight_total": inflight,
        }));
    }
    Ok(groups)
}

/// `(group, topic)` of a POP retry topic name (after `%RETRY%`): the longest topic of
/// `topics` it ends with, behind `_` or `+`.
fn pop_retry_parts<'a>(
    rest: &'a str,
    topics: &std::collections::BTreeSet<&str>,
) -> Option<(&'a str, &'a str)> {
    topics
        .iter()
        .filter_map(|t| {
            let head = rest.strip_suffix(t)?;
            let group = head.strip_suffix('_').or_else(|| head.strip_suffix('+'))?;
            (!group.is_empty()).then(|| (group, &rest[head.len()..]))
        })
        .max_by_key(|(_, t)| t.len())
}

pub(super) async fn progress(admin: &Admin, a: ConsumerProgressArgs) -> anyhow::Result<()> {
    if let Some(group) = &a.group {
        let rows = consume_stats(admin, group, a.topic.as_deref()).await?;
        let total: i64 = rows.iter().map(|r| r.diff).sum();
        let inflight: i64 = rows.iter().map(|r| r.inflight).sum();
        let out = serde_json::json!({"group": group, "diff_total": total, "inflight_total": inflight, "queues": rows});
        return admin.print(&out, || {
            let mut t = table(&[
                "#Topic",
                "#Broker Name",
                "#QID",
                "#Broker Offset",
                "#Consumer Offset",
                "#Diff",
                "#Inflight",
                "#LastTime",
            ]);
            for r in &rows {
                t.add_row([
                    r.topic.clone(),
                    r.broker_name.clone(),
                    r.queue_id.to_string(),
                    r.broker_offset.to_string(),
                    r.consumer_offset.to_string(),
                    r.diff.to_string(),
                    r.inflight.to_string(),
                    format_millis(r.last_timestamp),
                ]);
            }
            format!("{t}\n\nDiff Total: {total}\nInflight Total: {inflight}")
        });
    }
    let groups = group_totals(admin).await?;
    admin.print(&groups, || {
        let mut t = table(&["#Group", "#Mode", "#Diff Total", "#Inflight Total"]);
        for g in &groups {
            t.add_row([
                g["group"].as_str().unwrap_or("").to_string(),
                g["mode"].as_str().unwrap_or("").to_string(),
                g["diff_total"].to_string(),
                g["inflight_total"].to_string(),
            ]);
        }
        t.to_string()
    })
}

/// One client in a connection list.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
struct Connection {
    client_addr: String,
    client_id: String,
    language: String,
    version: i32,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ConnectionList {
    connection_set: Vec<Connection>,
    consume_type: Option<Value>,
    message_model: Option<Value>,
    consume_from_where: Option<Value>,
    subscription_table: Option<Value>,
}

fn print_connections(admin: &Admin, list: &ConnectionList) -> anyhow::Result<()> {
    admin.print(list, || {
        let mut t = table(&["#ClientId", "#ClientAddr", "#Language", "#Version"]);
        for c in &list.connection_set {
            t.add_row([
                c.client_id.clone(),
                c.client_addr.clone(),
                c.language.clone(),
                c.version.to_string(),
            ]);
        }
        let mut out = t.to_string();
        if let Some(Value::Object(subs)) = &list.subscription_table {
            let mut s = table(&["#Topic", "#SubExpression"]);
            for (topic, sub) in subs {
                s.add_row([
                    topic.clone(),
                    sub["subString"].as_str().unwrap_or("").to_string(),
                ]);
            }
            out.push_str(&format!("\n\nBelow is subscription:\n{s}"));
        }
        let show = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).unwrap_or("").to_string();
        if list.consume_type.is_some() {
            out.push_str(&format!(
                "\n\nConsumeType: {}\nMessageModel: {}\nConsumeFromWhere: {}",
                show(&list.consume_type),
                show(&list.message_model),
                show(&list.consume_from_where)
            ));
        }
        out
    })
}

/// GET_CONSUMER_CONNECTION_LIST of `group` from the first master that knows it.
pub(crate) async fn consumer_connections(
    admin: &Admin,
    group: &str,
) -> anyhow::Result<ConnectionList> {
    let masters = admin
        .route_masters(&client::retry_topic(group))
        .await
        .with_context(|| format!("consumer group `{group}` not found"))?;
    let mut last = None;
    for (_, addr) in &masters {
        let cmd = RemotingCommand::request(RequestCode::GET_CONSUMER_CONNECTION_LIST)
            .with_ext("consumerGroup", group);
        match admin.broker_ok(addr, cmd).await {
            Ok(resp) => return from_fastjson(&resp.body).context("malformed connection list"),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("consumer group `{group}` is not online")))
}

pub(super) async fn consumer_connection(admin: &Admin, a: GroupArgs) -> anyhow::Result<()> {
    let list = consumer_connections(admin, &a.group).await?;
    print_connections(admin, &list)
}

pub(super) async fn producer_connection(
    admin: &Admin,
    a: ProducerConnectionArgs,
) -> anyhow::Result<()> {
    let mut merged = ConnectionList::default();
    for (_, addr) in admin.route_masters(&a.topic).await? {
        let cmd = RemotingCommand::request(RequestCode::GET_PRODUCER_CONNECTION_LIST)
            .with_ext("producerGroup", &a.group);
        if let Ok(resp) = admin.broker_ok(&addr, cmd).await {
            let list: ConnectionList =
                from_fastjson(&resp.body).context("malformed connection list")?;
            merged.connection_set.extend(list.connection_set);
        }
    }
    if merged.connection_set.is_empty() {
        anyhow::bail!(
            "producer group `{}` has no connection on the brokers of `{}`",
            a.group,
            a.topic
        );
    }
    print_connections(admin, &merged)
}

pub(super) async fn reset_offset(admin: &Admin, a: ResetOffsetArgs) -> anyhow::Result<()> {
    let timestamp = parse_time(&a.timestamp)?;
    let mut rows = Vec::new();
    for (_, addr) in admin.route_masters(&a.topic).await? {
        let cmd = RemotingCommand::request(RequestCode::INVOKE_BROKER_TO_RESET_OFFSET)
            .with_ext("topic", &a.topic)
            .with_ext("group", &a.group)
            .with_ext("timestamp", timestamp)
            .with_ext("isForce", a.force);
        let resp = admin.broker_ok(&addr, cmd).await?;
        let body = ResetOffsetBody::decode(&resp.body).context("malformed reset answer")?;
        for (mq, offset) in body.offset_table {
            rows.push(serde_json::json!({
                "broker_name": mq.broker_name, "queue_id": mq.queue_id, "offset": offset
            }));
        }
    }
    let out = serde_json::json!({"group": a.group, "topic": a.topic, "timestamp": timestamp, "queues": rows});
    admin.print(&out, || {
        let mut t = table(&["#Broker Name", "#QID", "#Offset"]);
        for r in &rows {
            t.add_row([
                r["broker_name"].as_str().unwrap_or("").to_string(),
                r["queue_id"].to_string(),
                r["offset"].to_string(),
            ]);
        }
        format!(
            "reset offsets of group [{}] on topic [{}] to {}\n{t}",
            a.group,
            a.topic,
            format_millis(timestamp)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::golden::captured_requests;

    #[test]
    fn sub_group_body_matches_mqadmin() {
        let Some(reqs) = captured_requests("updateSubGroup", 200) else {
            return;
        };
        let config = SubscriptionGroupConfig {
            broker_id: 0,
            consume_broadcast_enable: false,
            consume_enable: true,
            consume_from_min_enable: false,
            consume_message_orderly: false,
            group_name: "CG_cap_admin",
            notify_consumer_ids_changed_enable: true,
            retry_max_times: 16,
            retry_queue_nums: 1,
            which_broker_when_consume_slowly: 1,
        };
        assert_eq!(config.encode().unwrap(), reqs[0].1);
    }

    #[test]
    fn pop_retry_topics_name_group_and_topic() {
        let topics: std::collections::BTreeSet<&str> = ["T", "Orders", "A_T"].into();
        assert_eq!(
            pop_retry_parts("GID_x_Orders", &topics),
            Some(("GID_x", "Orders"))
        );
        assert_eq!(pop_retry_parts("G+T", &topics), Some(("G", "T")));
        assert_eq!(
            pop_retry_parts("G_A_T", &topics),
            Some(("G", "A_T")),
            "the longest topic"
        );
        assert_eq!(
            pop_retry_parts("GroupOnly", &topics),
            None,
            "a push group's retry topic"
        );
        assert_eq!(pop_retry_parts("_T", &topics), None);
    }
}
