//! The connector's flow table, sans-IO: each distinct local source address is a flow with an id
//! of its own (never reused on a link), forgotten after a stretch of idleness in both
//! directions, at most a given number at once. Time comes in as arguments, so the tests drive
//! it on a simulated clock; the driver ([`super::local`]) sleeps until [`Flows::poll_timeout`]
//! and calls [`Flows::handle_timeout`].

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What became of a datagram from a local source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// It belongs to this flow (`new`: the flow starts with it).
    Flow { id: u64, new: bool },
    /// The table is full: dropped.
    Full,
}

#[derive(Debug)]
struct Entry<K> {
    key: K,
    last: Instant,
    /// Whether the flow was warned about an oversized datagram already.
    warned: bool,
}

/// Flows keyed by `K` (a local source address).
#[derive(Debug)]
pub struct Flows<K> {
    ids: HashMap<K, u64>,
    entries: HashMap<u64, Entry<K>>,
    next_id: u64,
    cap: usize,
    idle: Duration,
    /// When to look for idle flows next: no later than the earliest flow's expiry.
    timer: Option<Instant>,
}

impl<K: Hash + Eq + Clone> Flows<K> {
    pub fn new(cap: usize, idle: Duration) -> Self {
        Self {
            ids: HashMap::new(),
            entries: HashMap::new(),
            next_id: 0,
            cap,
            idle,
            timer: None,
        }
    }

    /// A datagram from `key` at `now`: its flow, made if need be.
    pub fn outbound(&mut self, key: &K, now: Instant) -> Outbound {
        if let Some(&id) = self.ids.get(key) {
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.last = now;
            }
            return Outbound::Flow { id, new: false };
        }
        if self.entries.len() >= self.cap {
            return Outbound::Full;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ids.insert(key.clone(), id);
        self.entries.insert(
            id,
            Entry {
                key: key.clone(),
                last: now,
                warned: false,
            },
        );
        self.timer.get_or_insert(now + self.idle);
        Outbound::Flow { id, new: true }
    }

    /// A datagram for flow `id` from the peer at `now`: where it goes, if the flow is known.
    pub fn inbound(&mut self, id: u64, now: Instant) -> Option<&K> {
        let entry = self.entries.get_mut(&id)?;
        entry.last = now;
        Some(&entry.key)
    }

    /// Whether flow `id` should be warned about an oversized datagram: once per flow.
    pub fn warn_once(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry) if !entry.warned => {
                entry.warned = true;
                true
            }
            _ => false,
        }
    }

    /// When [`Flows::handle_timeout`] should run next; `None` with no flows.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Forgets the flows idle for the whole idle time at `now`, returning them.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(u64, K)> {
        let idle = self.idle;
        let expired: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last) >= idle)
            .map(|(&id, _)| id)
            .collect();
        let mut gone = Vec::with_capacity(expired.len());
        for id in expired {
            if let Some(entry) = self.entries.remove(&id) {
                self.ids.remove(&entry.key);
                gone.push((id, entry.key));
            }
        }
        gone.sort_by_key(|(id, _)| *id);
        self.timer = self.entries.values().map(|e| e.last + idle).min();
        gone
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn each_source_is_its_own_flow_and_ids_are_never_reused() {
        let t0 = Instant::now();
        let mut flows = Flows::new(8, IDLE);
        assert_eq!(
            flows.outbound(&"a", t0),
            Outbound::Flow { id: 0, new: true }
        );
        assert_eq!(
            flows.outbound(&"b", t0),
            Outbound::Flow { id: 1, new: true }
        );
        assert_eq!(
            flows.outbound(&"a", t0),
            Outbound::Flow { id: 0, new: false }
        );
        assert_eq!(flows.inbound(1, t0), Some(&"b"));
        assert_eq!(flows.inbound(7, t0), None);
        // "a" forgotten and back: a new id, so a late reply to its old one finds nothing.
        assert_eq!(flows.handle_timeout(t0 + IDLE), vec![(0, "a"), (1, "b")]);
        assert_eq!(
            flows.outbound(&"a", t0 + IDLE),
            Outbound::Flow { id: 2, new: true }
        );
        assert_eq!(flows.inbound(0, t0 + IDLE), None);
    }

    #[test]
    fn traffic_either_way_keeps_a_flow_and_silence_frees_it() {
        let t0 = Instant::now();
        let mut flows = Flows::new(8, IDLE);
        flows.outbound(&"out", t0);
        flows.outbound(&"in", t0);
        assert_eq!(flows.poll_timeout(), Some(t0 + IDLE));
        let half = t0 + IDLE / 2;
        flows.outbound(&"out", half);
        flows.inbound(1, half);
        // The timer fires on time for the first deadline; nothing is idle long enough yet.
        assert!(flows.handle_timeout(t0 + IDLE).is_empty());
        assert_eq!(flows.poll_timeout(), Some(half + IDLE));
        assert_eq!(flows.len(), 2);
        flows.inbound(1, half + IDLE / 2);
        assert_eq!(flows.handle_timeout(half + IDLE), vec![(0, "out")]);
        assert_eq!(flows.poll_timeout(), Some(half + IDLE / 2 + IDLE));
        assert_eq!(flows.handle_timeout(half + IDLE * 2), vec![(1, "in")]);
        assert_eq!(flows.poll_timeout(), None);
        assert!(flows.is_empty());
    }

    #[test]
    fn the_cap_holds_until_an_idle_flow_makes_room() {
        let t0 = Instant::now();
        let mut flows = Flows::new(2, IDLE);
        flows.outbound(&1, t0);
        flows.outbound(&2, t0 + IDLE / 2);
        assert_eq!(flows.outbound(&3, t0 + IDLE / 2), Outbound::Full);
        // A known source still gets through while the table is full.
        assert!(matches!(
            flows.outbound(&2, t0 + IDLE / 2),
            Outbound::Flow { id: 1, .. }
        ));
        assert_eq!(flows.handle_timeout(t0 + IDLE), vec![(0, 1)]);
        assert_eq!(
            flows.outbound(&3, t0 + IDLE),
            Outbound::Flow { id: 2, new: true }
        );
    }

    #[test]
    fn an_oversized_datagram_is_warned_about_once_per_flow() {
        let t0 = Instant::now();
        let mut flows = Flows::new(4, IDLE);
        flows.outbound(&"a", t0);
        flows.outbound(&"b", t0);
        assert!(flows.warn_once(0));
        assert!(!flows.warn_once(0));
        assert!(flows.warn_once(1));
        assert!(!flows.warn_once(9));
    }
}
