//! What keeps strangers from exhausting the registry (DESIGN §10): a token bucket of writes
//! per source address, and a count of open connections per source address. Both tables are
//! bounded: the rate table by [`super::MAX_TRACKED_IPS`] (when full, newcomers share one
//! bucket), the connection table by the global connection cap. IPv6 sources are counted per
//! /64, the block one host usually holds. No clock here: callers pass `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The unit a limit applies to: an IPv4 address or an IPv6 /64 (shared with the links' limits).
pub use crate::link::limits::Source;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Writes per source: a bucket holding a minute's worth, refilled continuously.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_sec: f64,
    max_sources: usize,
    buckets: HashMap<Source, Bucket>,
    /// Shared by the sources that arrive while the table is full of active ones.
    overflow: Bucket,
}

impl RateLimiter {
    pub fn new(per_minute: u32, max_sources: usize, now: Instant) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_sec: capacity / 60.0,
            max_sources,
            buckets: HashMap::new(),
            overflow: Bucket {
                tokens: capacity,
                at: now,
            },
        }
    }

    /// Takes one write from `ip`'s bucket, or says how long until one is available.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let source = Source::of(ip);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            // Sources whose buckets have refilled are as good as new: forget them.
            let (capacity, per_sec) = (self.capacity, self.per_sec);
            self.buckets
                .retain(|_, b| refilled(b, now, capacity, per_sec) < capacity);
        }
        let fresh = Bucket {
            tokens: self.capacity,
            at: now,
        };
        let bucket = if self.buckets.len() < self.max_sources {
            self.buckets.entry(source).or_insert(fresh)
        } else {
            self.buckets.get_mut(&source).unwrap_or(&mut self.overflow)
        };
        bucket.tokens = refilled(bucket, now, self.capacity, self.per_sec);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_sec,
            ))
        }
    }

    /// Sources with a bucket of their own.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

fn refilled(b: &Bucket, now: Instant, capacity: f64, per_sec: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * per_sec).min(capacity)
}

/// Open connections per source, at most `max_per_source` each.
#[derive(Clone, Debug)]
pub struct Connections {
    max_per_source: u32,
    open: Arc<Mutex<HashMap<Source, u32>>>,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    source: Source,
    open: Arc<Mutex<HashMap<Source, u32>>>,
}

impl Connections {
    pub fn new(max_per_source: u32) -> Self {
        Self {
            max_per_source,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, unless it already has as many as allowed.
    pub fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let source = Source::of(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            source,
            open: self.open.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_bucket_holds_a_minute_and_refills() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(6, 100, t0);
        let a = ip("192.0.2.1");
        for _ in 0..6 {
            assert_eq!(limiter.take(a, t0), Ok(()));
        }
        // Empty: one token comes back every 10 s.
        let wait = limiter.take(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(limiter.take(a, t0 + Duration::from_secs(5)).is_err());
        assert_eq!(limiter.take(a, t0 + Duration::from_secs(11)), Ok(()));
        // Another source has its own bucket.
        assert_eq!(limiter.take(ip("192.0.2.2"), t0), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        assert_eq!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8::ffff:2"))
        );
        assert_ne!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8:0:1::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
        assert_ne!(Source::of(ip("::")), Source::of(ip("0.0.0.0")));
    }

    #[test]
    fn strangers_cannot_grow_the_table() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(2, 4, t0);
        for i in 0..1000u32 {
            let stranger = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.take(stranger, t0);
            assert!(limiter.tracked() <= 4);
        }
        // The newcomers beyond the table shared one bucket, long empty.
        assert!(limiter.take(ip("192.0.2.9"), t0).is_err());
        // Once the tracked buckets have refilled they are forgotten and make room.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(limiter.take(ip("192.0.2.9"), later), Ok(()));
        assert_eq!(limiter.take(ip("192.0.2.9"), later), Ok(()));
        assert!(limiter.take(ip("192.0.2.9"), later).is_err());
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn connections_are_capped_per_source_and_released() {
        let conns = Connections::new(2);
        let a = ip("192.0.2.1");
        let first = conns.admit(a).unwrap();
        let _second = conns.admit(a).unwrap();
        assert!(conns.admit(a).is_none());
        assert!(conns.admit(ip("192.0.2.2")).is_some());
        drop(first);
        assert!(conns.admit(a).is_some());
        assert!(conns.open.lock().unwrap().len() <= 1);
    }
}
