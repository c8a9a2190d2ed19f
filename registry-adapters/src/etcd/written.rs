//! What this agent last wrote to etcd, or listed from it, per instance id: the memory that
//! lets a register that would rewrite the same value under the same lease write nothing, and
//! a heartbeat answer without I/O.
//!
//! A listing runs concurrently with writes, so it is merged only for the ids nobody wrote or
//! removed since it began: a listing can never bring back what a deregistration removed while
//! it ran.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::layout::Record;
use super::lock;

/// What this agent last wrote or listed, per instance id.
#[derive(Default)]
pub(super) struct Written {
    /// Bumped on every write; a listing only replaces entries older than its start.
    seq: u64,
    entries: HashMap<String, Entry>,
    /// The sequence of the latest write or removal per id, kept while a listing that started
    /// before it may still be merged, so that listing cannot bring back what was removed.
    changed: HashMap<String, u64>,
    /// Start sequences of the listings in flight (with multiplicity).
    listings: BTreeMap<u64, usize>,
}

impl Written {
    /// Records a write of `id`.
    pub fn remember(&mut self, id: &str, key: String, record: Record, lease: i64) {
        let seq = self.touch(id);
        self.entries.insert(
            id.to_owned(),
            Entry {
                key,
                record,
                lease,
                seq,
            },
        );
    }

    /// Records a removal of `id`.
    pub fn forget(&mut self, id: &str) {
        self.touch(id);
        self.entries.remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Entry> {
        self.entries.get(id).cloned()
    }

    fn touch(&mut self, id: &str) -> u64 {
        self.seq += 1;
        self.changed.insert(id.to_owned(), self.seq);
        self.seq
    }

    fn begin_listing(&mut self) -> u64 {
        *self.listings.entry(self.seq).or_default() += 1;
        self.seq
    }

    /// Ends the listing begun at `started`; with `found`, what it read replaces everything
    /// not written or removed since it began.
    fn end_listing(&mut self, started: u64, found: Option<HashMap<String, Entry>>) {
        if let Some(found) = found {
            self.entries.retain(|_, e| e.seq > started);
            for (id, entry) in found {
                if self.changed.get(&id).is_some_and(|seq| *seq > started) {
                    continue;
                }
                self.entries.entry(id).or_insert(entry);
            }
        }
        if let Some(n) = self.listings.get_mut(&started) {
            *n -= 1;
            if *n == 0 {
                self.listings.remove(&started);
            }
        }
        let floor = self.listings.keys().next().copied().unwrap_or(self.seq);
        self.changed.retain(|_, seq| *seq > floor);
    }
}

/// Ends a listing's bookkeeping however `list` returns.
pub(super) struct ListingGuard<'a> {
    written: &'a Mutex<Written>,
    pub started: u64,
    /// What the listing read; merged when the guard drops.
    pub found: Option<HashMap<String, Entry>>,
}

impl<'a> ListingGuard<'a> {
    /// Begins a listing's bookkeeping.
    pub fn begin(written: &'a Mutex<Written>) -> ListingGuard<'a> {
        let started = lock(written).begin_listing();
        ListingGuard {
            written,
            started,
            found: None,
        }
    }
}

impl Drop for ListingGuard<'_> {
    fn drop(&mut self) {
        lock(self.written).end_listing(self.started, self.found.take());
    }
}

/// One instance as this agent last wrote or listed it.
#[derive(Clone)]
pub(super) struct Entry {
    /// Its instance key.
    pub key: String,
    pub record: Record,
    /// The lease the key is held by.
    pub lease: i64,
    /// The write sequence it was recorded at (a listing's start for listed entries).
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Health;
    use std::time::SystemTime;

    fn entry(id: &str, seq: u64) -> Entry {
        let instance = crate::contract::instance("n", id, "web", Health::passing("ok"));
        Entry {
            key: format!("/berth/services/web/{id}"),
            record: Record::new(&instance, &instance.health, SystemTime::UNIX_EPOCH),
            lease: 7,
            seq,
        }
    }

    fn write(w: &mut Written, id: &str) {
        let seq = w.touch(id);
        w.entries.insert(id.into(), entry(id, seq));
    }

    fn remove(w: &mut Written, id: &str) {
        w.touch(id);
        w.entries.remove(id);
    }

    #[test]
    fn a_listing_cannot_bring_back_what_was_removed_while_it_ran() {
        let mut w = Written::default();
        write(&mut w, "a");
        let started = w.begin_listing();
        // The listing reads "a"; then "a" is deregistered before the listing is merged.
        remove(&mut w, "a");
        let found = HashMap::from([("a".to_owned(), entry("a", started))]);
        w.end_listing(started, Some(found));
        assert!(!w.entries.contains_key("a"));
    }

    #[test]
    fn a_listing_keeps_writes_made_while_it_ran_and_drops_what_it_did_not_find() {
        let mut w = Written::default();
        write(&mut w, "gone");
        let started = w.begin_listing();
        write(&mut w, "new");
        w.end_listing(started, Some(HashMap::new()));
        assert!(
            w.entries.contains_key("new"),
            "written after the listing began"
        );
        assert!(!w.entries.contains_key("gone"), "not in etcd any more");
    }

    #[test]
    fn change_marks_live_as_long_as_an_older_listing_is_in_flight() {
        let mut w = Written::default();
        let slow = w.begin_listing();
        remove(&mut w, "a");
        let fast = w.begin_listing();
        w.end_listing(fast, Some(HashMap::new()));
        assert!(
            w.changed.contains_key("a"),
            "the slow listing still needs it"
        );
        let found = HashMap::from([("a".to_owned(), entry("a", slow))]);
        w.end_listing(slow, Some(found));
        assert!(!w.entries.contains_key("a"));
        assert!(
            w.changed.is_empty() && w.listings.is_empty(),
            "pruned once none is in flight"
        );
        // A failed listing ends its bookkeeping too.
        let failed = w.begin_listing();
        w.end_listing(failed, None);
        assert!(w.listings.is_empty());
    }
}
