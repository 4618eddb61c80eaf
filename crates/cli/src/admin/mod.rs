//! `apogee admin`: the counterpart of upstream's `mqadmin`, with its command names and flags.
//! Every command speaks only the RocketMQ remoting protocol and sends the same request codes
//! and ext fields as `mqadmin` 4.9.8 (the controller-mode commands: as 5.x `mqadmin`; minus
//! its `AccessKey`/`Signature` ACL fields), so it works against Apache RocketMQ as well as
//! Apogee.
//!
//! | module | commands |
//! |---|---|
//! | [`topic`] | updateTopic, deleteTopic, topicList, topicRoute, topicStatus |
//! | [`broker`] | clusterList, brokerStatus, getBrokerConfig, updateBrokerConfig |
//! | [`group`] | updateSubGroup, deleteSubGroup, consumerProgress, consumerConnection, producerConnection, resetOffsetByTime |
//! | [`message`] | queryMsgById, queryMsgByKey, queryMsgByOffset, sendMessage, consumeMessage, printMsg |
//! | [`acl`] | updateAclConfig, deleteAclConfig, clusterAclConfigVersion, updateGlobalWhiteAddr |
//! | [`controller`] | getControllerMetaData, getSyncStateSet, getBrokerEpoch, electMaster, cleanBrokerMetadata, getControllerConfig, updateControllerConfig, haStatus (5.x controller mode) |
//!
//! Output is a plain table by default and one JSON document with `--json`. Any failure
//! (unreachable NameServer, unknown topic, broker error) is an error, so the process exits
//! non-zero with the reason.

mod acl;
pub(crate) mod broker;
mod controller;
#[cfg(test)]
mod golden;
pub(crate) mod group;
pub(crate) mod message;
pub(crate) mod topic;

pub(crate) use topic::update_topic_command;

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets, Table};
use remoting::client::{ClientConfig as RemotingClientConfig, RemotingClient};
use remoting::protocol::{from_fastjson, ClusterInfo, TopicRouteData};
use remoting::{BrokerAddr, NameServerAddr, RemotingCommand, RequestCode, ResponseCode};
use serde::Serialize;

/// NameServer address used when neither `-n` nor `NAMESRV_ADDR` is given.
pub(crate) const DEFAULT_NAMESRV: &str = "127.0.0.1:9876";

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// NameServer addresses, `host:port;host:port` (default `$NAMESRV_ADDR`, else 127.0.0.1:9876).
    #[arg(short = 'n', long = "namesrvAddr", global = true)]
    namesrv: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Timeout of each request, in milliseconds.
    #[arg(long = "timeout-ms", global = true, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    #[command(flatten)]
    acl: crate::acl_args::AclArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
#[command(rename_all = "camelCase")]
enum AdminCommand {
    /// Create or update a topic on a broker (-b) or on every master of a cluster (-c).
    UpdateTopic(topic::UpdateTopicArgs),
    /// Delete a topic from a cluster's brokers and from the NameServers.
    DeleteTopic(topic::DeleteTopicArgs),
    /// List every topic the NameServer knows.
    TopicList(topic::TopicListArgs),
    /// Show a topic's route: broker groups and queues.
    TopicRoute(topic::TopicArgs),
    /// Show min/max offsets of every queue of a topic.
    TopicStatus(topic::TopicArgs),
    /// List clusters, broker groups and their runtime figures.
    ClusterList(broker::ClusterListArgs),
    /// Show a broker's runtime info.
    BrokerStatus(broker::BrokerTargetArgs),
    /// Show a broker's configuration.
    GetBrokerConfig(broker::BrokerTargetArgs),
    /// Change one configuration key of a broker (-b) or of every broker of a cluster (-c).
    UpdateBrokerConfig(broker::UpdateBrokerConfigArgs),
    /// Create or update a subscription group.
    UpdateSubGroup(group::UpdateSubGroupArgs),
    /// Delete a subscription group.
    DeleteSubGroup(group::DeleteSubGroupArgs),
    /// Show a consumer group's offsets and lag per queue.
    ConsumerProgress(group::ConsumerProgressArgs),
    /// List the clients of a consumer group.
    ConsumerConnection(group::GroupArgs),
    /// List the clients of a producer group.
    ProducerConnection(group::ProducerConnectionArgs),
    /// Move a consumer group's offsets on a topic to a point in time.
    ResetOffsetByTime(group::ResetOffsetArgs),
    /// Show a message by its offset message id (or by its client id with -t).
    QueryMsgById(message::QueryMsgByIdArgs),
    /// Find messages by key.
    QueryMsgByKey(message::QueryMsgByKeyArgs),
    /// Show the message at a queue offset.
    QueryMsgByOffset(message::QueryMsgByOffsetArgs),
    /// Send one message.
    SendMessage(message::SendMessageArgs),
    /// Read messages from a topic without committing offsets.
    ConsumeMessage(message::ConsumeMessageArgs),
    /// Print every message of a topic (optionally in a time range).
    PrintMsg(message::PrintMsgArgs),
    /// Create or change an ACL account on a broker (-b) or every master of a cluster (-c).
    UpdateAclConfig(acl::UpdateAclConfigArgs),
    /// Delete an ACL account.
    DeleteAclConfig(acl::DeleteAclConfigArgs),
    /// Show each broker's ACL version.
    ClusterAclConfigVersion(acl::AclTargetArgs),
    /// Replace the ACL's global white list of addresses.
    UpdateGlobalWhiteAddr(acl::UpdateGlobalWhiteAddrArgs),
    /// Show the controller group: its leader and peers.
    GetControllerMetaData(controller::ControllerMetaArgs),
    /// Show a broker group's master, epochs and SyncStateSet, from the controller leader.
    GetSyncStateSet(controller::GetSyncStateSetArgs),
    /// Show the epoch entries of every broker of a group (-b) or cluster (-c).
    GetBrokerEpoch(controller::GetBrokerEpochArgs),
    /// Make a replica the master of its group (controller mode).
    ElectMaster(controller::ElectMasterArgs),
    /// Remove replicas (or a whole group) from the controllers' metadata.
    CleanBrokerMetadata(controller::CleanBrokerMetadataArgs),
    /// Show each controller's settings.
    GetControllerConfig(controller::GetControllerConfigArgs),
    /// Change a setting of each controller (one a running controller reads).
    UpdateControllerConfig(controller::UpdateControllerConfigArgs),
    /// Show replication as a broker (-b) or every master of a cluster (-c) sees it.
    HaStatus(controller::HaStatusArgs),
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let admin = Admin::new(
        args.namesrv.as_deref(),
        args.json,
        args.timeout_ms,
        &args.tls,
        &args.acl,
    )?;
    let result = match args.command {
        AdminCommand::UpdateTopic(a) => topic::update(&admin, a).await,
        AdminCommand::DeleteTopic(a) => topic::delete(&admin, a).await,
        AdminCommand::TopicList(a) => topic::list(&admin, a).await,
        AdminCommand::TopicRoute(a) => topic::route(&admin, a).await,
        AdminCommand::TopicStatus(a) => topic::status(&admin, a).await,
        AdminCommand::ClusterList(a) => broker::cluster_list(&admin, a).await,
        AdminCommand::BrokerStatus(a) => broker::status(&admin, a).await,
        AdminCommand::GetBrokerConfig(a) => broker::get_config(&admin, a).await,
        AdminCommand::UpdateBrokerConfig(a) => broker::update_config(&admin, a).await,
        AdminCommand::UpdateSubGroup(a) => group::update(&admin, a).await,
        AdminCommand::DeleteSubGroup(a) => group::delete(&admin, a).await,
        AdminCommand::ConsumerProgress(a) => group::progress(&admin, a).await,
        AdminCommand::ConsumerConnection(a) => group::consumer_connection(&admin, a).await,
        AdminCommand::ProducerConnection(a) => group::producer_connection(&admin, a).await,
        AdminCommand::ResetOffsetByTime(a) => group::reset_offset(&admin, a).await,
        AdminCommand::QueryMsgById(a) => message::query_by_id(&admin, a).await,
        AdminCommand::QueryMsgByKey(a) => message::query_by_key(&admin, a).await,
        AdminCommand::QueryMsgByOffset(a) => message::query_by_offset(&admin, a).await,
        AdminCommand::SendMessage(a) => message::send(&admin, a).await,
        AdminCommand::ConsumeMessage(a) => message::consume(&admin, a).await,
        AdminCommand::PrintMsg(a) => message::print_msg(&admin, a).await,
        AdminCommand::UpdateAclConfig(a) => acl::update(&admin, a).await,
        AdminCommand::DeleteAclConfig(a) => acl::delete(&admin, a).await,
        AdminCommand::ClusterAclConfigVersion(a) => acl::versions(&admin, a).await,
        AdminCommand::UpdateGlobalWhiteAddr(a) => acl::update_global_white(&admin, a).await,
        AdminCommand::GetControllerMetaData(a) => controller::metadata(&admin, a).await,
        AdminCommand::GetSyncStateSet(a) => controller::sync_state_set(&admin, a).await,
        AdminCommand::GetBrokerEpoch(a) => controller::broker_epoch(&admin, a).await,
        AdminCommand::ElectMaster(a) => controller::elect_master(&admin, a).await,
        AdminCommand::CleanBrokerMetadata(a) => controller::clean_broker_metadata(&admin, a).await,
        AdminCommand::GetControllerConfig(a) => controller::controller_config(&admin, a).await,
        AdminCommand::UpdateControllerConfig(a) => {
            controller::update_controller_config(&admin, a).await
        }
        AdminCommand::HaStatus(a) => controller::ha_status(&admin, a).await,
    };
    admin.client.shutdown().await;
    result
}

/// Command-line arguments with upstream mqadmin's two-letter flag `-bn` (the group) spelled
/// the way clap takes it: in `cleanBrokerMetadata` it becomes `--brokerName`; in
/// `electMaster`, whose upstream flags are `-bn <group> -b <id>`, `-bn` becomes `--brokerName`
/// and `-b` `--brokerId` (without `-bn`, `-b` is the group and `-i` the id, as in the issue's
/// spelling).
pub fn upstream_flags<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let Some(at) = args
        .iter()
        .position(|a| a == "electMaster" || a == "cleanBrokerMetadata")
    else {
        return args;
    };
    let elect = args[at] == "electMaster";
    let tail = &mut args[at + 1..];
    if tail.iter().any(|a| a == "-bn") {
        for a in tail {
            if a == "-bn" {
                *a = "--brokerName".into();
            } else if elect && a == "-b" {
                *a = "--brokerId".into();
            }
        }
    }
    args
}

/// The NameServer list from `-n`, else `NAMESRV_ADDR`, else [`DEFAULT_NAMESRV`].
pub(crate) fn namesrv_list(flag: Option<&str>) -> anyhow::Result<String> {
    let raw = flag
        .map(str::to_string)
        .or_else(|| std::env::var("NAMESRV_ADDR").ok())
        .unwrap_or_else(|| DEFAULT_NAMESRV.to_string());
    if NameServerAddr::parse_list(&raw).is_empty() {
        bail!("invalid NameServer address `{raw}` (expected host:port[;host:port])");
    }
    Ok(raw)
}

/// A connection to the cluster and the output mode: what every command gets.
pub(crate) struct Admin {
    client: RemotingClient,
    namesrv_text: String,
    namesrvs: Vec<NameServerAddr>,
    timeout: Duration,
    json: bool,
    tls: crate::tls_args::TlsArgs,
    acl: crate::acl_args::AclArgs,
}

/// `(brokerName, master address)` of one broker group.
pub(crate) type Master = (String, BrokerAddr);

impl Admin {
    /// A client for the cluster behind `namesrv` (see [`namesrv_list`]), over TLS when `tls`
    /// says so and signing with `acl`'s account if any; `json` selects the output of
    /// [`Admin::print`].
    pub(crate) fn new(
        namesrv: Option<&str>,
        json: bool,
        timeout_ms: u64,
        tls: &crate::tls_args::TlsArgs,
        acl: &crate::acl_args::AclArgs,
    ) -> anyhow::Result<Self> {
        let namesrv_text = namesrv_list(namesrv)?;
        let timeout = Duration::from_millis(timeout_ms.max(1));
        Ok(Admin {
            client: RemotingClient::new(RemotingClientConfig {
                connect_timeout: timeout,
                tls: tls.client_tls()?,
                credentials: acl.credentials()?,
                ..RemotingClientConfig::default()
            }),
            tls: tls.clone(),
            acl: acl.clone(),
            namesrvs: NameServerAddr::parse_list(&namesrv_text),
            namesrv_text,
            timeout,
            json,
        })
    }

    /// A producer/consumer config for the NameServers, with the TLS of the flags.
    pub(crate) fn client_config(&self) -> anyhow::Result<client::ClientConfig> {
        self.acl.apply(
            self.tls
                .apply(client::ClientConfig::new(&self.namesrv_text)?)?,
        )
    }

    /// Sends `cmd` to the NameServers in turn until one answers (any code).
    async fn namesrv_call(&self, cmd: RemotingCommand) -> anyhow::Result<RemotingCommand> {
        let mut last = None;
        for ns in &self.namesrvs {
            let mut req = cmd.clone();
            req.opaque = RemotingCommand::request(cmd.code).opaque;
            match self.client.invoke_namesrv(ns, req, self.timeout).await {
                Ok(resp) => return Ok(resp),
                Err(e) => last = Some(format!("{ns}: {e}")),
            }
        }
        Err(anyhow!(
            "cannot reach any NameServer ({}): {}",
            self.namesrv_text,
            last.unwrap_or_default()
        ))
    }

    /// A NameServer request that must succeed.
    pub(crate) async fn namesrv_ok(&self, cmd: RemotingCommand) -> anyhow::Result<RemotingCommand> {
        let code = cmd.code;
        let resp = self.namesrv_call(cmd).await?;
        check(resp, code, "NameServer")
    }

    /// Sends `cmd` to every NameServer (upstream does this for deletions); all must succeed.
    pub(crate) async fn each_namesrv_ok(&self, cmd: RemotingCommand) -> anyhow::Result<()> {
        for ns in &self.namesrvs {
            let mut req = cmd.clone();
            req.opaque = RemotingCommand::request(cmd.code).opaque;
            let resp = self
                .client
                .invoke_namesrv(ns, req, self.timeout)
                .await
                .with_context(|| format!("cannot reach NameServer {ns}"))?;
            check(resp, cmd.code, &format!("NameServer {ns}"))?;
        }
        Ok(())
    }

    /// A broker request that must succeed.
    pub(crate) async fn broker_ok(
        &self,
        addr: &BrokerAddr,
        cmd: RemotingCommand,
    ) -> anyhow::Result<RemotingCommand> {
        let code = cmd.code;
        let resp = self.broker_call(addr, cmd).await?;
        check(resp, code, &format!("broker {addr}"))
    }

    /// A broker request whose answer code the caller inspects.
    pub(crate) async fn broker_call(
        &self,
        addr: &BrokerAddr,
        cmd: RemotingCommand,
    ) -> anyhow::Result<RemotingCommand> {
        self.client
            .invoke(addr, cmd, self.timeout)
            .await
            .with_context(|| format!("cannot reach broker {addr}"))
    }

    /// GET_ROUTEINFO_BY_TOPIC; an unknown topic is an error.
    pub(crate) async fn route(&self, topic: &str) -> anyhow::Result<TopicRouteData> {
        let cmd =
            RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
        let resp = self.namesrv_call(cmd).await?;
        if resp.code == ResponseCode::TOPIC_NOT_EXIST {
            bail!("topic `{topic}` does not exist ({})", resp.remark_str());
        }
        let resp = check(resp, RequestCode::GET_ROUTEINFO_BY_TOPIC, "NameServer")?;
        from_fastjson(&resp.body).context("malformed route body")
    }

    /// GET_BROKER_CLUSTER_INFO.
    pub(crate) async fn cluster_info(&self) -> anyhow::Result<ClusterInfo> {
        let resp = self
            .namesrv_ok(RemotingCommand::request(
                RequestCode::GET_BROKER_CLUSTER_INFO,
            ))
            .await?;
        from_fastjson(&resp.body).context("malformed cluster info body")
    }

    /// Masters of the target: the broker at `-b`, or every master of cluster `-c`.
    pub(crate) async fn targets(
        &self,
        broker: Option<&str>,
        cluster: Option<&str>,
    ) -> anyhow::Result<Vec<Master>> {
        if let Some(b) = broker {
            let addr = parse_broker(b)?;
            return Ok(vec![(String::new(), addr)]);
        }
        let Some(cluster) = cluster else {
            bail!("either -b <broker addr> or -c <cluster name> is required");
        };
        let info = self.cluster_info().await?;
        let Some(names) = info.cluster_addr_table.get(cluster) else {
            bail!("cluster `{cluster}` does not exist");
        };
        let masters: Vec<Master> = names
            .iter()
            .filter_map(|name| {
                let data = info.broker_addr_table.get(name)?;
                let addr = BrokerAddr::parse(data.master_addr()?)?;
                Some((name.clone(), addr))
            })
            .collect();
        if masters.is_empty() {
            bail!("cluster `{cluster}` has no master broker online");
        }
        Ok(masters)
    }

    /// Masters of every broker group in the topic's route.
    pub(crate) async fn route_masters(&self, topic: &str) -> anyhow::Result<Vec<Master>> {
        let route = self.route(topic).await?;
        let masters = masters_of(&route);
        if masters.is_empty() {
            bail!("topic `{topic}` has no master broker online");
        }
        Ok(masters)
    }

    /// Prints `value` as JSON with `--json`, else the table `table` builds.
    pub(crate) fn print<T: Serialize + ?Sized>(
        &self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let text = if self.json {
            serde_json::to_string_pretty(value)?
        } else {
            table()
        };
        write_stdout(&text)
    }
}

/// Writes `text` and a newline to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `(brokerName, master)` of each broker group of a route that has a master.
pub(crate) fn masters_of(route: &TopicRouteData) -> Vec<Master> {
    route
        .broker_datas
        .iter()
        .filter_map(|b| Some((b.broker_name.clone(), BrokerAddr::parse(b.master_addr()?)?)))
        .collect()
}

pub(crate) fn parse_broker(s: &str) -> anyhow::Result<BrokerAddr> {
    BrokerAddr::parse(s).ok_or_else(|| anyhow!("invalid broker address `{s}` (expected host:port)"))
}

/// `resp` when it is SUCCESS, else an error naming the request, the peer and the remark.
fn check(resp: RemotingCommand, code: i32, peer: &str) -> anyhow::Result<RemotingCommand> {
    if resp.code == ResponseCode::SUCCESS {
        return Ok(resp);
    }
    bail!(
        "{} failed at {peer}: code {} ({}): {}",
        RequestCode::name(code).unwrap_or("request"),
        resp.code,
        ResponseCode::name(resp.code).unwrap_or("UNKNOWN"),
        resp.remark_str()
    )
}

/// A borderless table with `header`.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_header(header.iter().copied());
    t
}

/// `yyyy-MM-dd HH:mm:ss.SSS` (UTC) of epoch milliseconds.
pub(crate) fn format_millis(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) if ms > 0 => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        _ => "-".to_string(),
    }
}

/// Epoch milliseconds of a `-s`/`-b`/`-e` time flag: `now`, epoch milliseconds, or
/// `yyyy-MM-dd#HH:mm:ss:SSS` (UTC; upstream's format).
pub(crate) fn parse_time(s: &str) -> anyhow::Result<i64> {
    if s.eq_ignore_ascii_case("now") {
        return Ok(remoting::message::now_millis());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    // chrono's `%3f` wants a `.` before the milliseconds; upstream writes `:`.
    let (head, millis) = s.rsplit_once(':').unwrap_or((s, ""));
    chrono::NaiveDateTime::parse_from_str(&format!("{head}.{millis}"), "%Y-%m-%d#%H:%M:%S%.3f")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|_| {
            anyhow!("invalid time `{s}`: use `now`, epoch milliseconds or yyyy-MM-dd#HH:mm:ss:SSS")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_elect_master_flags_are_rewritten() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let upstream = args(&[
            "apogee",
            "admin",
            "electMaster",
            "-a",
            "x:1",
            "-bn",
            "b1",
            "-b",
            "2",
        ]);
        assert_eq!(
            upstream_flags(upstream),
            args(&[
                "apogee",
                "admin",
                "electMaster",
                "-a",
                "x:1",
                "--brokerName",
                "b1",
                "--brokerId",
                "2"
            ])
        );
        let ours = args(&["apogee", "admin", "electMaster", "-b", "b1", "-i", "2"]);
        assert_eq!(upstream_flags(ours.clone()), ours);
        let clean = args(&[
            "apogee",
            "admin",
            "cleanBrokerMetadata",
            "-bn",
            "b1",
            "-b",
            "1;2",
        ]);
        assert_eq!(
            upstream_flags(clean),
            args(&[
                "apogee",
                "admin",
                "cleanBrokerMetadata",
                "--brokerName",
                "b1",
                "-b",
                "1;2"
            ])
        );
        let other = args(&["apogee", "admin", "topicRoute", "-bn"]);
        assert_eq!(upstream_flags(other.clone()), other);
    }

    #[test]
    fn time_round_trip() {
        let ms = parse_time("2026-11-24#23:43:25:123").unwrap();
        assert_eq!(format_millis(ms), "2026-11-24 23:43:25.123");
        assert_eq!(parse_time("1000").unwrap(), 1000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_millis(0), "-");
        assert_eq!(format_millis(86_400_000), "1970-01-02 00:00:00.000");
    }
}
