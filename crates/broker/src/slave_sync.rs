//! A slave's copy of its master's metadata (upstream's `SlaveSynchronize`): every
//! `slaveSynchronizeInterval`, and as soon as the master's address is learnt, it fetches
//! GET_ALL_TOPIC_CONFIG (21), GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201), GET_ALL_CONSUMER_OFFSET
//! (43) and GET_ALL_DELAY_OFFSET (45). Topics and groups are replaced when their data version
//! differs; consumer offsets and delay progress are merged keeping the larger value, so
//! offsets committed to this slave while the master was away survive the master's return
//! (upstream overwrites them).

use std::sync::Arc;
use std::time::Duration;

use remoting::protocol::{from_fastjson, TopicConfigSerializeWrapper};
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};

use crate::state::BrokerState;
use crate::subscription::SubscriptionGroupWrapper;

/// Timeout of each request to the master.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Synchronises until the broker stops.
pub(crate) async fn run(state: Arc<BrokerState>) {
    let mut stop = state.stop_signal();
    let mut master_ha = state.ha.master_ha_addr.subscribe();
    loop {
        let master = state.ha.master_addr.read().clone();
        if let Some(master) = master {
            if let Err(e) = sync_once(&state, &master).await {
                tracing::warn!(master = %master, error = %e, "slave synchronisation failed");
            }
        }
        let interval = Duration::from_millis(state.config.read().slave_synchronize_interval)
            .max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = master_ha.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

async fn fetch(state: &BrokerState, master: &BrokerAddr, code: i32) -> Result<Vec<u8>, String> {
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

async fn sync_once(state: &BrokerState, master: &BrokerAddr) -> Result<(), String> {
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
    state.offsets.merge_max(&body).map_err(|e| e.to_string())?;

    let body = fetch(state, master, RequestCode::GET_ALL_DELAY_OFFSET).await?;
    state
        .delay_offsets
        .merge_max(&body)
        .map_err(|e| e.to_string())?;
    tracing::debug!(master = %master, "synchronised from master");
    Ok(())
}
