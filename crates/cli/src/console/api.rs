//! The console's JSON API: one handler per route of `docs/console-api.yaml`. Each gathers its
//! answer with the `apogee admin` functions, so the shapes match `apogee admin --json`. A
//! failure is answered with a status and `{"error": "..."}`: 400 for a bad request, 404 when
//! the named topic, group or message does not exist, 502 when the cluster cannot be asked.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use remoting::message::decode_message_id;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::message::{self, MsgView};
use crate::admin::{broker, group, topic, Admin};

type Shared = State<Arc<Admin>>;

/// Most dead-letter messages one listing returns.
const MAX_DLQ_LIMIT: usize = 1000;

/// An API failure: the HTTP status and the reason shown to the user.
pub(super) struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    /// A failed cluster call: 404 when it says something does not exist, else 502.
    fn upstream(e: anyhow::Error) -> Self {
        let text = format!("{e:#}");
        let status = if text.contains("does not exist") || text.contains("not found") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_GATEWAY
        };
        ApiError(status, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `GET /api/cluster`: `apogee admin clusterList --json`.
pub(super) async fn cluster(State(admin): Shared) -> ApiResult {
    let rows = broker::cluster_rows(&admin, None)
        .await
        .map_err(ApiError::upstream)?;
    to_json(&rows)
}

/// `GET /api/topics`: `apogee admin topicList -c --json`.
pub(super) async fn topics(State(admin): Shared) -> ApiResult {
    let rows = topic::topic_rows(&admin)
        .await
        .map_err(ApiError::upstream)?;
    to_json(&rows)
}

/// `GET /api/topics/{topic}`: the route (`topicRoute --json`) and the queues' offsets
/// (`topicStatus --json`).
pub(super) async fn topic(State(admin): Shared, Path(name): Path<String>) -> ApiResult {
    let route = admin.route(&name).await.map_err(ApiError::upstream)?;
    let queues = topic::status_rows(&admin, &name)
        .await
        .map_err(ApiError::upstream)?;
    Ok(Json(
        json!({ "topic": name, "route": route, "queues": queues }),
    ))
}

/// `GET /api/groups`: `apogee admin consumerProgress --json` (every group, total lag).
pub(super) async fn groups(State(admin): Shared) -> ApiResult {
    let rows = group::group_totals(&admin)
        .await
        .map_err(ApiError::upstream)?;
    to_json(&rows)
}

/// Messages ever stored in `topic` that are still retained (sum of max - min offsets); 0 when
/// the topic does not exist.
async fn retained(admin: &Admin, topic: &str) -> i64 {
    topic::status_rows(admin, topic)
        .await
        .map(|rows| rows.iter().map(|r| r.max_offset - r.min_offset).sum())
        .unwrap_or(0)
}

/// `GET /api/groups/{group}`: per-queue lag (`consumerProgress -g --json`), the group's clients
/// (`consumerConnection --json`, null when none is online) and its retry and DLQ counts.
pub(super) async fn group(State(admin): Shared, Path(name): Path<String>) -> ApiResult {
    let queues = group::consume_stats(&admin, &name, None)
        .await
        .map_err(ApiError::upstream)?;
    let diff_total: i64 = queues.iter().map(|q| q.diff).sum();
    let connections = group::consumer_connections(&admin, &name).await.ok();
    let retry = retained(&admin, &client::retry_topic(&name)).await;
    let dlq = retained(&admin, &client::dlq_topic(&name)).await;
    Ok(Json(json!({
        "group": name,
        "diff_total": diff_total,
        "queues": queues,
        "connections": connections,
        "retry_messages": retry,
        "dlq_messages": dlq,
    })))
}

#[derive(Deserialize)]
pub(super) struct KeyQuery {
    topic: String,
    key: String,
    #[serde(default = "default_max")]
    max: i32,
}

fn default_max() -> i32 {
    64
}

/// `GET /api/messages?topic=T&key=K`: `apogee admin queryMsgByKey --json`.
pub(super) async fn messages_by_key(State(admin): Shared, Query(q): Query<KeyQuery>) -> ApiResult {
    if q.topic.trim().is_empty() || q.key.trim().is_empty() {
        return Err(ApiError::bad_request("both topic and key are required"));
    }
    let msgs = message::messages_by_key(&admin, &q.topic, &q.key, q.max.max(1), (0, i64::MAX))
        .await
        .map_err(ApiError::upstream)?;
    let views: Vec<MsgView> = msgs.iter().map(|m| MsgView::new(m, false)).collect();
    to_json(&views)
}

#[derive(Deserialize)]
pub(super) struct IdQuery {
    topic: Option<String>,
}

/// `GET /api/messages/{id}[?topic=T]`: the message (`queryMsgById --json`, with its body) and
/// its retry history: its copies in every group's retry and dead-letter topics.
pub(super) async fn message(
    State(admin): Shared,
    Path(id): Path<String>,
    Query(q): Query<IdQuery>,
) -> ApiResult {
    let msg = message::message_by_id(&admin, &id, q.topic.as_deref())
        .await
        .map_err(ApiError::upstream)?;
    let groups: Vec<String> = topic::topic_names(&admin)
        .await
        .map_err(ApiError::upstream)?
        .into_iter()
        .filter_map(|t| {
            t.strip_prefix(client::RETRY_GROUP_TOPIC_PREFIX)
                .map(str::to_string)
        })
        .collect();
    let history = match msg.message.uniq_key() {
        Some(key) => message::retry_history(&admin, key, &groups).await,
        None => Vec::new(),
    };
    let history: Vec<MsgView> = history.iter().map(|m| MsgView::new(m, false)).collect();
    Ok(Json(json!({
        "message": MsgView::new(&msg, true),
        "history": history,
    })))
}

#[derive(Deserialize)]
pub(super) struct LimitQuery {
    limit: Option<usize>,
}

/// `GET /api/dlq/{group}[?limit=N]`: the group's dead-letter messages with bodies (default 100,
/// at most 1000).
pub(super) async fn dead_letters(
    State(admin): Shared,
    Path(group): Path<String>,
    Query(q): Query<LimitQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_DLQ_LIMIT);
    let topic = client::dlq_topic(&group);
    let msgs = match message::read_topic(&admin, &topic, limit).await {
        Ok(m) => m,
        // No dead letter yet: the topic is created with the first one.
        Err(e) if format!("{e:#}").contains("does not exist") => Vec::new(),
        Err(e) => return Err(ApiError::upstream(e)),
    };
    let views: Vec<MsgView> = msgs.iter().map(|m| MsgView::new(m, true)).collect();
    to_json(&views)
}

#[derive(Deserialize)]
pub(super) struct ResendBody {
    /// Offset message id of the dead-letter message.
    msg_id: String,
}

/// `POST /api/dlq/{group}/resend` with `{"msg_id": "<offset message id>"}`: sends the
/// dead-letter message back to the group's retry topic (see
/// [`message::resend_dead_letter`]).
pub(super) async fn resend(
    State(admin): Shared,
    Path(group): Path<String>,
    Json(body): Json<ResendBody>,
) -> ApiResult {
    if decode_message_id(&body.msg_id).is_err() {
        return Err(ApiError::bad_request(format!(
            "`{}` is not an offset message id",
            body.msg_id
        )));
    }
    let dead = message::message_by_id(&admin, &body.msg_id, None)
        .await
        .map_err(ApiError::upstream)?;
    let dlq = client::dlq_topic(&group);
    if dead.message.topic != dlq {
        return Err(ApiError::bad_request(format!(
            "message {} is in `{}`, not in `{dlq}`",
            body.msg_id, dead.message.topic
        )));
    }
    let result = message::resend_dead_letter(&admin, &group, &dead)
        .await
        .map_err(ApiError::upstream)?;
    Ok(Json(result))
}
