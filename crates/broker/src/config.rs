//! [`BrokerConfig`]: every broker setting, under upstream's `broker.conf` key names
//! (`BrokerConfig`, `NettyServerConfig` and `MessageStoreConfig` keys), built from a parsed
//! properties map ([`BrokerConfig::from_properties`]) and mapped onto the store's
//! [`StoreConfig`] ([`BrokerConfig::store_config`]).
//!
//! Keys upstream has but Apogee does not need (thread pool sizes, Netty tuning, ...) are
//! accepted and ignored; unknown keys are logged; a value that does not parse is an error
//! naming the key.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use remoting::properties::{apply_properties, SettingFormat};
use remoting::tls::{ClientAuth, Secret, TlsClientKeys, TlsMode, TlsServerSettings};
use remoting::{BrokerAddr, NameServerAddr};
use store::config::{BrokerRole, FlushDiskType, StoreConfig};

use crate::error::BrokerError;

/// Upstream's default delay levels.
pub const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// The `broker.conf` text of the store's enums (upstream's constant names).
struct StoreEnum;

impl SettingFormat<BrokerRole> for StoreEnum {
    const EXPECTED: &'static str = "ASYNC_MASTER, SYNC_MASTER or SLAVE";
    fn parse(raw: &str) -> Option<BrokerRole> {
        match raw {
            "ASYNC_MASTER" => Some(BrokerRole::AsyncMaster),
            "SYNC_MASTER" => Some(BrokerRole::SyncMaster),
            "SLAVE" => Some(BrokerRole::Slave),
            _ => None,
        }
    }
    fn format(value: &BrokerRole) -> String {
        match value {
            BrokerRole::AsyncMaster => "ASYNC_MASTER",
            BrokerRole::SyncMaster => "SYNC_MASTER",
            BrokerRole::Slave => "SLAVE",
        }
        .to_string()
    }
}

impl SettingFormat<FlushDiskType> for StoreEnum {
    const EXPECTED: &'static str = "ASYNC_FLUSH or SYNC_FLUSH";
    fn parse(raw: &str) -> Option<FlushDiskType> {
        match raw {
            "ASYNC_FLUSH" => Some(FlushDiskType::AsyncFlush),
            "SYNC_FLUSH" => Some(FlushDiskType::SyncFlush),
            _ => None,
        }
    }
    fn format(value: &FlushDiskType) -> String {
        match value {
            FlushDiskType::AsyncFlush => "ASYNC_FLUSH",
            FlushDiskType::SyncFlush => "SYNC_FLUSH",
        }
        .to_string()
    }
}

/// Upstream keys accepted with no effect here (thread pools, queue capacities, Netty tuning,
/// features Apogee does not have).
const IGNORED_KEYS: &[&str] = &[
    // Apogee always checks client certificates against `tls.server.trustCertPath` when
    // `tls.server.need.client.auth` asks for them (upstream only with this key true).
    "tls.server.authClient",
    "brokerConfigPath",
    "configBlackList",
    "sendMessageThreadPoolNums",
    "putMessageFutureThreadPoolNums",
    "pullMessageThreadPoolNums",
    "processReplyMessageThreadPoolNums",
    "queryMessageThreadPoolNums",
    "adminBrokerThreadPoolNums",
    "clientManageThreadPoolNums",
    "consumerManageThreadPoolNums",
    "heartbeatThreadPoolNums",
    "endTransactionThreadPoolNums",
    "sendThreadPoolQueueCapacity",
    "putThreadPoolQueueCapacity",
    "pullThreadPoolQueueCapacity",
    "replyThreadPoolQueueCapacity",
    "queryThreadPoolQueueCapacity",
    "clientManagerThreadPoolQueueCapacity",
    "consumerManagerThreadPoolQueueCapacity",
    "heartbeatThreadPoolQueueCapacity",
    "endTransactionPoolQueueCapacity",
    "useReentrantLockWhenPutMessage",
    "waitTimeMillsInSendQueue",
    "waitTimeMillsInPullQueue",
    "waitTimeMillsInHeartbeatQueue",
    "waitTimeMillsInTransactionQueue",
    "brokerFastFailureEnable",
    "osPageCacheBusyTimeOutMills",
    "transientStorePoolEnable",
    // Controller-mode settings Apogee does not have: controller addresses by DNS lookup, and
    // upstream's lowering of `inSyncReplicas` to the live replicas, which upstream applies only
    // to SYNC_MASTER with an acting master (Apogee's SYNC_MASTER waits for one slave, as 4.x).
    "fetchControllerAddrByDnsLookup",
    "enableAutoInSyncReplicas",
    // Timer wheel tuning of upstream's `TimerMessageStore` (its timer log and wheel files,
    // disruptor queues, thread pools, flow control, metrics and warm-up). Apogee's wheel is
    // an in-memory index over the timer topic's ConsumeQueue, driven by one task, so none of
    // these has anything to tune.
    "mappedFileSizeTimerLog",
    "timerRollWindowSlot",
    "timerFlushIntervalMs",
    "timerGetMessageThreadNum",
    "timerPutMessageThreadNum",
    "timerEnableDisruptor",
    "timerEnableCheckMetrics",
    "timerInterceptDelayLevel",
    "timerStopEnqueue",
    "timerCheckMetricsWhen",
    "timerSkipUnknownError",
    "timerWarmEnable",
    "timerStopDequeue",
    "timerEnableRetryUntilSuccess",
    "timerCongestNumEachSlot",
    "timerMetricSmallThreshold",
    "timerProgressLogIntervalMs",
    "timerColdDataCheckIntervalMs",
    "transientStorePoolSize",
    "fastFailIfNoBufferInStorePool",
    "warmMapedFileEnable",
    "messageStorePlugIn",
    "fetchNamesrvAddrByAddressServer",
    "filterServerNums",
    "highSpeedMode",
    "commercialEnable",
    "transferMsgByHeap",
    "enableCalcFilterBitMap",
    "enablePropertyFilter",
    "filterSupportRetry",
    "compressedRegister",
    "forceRegister",
    "isolateLogEnable",
    "enableDetailStat",
    "serverWorkerThreads",
    "serverCallbackExecutorThreads",
    "serverSelectorThreads",
    "serverOnewaySemaphoreValue",
    "serverAsyncSemaphoreValue",
    "serverChannelMaxIdleTimeSeconds",
    "serverSocketSndBufSize",
    "serverSocketRcvBufSize",
    "serverPooledByteBufAllocatorEnable",
    "useEpollNativeSelector",
    "clientWorkerThreads",
    "clientCallbackExecutorThreads",
    "maxTransferBytesOnMessageInMemory",
];

remoting::settings_struct! {
    /// Broker settings. Field docs name the `broker.conf` key.
    pub struct BrokerConfig {
        /// `brokerClusterName`.
        broker_cluster_name: String = "brokerClusterName", "DefaultCluster".to_string();
        /// `brokerName`: the broker group.
        broker_name: String = "brokerName", "broker-a".to_string();
        /// `brokerId`: 0 is the master, others are slaves.
        broker_id: i64 = "brokerId", 0;
        /// `brokerRole`.
        broker_role: BrokerRole as StoreEnum = "brokerRole", BrokerRole::AsyncMaster;
        /// `flushDiskType`.
        flush_disk_type: FlushDiskType as StoreEnum = "flushDiskType", FlushDiskType::AsyncFlush;
        /// `namesrvAddr`: `host:port;host:port`.
        namesrv_addr: String = "namesrvAddr", String::new();
        /// `listenPort`: client port (0 picks a free one).
        listen_port: u16 = "listenPort", 10911;
        /// `fastListenPort` (Apogee key; upstream always uses `listenPort - 2`): the second
        /// ("fast" / VIP) client port, serving the same requests as `listenPort`. Upstream
        /// brokers dial their master's `listenPort - 2` for metadata sync, and clients with
        /// `vipChannelEnabled` dial it too, so only the default suits a mixed cluster. Default
        /// `listenPort - 2`; like upstream, a free port is picked when that is not a port
        /// (`listenPort` 0, 1 or 2). 0 also picks a free one. See [`BrokerConfig::fast_listen_addr`].
        fast_listen_port: Option<u16> = "fastListenPort", None;
        /// `fastListenPortEnable` (Apogee key): `false` serves no fast port.
        fast_listen_port_enable: bool = "fastListenPortEnable", true;
        /// `bindAddress`: address to listen on.
        bind_address: IpAddr = "bindAddress", IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        /// `haListenPort`: replication port; default `listenPort + 1`.
        ha_listen_port: Option<u16> = "haListenPort", None;
        /// `brokerIP1`: address advertised to NameServers and clients; default: the first
        /// non-loopback IPv4 address of the host, else 127.0.0.1.
        broker_ip1: Option<IpAddr> = "brokerIP1", None;
        /// `brokerIP2`: address advertised for replication; default `brokerIP1`.
        broker_ip2: Option<IpAddr> = "brokerIP2", None;
        /// `storePathRootDir`: no default here (the library reads no environment); the
        /// `apogee` binary supplies upstream's `$HOME/store`. A broker does not start with
        /// it empty.
        store_path_root_dir: PathBuf = "storePathRootDir", PathBuf::new();
        /// `storePathCommitLog`: default `<storePathRootDir>/commitlog`.
        store_path_commit_log: Option<PathBuf> = "storePathCommitLog", None;
        /// `brokerPermission`: 6 read-write, 4 read-only, 2 write-only.
        broker_permission: i32 = "brokerPermission", 6;
        /// `autoCreateTopicEnable`: create unknown topics on first send (from `TBW102`).
        auto_create_topic_enable: bool = "autoCreateTopicEnable", true;
        /// `autoCreateSubscriptionGroup`.
        auto_create_subscription_group: bool = "autoCreateSubscriptionGroup", true;
        /// `clusterTopicEnable`: a topic named after the cluster.
        cluster_topic_enable: bool = "clusterTopicEnable", true;
        /// `brokerTopicEnable`: a topic named after the broker.
        broker_topic_enable: bool = "brokerTopicEnable", true;
        /// `traceTopicEnable`: create `msgTraceTopicName`.
        trace_topic_enable: bool = "traceTopicEnable", false;
        /// `msgTraceTopicName`.
        msg_trace_topic_name: String = "msgTraceTopicName", "RMQ_SYS_TRACE_TOPIC".to_string();
        /// `defaultTopicQueueNums`: queues of an auto-created topic.
        default_topic_queue_nums: i32 = "defaultTopicQueueNums", 8;
        /// `messageDelayLevel`: delay of each level (`ms`, `s`, `m`, `h`, `d` units).
        message_delay_level: String = "messageDelayLevel", DEFAULT_DELAY_LEVELS.to_string();
        /// `timerWheelEnable`: accept timer messages (`TIMER_DELIVER_MS` / `TIMER_DELAY_SEC` /
        /// `TIMER_DELAY_MS`); `false` refuses them with `SYSTEM_ERROR`, as upstream. Those
        /// already waiting are still delivered.
        timer_wheel_enable: bool = "timerWheelEnable", true;
        /// `timerPrecisionMs`: timer slot length, snapped as upstream to 100, 200, 500 or
        /// 1000 (see [`BrokerConfig::timer_precision`]); a timer message is delivered at most
        /// this much after its time, never before.
        timer_precision_ms: u64 = "timerPrecisionMs", 1_000;
        /// `timerMaxDelaySec`: longest timer delay; a longer one is refused with
        /// `MESSAGE_ILLEGAL` (upstream default: 3 days).
        timer_max_delay_sec: u64 = "timerMaxDelaySec", 3 * 24 * 3_600;
        /// `maxMessageSize` (bytes).
        max_message_size: usize = "maxMessageSize", 4 * 1024 * 1024;
        /// `fileReservedTime` (hours).
        file_reserved_time: u64 = "fileReservedTime", 72;
        /// `deleteWhen`: hours of the day when expired files are deleted.
        delete_when: String = "deleteWhen", "04".to_string();
        /// `diskMaxUsedSpaceRatio` (percent).
        disk_max_used_space_ratio: u32 = "diskMaxUsedSpaceRatio", 75;
        /// `mappedFileSizeCommitLog` (bytes).
        mapped_file_size_commit_log: u64 = "mappedFileSizeCommitLog", 1024 * 1024 * 1024;
        /// `mappedFileSizeConsumeQueue` (bytes).
        mapped_file_size_consume_queue: u64 = "mappedFileSizeConsumeQueue", 300_000 * 20;
        /// `flushIntervalCommitLog` (ms).
        flush_interval_commit_log: u64 = "flushIntervalCommitLog", 500;
        /// `syncFlushTimeout` (ms).
        sync_flush_timeout: u64 = "syncFlushTimeout", 5_000;
        /// `messageIndexEnable`.
        message_index_enable: bool = "messageIndexEnable", true;
        /// `slaveReadEnable`: a slave serves pulls (else it answers `SYSTEM_BUSY`, as 5.x), and a
        /// master suggests the slave for pulls of cold data. On by default in Apogee (upstream:
        /// off), so consumption continues from the slave when the master is gone.
        slave_read_enable: bool = "slaveReadEnable", true;
        /// `longPollingEnable`: hold pulls with no new data.
        long_polling_enable: bool = "longPollingEnable", true;
        /// `shortPollingTimeMills` (ms): hold time when long polling is off.
        short_polling_time_mills: u64 = "shortPollingTimeMills", 1_000;
        /// `notifyConsumerIdsChangedEnable`.
        notify_consumer_ids_changed_enable: bool = "notifyConsumerIdsChangedEnable", true;
        /// `registerNameServerPeriod` (ms) between registrations.
        register_name_server_period: u64 = "registerNameServerPeriod", 30_000;
        /// `registerBrokerTimeoutMills` (ms).
        register_broker_timeout_mills: u64 = "registerBrokerTimeoutMills", 6_000;
        /// `regionId`: answered in send responses (`MSG_REGION`).
        region_id: String = "regionId", "DefaultRegion".to_string();
        /// `traceOn`: answered in send responses (`TRACE_ON`).
        trace_on: bool = "traceOn", true;
        /// `rejectTransactionMessage`.
        reject_transaction_message: bool = "rejectTransactionMessage", false;
        /// `transactionTimeOut` (ms): a half message younger than this is not checked yet.
        transaction_time_out: u64 = "transactionTimeOut", 6_000;
        /// `transactionCheckMax`: checks of one half message before it is discarded.
        transaction_check_max: i32 = "transactionCheckMax", 15;
        /// `transactionCheckInterval` (ms) between check passes.
        transaction_check_interval: u64 = "transactionCheckInterval", 60_000;
        /// `flushConsumerOffsetInterval` (ms) between persists of the config files.
        flush_consumer_offset_interval: u64 = "flushConsumerOffsetInterval", 5_000;
        /// `channelExpiredTimeout` (ms): a client silent this long is dropped.
        channel_expired_timeout: u64 = "channelExpiredTimeout", 120_000;
        /// `rebalanceLockMaxLiveTime` (ms): a queue lock not renewed this long expires.
        rebalance_lock_max_live_time: u64 = "rebalanceLockMaxLiveTime", 60_000;
        /// `maxFrameSize` (bytes): larger frames close the connection.
        max_frame_size: usize = "maxFrameSize", remoting::codec::DEFAULT_MAX_FRAME_SIZE;
        /// `enableActingMaster` (sent in REGISTER_BROKER): while the group's master is gone, a
        /// NameServer with `supportActingMaster` may list this group's lowest-id slave as broker 0
        /// (read-only); that slave then accepts CONSUMER_SEND_MSG_BACK and writes the retry
        /// message to a live master of another group of the cluster. On by default in Apogee.
        enable_acting_master: bool = "enableActingMaster", true;
        /// `enableDLegerCommitLog`: upstream's Raft CommitLog, which Apogee does not have;
        /// `true` stops the broker at start rather than run it unreplicated.
        enable_dleger_commit_log: bool = "enableDLegerCommitLog", false;
        /// `enableControllerMode`: upstream 5.x controller mode: the controllers
        /// (`controllerAddr`) assign this broker its replica id and its role; `brokerId` and
        /// `brokerRole` are then ignored (a master runs as `SYNC_MASTER` and registers as id
        /// 0, a slave under its replica id). See the `replicas` module.
        enable_controller_mode: bool = "enableControllerMode", false;
        /// `controllerAddr`: the controllers, `host:port;host:port` (controller mode).
        controller_addr: String = "controllerAddr", String::new();
        /// `controllerHeartBeatTimeoutMills` (ms): how long a controller waits for this
        /// broker's next BROKER_HEARTBEAT before it counts it dead (sent in each heartbeat).
        controller_heart_beat_timeout_mills: u64 = "controllerHeartBeatTimeoutMills", 10_000;
        /// `brokerHeartbeatInterval` (ms): BROKER_HEARTBEAT to every controller.
        broker_heartbeat_interval: u64 = "brokerHeartbeatInterval", 1_000;
        /// `syncBrokerMetadataPeriod` (ms): how often the broker reads its group's master and
        /// SyncStateSet from the controller leader (GET_REPLICA_INFO), in case it missed a
        /// NOTIFY_BROKER_ROLE_CHANGED.
        sync_broker_metadata_period: u64 = "syncBrokerMetadataPeriod", 5_000;
        /// `checkSyncStateSetPeriod` (ms): how often a master checks which slaves fell behind
        /// or caught up and reports a changed SyncStateSet (ALTER_SYNC_STATE_SET).
        check_sync_state_set_period: u64 = "checkSyncStateSetPeriod", 5_000;
        /// `syncControllerMetadataPeriod` (ms): how often the broker asks the controllers who
        /// leads them (GET_CONTROLLER_METADATA_INFO).
        sync_controller_metadata_period: u64 = "syncControllerMetadataPeriod", 10_000;
        /// `haMaxTimeSlaveNotCatchup` (ms): a slave that has not caught up with the master for
        /// this long leaves the SyncStateSet.
        ha_max_time_slave_not_catchup: u64 = "haMaxTimeSlaveNotCatchup", 15_000;
        /// `allAckInSyncStateSet`: a master in controller mode answers a send only once every
        /// member of the SyncStateSet has it (else: once it is stored locally).
        all_ack_in_sync_state_set: bool = "allAckInSyncStateSet", false;
        /// `minInSyncReplicas`: a master in controller mode refuses sends (`SYSTEM_ERROR`,
        /// "in-sync replicas not enough") while its SyncStateSet has fewer members.
        min_in_sync_replicas: usize = "minInSyncReplicas", 1;
        /// `inSyncReplicas`: with `allAckInSyncStateSet=false`, a master in controller mode
        /// answers a send once this many replicas have it, itself included (1: once stored
        /// locally; 2: and one slave, ...), as upstream's controller mode counts acks.
        in_sync_replicas: usize = "inSyncReplicas", 1;
        /// `asyncLearner`: this broker replicates as a slave in controller mode but never joins
        /// the SyncStateSet, so it is never elected (unless unclean elections are on) and a
        /// master with `allAckInSyncStateSet` does not wait for it.
        async_learner: bool = "asyncLearner", false;
        /// `storePathEpochFile`: the master epochs and where each started in the CommitLog;
        /// default `<storePathRootDir>/epochFileCheckpoint`.
        store_path_epoch_file: Option<PathBuf> = "storePathEpochFile", None;
        /// `aclEnable`: check every request against the ACL files (ACL 1.0: signed requests,
        /// accounts in `<rocketmqHome>/conf/plain_acl.yml` and `conf/acl/**/*.yml`).
        acl_enable: bool = "aclEnable", false;
        /// `rocketmqHome`: where `conf/plain_acl.yml` is read from. No default in the library;
        /// the `apogee` binary uses `$ROCKETMQ_HOME`.
        rocketmq_home: Option<PathBuf> = "rocketmqHome", None;
        /// `metricsExporterType`: `PROM` serves Prometheus text on `GET /metrics`; `DISABLE`
        /// serves nothing; `OTLP_GRPC` and `LOG` (upstream's other exporters) are not
        /// implemented and serve Prometheus instead, with a warning.
        metrics_exporter_type: String = "metricsExporterType", "PROM".to_string();
        /// `metricsPromExporterPort`: port of `GET /metrics`; 0 serves nothing. The library
        /// default is 0; the `apogee` binary supplies upstream's 5557.
        metrics_prom_exporter_port: u16 = "metricsPromExporterPort", 0;
        /// `metricsPromExporterHost`: address of the metrics port; default all interfaces.
        metrics_prom_exporter_host: Option<IpAddr> = "metricsPromExporterHost", None;
        /// `haMasterAddress`: the master's HA address (`ip:port`) for a slave; default: the
        /// `haServerAddr` the NameServer answers to registration.
        ha_master_address: Option<String> = "haMasterAddress", None;
        /// `haSendHeartbeatInterval` (ms): idle master -> slave heartbeat frames and slave offset
        /// reports.
        ha_send_heartbeat_interval: u64 = "haSendHeartbeatInterval", 5_000;
        /// `haHousekeepingInterval` (ms): a replication connection silent this long is closed.
        ha_housekeeping_interval: u64 = "haHousekeepingInterval", 20_000;
        /// `haTransferBatchSize` (bytes): largest CommitLog chunk per HA frame.
        ha_transfer_batch_size: usize = "haTransferBatchSize", 32 * 1024;
        /// `haMaxGapNotInSync` (bytes): a SYNC_MASTER whose slaves lag more than this answers
        /// `SLAVE_NOT_AVAILABLE` at once instead of waiting.
        ha_max_gap_not_in_sync: u64 = "haMaxGapNotInSync", 256 * 1024 * 1024;
        /// `slaveSynchronizeInterval` (ms, Apogee key; upstream fixed 10 s): how often a slave
        /// copies topics, groups, consumer offsets and delay progress from its master.
        slave_synchronize_interval: u64 = "slaveSynchronizeInterval", 10_000;
        /// `maxConnections`: connections served at once.
        max_connections: usize = "maxConnections", 10_000;
        /// `maxInFlightRequestsPerConnection` (Apogee key): requests received on one
        /// connection and not answered yet; beyond it a request is answered `SYSTEM_BUSY`
        /// (oneway: dropped). Upstream bounds its request queues instead.
        max_in_flight_requests_per_connection: usize = "maxInFlightRequestsPerConnection", remoting::server::RequestLimits::DEFAULT_PER_CONNECTION;
        /// `maxInFlightRequests` (Apogee key): two-way requests in flight on all connections.
        max_in_flight_requests: usize = "maxInFlightRequests", remoting::server::RequestLimits::DEFAULT_TOTAL;
        /// `maxInFlightOnewayRequests` (Apogee key): oneway requests in flight on all
        /// connections; beyond it they are dropped. (Upstream's `serverOnewaySemaphoreValue`
        /// and `serverAsyncSemaphoreValue` bound the server's own outgoing requests instead.)
        max_in_flight_oneway_requests: usize = "maxInFlightOnewayRequests", remoting::server::RequestLimits::DEFAULT_ONEWAY_TOTAL;
        /// `maxHeldPullRequests` (Apogee key): long-polling pulls held at once; a pull that
        /// would be held beyond it is answered `SYSTEM_BUSY` at once.
        max_held_pull_requests: usize = "maxHeldPullRequests", 16_384;
        /// `reviveQueueNum`: queues of the revive log (`rmq_sys_REVIVE_LOG_<cluster>`) that
        /// journals POP checkpoints and acks.
        revive_queue_num: i32 = "reviveQueueNum", 8;
        /// `reviveInterval` (ms): how often unacked popped messages past their invisible time
        /// are revived (re-sent through the POP retry topic).
        revive_interval: u64 = "reviveInterval", 1_000;
        /// `popFromRetryProbability` (%): share of pops that read the group's POP retry topic
        /// before the topic itself (0-100).
        pop_from_retry_probability: i32 = "popFromRetryProbability", 20;
        /// `enableRetryTopicV2`: name new POP retry topics `%RETRY%<group>+<topic>` instead of
        /// `%RETRY%<group>_<topic>`.
        enable_retry_topic_v2: bool = "enableRetryTopicV2", false;
        /// `maxPopPollingSize`: pops held by long polling at once; beyond it a pop is answered
        /// `POLLING_FULL`.
        max_pop_polling_size: usize = "maxPopPollingSize", 100_000;
        /// `tls.server.mode`: `disabled`, `permissive` (upstream's default: TLS and plaintext
        /// on the same port, told apart by the first byte) or `enforcing` (TLS only). See
        /// `remoting::tls`. Upstream reads the `tls.*` keys as JVM system properties.
        tls_server_mode: TlsMode = "tls.server.mode", TlsMode::Permissive;
        /// `tls.server.certPath`: PEM certificate chain; unset: a self-signed certificate is
        /// generated at start.
        tls_server_cert_path: Option<PathBuf> = "tls.server.certPath", None;
        /// `tls.server.keyPath`: PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1).
        tls_server_key_path: Option<PathBuf> = "tls.server.keyPath", None;
        /// `tls.server.keyPassword`: encrypted keys are not supported (start fails naming
        /// the key); never written back in a config dump.
        tls_server_key_password: Option<String> as Secret = "tls.server.keyPassword", None;
        /// `tls.server.trustCertPath`: PEM certificates client certificates are checked against.
        tls_server_trust_cert_path: Option<PathBuf> = "tls.server.trustCertPath", None;
        /// `tls.server.need.client.auth`: `none`, `optional` or `require`.
        tls_server_need_client_auth: ClientAuth = "tls.server.need.client.auth", ClientAuth::None;
        /// `tls.config.file`: a properties file whose `tls.*` keys override these.
        tls_config_file: Option<PathBuf> = "tls.config.file", None;
        /// `tls.test.mode.enable`: upstream's test mode (self-signed server certificate, clients
        /// trust any). The server generates a self-signed certificate whenever none is
        /// configured, whatever this says; outgoing TLS connections (`tls.enable`) accept any
        /// certificate while it is true.
        tls_test_mode_enable: bool = "tls.test.mode.enable", true;
        /// `tls.enable`: the broker's own connections (NameServer registration, requests to
        /// other brokers and controllers) use TLS.
        tls_enable: bool = "tls.enable", false;
        /// `tls.client.authServer`: check the server's certificate against
        /// `tls.client.trustCertPath` (only when `tls.test.mode.enable` is false).
        tls_client_auth_server: bool = "tls.client.authServer", false;
        /// `tls.client.trustCertPath`: PEM certificates servers' chains must lead to.
        tls_client_trust_cert_path: Option<PathBuf> = "tls.client.trustCertPath", None;
        /// `tls.client.certPath`: PEM certificate shown to servers that ask for one.
        tls_client_cert_path: Option<PathBuf> = "tls.client.certPath", None;
        /// `tls.client.keyPath`: its PEM private key.
        tls_client_key_path: Option<PathBuf> = "tls.client.keyPath", None;
        /// `tls.client.keyPassword`: as `tls.server.keyPassword`.
        tls_client_key_password: Option<String> as Secret = "tls.client.keyPassword", None;
    }
}

impl BrokerConfig {
    /// The TLS settings of this server's ports.
    pub fn tls_server_settings(&self) -> TlsServerSettings {
        TlsServerSettings {
            mode: self.tls_server_mode,
            cert_path: self.tls_server_cert_path.clone(),
            key_path: self.tls_server_key_path.clone(),
            key_password: self.tls_server_key_password.clone(),
            trust_cert_path: self.tls_server_trust_cert_path.clone(),
            need_client_auth: self.tls_server_need_client_auth,
            config_file: self.tls_config_file.clone(),
        }
    }

    /// The `tls.*` keys of the broker's own connections (see [`TlsClientKeys::settings`]).
    pub fn tls_client_keys(&self) -> TlsClientKeys {
        TlsClientKeys {
            enable: self.tls_enable,
            test_mode: self.tls_test_mode_enable,
            auth_server: self.tls_client_auth_server,
            trust_cert_path: self.tls_client_trust_cert_path.clone(),
            cert_path: self.tls_client_cert_path.clone(),
            key_path: self.tls_client_key_path.clone(),
            key_password: self.tls_client_key_password.clone(),
            config_file: self.tls_config_file.clone(),
        }
    }
    /// Bounds on requests in flight, from the `maxInFlight*` keys.
    pub fn request_limits(&self) -> remoting::server::RequestLimits {
        remoting::server::RequestLimits {
            per_connection: self.max_in_flight_requests_per_connection,
            total: self.max_in_flight_requests,
            oneway_total: self.max_in_flight_oneway_requests,
        }
    }

    /// Defaults overridden by `props` (upstream key names). Unknown keys are logged and
    /// skipped; a value that does not parse, or settings that cannot work together, are an
    /// error naming the key.
    pub fn from_properties(props: &HashMap<String, String>) -> Result<BrokerConfig, BrokerError> {
        let mut config = BrokerConfig::default();
        config.update(props)?;
        Ok(config)
    }

    /// Applies `props` on top of this configuration; on error nothing is changed.
    pub fn update(&mut self, props: &HashMap<String, String>) -> Result<(), BrokerError> {
        let mut next = self.clone();
        apply_properties(props, IGNORED_KEYS, "broker", |key, raw| next.set(key, raw))
            .map_err(|e| BrokerError::Config(e.to_string()))?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    fn validate(&self) -> Result<(), BrokerError> {
        parse_delay_levels(&self.message_delay_level)?;
        if self.acl_enable && self.rocketmq_home.is_none() {
            return Err(BrokerError::Config(
                "config key `aclEnable` is true but `rocketmqHome` is not set (nor ROCKETMQ_HOME): \
                 the ACL accounts are read from <rocketmqHome>/conf/plain_acl.yml"
                    .into(),
            ));
        }
        for (key, value) in [
            (
                "maxInFlightRequestsPerConnection",
                self.max_in_flight_requests_per_connection,
            ),
            ("maxInFlightRequests", self.max_in_flight_requests),
            (
                "maxInFlightOnewayRequests",
                self.max_in_flight_oneway_requests,
            ),
            ("maxHeldPullRequests", self.max_held_pull_requests),
            ("maxPopPollingSize", self.max_pop_polling_size),
            ("reviveQueueNum", self.revive_queue_num.max(0) as usize),
        ] {
            if value == 0 {
                return Err(BrokerError::Config(format!(
                    "config key `{key}` is 0, expected a positive number"
                )));
            }
        }
        if !(0..=100).contains(&self.pop_from_retry_probability) {
            return Err(BrokerError::Config(format!(
                "config key `popFromRetryProbability` has value `{}`, expected 0 to 100",
                self.pop_from_retry_probability
            )));
        }
        if !["DISABLE", "PROM", "OTLP_GRPC", "LOG"]
            .iter()
            .any(|t| self.metrics_exporter_type.eq_ignore_ascii_case(t))
        {
            return Err(BrokerError::Config(format!(
                "config key `metricsExporterType` is `{}`: expected DISABLE, PROM, OTLP_GRPC or LOG",
                self.metrics_exporter_type
            )));
        }
        if self.enable_dleger_commit_log {
            return Err(BrokerError::Config(
                "config key `enableDLegerCommitLog` is true: the DLedger CommitLog is not \
                 supported; run the group as master/slave instead"
                    .into(),
            ));
        }
        if self.enable_controller_mode && self.controllers().is_empty() {
            return Err(BrokerError::Config(format!(
                "config key `enableControllerMode` is true but `controllerAddr` (`{}`) names no \
                 controller: expected host:port;host:port",
                self.controller_addr
            )));
        }
        for addr in self.controller_addr.split([';', ',']).map(str::trim) {
            if !addr.is_empty() && BrokerAddr::parse(addr).is_none() {
                return Err(BrokerError::Config(format!(
                    "config key `controllerAddr` has entry `{addr}`, expected host:port"
                )));
            }
        }
        if self.broker_name.trim().is_empty() {
            return Err(BrokerError::Config(
                "config key `brokerName` is empty".into(),
            ));
        }
        if self.broker_cluster_name.trim().is_empty() {
            return Err(BrokerError::Config(
                "config key `brokerClusterName` is empty".into(),
            ));
        }
        if self.broker_id < 0 {
            return Err(BrokerError::Config(format!(
                "config key `brokerId` has value `{}`, expected 0 (master) or a positive slave id",
                self.broker_id
            )));
        }
        for (key, value) in [
            ("timerPrecisionMs", self.timer_precision_ms),
            ("timerMaxDelaySec", self.timer_max_delay_sec),
        ] {
            if value == 0 {
                return Err(BrokerError::Config(format!(
                    "config key `{key}` is 0, expected a positive number"
                )));
            }
        }
        if self.default_topic_queue_nums <= 0 {
            return Err(BrokerError::Config(format!(
                "config key `defaultTopicQueueNums` has value `{}`, expected a positive number",
                self.default_topic_queue_nums
            )));
        }
        if let Some(fast) = self.fast_listen_addr() {
            if fast.port() != 0 && fast.port() == self.listen_port {
                return Err(BrokerError::Config(format!(
                    "config key `fastListenPort` has value `{}`, the same port as `listenPort`; \
                     choose another port or set `fastListenPortEnable=false`",
                    fast.port()
                )));
            }
        }
        let addrs = self.namesrv_addr.split([';', ',']).map(str::trim);
        for addr in addrs.filter(|a| !a.is_empty()) {
            if NameServerAddr::parse(addr).is_none() {
                return Err(BrokerError::Config(format!(
                    "config key `namesrvAddr` has entry `{addr}`, expected host:port"
                )));
            }
        }
        Ok(())
    }

    /// The NameServers to register with.
    pub fn name_servers(&self) -> Vec<NameServerAddr> {
        NameServerAddr::parse_list(&self.namesrv_addr)
    }

    /// The controllers (`controllerAddr`).
    pub fn controllers(&self) -> Vec<BrokerAddr> {
        self.controller_addr
            .split([';', ','])
            .filter_map(BrokerAddr::parse)
            .collect()
    }

    /// The epoch file (`storePathEpochFile`, default `<storePathRootDir>/epochFileCheckpoint`).
    pub fn epoch_file(&self) -> PathBuf {
        self.store_path_epoch_file
            .clone()
            .unwrap_or_else(|| self.store_path_root_dir.join("epochFileCheckpoint"))
    }

    /// Whether this broker is a slave.
    pub fn is_slave(&self) -> bool {
        self.broker_role == BrokerRole::Slave
    }

    /// `bindAddress:listenPort`.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.listen_port)
    }

    /// Whether metrics are recorded at all (`metricsExporterType` other than `DISABLE`).
    pub fn metrics_enabled(&self) -> bool {
        !self.metrics_exporter_type.eq_ignore_ascii_case("DISABLE")
    }

    /// Where `/metrics` is served: `None` when `metricsExporterType` is `DISABLE` or
    /// `metricsPromExporterPort` is 0.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        if !self.metrics_enabled() {
            return None;
        }
        observe::exporter_addr(
            self.metrics_prom_exporter_port,
            self.metrics_prom_exporter_host,
        )
    }

    /// `bindAddress` and the fast port: `fastListenPort`, else `listenPort - 2` (0, a free
    /// port, when `listenPort` is below 3, as upstream does); `None` when
    /// `fastListenPortEnable` is false.
    pub fn fast_listen_addr(&self) -> Option<SocketAddr> {
        if !self.fast_listen_port_enable {
            return None;
        }
        let port = self
            .fast_listen_port
            .unwrap_or(self.listen_port.saturating_sub(2));
        Some(SocketAddr::new(self.bind_address, port))
    }

    /// The IP advertised to NameServers and written into message ids.
    pub fn advertised_ip(&self) -> IpAddr {
        self.broker_ip1.unwrap_or_else(local_ipv4)
    }

    /// Timer slot length in ms: `timerPrecisionMs` snapped as upstream's
    /// `MessageStoreConfig.setTimerPrecisionMs` to the largest of 100, 200, 500 and 1000 not
    /// above it (100 below that).
    pub fn timer_precision(&self) -> u64 {
        [1_000, 500, 200]
            .into_iter()
            .find(|&c| self.timer_precision_ms >= c)
            .unwrap_or(100)
    }

    /// Delay of each level (index 0 is level 1).
    pub fn delay_levels(&self) -> Vec<Duration> {
        // Validated when the config was built.
        parse_delay_levels(&self.message_delay_level).unwrap_or_default()
    }

    /// The store's configuration.
    pub fn store_config(&self) -> StoreConfig {
        let mut store = StoreConfig::new(&self.store_path_root_dir);
        store.store_path_commit_log = self.store_path_commit_log.clone();
        store.flush_disk_type = self.flush_disk_type;
        store.broker_role = self.broker_role;
        store.max_message_size = self.max_message_size;
        store.file_reserved_time = self.file_reserved_time;
        store.delete_when = self.delete_when.clone();
        store.disk_max_used_space_ratio = self.disk_max_used_space_ratio;
        store.mapped_file_size_commit_log = self.mapped_file_size_commit_log;
        store.mapped_file_size_consume_queue = self.mapped_file_size_consume_queue;
        store.flush_interval_commit_log = self.flush_interval_commit_log;
        store.sync_flush_timeout = self.sync_flush_timeout;
        store.message_index_enable = self.message_index_enable;
        // The store only uses the levels for the tag code of scheduled messages and does not
        // know the `ms` unit: give it whole seconds (the delay service keeps exact times).
        store.message_delay_level = self
            .delay_levels()
            .iter()
            .map(|d| format!("{}s", d.as_millis().div_ceil(1000).max(1)))
            .collect::<Vec<_>>()
            .join(" ");
        store
    }
}

/// Parses `messageDelayLevel`: whitespace-separated `<n><unit>` with unit `ms`, `s`, `m`, `h`
/// or `d`.
pub fn parse_delay_levels(text: &str) -> Result<Vec<Duration>, BrokerError> {
    let levels: Vec<Duration> = text
        .split_whitespace()
        .map(|level| {
            let digits = level.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &level[digits.len()..];
            let millis: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => 0,
            };
            match digits.parse::<u64>() {
                Ok(n) if millis > 0 => Ok(Duration::from_millis(n * millis)),
                _ => Err(BrokerError::Config(format!(
                    "config key `messageDelayLevel` has level `{level}`, expected a number with unit ms, s, m, h or d"
                ))),
            }
        })
        .collect::<Result<_, _>>()?;
    if levels.is_empty() {
        return Err(BrokerError::Config(
            "config key `messageDelayLevel` has no levels".into(),
        ));
    }
    Ok(levels)
}

/// First non-loopback IPv4 address of the host, else 127.0.0.1.
fn local_ipv4() -> IpAddr {
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| {
            ifs.into_iter()
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_upstream_keys() {
        let c = BrokerConfig::from_properties(&props(&[
            ("brokerClusterName", "C1"),
            ("brokerName", "b1"),
            ("brokerId", "0"),
            ("brokerRole", "SYNC_MASTER"),
            ("flushDiskType", "SYNC_FLUSH"),
            ("namesrvAddr", "127.0.0.1:9876;127.0.0.2:9876"),
            ("listenPort", "10921"),
            ("brokerIP1", "10.0.0.5"),
            ("sendMessageThreadPoolNums", "64"),
            ("someFutureKey", "x"),
            ("messageDelayLevel", "100ms 1s 2m"),
        ]))
        .unwrap();
        assert_eq!(c.broker_role, BrokerRole::SyncMaster);
        assert_eq!(c.flush_disk_type, FlushDiskType::SyncFlush);
        assert_eq!(c.name_servers().len(), 2);
        assert_eq!(c.advertised_ip().to_string(), "10.0.0.5");
        assert_eq!(
            c.delay_levels(),
            vec![
                Duration::from_millis(100),
                Duration::from_secs(1),
                Duration::from_secs(120)
            ]
        );
        let store = c.store_config();
        assert_eq!(store.message_delay_level, "1s 1s 120s");
        assert!(store.delay_levels_ms().is_ok());
        assert!(c.to_properties().contains("brokerName=b1\n"));
    }

    #[test]
    fn fast_port_is_listen_port_minus_two_unless_set_or_disabled() {
        let fast = |pairs: &[(&str, &str)]| {
            BrokerConfig::from_properties(&props(pairs))
                .unwrap()
                .fast_listen_addr()
                .map(|a| a.port())
        };
        assert_eq!(fast(&[]), Some(10909));
        assert_eq!(fast(&[("listenPort", "20911")]), Some(20909));
        // Ephemeral main port: ephemeral fast port, never a wrapped-around one.
        for p in ["0", "1", "2"] {
            assert_eq!(fast(&[("listenPort", p)]), Some(0), "listenPort={p}");
        }
        assert_eq!(fast(&[("listenPort", "3")]), Some(1));
        assert_eq!(fast(&[("fastListenPort", "30000")]), Some(30000));
        assert_eq!(
            fast(&[("listenPort", "0"), ("fastListenPort", "0")]),
            Some(0)
        );
        assert_eq!(fast(&[("fastListenPortEnable", "false")]), None);
        let err = BrokerConfig::from_properties(&props(&[
            ("listenPort", "10911"),
            ("fastListenPort", "10911"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("fastListenPort"), "{err}");
    }

    #[test]
    fn tls_keys_are_read() {
        let c = BrokerConfig::from_properties(&props(&[
            ("tls.server.mode", "disabled"),
            ("tls.server.certPath", "/pki/b.pem"),
            ("tls.server.keyPath", "/pki/b.key"),
            ("tls.enable", "true"),
            ("tls.test.mode.enable", "false"),
            ("tls.client.authServer", "true"),
            ("tls.client.trustCertPath", "/pki/ca.pem"),
            ("tls.client.keyPassword", "hunter2"),
        ]))
        .unwrap();
        let server = c.tls_server_settings();
        assert_eq!(server.mode, TlsMode::Disabled);
        assert_eq!(server.cert_path, Some(PathBuf::from("/pki/b.pem")));
        let client = c
            .tls_client_keys()
            .settings()
            .unwrap()
            .expect("tls.enable=true");
        assert!(
            !client.insecure,
            "authServer with test mode off checks the server"
        );
        assert_eq!(client.trust_cert_path, Some(PathBuf::from("/pki/ca.pem")));
        assert!(!c.to_properties().contains("hunter2"));
        // Upstream's defaults: permissive server, no TLS on the broker's own connections,
        // and with tls.enable alone (test mode on) any server certificate is accepted.
        let d = BrokerConfig::default();
        assert_eq!(d.tls_server_mode, TlsMode::Permissive);
        assert!(d.tls_client_keys().settings().unwrap().is_none());
        let only_enable = BrokerConfig::from_properties(&props(&[("tls.enable", "true")])).unwrap();
        assert!(
            only_enable
                .tls_client_keys()
                .settings()
                .unwrap()
                .unwrap()
                .insecure
        );
        let err = BrokerConfig::from_properties(&props(&[("tls.server.mode", "strict")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.server.mode"), "{err}");
    }

    #[test]
    fn timer_keys_are_read_and_tuning_keys_ignored() {
        let d = BrokerConfig::default();
        assert!(d.timer_wheel_enable);
        assert_eq!(
            (d.timer_precision(), d.timer_max_delay_sec),
            (1_000, 259_200)
        );
        let c = BrokerConfig::from_properties(&props(&[
            ("timerWheelEnable", "false"),
            ("timerPrecisionMs", "300"),
            ("timerMaxDelaySec", "60"),
            ("timerEnableDisruptor", "true"),
            ("timerRollWindowSlot", "172800"),
            ("timerCongestNumEachSlot", "2147483647"),
            ("timerGetMessageThreadNum", "3"),
        ]))
        .unwrap();
        assert!(!c.timer_wheel_enable);
        assert_eq!((c.timer_precision(), c.timer_max_delay_sec), (200, 60));
        assert!(c.to_properties().contains("timerPrecisionMs=300\n"));
        for (raw, snapped) in [
            (1, 100),
            (100, 100),
            (499, 200),
            (500, 500),
            (60_000, 1_000),
        ] {
            let c =
                BrokerConfig::from_properties(&props(&[("timerPrecisionMs", &raw.to_string())]))
                    .unwrap();
            assert_eq!(c.timer_precision(), snapped, "timerPrecisionMs={raw}");
        }
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (k, v) in [
            ("listenPort", "http"),
            ("brokerRole", "MASTER"),
            ("autoCreateTopicEnable", "yes"),
            ("messageDelayLevel", "1x"),
            ("namesrvAddr", "nohost"),
            ("brokerId", "-1"),
            ("fastListenPort", "-2"),
            ("enableDLegerCommitLog", "true"),
            ("enableControllerMode", "true"),
            ("controllerAddr", "nohost"),
            ("metricsExporterType", "STATSD"),
            ("metricsPromExporterPort", "70000"),
            ("timerWheelEnable", "on"),
            ("timerPrecisionMs", "0"),
            ("timerPrecisionMs", "1s"),
            ("timerMaxDelaySec", "-1"),
            ("timerMaxDelaySec", "0"),
        ] {
            let err = BrokerConfig::from_properties(&props(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }
}
