//! [`SeriesCache`]: per-key metric handles, created once and then found lock-free.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// A copy-on-write map from a key (a topic, a request code, ...) to the metric handles of its
/// series. A lookup loads a pointer and hashes a borrowed key: no lock, no allocation. A miss
/// creates the handles (resolving the registry's label set, which does lock and allocate) and
/// republishes the map; the number of keys must therefore stay bounded by what the process
/// serves (topics, groups, codes), never by messages.
pub struct SeriesCache<K, V> {
    map: ArcSwap<HashMap<K, V>>,
}

impl<K, V> Default for SeriesCache<K, V> {
    fn default() -> Self {
        SeriesCache {
            map: ArcSwap::from_pointee(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SeriesCache<K, V> {
    /// The handles of `key`, made by `make` (with the owned key) on first use. When two
    /// callers miss at once, both may run `make`; the first published value wins and both get
    /// it, so `make` must be idempotent (get-or-create in a registry family is).
    pub fn get_or_insert_with<Q>(&self, key: &Q, make: impl Fn(&K) -> V) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(v) = self.map.load().get(key) {
            return v.clone();
        }
        let owned = key.to_owned();
        let made = make(&owned);
        let mut winner = None;
        self.map.rcu(|current| {
            if let Some(v) = current.get(key) {
                winner = Some(v.clone());
                return Arc::clone(current);
            }
            winner = None;
            let mut next = HashMap::clone(current);
            next.insert(owned.clone(), made.clone());
            Arc::new(next)
        });
        winner.unwrap_or(made)
    }

    /// Runs `f` on the handles of `key` (made by `make` on first use) without cloning them:
    /// the hot path of a recording, which then touches no reference count shared with other
    /// threads.
    pub fn with<Q, R>(&self, key: &Q, make: impl Fn(&K) -> V, f: impl FnOnce(&V) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(v) = self.map.load().get(key) {
            return f(v);
        }
        f(&self.get_or_insert_with(key, make))
    }

    /// Number of keys cached.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn made_once_per_key_and_found_by_borrowed_key() {
        let cache: SeriesCache<String, usize> = SeriesCache::default();
        let made = AtomicUsize::new(0);
        let make = |k: &String| {
            made.fetch_add(1, Ordering::Relaxed);
            k.len()
        };
        assert_eq!(cache.get_or_insert_with("abc", make), 3);
        assert_eq!(cache.get_or_insert_with("abc", make), 3);
        assert_eq!(cache.get_or_insert_with("de", make), 2);
        assert_eq!(made.load(Ordering::Relaxed), 2);
        assert_eq!(cache.len(), 2);
        // `with` finds the same handles, and makes a missing one once.
        assert_eq!(cache.with("abc", make, |v| *v * 10), 30);
        assert_eq!(cache.with("fghi", make, |v| *v), 4);
        assert_eq!(cache.with("fghi", make, |v| *v), 4);
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }
}
