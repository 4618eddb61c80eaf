//! Message commands: queryMsgById (33 to the store host in the id, or 12 by unique key),
//! queryMsgByKey (12 to each master), queryMsgByOffset / consumeMessage / printMsg (offset
//! lookups 29/30/31 and non-committing pulls, 11) and sendMessage (a producer).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use client::{Producer, ProducerConfig};
use remoting::broker_headers::{
    GetMaxOffsetRequestHeader, GetMaxOffsetResponseHeader, GetMinOffsetRequestHeader,
    GetMinOffsetResponseHeader, MessageQueue, PullMessageRequestHeader, PullMessageResponseHeader,
    PullSysFlag, QueryMessageRequestHeader, SearchOffsetRequestHeader, SearchOffsetResponseHeader,
};
use remoting::headers::CommandHeader;
use remoting::message::{decode_message_id, Message, MessageConst, MessageExt};
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};
use serde::Serialize;

use super::{format_millis, masters_of, parse_time, table, Admin};

/// Group name the tools pull with (upstream `MixAll.TOOLS_CONSUMER_GROUP`).
const TOOLS_CONSUMER_GROUP: &str = "TOOLS_CONSUMER";
/// Producer group of `sendMessage`.
const TOOLS_PRODUCER_GROUP: &str = "TOOLS_PRODUCER";

#[derive(Args, Debug)]
pub struct QueryMsgByIdArgs {
    /// Message id(s), comma-separated: offset message ids, or client ids (`UNIQ_KEY`) with -t.
    #[arg(short = 'i', long = "msgId")]
    ids: String,
    /// Topic, needed to look up client ids.
    #[arg(short = 't', long = "topic")]
    topic: Option<String>,
}

#[derive(Args, Debug)]
pub struct QueryMsgByKeyArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Message key.
    #[arg(short = 'k', long = "msgKey")]
    key: String,
    /// Earliest store time (`now`, epoch ms or yyyy-MM-dd#HH:mm:ss:SSS).
    #[arg(short = 'b', long = "beginTimestamp")]
    begin: Option<String>,
    /// Latest store time.
    #[arg(short = 'e', long = "endTimestamp")]
    end: Option<String>,
    /// At most this many messages per broker.
    #[arg(short = 'c', long = "maxNum", default_value_t = 64)]
    max_num: i32,
}

#[derive(Args, Debug)]
pub struct QueryMsgByOffsetArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Broker name (group).
    #[arg(short = 'b', long = "brokerName")]
    broker_name: String,
    /// Queue id.
    #[arg(short = 'i', long = "queueId")]
    queue_id: i32,
    /// Queue offset.
    #[arg(short = 'o', long = "offset")]
    offset: i64,
}

#[derive(Args, Debug)]
pub struct SendMessageArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Message body.
    #[arg(short = 'p', long = "body")]
    body: String,
    /// Message keys (space-separated).
    #[arg(short = 'k', long = "key")]
    keys: Option<String>,
    /// Message tag.
    #[arg(short = 'c', long = "tags")]
    tags: Option<String>,
    /// Send to this broker name (with -i).
    #[arg(short = 'b', long = "broker")]
    broker_name: Option<String>,
    /// Send to this queue id (with -b).
    #[arg(short = 'i', long = "qid")]
    queue_id: Option<i32>,
}

#[derive(Args, Debug)]
pub struct ConsumeMessageArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Only this broker name.
    #[arg(short = 'b', long = "brokerName")]
    broker_name: Option<String>,
    /// Only this queue id.
    #[arg(short = 'i', long = "queueId")]
    queue_id: Option<i32>,
    /// Start at this queue offset (with -b and -i).
    #[arg(short = 'o', long = "offset")]
    offset: Option<i64>,
    /// Start at this store time.
    #[arg(short = 's', long = "beginTimestamp")]
    begin: Option<String>,
    /// Stop at this store time.
    #[arg(short = 'e', long = "endTimestamp")]
    end: Option<String>,
    /// At most this many messages.
    #[arg(short = 'c', long = "MessageNumber", default_value_t = 128)]
    count: usize,
}

#[derive(Args, Debug)]
pub struct PrintMsgArgs {
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Tag expression (`*`, `TagA || TagB`).
    #[arg(short = 's', long = "subExpression", default_value = "*")]
    sub_expression: String,
    /// Start at this store time.
    #[arg(short = 'b', long = "beginTimestamp")]
    begin: Option<String>,
    /// Stop at this store time.
    #[arg(short = 'e', long = "endTimestamp")]
    end: Option<String>,
    /// Print bodies.
    #[arg(short = 'd', long = "printBody", default_value_t = true, action = clap::ArgAction::Set)]
    print_body: bool,
}

/// A message as the commands show it.
#[derive(Serialize)]
pub(crate) struct MsgView {
    msg_id: String,
    offset_msg_id: String,
    topic: String,
    tags: Option<String>,
    keys: Vec<String>,
    queue_id: i32,
    queue_offset: i64,
    commit_log_offset: i64,
    reconsume_times: i32,
    born_timestamp: i64,
    store_timestamp: i64,
    born_host: String,
    store_host: String,
    sys_flag: i32,
    properties: BTreeMap<String, String>,
    body: Option<String>,
    body_len: usize,
}

impl MsgView {
    pub(crate) fn new(m: &MessageExt, with_body: bool) -> Self {
        MsgView {
            msg_id: m.msg_id().to_string(),
            offset_msg_id: m.offset_msg_id.clone(),
            topic: m.message.topic.clone(),
            tags: m.message.tags().map(str::to_string),
            keys: m.message.keys().into_iter().map(str::to_string).collect(),
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            commit_log_offset: m.commit_log_offset,
            reconsume_times: m.reconsume_times,
            born_timestamp: m.born_timestamp,
            store_timestamp: m.store_timestamp,
            born_host: m.born_host.to_string(),
            store_host: m.store_host.to_string(),
            sys_flag: m.sys_flag,
            properties: m
                .message
                .properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: with_body.then(|| String::from_utf8_lossy(&m.message.body).into_owned()),
            body_len: m.message.body.len(),
        }
    }

    fn text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<20}{v}\n"));
        line("OffsetID:", self.offset_msg_id.clone());
        line("MsgId:", self.msg_id.clone());
        line("Topic:", self.topic.clone());
        line(
            "Tags:",
            format!("[{}]", self.tags.clone().unwrap_or_default()),
        );
        line("Keys:", format!("[{}]", self.keys.join(" ")));
        line("Queue ID:", self.queue_id.to_string());
        line("Queue Offset:", self.queue_offset.to_string());
        line("CommitLog Offset:", self.commit_log_offset.to_string());
        line("Reconsume Times:", self.reconsume_times.to_string());
        line("Born Timestamp:", format_millis(self.born_timestamp));
        line("Store Timestamp:", format_millis(self.store_timestamp));
        line("Born Host:", self.born_host.clone());
        line("Store Host:", self.store_host.clone());
        line("System Flag:", self.sys_flag.to_string());
        line("Properties:", format!("{:?}", self.properties));
        if let Some(b) = &self.body {
            line("Message Body:", b.clone());
        }
        s
    }
}

fn print_messages(admin: &Admin, msgs: &[MessageExt], with_body: bool) -> anyhow::Result<()> {
    let views: Vec<MsgView> = msgs.iter().map(|m| MsgView::new(m, with_body)).collect();
    admin.print(&views, || {
        if views.is_empty() {
            return "no message found".to_string();
        }
        views
            .iter()
            .map(MsgView::text)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// QUERY_MESSAGE to every master of `topic`.
async fn query_message(
    admin: &Admin,
    topic: &str,
    key: &str,
    max_num: i32,
    range: (i64, i64),
    unique: bool,
) -> anyhow::Result<Vec<MessageExt>> {
    let header = QueryMessageRequestHeader {
        topic: topic.to_string(),
        key: key.to_string(),
        max_num,
        begin_timestamp: range.0,
        end_timestamp: range.1,
        unique_key_query: Some(unique),
    };
    let mut out = Vec::new();
    for (_, addr) in admin.route_masters(topic).await? {
        let mut cmd = RemotingCommand::request(RequestCode::QUERY_MESSAGE);
        header.write_to(&mut cmd);
        let resp = admin.broker_call(&addr, cmd).await?;
        match resp.code {
            ResponseCode::SUCCESS => out.extend(
                MessageExt::decode_all(&resp.body, true)
                    .map_err(|e| anyhow!("malformed messages from {addr}: {e}"))?,
            ),
            ResponseCode::QUERY_NOT_FOUND => {}
            code => bail!(
                "QUERY_MESSAGE failed at broker {addr}: code {code}: {}",
                resp.remark_str()
            ),
        }
    }
    Ok(out)
}

/// The message with offset message id `id` (VIEW_MESSAGE_BY_ID to the store host written in
/// the id), or with client id (`UNIQ_KEY`) `id` in `topic`.
pub(crate) async fn message_by_id(
    admin: &Admin,
    id: &str,
    topic: Option<&str>,
) -> anyhow::Result<MessageExt> {
    if let Ok((host, offset)) = decode_message_id(id) {
        let addr = BrokerAddr::parse(&host.to_string()).context("bad store host in message id")?;
        let cmd =
            RemotingCommand::request(RequestCode::VIEW_MESSAGE_BY_ID).with_ext("offset", offset);
        let resp = admin.broker_ok(&addr, cmd).await?;
        let (msg, _) = MessageExt::decode(&resp.body, true)
            .map_err(|e| anyhow!("malformed message from {addr}: {e}"))?;
        return Ok(msg);
    }
    let Some(topic) = topic else {
        bail!("`{id}` is not an offset message id; give the topic with -t to look up a client id");
    };
    let msgs = query_message(admin, topic, id, 32, (0, i64::MAX), true).await?;
    msgs.into_iter()
        .find(|m| m.message.uniq_key() == Some(id))
        .with_context(|| format!("message `{id}` not found in topic `{topic}`"))
}

/// Messages of `topic` with key `key` stored within `range` (epoch ms), at most `max_num` per
/// master.
pub(crate) async fn messages_by_key(
    admin: &Admin,
    topic: &str,
    key: &str,
    max_num: i32,
    range: (i64, i64),
) -> anyhow::Result<Vec<MessageExt>> {
    let msgs = query_message(admin, topic, key, max_num, range, false).await?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.message.keys().contains(&key))
        .collect())
}

/// Every copy of the message with client id `uniq_key` in the retry and dead-letter topics of
/// `groups`: its retry history, oldest first. Groups without such topics are skipped.
pub(crate) async fn retry_history(
    admin: &Admin,
    uniq_key: &str,
    groups: &[String],
) -> Vec<MessageExt> {
    let mut out = Vec::new();
    for group in groups {
        for topic in [client::retry_topic(group), client::dlq_topic(group)] {
            if let Ok(msgs) = query_message(admin, &topic, uniq_key, 64, (0, i64::MAX), true).await
            {
                out.extend(
                    msgs.into_iter()
                        .filter(|m| m.message.uniq_key() == Some(uniq_key)),
                );
            }
        }
    }
    out.sort_by_key(|m| m.store_timestamp);
    out
}

/// Up to `limit` messages of `topic` from the start of each readable queue.
pub(crate) async fn read_topic(
    admin: &Admin,
    topic: &str,
    limit: usize,
) -> anyhow::Result<Vec<MessageExt>> {
    let queues = read_queues(admin, topic, None, None).await?;
    read_range(admin, &queues, None, (None, None), "*", limit).await
}

/// Sends a dead-letter message of `group` back to the group's retry topic with its reconsume
/// count reset, so the group's consumers receive it again under its original topic (the
/// `RETRY_TOPIC` property) and message id. The caller checks that `dead` is in the group's
/// dead-letter topic. Returns the send result as JSON.
pub(crate) async fn resend_dead_letter(
    admin: &Admin,
    group: &str,
    dead: &MessageExt,
) -> anyhow::Result<serde_json::Value> {
    let mut msg = Message::new(client::retry_topic(group), dead.message.body.clone());
    msg.flag = dead.message.flag;
    for (k, v) in dead.message.properties.iter() {
        if !BROKER_SET_PROPERTIES.contains(&k) {
            msg.properties.insert(k, v);
        }
    }
    let producer = Producer::start(
        admin.client_config()?,
        ProducerConfig::new(TOOLS_PRODUCER_GROUP),
    )
    .await?;
    let result = producer.send(msg).await;
    producer.shutdown().await;
    let r = result?;
    Ok(serde_json::json!({
        "status": format!("{:?}", r.send_status),
        "msg_id": r.msg_id,
        "offset_msg_id": r.offset_msg_id,
        "topic": r.message_queue.topic,
        "queue_id": r.message_queue.queue_id,
        "queue_offset": r.queue_offset,
    }))
}

/// Properties the broker sets while storing, retrying or delaying a message; a re-sent copy
/// drops them so it is stored as a fresh message.
const BROKER_SET_PROPERTIES: &[&str] = &[
    MessageConst::PROPERTY_DELAY_TIME_LEVEL,
    MessageConst::PROPERTY_REAL_TOPIC,
    MessageConst::PROPERTY_REAL_QUEUE_ID,
    MessageConst::PROPERTY_MIN_OFFSET,
    MessageConst::PROPERTY_MAX_OFFSET,
    MessageConst::PROPERTY_TRANSACTION_PREPARED,
    MessageConst::PROPERTY_RECONSUME_TIME,
    MessageConst::PROPERTY_CLUSTER,
    MessageConst::PROPERTY_WAIT_STORE_MSG_OK,
];

pub(super) async fn query_by_id(admin: &Admin, a: QueryMsgByIdArgs) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for id in a.ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        found.push(message_by_id(admin, id, a.topic.as_deref()).await?);
    }
    print_messages(admin, &found, true)
}

pub(super) async fn query_by_key(admin: &Admin, a: QueryMsgByKeyArgs) -> anyhow::Result<()> {
    let begin = a.begin.as_deref().map(parse_time).transpose()?.unwrap_or(0);
    let end = a
        .end
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(i64::MAX);
    let msgs = messages_by_key(admin, &a.topic, &a.key, a.max_num, (begin, end)).await?;
    let views: Vec<MsgView> = msgs.iter().map(|m| MsgView::new(m, false)).collect();
    admin.print(&views, || {
        let mut t = table(&["#Message ID", "#QID", "#Offset", "#Store Time"]);
        for v in &views {
            t.add_row([
                v.msg_id.clone(),
                v.queue_id.to_string(),
                v.queue_offset.to_string(),
                format_millis(v.store_timestamp),
            ]);
        }
        t.to_string()
    })
}

/// A readable queue with the master that serves it.
struct QueueAt {
    mq: MessageQueue,
    addr: BrokerAddr,
}

/// The readable queues of `topic`, optionally only those of one broker name / queue id.
async fn read_queues(
    admin: &Admin,
    topic: &str,
    broker: Option<&str>,
    queue: Option<i32>,
) -> anyhow::Result<Vec<QueueAt>> {
    let route = admin.route(topic).await?;
    let masters: BTreeMap<String, BrokerAddr> = masters_of(&route).into_iter().collect();
    let mut out = Vec::new();
    for qd in &route.queue_datas {
        if broker.is_some_and(|b| b != qd.broker_name) {
            continue;
        }
        let Some(addr) = masters.get(&qd.broker_name) else {
            continue;
        };
        for q in 0..qd.read_queue_nums {
            if queue.is_some_and(|id| id != q) {
                continue;
            }
            out.push(QueueAt {
                mq: MessageQueue::new(topic, qd.broker_name.clone(), q),
                addr: addr.clone(),
            });
        }
    }
    if out.is_empty() {
        bail!("no readable queue of `{topic}` matches");
    }
    Ok(out)
}

async fn offset_call<H: CommandHeader>(
    admin: &Admin,
    addr: &BrokerAddr,
    code: i32,
    header: &impl CommandHeader,
) -> anyhow::Result<H> {
    let mut cmd = RemotingCommand::request(code);
    header.write_to(&mut cmd);
    let resp = admin.broker_ok(addr, cmd).await?;
    Ok(H::from_command(&resp)?)
}

async fn min_offset(admin: &Admin, q: &QueueAt) -> anyhow::Result<i64> {
    let h = GetMinOffsetRequestHeader {
        topic: q.mq.topic.clone(),
        queue_id: q.mq.queue_id,
        bname: None,
    };
    let r: GetMinOffsetResponseHeader =
        offset_call(admin, &q.addr, RequestCode::GET_MIN_OFFSET, &h).await?;
    Ok(r.offset)
}

async fn max_offset(admin: &Admin, q: &QueueAt) -> anyhow::Result<i64> {
    let h = GetMaxOffsetRequestHeader {
        topic: q.mq.topic.clone(),
        queue_id: q.mq.queue_id,
        committed: None,
        bname: None,
    };
    let r: GetMaxOffsetResponseHeader =
        offset_call(admin, &q.addr, RequestCode::GET_MAX_OFFSET, &h).await?;
    Ok(r.offset)
}

async fn offset_at(admin: &Admin, q: &QueueAt, timestamp: i64) -> anyhow::Result<i64> {
    let h = SearchOffsetRequestHeader {
        topic: q.mq.topic.clone(),
        queue_id: q.mq.queue_id,
        timestamp,
        boundary_type: None,
        bname: None,
    };
    let r: SearchOffsetResponseHeader =
        offset_call(admin, &q.addr, RequestCode::SEARCH_OFFSET_BY_TIMESTAMP, &h).await?;
    Ok(r.offset)
}

/// One non-committing, non-suspending pull; returns the messages and the next offset.
async fn pull(
    admin: &Admin,
    q: &QueueAt,
    offset: i64,
    max: i32,
    sub_expression: &str,
) -> anyhow::Result<(Vec<MessageExt>, i64)> {
    let header = PullMessageRequestHeader {
        consumer_group: TOOLS_CONSUMER_GROUP.to_string(),
        topic: q.mq.topic.clone(),
        queue_id: q.mq.queue_id,
        queue_offset: offset,
        max_msg_nums: max,
        sys_flag: PullSysFlag::build(false, false, true, false),
        commit_offset: 0,
        suspend_timeout_millis: 0,
        subscription: Some(sub_expression.to_string()),
        sub_version: 0,
        expression_type: Some("TAG".to_string()),
        max_msg_bytes: None,
        request_source: None,
        proxy_frowardclient_id: None,
        bname: None,
    };
    let mut cmd = RemotingCommand::request(RequestCode::PULL_MESSAGE);
    header.write_to(&mut cmd);
    let resp = admin.broker_call(&q.addr, cmd).await?;
    match resp.code {
        ResponseCode::SUCCESS => {
            let h = PullMessageResponseHeader::from_command(&resp)?;
            let msgs = MessageExt::decode_all(&resp.body, true)
                .map_err(|e| anyhow!("malformed messages from {}: {e}", q.addr))?;
            Ok((msgs, h.next_begin_offset))
        }
        ResponseCode::PULL_NOT_FOUND
        | ResponseCode::PULL_RETRY_IMMEDIATELY
        | ResponseCode::PULL_OFFSET_MOVED => {
            let next = PullMessageResponseHeader::from_command(&resp)
                .map(|h| h.next_begin_offset)
                .unwrap_or(offset);
            Ok((Vec::new(), next))
        }
        code => bail!(
            "PULL_MESSAGE failed at broker {}: code {code}: {}",
            q.addr,
            resp.remark_str()
        ),
    }
}

/// Whether `tags` passes a tag expression (`*` or `A || B`).
fn tag_matches(expr: &str, tags: Option<&str>) -> bool {
    let expr = expr.trim();
    if expr.is_empty() || expr == "*" {
        return true;
    }
    tags.is_some_and(|t| expr.split("||").any(|e| e.trim() == t))
}

/// Messages of the given queues between the start and end offsets, at most `limit`.
async fn read_range(
    admin: &Admin,
    queues: &[QueueAt],
    start: Option<i64>,
    time: (Option<i64>, Option<i64>),
    sub_expression: &str,
    limit: usize,
) -> anyhow::Result<Vec<MessageExt>> {
    let mut out = Vec::new();
    for q in queues {
        let mut offset = match (start, time.0) {
            (Some(o), _) => o,
            (None, Some(t)) => offset_at(admin, q, t).await?,
            (None, None) => min_offset(admin, q).await?,
        };
        let end = match time.1 {
            Some(t) => offset_at(admin, q, t)
                .await?
                .min(max_offset(admin, q).await?),
            None => max_offset(admin, q).await?,
        };
        while offset < end && out.len() < limit {
            let (msgs, next) = pull(admin, q, offset, 32, sub_expression).await?;
            out.extend(
                msgs.into_iter().filter(|m| {
                    m.queue_offset < end && tag_matches(sub_expression, m.message.tags())
                }),
            );
            if next <= offset {
                break;
            }
            offset = next;
        }
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

pub(super) async fn query_by_offset(admin: &Admin, a: QueryMsgByOffsetArgs) -> anyhow::Result<()> {
    let queues = read_queues(admin, &a.topic, Some(&a.broker_name), Some(a.queue_id)).await?;
    let (msgs, _) = pull(admin, &queues[0], a.offset, 1, "*").await?;
    let msg = msgs
        .into_iter()
        .find(|m| m.queue_offset == a.offset)
        .with_context(|| format!("no message at offset {} of {}", a.offset, queues[0].mq))?;
    print_messages(admin, &[msg], true)
}

pub(super) async fn consume(admin: &Admin, a: ConsumeMessageArgs) -> anyhow::Result<()> {
    if a.offset.is_some() && (a.broker_name.is_none() || a.queue_id.is_none()) {
        bail!("-o needs -b <broker name> and -i <queue id>");
    }
    let queues = read_queues(admin, &a.topic, a.broker_name.as_deref(), a.queue_id).await?;
    let begin = a.begin.as_deref().map(parse_time).transpose()?;
    let end = a.end.as_deref().map(parse_time).transpose()?;
    let msgs = read_range(admin, &queues, a.offset, (begin, end), "*", a.count).await?;
    print_messages(admin, &msgs, true)
}

pub(super) async fn print_msg(admin: &Admin, a: PrintMsgArgs) -> anyhow::Result<()> {
    let queues = read_queues(admin, &a.topic, None, None).await?;
    let begin = a.begin.as_deref().map(parse_time).transpose()?;
    let end = a.end.as_deref().map(parse_time).transpose()?;
    let msgs = read_range(
        admin,
        &queues,
        None,
        (begin, end),
        &a.sub_expression,
        usize::MAX,
    )
    .await?;
    print_messages(admin, &msgs, a.print_body)
}

pub(super) async fn send(admin: &Admin, a: SendMessageArgs) -> anyhow::Result<()> {
    let mut msg = Message::new(a.topic.clone(), a.body.clone().into_bytes());
    if let Some(tags) = &a.tags {
        msg = msg.with_tags(tags.clone());
    }
    if let Some(keys) = &a.keys {
        msg = msg.with_keys(keys.split_whitespace());
    }
    let producer = Producer::start(
        admin.client_config()?,
        ProducerConfig::new(TOOLS_PRODUCER_GROUP),
    )
    .await?;
    let result = match (&a.broker_name, a.queue_id) {
        (Some(b), Some(q)) => {
            producer
                .send_to_queue(msg, MessageQueue::new(a.topic.clone(), b.clone(), q))
                .await
        }
        (None, None) => producer.send(msg).await,
        _ => {
            producer.shutdown().await;
            bail!("-b <broker name> and -i <queue id> go together");
        }
    };
    producer.shutdown().await;
    let r = result?;
    let out = serde_json::json!({
        "status": format!("{:?}", r.send_status),
        "msg_id": r.msg_id,
        "offset_msg_id": r.offset_msg_id,
        "broker_name": r.message_queue.broker_name,
        "queue_id": r.message_queue.queue_id,
        "queue_offset": r.queue_offset,
    });
    admin.print(&out, || {
        let mut t = table(&["#Broker Name", "#QID", "#Send Result", "#MsgId"]);
        t.add_row([
            r.message_queue.broker_name.clone(),
            r.message_queue.queue_id.to_string(),
            format!("{:?}", r.send_status),
            r.msg_id.clone(),
        ]);
        t.to_string()
    })
}
