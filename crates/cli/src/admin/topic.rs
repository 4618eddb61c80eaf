//! Topic commands: updateTopic (17, plus PUT_KV_CONFIG 100 for ordered topics on a cluster),
//! deleteTopic (215 to each master, 216 to each NameServer), topicList (206), topicRoute
//! (105) and topicStatus (202 to each master of the route).

use anyhow::{bail, Context};
use clap::Args;
use remoting::protocol::{from_fastjson, parse_fastjson, perm, TopicList};
use remoting::{RemotingCommand, RequestCode};
use serde::Serialize;
use serde_json::Value;

use super::{format_millis, table, Admin};

/// Upstream's `NamesrvUtil.NAMESPACE_ORDER_TOPIC_CONFIG`.
const NAMESPACE_ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

#[derive(Args, Debug)]
pub struct UpdateTopicArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Broker address (`host:port`) to create the topic on.
    #[arg(short = 'b', long = "brokerAddr")]
    broker: Option<String>,
    /// Cluster whose masters all get the topic.
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
    /// Read queue count.
    #[arg(short = 'r', long = "readQueueNums", default_value_t = 8)]
    read_queues: i32,
    /// Write queue count.
    #[arg(short = 'w', long = "writeQueueNums", default_value_t = 8)]
    write_queues: i32,
    /// Permission: 2 write only, 4 read only, 6 read and write.
    #[arg(short = 'p', long = "perm", default_value_t = 6)]
    perm: i32,
    /// Ordered topic (`true`/`false`).
    #[arg(short = 'o', long = "order", default_value_t = false, action = clap::ArgAction::Set)]
    order: bool,
}

#[derive(Args, Debug)]
pub struct DeleteTopicArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Cluster to delete the topic from.
    #[arg(short = 'c', long = "clusterName")]
    cluster: String,
}

#[derive(Args, Debug)]
pub struct TopicListArgs {
    /// Also show the cluster of each topic.
    #[arg(short = 'c', long = "clusterModel")]
    cluster_model: bool,
}

#[derive(Args, Debug)]
pub struct TopicArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
}

pub(super) async fn update(admin: &Admin, a: UpdateTopicArgs) -> anyhow::Result<()> {
    if !perm::is_valid(a.perm) || a.perm & !6 != 0 {
        bail!("invalid perm {} (use 2, 4 or 6)", a.perm);
    }
    if a.read_queues <= 0 || a.write_queues <= 0 {
        bail!("queue counts must be positive");
    }
    let targets = admin
        .targets(a.broker.as_deref(), a.cluster.as_deref())
        .await?;
    let mut done = Vec::new();
    for (name, addr) in &targets {
        let cmd = update_topic_command(&a.topic, a.read_queues, a.write_queues, a.perm, a.order);
        admin.broker_ok(addr, cmd).await?;
        done.push(addr.to_string());
        if a.order && a.cluster.is_some() && !name.is_empty() {
            let conf = format!("{name}:{};", a.write_queues);
            let kv = RemotingCommand::request(RequestCode::PUT_KV_CONFIG)
                .with_ext("namespace", NAMESPACE_ORDER_TOPIC_CONFIG)
                .with_ext("key", &a.topic)
                .with_ext("value", conf);
            admin.each_namesrv_ok(kv).await?;
        }
    }
    #[derive(Serialize)]
    struct Out<'a> {
        topic: &'a str,
        brokers: &'a [String],
        read_queue_nums: i32,
        write_queue_nums: i32,
        perm: i32,
        order: bool,
    }
    let out = Out {
        topic: &a.topic,
        brokers: &done,
        read_queue_nums: a.read_queues,
        write_queue_nums: a.write_queues,
        perm: a.perm,
        order: a.order,
    };
    admin.print(&out, || {
        done.iter()
            .map(|b| format!("create topic to {b} success."))
            .chain(std::iter::once(format!(
                "TopicConfig [topicName={}, readQueueNums={}, writeQueueNums={}, perm={}, order={}]",
                a.topic,
                a.read_queues,
                a.write_queues,
                perm::to_string(a.perm),
                a.order
            )))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// UPDATE_AND_CREATE_TOPIC with exactly the ext fields `mqadmin` sends.
pub(crate) fn update_topic_command(
    topic: &str,
    read_queues: i32,
    write_queues: i32,
    perm: i32,
    order: bool,
) -> RemotingCommand {
    RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", topic)
        .with_ext("defaultTopic", "TBW102")
        .with_ext("readQueueNums", read_queues)
        .with_ext("writeQueueNums", write_queues)
        .with_ext("perm", perm)
        .with_ext("topicFilterType", "SINGLE_TAG")
        .with_ext("topicSysFlag", 0)
        .with_ext("order", order)
}

pub(super) async fn delete(admin: &Admin, a: DeleteTopicArgs) -> anyhow::Result<()> {
    let masters = admin.targets(None, Some(&a.cluster)).await?;
    for (_, addr) in &masters {
        let cmd = RemotingCommand::request(RequestCode::DELETE_TOPIC_IN_BROKER)
            .with_ext("topic", &a.topic);
        admin.broker_ok(addr, cmd).await?;
    }
    let cmd = RemotingCommand::request(RequestCode::DELETE_TOPIC_IN_NAMESRV)
        .with_ext("topic", &a.topic)
        .with_ext("clusterName", &a.cluster);
    admin.each_namesrv_ok(cmd).await?;
    let out = serde_json::json!({"topic": a.topic, "cluster": a.cluster, "deleted": true});
    admin.print(&out, || {
        format!(
            "delete topic [{}] from cluster [{}] success.\ndelete topic [{}] from NameServer success.",
            a.topic, a.cluster, a.topic
        )
    })
}

/// Every topic the NameServer knows.
pub(crate) async fn topic_names(admin: &Admin) -> anyhow::Result<Vec<String>> {
    let resp = admin
        .namesrv_ok(RemotingCommand::request(
            RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
        ))
        .await?;
    let topics: TopicList = from_fastjson(&resp.body).context("malformed topic list")?;
    Ok(topics.topic_list.into_iter().collect())
}

/// `topicList -c`: every topic with the cluster that serves it (empty when unrouted).
pub(crate) async fn topic_rows(admin: &Admin) -> anyhow::Result<Vec<serde_json::Value>> {
    let topics = topic_names(admin).await?;
    let info = admin.cluster_info().await?;
    let mut rows = Vec::new();
    for topic in &topics {
        let cluster = match admin.route(topic).await {
            Ok(route) => route
                .broker_datas
                .first()
                .map(|b| b.cluster.clone())
                .or_else(|| {
                    let name = &route.queue_datas.first()?.broker_name;
                    info.broker_addr_table.get(name).map(|b| b.cluster.clone())
                })
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        rows.push(serde_json::json!({"cluster": cluster, "topic": topic}));
    }
    Ok(rows)
}

pub(super) async fn list(admin: &Admin, a: TopicListArgs) -> anyhow::Result<()> {
    if !a.cluster_model {
        let list = topic_names(admin).await?;
        return admin.print(&list, || list.join("\n"));
    }
    let rows = topic_rows(admin).await?;
    admin.print(&rows, || {
        let mut t = table(&["#Cluster Name", "#Topic"]);
        for r in &rows {
            t.add_row([
                r["cluster"].as_str().unwrap_or(""),
                r["topic"].as_str().unwrap_or(""),
            ]);
        }
        t.to_string()
    })
}

pub(super) async fn route(admin: &Admin, a: TopicArgs) -> anyhow::Result<()> {
    let route = admin.route(&a.topic).await?;
    admin.print(&route, || {
        let mut t = table(&["#Broker Name", "#Cluster", "#Broker Id", "#Address"]);
        for b in &route.broker_datas {
            for (id, addr) in &b.broker_addrs {
                t.add_row([
                    b.broker_name.clone(),
                    b.cluster.clone(),
                    id.to_string(),
                    addr.clone(),
                ]);
            }
        }
        let mut q = table(&[
            "#Broker Name",
            "#Read Queues",
            "#Write Queues",
            "#Perm",
            "#SysFlag",
        ]);
        for d in &route.queue_datas {
            q.add_row([
                d.broker_name.clone(),
                d.read_queue_nums.to_string(),
                d.write_queue_nums.to_string(),
                perm::to_string(d.perm),
                d.topic_sys_flag.to_string(),
            ]);
        }
        format!("{t}\n\n{q}")
    })
}

/// One queue of a GET_TOPIC_STATS_INFO answer.
#[derive(Serialize)]
pub(crate) struct QueueStatus {
    broker_name: String,
    queue_id: i64,
    pub(crate) min_offset: i64,
    pub(crate) max_offset: i64,
    last_update_timestamp: i64,
}

/// Min and max offsets of every queue of `topic` on each of its masters.
pub(crate) async fn status_rows(admin: &Admin, topic: &str) -> anyhow::Result<Vec<QueueStatus>> {
    let masters = admin.route_masters(topic).await?;
    let mut rows = Vec::new();
    for (_, addr) in &masters {
        let cmd =
            RemotingCommand::request(RequestCode::GET_TOPIC_STATS_INFO).with_ext("topic", topic);
        let resp = admin.broker_ok(addr, cmd).await?;
        for (mq, v) in mq_table(&resp.body, "offsetTable")? {
            rows.push(QueueStatus {
                broker_name: mq_str(&mq, "brokerName"),
                queue_id: mq["queueId"].as_i64().unwrap_or(-1),
                min_offset: v["minOffset"].as_i64().unwrap_or(0),
                max_offset: v["maxOffset"].as_i64().unwrap_or(0),
                last_update_timestamp: v["lastUpdateTimestamp"].as_i64().unwrap_or(0),
            });
        }
    }
    rows.sort_by(|x, y| (&x.broker_name, x.queue_id).cmp(&(&y.broker_name, y.queue_id)));
    Ok(rows)
}

pub(super) async fn status(admin: &Admin, a: TopicArgs) -> anyhow::Result<()> {
    let rows = status_rows(admin, &a.topic).await?;
    admin.print(&rows, || {
        let mut t = table(&[
            "#Broker Name",
            "#QID",
            "#Min Offset",
            "#Max Offset",
            "#Last Updated",
        ]);
        for r in &rows {
            t.add_row([
                r.broker_name.clone(),
                r.queue_id.to_string(),
                r.min_offset.to_string(),
                r.max_offset.to_string(),
                format_millis(r.last_update_timestamp),
            ]);
        }
        t.to_string()
    })
}

/// The entries of a fastjson map keyed by message-queue objects (`{{"brokerName":..}:{..}}`),
/// which [`parse_fastjson`] turns into an object whose keys hold the queues' JSON text.
pub(crate) fn mq_table(body: &[u8], field: &str) -> anyhow::Result<Vec<(Value, Value)>> {
    let doc = parse_fastjson(body).context("malformed stats body")?;
    let Some(Value::Object(map)) = doc.get(field) else {
        return Ok(Vec::new());
    };
    Ok(map
        .iter()
        .map(|(k, v)| {
            let key = serde_json::from_str(k).unwrap_or(Value::String(k.clone()));
            (key, v.clone())
        })
        .collect())
}

/// A string member of a JSON object, empty when absent.
pub(crate) fn mq_str(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::golden::captured_requests;

    #[test]
    fn update_topic_sends_mqadmin_fields() {
        let Some(reqs) = captured_requests(
            "updateTopic-CAP_java_x",
            RequestCode::UPDATE_AND_CREATE_TOPIC,
        ) else {
            return;
        };
        let cmd = update_topic_command("CAP_java_x", 4, 4, 6, false);
        assert_eq!(cmd.ext_fields, reqs[0].0);
    }
}
