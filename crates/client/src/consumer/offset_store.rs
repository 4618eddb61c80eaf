//! Consumer offset stores (upstream `RemoteBrokerOffsetStore` and `LocalFileOffsetStore`).
//!
//! Both keep the offsets in memory ([`OffsetTable`]) and persist them every
//! `persistConsumerOffsetInterval`:
//! - clustering: on the broker, with a oneway UPDATE_CONSUMER_OFFSET to the group's master
//!   (a slave when the route has no master), read back with QUERY_CONSUMER_OFFSET;
//! - broadcasting: in `<dir>/<clientId>/<group>/offsets.json`, upstream's file shape
//!   `{"offsetTable":{{"brokerName":..,"queueId":..,"topic":..}:offset}}`, written to a
//!   temporary file first and the previous version kept as `offsets.json.bak`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;

use parking_lot::Mutex;
use remoting::broker_headers::{
    MessageModel, MessageQueue, QueryConsumerOffsetRequestHeader, ResetOffsetBody,
    UpdateConsumerOffsetRequestHeader,
};
use remoting::protocol::MASTER_ID;
use tracing::{debug, warn};

use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, ConsumerOffsets};
use crate::route::{find_subscribe_addr, FoundBroker};

/// Where [`OffsetStore::read_offset`] looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOffsetType {
    ReadFromMemory,
    ReadFromStore,
    MemoryFirstThenStore,
}

/// In-memory offsets by queue.
#[derive(Debug, Default)]
pub struct OffsetTable {
    table: Mutex<BTreeMap<MessageQueue, i64>>,
}

impl OffsetTable {
    /// Sets the offset of `mq`; with `increase_only`, never moves it backwards.
    pub fn update(&self, mq: &MessageQueue, offset: i64, increase_only: bool) {
        let mut t = self.table.lock();
        let entry = t.entry(mq.clone()).or_insert(offset);
        if !increase_only || offset > *entry {
            *entry = offset;
        }
    }

    pub fn get(&self, mq: &MessageQueue) -> Option<i64> {
        self.table.lock().get(mq).copied()
    }

    pub fn remove(&self, mq: &MessageQueue) {
        self.table.lock().remove(mq);
    }

    /// The offsets of the queues in `mqs` (all queues when `None`).
    pub fn snapshot(&self, mqs: Option<&BTreeSet<MessageQueue>>) -> BTreeMap<MessageQueue, i64> {
        self.table
            .lock()
            .iter()
            .filter(|(mq, _)| mqs.is_none_or(|s| s.contains(*mq)))
            .map(|(mq, o)| (mq.clone(), *o))
            .collect()
    }
}

/// Broadcasting consumers' offsets in a local file.
#[derive(Debug)]
pub struct LocalFileOffsetStore {
    path: PathBuf,
    table: OffsetTable,
}

impl LocalFileOffsetStore {
    /// The store of `group` for client `client_id` under `dir`. The library has no default
    /// dir: upstream's is `$HOME/.rocketmq_offsets`, and only an application decides to use
    /// a home directory.
    pub fn new(dir: &Path, client_id: &str, group: &str) -> Self {
        LocalFileOffsetStore {
            path: dir.join(client_id).join(group).join("offsets.json"),
            table: OffsetTable::default(),
        }
    }

    /// The file offsets are written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn table(&self) -> &OffsetTable {
        &self.table
    }

    fn read_file(path: &Path) -> Result<Option<BTreeMap<MessageQueue, i64>>> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Ok(bytes) => Ok(Some(ResetOffsetBody::decode(&bytes)?.offset_table)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ClientError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Reads the file (or, when it is unreadable, its `.bak`) into memory.
    pub fn load(&self) -> Result<()> {
        let stored = match Self::read_file(&self.path) {
            Ok(t) => t,
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "offsets file unreadable; trying the backup");
                Self::read_file(&self.bak_path())?
            }
        };
        for (mq, offset) in stored.unwrap_or_default() {
            self.table.update(&mq, offset, false);
        }
        Ok(())
    }

    /// The stored offset of `mq` (reading the file again).
    pub fn read_stored(&self, mq: &MessageQueue) -> Result<Option<i64>> {
        let stored = match Self::read_file(&self.path) {
            Ok(t) => t,
            Err(_) => Self::read_file(&self.bak_path())?,
        };
        Ok(stored.and_then(|t| t.get(mq).copied()))
    }

    fn bak_path(&self) -> PathBuf {
        durable::bak_path(&self.path)
    }

    /// Writes the offsets of `mqs` (all when `None`): the old file is kept as `.bak`, and the
    /// new one replaces it atomically ([`durable::write_atomic`]). Blocks on the disk.
    pub fn persist(&self, mqs: Option<&BTreeSet<MessageQueue>>) -> Result<()> {
        let offsets = self.table.snapshot(mqs);
        if offsets.is_empty() {
            return Ok(());
        }
        let body = ResetOffsetBody {
            offset_table: offsets,
        }
        .encode()?;
        let io = |e: durable::FileError| ClientError::Io {
            path: e.path.display().to_string(),
            source: e.source,
        };
        // Upstream keeps the previous file as `.bak`, read when the file is unreadable.
        if self.path.exists() {
            std::fs::copy(&self.path, durable::bak_path(&self.path)).map_err(|source| {
                ClientError::Io {
                    path: self.path.display().to_string(),
                    source,
                }
            })?;
        }
        durable::write_atomic(&self.path, &body).map_err(io)
    }
}

/// Clustering consumers' offsets, kept on the broker.
pub struct RemoteBrokerOffsetStore {
    instance: Arc<ClientInstance>,
    group: String,
    table: OffsetTable,
}

impl RemoteBrokerOffsetStore {
    pub(crate) fn new(instance: Arc<ClientInstance>, group: &str) -> Self {
        RemoteBrokerOffsetStore {
            instance,
            group: group.to_string(),
            table: OffsetTable::default(),
        }
    }

    pub fn table(&self) -> &OffsetTable {
        &self.table
    }

    /// The broker that keeps `mq`'s offsets: its master, else (master gone) a slave, as
    /// upstream; fetches the route once when the group is not in it.
    async fn broker_for(&self, mq: &MessageQueue, only_master: bool) -> Result<FoundBroker> {
        let find = || {
            self.instance
                .routes
                .broker_data(&mq.topic, &mq.broker_name)
                .and_then(|bd| find_subscribe_addr(&bd, MASTER_ID, only_master))
        };
        if let Some(b) = find() {
            return Ok(b);
        }
        self.instance.update_route(&mq.topic).await?;
        find()
            .or_else(|| {
                self.instance
                    .routes
                    .broker_data(&mq.topic, &mq.broker_name)
                    .and_then(|bd| find_subscribe_addr(&bd, MASTER_ID, false))
            })
            .ok_or_else(|| ClientError::BrokerNotFound(mq.broker_name.clone()))
    }

    /// QUERY_CONSUMER_OFFSET; `Ok(None)` when the broker has none.
    pub async fn fetch(&self, mq: &MessageQueue) -> Result<Option<i64>> {
        let broker = self.broker_for(mq, true).await?;
        let header = QueryConsumerOffsetRequestHeader {
            consumer_group: self.group.clone(),
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            set_zero_if_not_found: None,
            bname: Some(mq.broker_name.clone()),
        };
        self.instance
            .api
            .query_consumer_offset(&broker.addr, &header)
            .await
    }

    /// Sends `mq`'s offset to its broker.
    pub async fn push(&self, mq: &MessageQueue, offset: i64, oneway: bool) -> Result<()> {
        let broker = self.broker_for(mq, false).await?;
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: self.group.clone(),
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            commit_offset: offset,
            bname: Some(mq.broker_name.clone()),
        };
        if oneway {
            self.instance
                .api
                .update_consumer_offset_oneway(&broker.addr, &header)
                .await
        } else {
            self.instance
                .api
                .update_consumer_offset(&broker.addr, &header)
                .await
        }
    }
}

/// The offset store of a consumer: the broker's (clustering) or a local file (broadcasting).
pub enum OffsetStore {
    Remote(RemoteBrokerOffsetStore),
    Local(LocalFileOffsetStore),
}

impl OffsetStore {
    /// The store of a consumer of `group` in `model` (the broker's for clustering, a local
    /// file under `local_dir` for broadcasting), with its stored offsets loaded. A
    /// broadcasting consumer without `local_dir` is a [`ClientError::Config`]: the caller
    /// chooses where offsets files go.
    pub(crate) fn open(
        instance: &Arc<ClientInstance>,
        group: &str,
        model: MessageModel,
        local_dir: Option<&Path>,
    ) -> Result<OffsetStore> {
        let store = match model {
            MessageModel::Clustering => {
                OffsetStore::Remote(RemoteBrokerOffsetStore::new(instance.clone(), group))
            }
            MessageModel::Broadcasting => {
                let dir = local_dir.ok_or_else(|| {
                    ClientError::Config(
                        "a broadcasting consumer needs local_offset_store_dir (upstream uses \
                         $HOME/.rocketmq_offsets)"
                            .into(),
                    )
                })?;
                OffsetStore::Local(LocalFileOffsetStore::new(dir, &instance.client_id, group))
            }
        };
        store.load()?;
        Ok(store)
    }

    fn table(&self) -> &OffsetTable {
        match self {
            OffsetStore::Remote(r) => r.table(),
            OffsetStore::Local(l) => l.table(),
        }
    }

    /// Loads stored offsets (the local file; nothing for the broker store).
    pub fn load(&self) -> Result<()> {
        match self {
            OffsetStore::Remote(_) => Ok(()),
            OffsetStore::Local(l) => l.load(),
        }
    }

    /// Records a consumed offset in memory.
    pub fn update_offset(&self, mq: &MessageQueue, offset: i64, increase_only: bool) {
        self.table().update(mq, offset, increase_only);
    }

    /// The offset of `mq`: `Ok(None)` when none is known.
    pub async fn read_offset(&self, mq: &MessageQueue, ty: ReadOffsetType) -> Result<Option<i64>> {
        if ty != ReadOffsetType::ReadFromStore {
            if let Some(o) = self.table().get(mq) {
                return Ok(Some(o));
            }
            if ty == ReadOffsetType::ReadFromMemory {
                return Ok(None);
            }
        }
        let stored = match self {
            OffsetStore::Remote(r) => r.fetch(mq).await?,
            OffsetStore::Local(l) => l.read_stored(mq)?,
        };
        if let Some(o) = stored {
            self.table().update(mq, o, false);
        }
        Ok(stored)
    }

    /// Persists the offsets of `mqs`.
    pub async fn persist_all(&self, mqs: &BTreeSet<MessageQueue>) {
        match self {
            OffsetStore::Remote(r) => {
                // Each queue's offset is read just before its own push (as upstream reads
                // each entry's current value), not from a snapshot taken before the first:
                // a push held up by a slow broker must not then send another queue's offset
                // from before the wait, moving it back past what pulls committed meanwhile.
                for mq in r.table().snapshot(Some(mqs)).into_keys() {
                    let Some(offset) = r.table().get(&mq) else {
                        continue;
                    };
                    if let Err(e) = r.push(&mq, offset, true).await {
                        warn!(queue = %mq, offset, error = %e, "offset commit failed");
                    } else {
                        debug!(queue = %mq, offset, "offset committed");
                    }
                }
            }
            OffsetStore::Local(l) => {
                if let Err(e) = l.persist(Some(mqs)) {
                    warn!(path = %l.path().display(), error = %e, "offsets file write failed");
                }
            }
        }
    }

    /// Persists `mq` and forgets it (the queue moved to another consumer).
    pub async fn persist_and_remove(&self, mq: &MessageQueue) {
        let one: BTreeSet<MessageQueue> = [mq.clone()].into_iter().collect();
        self.persist_all(&one).await;
        self.table().remove(mq);
    }

    /// Sets `mq`'s offset in memory and on the store at once (offset reset).
    pub async fn update_and_push(&self, mq: &MessageQueue, offset: i64) -> Result<()> {
        self.table().update(mq, offset, false);
        match self {
            OffsetStore::Remote(r) => r.push(mq, offset, false).await,
            OffsetStore::Local(l) => {
                let one: BTreeSet<MessageQueue> = [mq.clone()].into_iter().collect();
                l.persist(Some(&one))
            }
        }
    }

    /// In-memory offsets of `mqs`.
    pub fn snapshot(&self, mqs: Option<&BTreeSet<MessageQueue>>) -> BTreeMap<MessageQueue, i64> {
        self.table().snapshot(mqs)
    }
}

impl ConsumerOffsets for OffsetStore {
    fn in_memory(&self) -> BTreeMap<MessageQueue, i64> {
        self.snapshot(None)
    }

    fn store_reset(
        self: Arc<Self>,
        offsets: BTreeMap<MessageQueue, i64>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            for (mq, offset) in offsets {
                if let Err(e) = self.update_and_push(&mq, offset).await {
                    warn!(queue = %mq, error = %e, "reset offset not stored");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_increase_only() {
        let t = OffsetTable::default();
        let mq = MessageQueue::new("T", "b", 0);
        t.update(&mq, 5, true);
        t.update(&mq, 3, true);
        assert_eq!(t.get(&mq), Some(5));
        t.update(&mq, 3, false);
        assert_eq!(t.get(&mq), Some(3));
    }

    #[test]
    fn local_file_round_trip_in_upstream_shape() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileOffsetStore::new(dir.path(), "10.0.0.1@1#2", "G");
        let (a, b) = (
            MessageQueue::new("T", "b", 0),
            MessageQueue::new("T", "b", 1),
        );
        store.table().update(&a, 10, false);
        store.table().update(&b, 20, false);
        store.persist(None).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert_eq!(
            text,
            r#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:10,{"brokerName":"b","queueId":1,"topic":"T"}:20}}"#
        );
        assert!(store.path().ends_with("10.0.0.1@1#2/G/offsets.json"));

        // A second write keeps the first as .bak; a corrupt main file falls back to it.
        store.table().update(&a, 11, false);
        store.persist(None).unwrap();
        std::fs::write(store.path(), b"{corrupt").unwrap();
        let again = LocalFileOffsetStore::new(dir.path(), "10.0.0.1@1#2", "G");
        again.load().unwrap();
        assert_eq!(again.table().get(&a), Some(10));
        assert_eq!(again.read_stored(&b).unwrap(), Some(20));

        // No file at all: nothing stored.
        let fresh = LocalFileOffsetStore::new(dir.path(), "other", "G");
        fresh.load().unwrap();
        assert_eq!(fresh.read_stored(&a).unwrap(), None);
    }

    #[tokio::test]
    async fn local_store_via_the_enum() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::Local(LocalFileOffsetStore::new(dir.path(), "c", "G"));
        let mq = MessageQueue::new("T", "b", 0);
        assert_eq!(
            store
                .read_offset(&mq, ReadOffsetType::ReadFromMemory)
                .await
                .unwrap(),
            None
        );
        store.update_offset(&mq, 7, true);
        let owned: BTreeSet<MessageQueue> = [mq.clone()].into_iter().collect();
        store.persist_all(&owned).await;
        let reread = OffsetStore::Local(LocalFileOffsetStore::new(dir.path(), "c", "G"));
        assert_eq!(
            reread
                .read_offset(&mq, ReadOffsetType::MemoryFirstThenStore)
                .await
                .unwrap(),
            Some(7)
        );
        reread.update_and_push(&mq, 2).await.unwrap();
        assert_eq!(
            reread
                .read_offset(&mq, ReadOffsetType::ReadFromStore)
                .await
                .unwrap(),
            Some(2)
        );
    }

    #[tokio::test]
    async fn broadcasting_needs_a_directory_from_the_caller() {
        let config = crate::ClientConfig::new("127.0.0.1:9876")
            .unwrap()
            .client_ip("127.0.0.1")
            .instance_name("offsets-dir-test");
        let transport = Arc::new(remoting::client::RemotingClient::new(Default::default()));
        let instance = ClientInstance::with_transport(config, transport).unwrap();
        let err = OffsetStore::open(&instance, "G", MessageModel::Broadcasting, None)
            .err()
            .expect("no directory, no local store");
        assert!(matches!(err, ClientError::Config(_)), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(&instance, "G", MessageModel::Broadcasting, Some(dir.path()))
            .unwrap();
        let OffsetStore::Local(local) = &store else {
            panic!("broadcasting keeps offsets locally");
        };
        assert!(local.path().starts_with(dir.path()));
        // Clustering needs no directory.
        OffsetStore::open(&instance, "G", MessageModel::Clustering, None).unwrap();
        instance.shutdown().await;
    }
}
