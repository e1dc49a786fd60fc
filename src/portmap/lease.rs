//! When to renew a port mapping, as plain arithmetic on instants so it is tested without a
//! gateway or a clock: renew at half the lifetime the gateway granted (RFC 6886 §3.3: "renew at
//! half the lifetime"), retry a failed renewal with a doubling pause, and never let the retry
//! wait past the point where half of what is left of the lease remains.
//!
//! Neighbours: [`super::keeper`] sleeps until these instants.

use std::time::Duration;

use tokio::time::Instant;

use crate::timing::{PORTMAP_RETRY_MAX, PORTMAP_RETRY_MIN};

/// The least pause before a renewal or retry, whatever the gateway granted: a gateway granting
/// a one-second lease must not make the keeper spin.
pub const MIN_PAUSE: Duration = Duration::from_secs(1);

/// A mapping's lease as granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub granted: Instant,
    /// `None`: permanent (a UPnP IGD that keeps only permanent mappings).
    pub lifetime: Option<Duration>,
}

impl Lease {
    pub fn new(granted: Instant, lifetime_secs: u32) -> Self {
        Lease {
            granted,
            lifetime: (lifetime_secs != 0).then(|| Duration::from_secs(lifetime_secs.into())),
        }
    }

    pub fn expires(&self) -> Option<Instant> {
        self.lifetime.map(|l| self.granted + l)
    }

    /// The first renewal: half the lifetime after the grant. `None` for a permanent mapping.
    pub fn renew_at(&self) -> Option<Instant> {
        self.lifetime.map(|l| self.granted + (l / 2).max(MIN_PAUSE))
    }

    /// The next try after `failures` (1, 2, …) failed renewals at `now`: a pause doubling from
    /// [`PORTMAP_RETRY_MIN`] up to [`PORTMAP_RETRY_MAX`], shortened to half of what is left of
    /// the lease so a gateway back in time keeps the mapping, never under [`MIN_PAUSE`].
    pub fn retry_at(&self, now: Instant, failures: u32) -> Instant {
        let doubling = PORTMAP_RETRY_MIN
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(PORTMAP_RETRY_MAX);
        let pause = match self.expires() {
            Some(expires) if expires > now => doubling.min((expires - now) / 2),
            _ => doubling,
        };
        now + pause.max(MIN_PAUSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_the_granted_lifetime() {
        let t0 = Instant::now();
        let hour = Lease::new(t0, 3600);
        assert_eq!(hour.renew_at(), Some(t0 + Duration::from_secs(1800)));
        assert_eq!(hour.expires(), Some(t0 + Duration::from_secs(3600)));
        // A gateway that grants less than asked is renewed at half of what it granted.
        assert_eq!(
            Lease::new(t0, 120).renew_at(),
            Some(t0 + Duration::from_secs(60))
        );
        // A one-second lease is not renewed in a spin.
        assert_eq!(Lease::new(t0, 1).renew_at(), Some(t0 + MIN_PAUSE));
        // A permanent mapping is never renewed.
        assert_eq!(Lease::new(t0, 0).renew_at(), None);
        assert_eq!(Lease::new(t0, 0).expires(), None);
    }

    #[test]
    fn failed_renewals_back_off_but_stay_inside_the_lease() {
        let t0 = Instant::now();
        let lease = Lease::new(t0, 3600);
        let now = t0 + Duration::from_secs(1800);
        let pauses: Vec<Duration> = (1..=8).map(|n| lease.retry_at(now, n) - now).collect();
        // Doubling from the minimum ...
        assert_eq!(pauses[0], PORTMAP_RETRY_MIN);
        assert_eq!(pauses[1], PORTMAP_RETRY_MIN * 2);
        // ... and never more than half of the 1800 s left, nor the maximum.
        for p in &pauses {
            assert!(
                *p <= Duration::from_secs(900).min(PORTMAP_RETRY_MAX),
                "{p:?}"
            );
            assert!(*p >= MIN_PAUSE);
        }
        // Close to expiry the retries come quickly, down to the floor.
        let late = t0 + Duration::from_secs(3599);
        assert_eq!(lease.retry_at(late, 5) - late, MIN_PAUSE);
        // Past expiry (the mapping is gone): plain back-off, capped.
        let after = t0 + Duration::from_secs(4000);
        assert_eq!(lease.retry_at(after, 30) - after, PORTMAP_RETRY_MAX);
        // A permanent mapping that must be made again backs off the same way.
        let permanent = Lease::new(t0, 0);
        assert_eq!(permanent.retry_at(now, 1) - now, PORTMAP_RETRY_MIN);
    }
}
