//! The state a NameServer's request handlers, expiry scanner and connection listener share
//! ([`NamesrvState`]). It sits below both `handlers` and `server`, which builds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::config::NamesrvConfig;
use crate::kv::KvConfigManager;
use crate::metrics::NamesrvMetrics;
use crate::route::RouteInfoManager;

/// Everything the handlers, the expiry scanner and the connection listener share.
pub(crate) struct NamesrvState {
    pub(crate) config: RwLock<NamesrvConfig>,
    pub(crate) routes: RwLock<RouteInfoManager>,
    pub(crate) kv: KvConfigManager,
    /// Requests of codes a NameServer does not serve, by code.
    pub(crate) unsupported: Mutex<BTreeMap<i32, u64>>,
    pub(crate) started: Instant,
    pub(crate) metrics: Arc<NamesrvMetrics>,
    /// The ACL (`aclEnable=true`): administrative requests need an admin account.
    pub(crate) acl: Option<acl::AclValidator>,
}
