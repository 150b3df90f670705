//! Open things counted by key (connections by client address, sessions by app), each held by a
//! [`Held`] that gives its place back when dropped, so no path out of a connection can leak one.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// A blocking lock: held for one lookup, never across an await.
type Counts<K> = Arc<Mutex<HashMap<K, usize>>>;

pub(crate) struct Tally<K> {
    counts: Counts<K>,
}

impl<K: Hash + Eq + Clone> Tally<K> {
    pub(crate) fn new() -> Self {
        Tally {
            counts: Counts::default(),
        }
    }

    /// A place for `key`, unless it already holds `max`.
    pub(crate) fn take(&self, key: K, max: usize) -> Option<Held<K>> {
        let mut counts = self.counts.lock();
        let open = counts.entry(key.clone()).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Held {
            counts: self.counts.clone(),
            key,
        })
    }
}

/// One place in a [`Tally`].
pub(crate) struct Held<K: Hash + Eq> {
    counts: Counts<K>,
    key: K,
}

impl<K: Hash + Eq> Held<K> {
    pub(crate) fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(open) = counts.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_come_back_when_dropped() {
        let tally = Tally::new();
        let first = tally.take("a", 2).unwrap();
        let second = tally.take("a", 2).unwrap();
        assert!(tally.take("a", 2).is_none());
        assert!(tally.take("b", 2).is_some());
        drop(first);
        let third = tally.take("a", 2).unwrap();
        drop((second, third));
        assert!(tally.counts.lock().is_empty());
    }
}
