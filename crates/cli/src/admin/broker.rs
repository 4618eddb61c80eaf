//! Broker commands: clusterList (106, then 28 to each broker), brokerStatus (28),
//! getBrokerConfig (26) and updateBrokerConfig (25, body `key=value`).

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Args;
use remoting::protocol::{from_fastjson, KVTable};
use remoting::{BrokerAddr, RemotingCommand, RequestCode};
use serde::Serialize;

use super::{parse_broker, table, Admin};

#[derive(Args, Debug)]
pub struct ClusterListArgs {
    /// Only this cluster.
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
}

#[derive(Args, Debug)]
pub struct BrokerTargetArgs {
    /// Broker address (`host:port`).
    #[arg(short = 'b', long = "brokerAddr")]
    broker: Option<String>,
    /// Every broker of this cluster.
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpdateBrokerConfigArgs {
    #[command(flatten)]
    target: BrokerTargetArgs,
    /// Config key (upstream name, e.g. `flushDiskType`).
    #[arg(short = 'k', long = "key")]
    key: String,
    /// New value.
    #[arg(short = 'v', long = "value")]
    value: String,
}

/// GET_BROKER_RUNTIME_INFO of one broker.
async fn runtime_info(
    admin: &Admin,
    addr: &BrokerAddr,
) -> anyhow::Result<BTreeMap<String, String>> {
    let resp = admin
        .broker_ok(
            addr,
            RemotingCommand::request(RequestCode::GET_BROKER_RUNTIME_INFO),
        )
        .await?;
    let kv: KVTable = from_fastjson(&resp.body).context("malformed runtime info")?;
    Ok(kv.table)
}

/// One broker of `clusterList`.
#[derive(Serialize)]
pub(crate) struct ClusterRow {
    cluster: String,
    broker_name: String,
    broker_id: i64,
    addr: String,
    version: String,
    put_tps: String,
    get_tps: String,
    msg_put_total_today: String,
    msg_get_total_today: String,
}

/// One row per broker of every cluster (or of `cluster`), with its runtime figures; an
/// unreachable broker keeps its row with empty figures.
pub(crate) async fn cluster_rows(
    admin: &Admin,
    cluster: Option<&str>,
) -> anyhow::Result<Vec<ClusterRow>> {
    let info = admin.cluster_info().await?;
    if let Some(c) = cluster {
        if !info.cluster_addr_table.contains_key(c) {
            anyhow::bail!("cluster `{c}` does not exist");
        }
    }
    let mut rows = Vec::new();
    for (name_of_cluster, names) in &info.cluster_addr_table {
        if cluster.is_some_and(|c| c != name_of_cluster) {
            continue;
        }
        for name in names {
            let Some(data) = info.broker_addr_table.get(name) else {
                continue;
            };
            for (id, addr) in &data.broker_addrs {
                let rt = match BrokerAddr::parse(addr) {
                    Some(b) => runtime_info(admin, &b).await.unwrap_or_default(),
                    None => BTreeMap::new(),
                };
                let get = |k: &str| rt.get(k).cloned().unwrap_or_default();
                let first = |k: &str| get(k).split_whitespace().next().unwrap_or("").to_string();
                rows.push(ClusterRow {
                    cluster: name_of_cluster.clone(),
                    broker_name: name.clone(),
                    broker_id: *id,
                    addr: addr.clone(),
                    version: get("brokerVersionDesc"),
                    put_tps: first("putTps"),
                    get_tps: first("getTransferedTps"),
                    msg_put_total_today: get("msgPutTotalTodayNow"),
                    msg_get_total_today: get("msgGetTotalTodayNow"),
                });
            }
        }
    }
    Ok(rows)
}

pub(super) async fn cluster_list(admin: &Admin, a: ClusterListArgs) -> anyhow::Result<()> {
    let rows = cluster_rows(admin, a.cluster.as_deref()).await?;
    admin.print(&rows, || {
        let mut t = table(&[
            "#Cluster Name",
            "#Broker Name",
            "#BID",
            "#Addr",
            "#Version",
            "#InTPS",
            "#OutTPS",
            "#InTotalToday",
            "#OutTotalToday",
        ]);
        for r in &rows {
            t.add_row([
                r.cluster.clone(),
                r.broker_name.clone(),
                r.broker_id.to_string(),
                r.addr.clone(),
                r.version.clone(),
                r.put_tps.clone(),
                r.get_tps.clone(),
                r.msg_put_total_today.clone(),
                r.msg_get_total_today.clone(),
            ]);
        }
        t.to_string()
    })
}

/// Addresses of `-b`, or of every broker (masters and slaves) of cluster `-c`.
async fn all_brokers(admin: &Admin, t: &BrokerTargetArgs) -> anyhow::Result<Vec<BrokerAddr>> {
    target_brokers(admin, t, false).await
}

/// The broker of `-b`, else every broker (or, with `masters_only`, every master) of the
/// cluster of `-c` as the NameServer lists it.
pub(super) async fn target_brokers(
    admin: &Admin,
    t: &BrokerTargetArgs,
    masters_only: bool,
) -> anyhow::Result<Vec<BrokerAddr>> {
    if let Some(b) = &t.broker {
        return Ok(vec![parse_broker(b)?]);
    }
    let Some(cluster) = &t.cluster else {
        anyhow::bail!("either -b <broker addr> or -c <cluster name> is required");
    };
    let info = admin.cluster_info().await?;
    let names = info
        .cluster_addr_table
        .get(cluster)
        .with_context(|| format!("cluster `{cluster}` does not exist"))?;
    Ok(names
        .iter()
        .filter_map(|n| info.broker_addr_table.get(n))
        .flat_map(|d| d.broker_addrs.iter())
        .filter(|(id, _)| !masters_only || **id == remoting::protocol::MASTER_ID)
        .filter_map(|(_, a)| BrokerAddr::parse(a))
        .collect())
}

/// Prints one key/value table per broker (or a JSON object keyed by broker address).
fn print_per_broker(
    admin: &Admin,
    all: &BTreeMap<String, BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    admin.print(all, || {
        all.iter()
            .map(|(addr, kv)| {
                let mut t = table(&["#Key", "#Value"]);
                for (k, v) in kv {
                    t.add_row([k.as_str(), v.as_str()]);
                }
                format!("============{addr}============\n{t}")
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    })
}

pub(super) async fn status(admin: &Admin, a: BrokerTargetArgs) -> anyhow::Result<()> {
    let mut all = BTreeMap::new();
    for addr in all_brokers(admin, &a).await? {
        all.insert(addr.to_string(), runtime_info(admin, &addr).await?);
    }
    print_per_broker(admin, &all)
}

pub(super) async fn get_config(admin: &Admin, a: BrokerTargetArgs) -> anyhow::Result<()> {
    let mut all = BTreeMap::new();
    for addr in all_brokers(admin, &a).await? {
        let resp = admin
            .broker_ok(
                &addr,
                RemotingCommand::request(RequestCode::GET_BROKER_CONFIG),
            )
            .await?;
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        let kv: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        all.insert(addr.to_string(), kv);
    }
    print_per_broker(admin, &all)
}

pub(super) async fn update_config(admin: &Admin, a: UpdateBrokerConfigArgs) -> anyhow::Result<()> {
    let mut done = Vec::new();
    for addr in all_brokers(admin, &a.target).await? {
        let body = format!("{}={}\n", a.key, a.value);
        let cmd = RemotingCommand::request(RequestCode::UPDATE_BROKER_CONFIG)
            .with_body(body.into_bytes());
        admin.broker_ok(&addr, cmd).await?;
        done.push(addr.to_string());
    }
    let out = serde_json::json!({"key": a.key, "value": a.value, "brokers": done});
    admin.print(&out, || {
        done.iter()
            .map(|b| format!("update broker config success, {b}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
