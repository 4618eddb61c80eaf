//! A slave's copy of its master's metadata (upstream's `SlaveSynchronize`): every
//! `slaveSynchronizeInterval`, and as soon as the master's address is learnt, it fetches
//! GET_ALL_TOPIC_CONFIG (21), GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201), GET_ALL_CONSUMER_OFFSET
//! (43), GET_ALL_DELAY_OFFSET (45) and GET_TIMER_CHECK_POINT (60; applied once this slave's
//! CommitLog covers it, see [`crate::timer`]). Topics and groups are replaced when their data version
//! differs; consumer offsets and delay progress are merged keeping the larger value, so
//! offsets committed to this slave while the master was away survive the master's return
//! (upstream overwrites them). Offsets consumers committed to this slave that are ahead of the
//! master's are then pushed to the master with UPDATE_CONSUMER_OFFSET (15) carrying
//! [`KeepLargerOffsetHeader`], which the master applies only if it raises its offset: a returning
//! master learns them before a consumer reads them from it.

use std::sync::Arc;
use std::time::Duration;

use remoting::broker_headers::{KeepLargerOffsetHeader, UpdateConsumerOffsetRequestHeader};
use remoting::headers::CommandHeader;
use remoting::protocol::{from_fastjson, TopicConfigSerializeWrapper};
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};

use crate::context::BrokerContext;
use crate::offset::QueueOffset;
use crate::schedule::DelayService;
use crate::subscription::SubscriptionGroupWrapper;
use crate::timer::TimerService;

/// Timeout of each request to the master.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Synchronises until the broker stops.
pub(crate) async fn run(
    state: Arc<BrokerContext>,
    delay: Arc<DelayService>,
    timer: Arc<TimerService>,
) {
    let mut stop = state.stop_signal();
    let mut master_ha = state.ha.master_ha_addr.subscribe();
    loop {
        let master = state.ha.master_addr.read().clone();
        if let Some(master) = master {
            if let Err(e) = sync_once(&state, &delay, &timer, &master).await {
                tracing::warn!(master = %master, error = %e, "slave synchronisation failed");
            }
        }
        let interval = Duration::from_millis(state.config().slave_synchronize_interval)
            .max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = master_ha.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

async fn fetch(state: &BrokerContext, master: &BrokerAddr, code: i32) -> Result<Vec<u8>, String> {
    let resp = state
        .client
        .invoke(master, RemotingCommand::request(code), TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if resp.code != ResponseCode::SUCCESS {
        return Err(format!(
            "code {code} answered {}: {}",
            resp.code,
            resp.remark_str()
        ));
    }
    Ok(resp.body.to_vec())
}

async fn sync_once(
    state: &BrokerContext,
    delay: &DelayService,
    timer: &TimerService,
    master: &BrokerAddr,
) -> Result<(), String> {
    let body = fetch(state, master, RequestCode::GET_ALL_TOPIC_CONFIG).await?;
    let topics: TopicConfigSerializeWrapper = from_fastjson(&body).map_err(|e| e.to_string())?;
    state
        .topics
        .replace_from_master(topics)
        .map_err(|e| e.to_string())?;

    let body = fetch(state, master, RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG).await?;
    let groups: SubscriptionGroupWrapper = from_fastjson(&body).map_err(|e| e.to_string())?;
    state
        .groups
        .replace_from_master(groups)
        .map_err(|e| e.to_string())?;

    let body = fetch(state, master, RequestCode::GET_ALL_CONSUMER_OFFSET).await?;
    let merged = state.offsets.merge_max(&body).map_err(|e| e.to_string())?;
    if merged.moved > 0 {
        // As upstream's SlaveSynchronize: what was learnt is on disk soon, not only at the
        // next periodic persist, so a slave killed right after a sync keeps it.
        state.offsets.persist();
    }
    for ahead in merged.ahead {
        push_offset(state, master, ahead).await?;
    }

    let body = fetch(state, master, RequestCode::GET_ALL_DELAY_OFFSET).await?;
    if delay.offsets.merge_max(&body).map_err(|e| e.to_string())? {
        delay.offsets.persist();
    }

    let body = fetch(state, master, RequestCode::GET_TIMER_CHECK_POINT).await?;
    timer
        .learn_from_master(&body, state.store.commit_log_max_offset())
        .map_err(|e| e.to_string())?;
    tracing::debug!(master = %master, "synchronised from master");
    Ok(())
}

/// Pushes an offset committed to this slave to the master.
async fn push_offset(
    state: &BrokerContext,
    master: &BrokerAddr,
    offset: QueueOffset,
) -> Result<(), String> {
    let mut cmd = RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET);
    UpdateConsumerOffsetRequestHeader {
        consumer_group: offset.group.clone(),
        topic: offset.topic.clone(),
        queue_id: offset.queue_id,
        commit_offset: offset.offset,
        bname: None,
    }
    .write_to(&mut cmd);
    KeepLargerOffsetHeader { keep_larger: true }.write_to(&mut cmd);
    let resp = state
        .client
        .invoke(master, cmd, TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if resp.code == ResponseCode::SUCCESS {
        tracing::info!(
            master = %master,
            topic = %offset.topic,
            group = %offset.group,
            queue = offset.queue_id,
            offset = offset.offset,
            "pushed a consumer offset committed to this slave to the master"
        );
    } else {
        // Permanent (e.g. the master no longer has the topic): not retried.
        tracing::warn!(
            master = %master,
            code = resp.code,
            remark = resp.remark_str(),
            topic = %offset.topic,
            group = %offset.group,
            "master refused a consumer offset committed to this slave"
        );
    }
    state.offsets.pushed(&offset);
    Ok(())
}
