//! Controller-mode commands, as upstream 5.x `mqadmin`: getControllerMetaData
//! (CONTROLLER_GET_METADATA_INFO, 1005, to any controller), getSyncStateSet
//! (CONTROLLER_GET_SYNC_STATE_DATA, 1006) and electMaster (CONTROLLER_ELECT_MASTER, 1002, with
//! `designateElect`), both sent to the leader the metadata names, and getBrokerEpoch
//! (GET_BROKER_EPOCH_CACHE, 1007, to every broker of a group or cluster), and
//! cleanBrokerMetadata (CLEAN_BROKER_DATA, 1011, to the leader), getControllerConfig
//! (GET_CONTROLLER_CONFIG, 1010) and updateControllerConfig (UPDATE_CONTROLLER_CONFIG, 1009,
//! body `key=value`), both to each controller of `-a`, and haStatus (GET_BROKER_HA_STATUS,
//! 907, to a broker or every master of a cluster; any broker, in controller mode or not).
//!
//! The text output is upstream's `#Key<TAB>value` lines, so scripts written against mqadmin
//! read it; `--json` prints the response bodies with upstream's field names.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use remoting::controller_headers::{
    BrokerReplicasInfo, CleanControllerBrokerDataRequestHeader, ElectMasterRequestHeader,
    ElectMasterResponseBody, ElectMasterResponseHeader, EpochEntryBody, EpochEntryCache,
    GetMetaDataResponseHeader, HaRuntimeInfo, ReplicaIdentity,
};
use remoting::headers::CommandHeader;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};
use serde::Serialize;

use super::{check, Admin};

#[derive(Args, Debug)]
pub struct ControllerMetaArgs {
    /// Controller address `host:port` (or a `;`-separated list: the first that answers).
    #[arg(short = 'a', long = "controllerAddress")]
    controller: String,
}

#[derive(Args, Debug)]
pub struct GetSyncStateSetArgs {
    /// Controller address `host:port` (or a `;`-separated list); the request goes to the
    /// leader it names.
    #[arg(short = 'a', long = "controllerAddress")]
    controller: String,
    /// The broker group (brokerName) to show.
    #[arg(short = 'b', long = "brokerName", required_unless_present = "cluster")]
    broker_name: Option<String>,
    /// Every broker group of this cluster (names from the NameServer).
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
    /// Print again every this many seconds until stopped (upstream's `-i`).
    #[arg(short = 'i', long = "interval")]
    interval: Option<u64>,
}

#[derive(Args, Debug)]
pub struct GetBrokerEpochArgs {
    /// Every broker (master and slaves) of this group (addresses from the NameServer).
    #[arg(short = 'b', long = "brokerName", required_unless_present = "cluster")]
    broker_name: Option<String>,
    /// Every broker of this cluster.
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
    /// Print again every this many seconds until stopped (upstream's `-i`).
    #[arg(short = 'i', long = "interval")]
    interval: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ElectMasterArgs {
    /// Controller address `host:port` (or a `;`-separated list); the request goes to the
    /// leader it names.
    #[arg(short = 'a', long = "controllerAddress")]
    controller: String,
    /// The cluster of the group.
    #[arg(short = 'c', long = "clusterName")]
    cluster: String,
    /// The broker group (brokerName). Upstream's `-bn <name> -b <id>` works too (see
    /// [`super::upstream_flags`]).
    #[arg(short = 'b', long = "brokerName")]
    broker_name: String,
    /// The replica id to make master.
    #[arg(short = 'i', long = "brokerId")]
    broker_id: i64,
}

#[derive(Args, Debug)]
pub struct CleanBrokerMetadataArgs {
    /// Controller address `host:port` (or a `;`-separated list); the request goes to the
    /// leader it names.
    #[arg(short = 'a', long = "controllerAddress")]
    controller: String,
    /// The replica ids to clean, `1;2;3` (default: every replica of the group).
    #[arg(short = 'b', long = "brokerControllerIdsToClean")]
    ids: Option<String>,
    /// The broker group (upstream's `-bn`, which is accepted too).
    #[arg(long = "brokerName")]
    broker_name: String,
    /// The cluster of the group (required unless -l).
    #[arg(
        short = 'c',
        long = "clusterName",
        required_unless_present = "clean_living"
    )]
    cluster: Option<String>,
    /// Clean replicas the controller still counts alive too.
    #[arg(short = 'l', long = "cleanLivingBroker")]
    clean_living: bool,
}

#[derive(Args, Debug)]
pub struct GetControllerConfigArgs {
    /// Controller addresses `host:port;host:port`: each one's own settings are shown.
    #[arg(short = 'a', long = "controllerAddress")]
    controller: String,
}

#[derive(Args, Debug)]
pub struct UpdateControllerConfigArgs {
    /// Controller addresses `host:port;host:port`: each one is changed (not its config file).
    #[arg(short = 'a', long = "controllerAddress")]
    controller: String,
    /// Config key (upstream name; one a running controller reads: `enableElectUncleanMaster`,
    /// `notifyBrokerRoleChanged`, `controllerHeartBeatTimeoutMills`).
    #[arg(short = 'k', long = "key")]
    key: String,
    /// New value.
    #[arg(short = 'v', long = "value")]
    value: String,
}

#[derive(Args, Debug)]
pub struct HaStatusArgs {
    #[command(flatten)]
    target: super::broker::BrokerTargetArgs,
    /// Print again every this many seconds until stopped (upstream's `-i`).
    #[arg(short = 'i', long = "interval")]
    interval: Option<u64>,
}

/// Runs `once`, then again every `interval` seconds (at least 1) until the process is
/// stopped or a round fails (upstream's `-i`); without `interval`, once.
async fn repeat<F, Fut>(interval: Option<u64>, mut once: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    once().await?;
    let Some(secs) = interval else {
        return Ok(());
    };
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))).await;
        once().await?;
    }
}

/// The controller addresses of `-a`.
fn controller_list(raw: &str) -> anyhow::Result<Vec<BrokerAddr>> {
    let list: Vec<BrokerAddr> = raw
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            BrokerAddr::parse(s)
                .ok_or_else(|| anyhow!("invalid controller address `{s}` (expected host:port)"))
        })
        .collect::<anyhow::Result<_>>()?;
    if list.is_empty() {
        bail!("no controller address in `{raw}`");
    }
    Ok(list)
}

impl Admin {
    async fn controller_call(
        &self,
        addr: &BrokerAddr,
        cmd: RemotingCommand,
    ) -> anyhow::Result<RemotingCommand> {
        self.client
            .invoke(addr, cmd, self.timeout)
            .await
            .with_context(|| format!("cannot reach controller {addr}"))
    }

    /// CONTROLLER_GET_METADATA_INFO from the first controller of `controllers` that answers.
    async fn controller_metadata(
        &self,
        controllers: &[BrokerAddr],
    ) -> anyhow::Result<GetMetaDataResponseHeader> {
        let mut last = None;
        for addr in controllers {
            let cmd = RemotingCommand::request(RequestCode::CONTROLLER_GET_METADATA_INFO);
            match self.controller_call(addr, cmd).await {
                Ok(resp) => {
                    let resp = check(
                        resp,
                        RequestCode::CONTROLLER_GET_METADATA_INFO,
                        &format!("controller {addr}"),
                    )?;
                    return GetMetaDataResponseHeader::from_command(&resp)
                        .context("malformed controller metadata header");
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no controller address")))
    }

    /// Sends `cmd` to the controller leader (as the metadata of `controllers` names it; else
    /// the first controller), following one CONTROLLER_NOT_LEADER answer; the answer must be
    /// SUCCESS.
    async fn controller_leader_ok(
        &self,
        controllers: &[BrokerAddr],
        cmd: RemotingCommand,
    ) -> anyhow::Result<RemotingCommand> {
        let meta = self.controller_metadata(controllers).await?;
        let mut target = meta
            .controller_leader_address
            .as_deref()
            .and_then(BrokerAddr::parse)
            .or_else(|| controllers.first().cloned())
            .ok_or_else(|| anyhow!("no controller address"))?;
        for attempt in 0..2 {
            let mut req = cmd.clone();
            req.opaque = RemotingCommand::request(cmd.code).opaque;
            let resp = self.controller_call(&target, req).await?;
            if resp.code == ResponseCode::CONTROLLER_NOT_LEADER && attempt == 0 {
                let leader = GetMetaDataResponseHeader::from_command(&resp)
                    .ok()
                    .and_then(|h| h.controller_leader_address)
                    .and_then(|a| BrokerAddr::parse(&a));
                if let Some(leader) = leader {
                    target = leader;
                    continue;
                }
            }
            return check(resp, cmd.code, &format!("controller {target}"));
        }
        bail!("the controllers do not agree on a leader")
    }
}

/// `getControllerMetaData` for `--json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControllerMeta {
    group: Option<String>,
    controller_leader_id: Option<String>,
    controller_leader_address: Option<String>,
    is_leader: bool,
    peers: Vec<String>,
}

pub(super) async fn metadata(admin: &Admin, a: ControllerMetaArgs) -> anyhow::Result<()> {
    let meta = admin
        .controller_metadata(&controller_list(&a.controller)?)
        .await?;
    let out = ControllerMeta {
        group: meta.group,
        controller_leader_id: meta.controller_leader_id,
        controller_leader_address: meta.controller_leader_address,
        is_leader: meta.is_leader,
        peers: meta
            .peers
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    };
    admin.print(&out, || {
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "null".into());
        let mut s = format!(
            "\n#ControllerGroup\t{}\n#ControllerLeaderId\t{}\n#ControllerLeaderAddress\t{}",
            text(&out.group),
            text(&out.controller_leader_id),
            text(&out.controller_leader_address)
        );
        for p in &out.peers {
            s.push_str(&format!("\n#Peer:\t{p}"));
        }
        s
    })
}

/// Upstream's `ReplicaIdentity.toString()`.
fn replica_text(r: &ReplicaIdentity) -> String {
    format!(
        "ReplicaIdentity{{brokerName='{}', brokerId={}, brokerAddress='{}', alive={}}}",
        r.broker_name, r.broker_id, r.broker_address, r.alive
    )
}

pub(super) async fn sync_state_set(admin: &Admin, a: GetSyncStateSetArgs) -> anyhow::Result<()> {
    repeat(a.interval, || sync_state_set_once(admin, &a)).await
}

async fn sync_state_set_once(admin: &Admin, a: &GetSyncStateSetArgs) -> anyhow::Result<()> {
    let controllers = controller_list(&a.controller)?;
    let names: Vec<String> = match (&a.broker_name, &a.cluster) {
        (Some(b), _) => vec![b.clone()],
        (None, Some(c)) => {
            let info = admin.cluster_info().await?;
            let names = info
                .cluster_addr_table
                .get(c)
                .with_context(|| format!("cluster `{c}` does not exist"))?;
            names.iter().cloned().collect()
        }
        (None, None) => bail!("either -b <brokerName> or -c <cluster name> is required"),
    };
    let cmd = RemotingCommand::request(RequestCode::CONTROLLER_GET_SYNC_STATE_DATA)
        .with_body(serde_json::to_vec(&names)?);
    let resp = admin.controller_leader_ok(&controllers, cmd).await?;
    let info: BrokerReplicasInfo =
        serde_json::from_slice(&resp.body).context("malformed BrokerReplicasInfo body")?;
    if info.replicas_info_table.is_empty() {
        bail!("the controllers know no broker group of {names:?}");
    }
    admin.print(&info, || {
        let mut s = String::new();
        for (name, r) in &info.replicas_info_table {
            s.push_str(&format!(
                "\n#brokerName\t{name}\n#MasterBrokerId\t{}\n#MasterAddr\t{}\n#MasterEpoch\t{}\n\
                 #SyncStateSetEpoch\t{}\n#SyncStateSetNums\t{}\n",
                r.master_broker_id
                    .map_or_else(|| "null".into(), |id| id.to_string()),
                r.master_address.as_deref().unwrap_or("null"),
                r.master_epoch,
                r.sync_state_set_epoch,
                r.in_sync_replicas.len()
            ));
            for m in &r.in_sync_replicas {
                s.push_str(&format!("\nInSyncReplica:\t{}\n", replica_text(m)));
            }
            for m in &r.not_in_sync_replicas {
                s.push_str(&format!("\nNotInSyncReplica:\t{}\n", replica_text(m)));
            }
        }
        s.trim_end().to_string()
    })
}

/// One broker of `getBrokerEpoch --json`: its epoch cache, the newest entry ending at the
/// CommitLog end (as upstream's tool shows it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BrokerEpoch {
    broker_addr: String,
    #[serde(flatten)]
    cache: EpochEntryCache,
}

/// Upstream's `EpochEntry.toString()`.
fn epoch_text(e: &EpochEntryBody) -> String {
    format!(
        "EpochEntry{{epoch={}, startOffset={}, endOffset={}}}",
        e.epoch, e.start_offset, e.end_offset
    )
}

pub(super) async fn broker_epoch(admin: &Admin, a: GetBrokerEpochArgs) -> anyhow::Result<()> {
    repeat(a.interval, || broker_epoch_once(admin, &a)).await
}

async fn broker_epoch_once(admin: &Admin, a: &GetBrokerEpochArgs) -> anyhow::Result<()> {
    let info = admin.cluster_info().await?;
    let names: Vec<String> = match (&a.broker_name, &a.cluster) {
        (Some(b), _) => {
            if !info.broker_addr_table.contains_key(b) {
                bail!("broker group `{b}` is not registered with the NameServer");
            }
            vec![b.clone()]
        }
        (None, Some(c)) => info
            .cluster_addr_table
            .get(c)
            .with_context(|| format!("cluster `{c}` does not exist"))?
            .iter()
            .cloned()
            .collect(),
        (None, None) => bail!("either -b <brokerName> or -c <cluster name> is required"),
    };
    let addrs: Vec<BrokerAddr> = names
        .iter()
        .filter_map(|n| info.broker_addr_table.get(n))
        .flat_map(|d| d.broker_addrs.values())
        .filter_map(|a| BrokerAddr::parse(a))
        .collect();
    let mut all = Vec::new();
    for addr in addrs {
        let resp = admin
            .broker_ok(
                &addr,
                RemotingCommand::request(RequestCode::GET_BROKER_EPOCH_CACHE),
            )
            .await?;
        let mut cache: EpochEntryCache = serde_json::from_slice(&resp.body)
            .with_context(|| format!("malformed EpochEntryCache from {addr}"))?;
        if let Some(last) = cache.epoch_list.last_mut() {
            last.end_offset = cache.max_offset;
        }
        all.push(BrokerEpoch {
            broker_addr: addr.to_string(),
            cache,
        });
    }
    admin.print(&all, || {
        let mut s = String::new();
        for b in &all {
            s.push_str(&format!(
                "\n#clusterName\t{}\n#brokerName\t{}\n#brokerAddr\t{}\n#brokerId\t{}",
                b.cache.cluster_name, b.cache.broker_name, b.broker_addr, b.cache.broker_id
            ));
            for e in &b.cache.epoch_list {
                s.push_str(&format!("\n#Epoch: {}", epoch_text(e)));
            }
            s.push('\n');
        }
        s.trim_end().to_string()
    })
}

/// `electMaster --json`: the response header and body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Elected {
    cluster_name: String,
    broker_name: String,
    master_broker_id: Option<i64>,
    master_address: Option<String>,
    master_epoch: Option<i32>,
    sync_state_set_epoch: Option<i32>,
    #[serde(flatten)]
    body: ElectMasterResponseBody,
}

pub(super) async fn elect_master(admin: &Admin, a: ElectMasterArgs) -> anyhow::Result<()> {
    let controllers = controller_list(&a.controller)?;
    let mut cmd = RemotingCommand::request(RequestCode::CONTROLLER_ELECT_MASTER);
    ElectMasterRequestHeader {
        cluster_name: Some(a.cluster.clone()),
        broker_name: a.broker_name.clone(),
        broker_id: Some(a.broker_id),
        designate_elect: true,
        invoke_time: Some(remoting::message::now_millis()),
    }
    .write_to(&mut cmd);
    let resp = admin.controller_leader_ok(&controllers, cmd).await?;
    let h = ElectMasterResponseHeader::from_command(&resp).context("malformed elect header")?;
    let body: ElectMasterResponseBody = if resp.body.is_empty() {
        ElectMasterResponseBody::default()
    } else {
        serde_json::from_slice(&resp.body).context("malformed elect body")?
    };
    let out = Elected {
        cluster_name: a.cluster,
        broker_name: a.broker_name,
        master_broker_id: h.master_broker_id,
        master_address: h.master_address,
        master_epoch: h.master_epoch,
        sync_state_set_epoch: h.sync_state_set_epoch,
        body,
    };
    admin.print(&out, || {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let mut s = format!(
            "\n#ClusterName\t{}\n#BrokerName\t{}\n#BrokerMasterAddr\t{}\n#MasterEpoch\t{}\n\
             #SyncStateSetEpoch\t{}",
            out.cluster_name,
            out.broker_name,
            opt(out.master_address.clone()),
            opt(out.master_epoch.map(|e| e.to_string())),
            opt(out.sync_state_set_epoch.map(|e| e.to_string())),
        );
        if let Some(g) = &out.body.broker_member_group {
            for (id, addr) in &g.broker_addrs {
                s.push_str(&format!("\n\t#Broker\t{id}\t{addr}"));
            }
        }
        s
    })
}

pub(super) async fn clean_broker_metadata(
    admin: &Admin,
    a: CleanBrokerMetadataArgs,
) -> anyhow::Result<()> {
    let controllers = controller_list(&a.controller)?;
    let ids: Vec<i64> = a
        .ids
        .as_deref()
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| anyhow!("invalid broker id `{s}` in -b (expected e.g. 1;2;3)"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut cmd = RemotingCommand::request(RequestCode::CLEAN_BROKER_DATA);
    CleanControllerBrokerDataRequestHeader {
        cluster_name: a.cluster.clone(),
        broker_name: a.broker_name.clone(),
        broker_controller_ids_to_clean: a.ids.clone().filter(|_| !ids.is_empty()),
        is_clean_living_broker: a.clean_living,
        invoke_time: Some(remoting::message::now_millis()),
    }
    .write_to(&mut cmd);
    admin.controller_leader_ok(&controllers, cmd).await?;
    let out = serde_json::json!({
        "brokerName": a.broker_name,
        "brokerIds": ids,
        "cleanLivingBroker": a.clean_living,
    });
    admin.print(&out, || {
        format!(
            "clear broker {} metadata from controller success!",
            a.broker_name
        )
    })
}

/// GET_CONTROLLER_CONFIG of each controller of `-a`: upstream's `============addr============`
/// heading and `key=  value` lines (sorted here); `--json`: address -> key -> value.
pub(super) async fn controller_config(
    admin: &Admin,
    a: GetControllerConfigArgs,
) -> anyhow::Result<()> {
    let mut all = std::collections::BTreeMap::new();
    for addr in controller_list(&a.controller)? {
        let cmd = RemotingCommand::request(RequestCode::GET_CONTROLLER_CONFIG);
        let resp = check(
            admin.controller_call(&addr, cmd).await?,
            RequestCode::GET_CONTROLLER_CONFIG,
            &format!("controller {addr}"),
        )?;
        let text = String::from_utf8_lossy(&resp.body);
        let props: std::collections::BTreeMap<String, String> =
            remoting::properties::parse_properties(&text)
                .into_iter()
                .collect();
        all.insert(addr.to_string(), props);
    }
    admin.print(&all, || {
        all.iter()
            .map(|(addr, props)| {
                let mut s = format!("============{addr}============");
                for (k, v) in props {
                    s.push_str(&format!("\n{k:<50}=  {v}"));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// UPDATE_CONTROLLER_CONFIG with `key=value` to each controller of `-a`; stops at the first
/// that refuses (a key only read at start is refused with NO_PERMISSION).
pub(super) async fn update_controller_config(
    admin: &Admin,
    a: UpdateControllerConfigArgs,
) -> anyhow::Result<()> {
    let (key, value) = (a.key.trim(), a.value.trim());
    let controllers = controller_list(&a.controller)?;
    for addr in &controllers {
        let cmd = RemotingCommand::request(RequestCode::UPDATE_CONTROLLER_CONFIG)
            .with_body(format!("{key}={value}\n").into_bytes());
        check(
            admin.controller_call(addr, cmd).await?,
            RequestCode::UPDATE_CONTROLLER_CONFIG,
            &format!("controller {addr}"),
        )?;
    }
    let names: Vec<String> = controllers.iter().map(ToString::to_string).collect();
    let out = serde_json::json!({"key": key, "value": value, "controllers": names});
    admin.print(&out, || {
        format!(
            "update controller config success![{}]\n{key} : {value}",
            names.join(", ")
        )
    })
}

/// `haStatus -b <broker addr> | -c <cluster>` (masters of the cluster) `[-i secs]`: upstream's
/// lines per broker; `--json`: broker address -> `HARuntimeInfo`.
pub(super) async fn ha_status(admin: &Admin, a: HaStatusArgs) -> anyhow::Result<()> {
    repeat(a.interval, || ha_status_once(admin, &a)).await
}

async fn ha_status_once(admin: &Admin, a: &HaStatusArgs) -> anyhow::Result<()> {
    let mut all = std::collections::BTreeMap::new();
    for addr in super::broker::target_brokers(admin, &a.target, true).await? {
        let cmd = RemotingCommand::request(RequestCode::GET_BROKER_HA_STATUS);
        let resp = admin.broker_ok(&addr, cmd).await?;
        let info: HaRuntimeInfo = serde_json::from_slice(&resp.body)
            .with_context(|| format!("malformed HARuntimeInfo from {addr}"))?;
        all.insert(addr.to_string(), info);
    }
    admin.print(&all, || {
        all.iter()
            .map(|(addr, info)| ha_status_text(addr, info))
            .collect::<Vec<_>>()
            .join("")
    })
}

/// Upstream `HAStatusSubCommand.printStatus`.
fn ha_status_text(addr: &str, info: &HaRuntimeInfo) -> String {
    if info.master {
        let mut s = format!(
            "\n#MasterAddr\t{addr}\n#MasterCommitLogMaxOffset\t{}\n#SlaveNum\t{}\n#InSyncSlaveNum\t{}\n",
            info.master_commit_log_max_offset,
            info.ha_connection_info.len(),
            info.in_sync_slave_nums
        );
        s.push_str(&format!(
            "{:<32}  {:<16} {:>16} {:>16} {:>16} {:>16}\n",
            "#SlaveAddr",
            "#SlaveAckOffset",
            "#Diff",
            "#TransferSpeed(KB/s)",
            "#Status",
            "#TransferFromWhere"
        ));
        for c in &info.ha_connection_info {
            s.push_str(&format!(
                "{:<32}  {:<16} {:>16} {:>16.2} {:>16} {:>16}\n",
                c.addr,
                c.slave_ack_offset,
                c.diff,
                c.transferred_byte_in_second as f64 / 1024.0,
                if c.in_sync { "OK" } else { "Fall Behind" },
                c.transfer_from_where
            ));
        }
        s
    } else {
        let c = &info.ha_client_runtime_info;
        format!(
            "\n#MasterAddr\t{}\n#CommitLogMaxOffset\t{}\n#TransferSpeed(KB/s)\t{:.2}\n\
             #LastReadTime\t{}\n#LastWriteTime\t{}\n#MasterFlushOffset\t{}\n",
            c.master_addr.as_deref().unwrap_or("null"),
            c.max_offset,
            c.transferred_byte_in_second as f64 / 1024.0,
            super::format_millis(c.last_read_timestamp),
            super::format_millis(c.last_write_timestamp),
            c.master_flush_offset
        )
    }
}
