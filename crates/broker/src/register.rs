//! Registration with the NameServers: REGISTER_BROKER (103, two-way) to every NameServer at
//! start, every `registerNameServerPeriod` and whenever the topic table changes, except that a
//! change made only of auto-created topics (first send, `%RETRY%` groups) is registered with a
//! oneway 103, which the NameServer does not answer, as upstream does; body
//! `{"filterServerList":[],"topicConfigSerializeWrapper":{...}}` with `bodyCrc32` (upstream's
//! CRC32 of the body, masked to 31 bits) and `compressed:"false"` in the header.
//! UNREGISTER_BROKER (104) on a clean stop. In controller mode the first registration waits
//! for the role the controllers give (see `replicas`), and each role change registers again
//! at once (a new master as broker 0, a slave under its replica id).

use std::sync::Arc;
use std::time::Duration;

use remoting::client::RemotingClient;
use remoting::headers::{
    CommandHeader, RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
    UnRegisterBrokerRequestHeader,
};
use remoting::protocol::{perm, RegisterBrokerBody, TopicConfigSerializeWrapper};
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};

use crate::context::BrokerContext;

/// Shortest pause between two registrations, whatever the config says.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// `bodyCrc32` as upstream computes it (`UtilAll.crc32`: CRC32 & 0x7FFFFFFF).
pub(crate) fn body_crc32(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

pub(crate) fn ha_server_addr(state: &BrokerContext) -> String {
    let c = state.config();
    let ip = c.broker_ip2.unwrap_or_else(|| c.advertised_ip());
    let port = state
        .ha
        .listen_port
        .get()
        .copied()
        .or(c.ha_listen_port)
        .unwrap_or_else(|| state.store_host().port().saturating_add(1));
    format!("{ip}:{port}")
}

/// Registers with every NameServer once (`oneway`: without waiting for answers); failures are
/// logged.
pub(crate) async fn register_all(state: &BrokerContext, client: &RemotingClient, oneway: bool) {
    let (name_servers, timeout, header) = {
        let c = state.config();
        let header = RegisterBrokerRequestHeader {
            broker_name: c.broker_name.clone(),
            broker_addr: state.broker_addr(),
            cluster_name: c.broker_cluster_name.clone(),
            ha_server_addr: String::new(),
            broker_id: c.broker_id,
            heartbeat_timeout_millis: None,
            enable_acting_master: Some(c.enable_acting_master),
            compressed: false,
            body_crc32: None,
            zone_name: None,
        };
        (
            c.name_servers(),
            Duration::from_millis(c.register_broker_timeout_mills),
            header,
        )
    };
    let body = RegisterBrokerBody {
        filter_server_list: Vec::new(),
        topic_config_serialize_wrapper: registered_topics(state),
    };
    let body = match body.encode(false) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the registration body");
            return;
        }
    };
    let header = RegisterBrokerRequestHeader {
        ha_server_addr: ha_server_addr(state),
        body_crc32: Some(body_crc32(&body)),
        ..header
    };
    let mut answered = false;
    let mut master: Option<RegisterBrokerResponseHeader> = None;
    for ns in name_servers {
        let mut cmd =
            RemotingCommand::request(RequestCode::REGISTER_BROKER).with_body(body.clone());
        header.write_to(&mut cmd);
        if oneway {
            if let Err(e) = client.invoke_namesrv_oneway(&ns, cmd).await {
                tracing::warn!(namesrv = %ns, error = %e, "oneway registration failed");
            }
            continue;
        }
        match client.invoke_namesrv(&ns, cmd, timeout).await {
            Ok(resp) if resp.code == ResponseCode::SUCCESS => {
                tracing::debug!(namesrv = %ns, "registered");
                answered = true;
                if let Ok(h) = RegisterBrokerResponseHeader::from_command(&resp) {
                    if h.master_addr.as_deref().is_some_and(|a| !a.is_empty()) {
                        master = Some(h);
                    }
                }
            }
            Ok(resp) => {
                tracing::warn!(namesrv = %ns, code = resp.code, remark = resp.remark_str(), "registration refused")
            }
            Err(e) => tracing::warn!(namesrv = %ns, error = %e, "registration failed"),
        }
    }
    // In controller mode the controllers name the master, not the NameServers.
    if answered && state.config().is_slave() && !state.config().enable_controller_mode {
        learn_master(state, master);
    }
}

/// The topic table as NameServers should see it: on a broker that is not read-write
/// (`brokerPermission` 4 or 2), every topic's permission is masked by the broker's, as
/// upstream's `registerBrokerAll` does, so routes show read-only queues and producers avoid them.
fn registered_topics(state: &BrokerContext) -> TopicConfigSerializeWrapper {
    let mut wrapper = state.topics.snapshot();
    let broker_perm = state.config().broker_permission;
    if !(perm::is_writeable(broker_perm) && perm::is_readable(broker_perm)) {
        for t in wrapper.topic_config_table.values_mut() {
            t.perm &= broker_perm;
        }
    }
    wrapper
}

/// A slave takes its master's addresses from the registration answer (`masterAddr`,
/// `haServerAddr`); no master in any answer means the master is gone.
fn learn_master(state: &BrokerContext, answer: Option<RegisterBrokerResponseHeader>) {
    let configured_ha = state.config().ha_master_address.clone();
    let (addr, ha) = match answer {
        Some(h) => (
            h.master_addr.as_deref().and_then(BrokerAddr::parse),
            h.ha_server_addr.filter(|a| !a.is_empty()),
        ),
        None => (None, None),
    };
    {
        let mut cur = state.ha.master_addr.write();
        if *cur != addr {
            tracing::info!(master = ?addr, "master address changed");
            *cur = addr;
        }
    }
    state.ha.set_master_ha_addr(configured_ha.or(ha));
}

/// Registers at start, periodically and on topic changes, until the broker stops; then
/// unregisters.
pub(crate) async fn run(state: Arc<BrokerContext>, client: RemotingClient) {
    let mut stop = state.stop_signal();
    let mut oneway = false;
    let controller_mode = state.config().enable_controller_mode;
    let mut role = state.ha.role_epoch.subscribe();
    if controller_mode {
        // Nothing to tell the NameServers before the controllers gave this broker a role.
        tokio::select! {
            r = role.wait_for(|e| *e > 0) => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        role.mark_unchanged();
    }
    loop {
        register_all(&state, &client, oneway).await;
        let period =
            Duration::from_millis(state.config().register_name_server_period).max(MIN_PERIOD);
        oneway = false;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = state.topics.changed() => oneway = state.topics.take_only_auto_created(),
            // Controller mode: a new role is registered at once (master as broker 0).
            _ = role.changed(), if controller_mode => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    unregister_all(&state, &client).await;
}

async fn unregister_all(state: &BrokerContext, client: &RemotingClient) {
    let (name_servers, timeout, header) = {
        let c = state.config();
        (
            c.name_servers(),
            Duration::from_millis(c.register_broker_timeout_mills),
            UnRegisterBrokerRequestHeader {
                broker_name: c.broker_name.clone(),
                broker_addr: state.broker_addr(),
                cluster_name: c.broker_cluster_name.clone(),
                broker_id: c.broker_id,
            },
        )
    };
    for ns in name_servers {
        let mut cmd = RemotingCommand::request(RequestCode::UNREGISTER_BROKER);
        header.write_to(&mut cmd);
        if let Err(e) = client.invoke_namesrv(&ns, cmd, timeout).await {
            tracing::warn!(namesrv = %ns, error = %e, "unregistration failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_capture_rule() {
        // zlib.crc32(b"123456789") = 0xCBF43926; masked to 31 bits.
        assert_eq!(body_crc32(b"123456789"), 0x4BF4_3926);
    }
}
