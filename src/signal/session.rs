//! Signalling reliability, sans-IO: acknowledgements, retries, de-duplication, staleness.
//!
//! A [`Session`] owns this node's keys and the inbox it reads replies on. [`Session::send`] seals
//! a message to a [`Peer`] (a key and one of its inboxes) and queues it; it is transmitted again
//! with exponential backoff until the peer's [`Payload::Ack`] arrives or
//! [`Config::send_timeout`] passes. [`Session::handle_incoming`] opens what a broker delivered and
//! drops (and counts) garbage, oversized, undecryptable, forged, stale and replayed messages;
//! messages from keys outside the allowed list are dropped too, unanswered (no ack, no pong:
//! silence). The rest is acknowledged on the inbox its sender named and surfaced as an
//! [`Event`]. A duplicate (a retransmission, or the same message through a second broker) is
//! never delivered twice, but is acknowledged again at most once per [`Config::reack_interval`]
//! in case the first ack was lost. Ids are remembered in a [`Replay`] set with a quota per sender.
//!
//! There is no socket and no clock in here: every input carries `now`, outputs are pulled with
//! [`Session::poll_transmit`], [`Session::poll_event`] and [`Session::poll_timeout`]. Wall-clock
//! time (for message timestamps) is `unix_epoch_ms + (now - epoch)`, fixed at construction.
//!
//! Neighbours: [`super::message`] is the codec; [`super`] drives a session over MQTT.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::message::{DropClass, Inbox, Keys, Message, MessageError, MessageId, Payload};
use super::replay::{Refused, Replay};
use super::{Peer, MAX_MESSAGE_LEN};
use crate::identity::{self, Allowed, PublicKey};
use crate::timing::{
    SIGNAL_INITIAL_RTO, SIGNAL_MAX_AGE, SIGNAL_MAX_FUTURE, SIGNAL_MAX_RTO, SIGNAL_REACK_INTERVAL,
    SIGNAL_SEND_TIMEOUT,
};

/// How many (sender, message id) pairs are remembered; beyond this, new messages are refused
/// (not acked, so the sender retries) rather than letting an old id be forgotten and replayed.
pub const SEEN_CAPACITY: usize = 16 * 1024;
/// How many of those one sender may hold: one per signalled connection it makes (acks are not
/// remembered), so about 7 connections a second sustained over the 150 s an id is kept.
pub const SEEN_PER_SENDER: usize = 1024;

/// Tunables; [`Config::default`] is what the product uses, tests shrink the timers.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub initial_rto: Duration,
    pub max_rto: Duration,
    pub send_timeout: Duration,
    pub reack_interval: Duration,
    pub max_age: Duration,
    pub max_future: Duration,
    pub seen_capacity: usize,
    pub seen_per_sender: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            initial_rto: SIGNAL_INITIAL_RTO,
            max_rto: SIGNAL_MAX_RTO,
            send_timeout: SIGNAL_SEND_TIMEOUT,
            reack_interval: SIGNAL_REACK_INTERVAL,
            max_age: SIGNAL_MAX_AGE,
            max_future: SIGNAL_MAX_FUTURE,
            seen_capacity: SEEN_CAPACITY,
            seen_per_sender: SEEN_PER_SENDER,
        }
    }
}

/// Bytes to publish on a peer's inbox topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Vec<u8>,
}

// A handful of events per connection: boxing the payload would save nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new, authentic, fresh message from an allowed key (already acknowledged). `from`
    /// names the inbox its sender reads replies on.
    Received {
        from: Peer,
        id: MessageId,
        payload: Payload,
    },
    /// The peer acknowledged a message we sent.
    Acked(MessageId),
    /// A message we sent was never acknowledged.
    Expired(MessageId),
}

/// What happened to messages, for `stats()` and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Messages sent (first transmissions, acks included).
    pub sent: u64,
    pub retransmitted: u64,
    pub acks_sent: u64,
    pub acked: u64,
    pub expired: u64,
    pub delivered: u64,
    pub dropped_garbage: u64,
    pub dropped_oversized: u64,
    pub dropped_undecryptable: u64,
    pub dropped_forged: u64,
    pub dropped_replayed: u64,
    pub dropped_stale: u64,
    /// From a key outside the allowed list: dropped unanswered.
    pub dropped_not_allowed: u64,
    /// Refused because its sender already had its quota of remembered ids.
    pub dropped_quota: u64,
    /// Refused because the seen-id window was full.
    pub dropped_overload: u64,
}

struct Pending {
    to: Peer,
    bytes: Vec<u8>,
    next: Instant,
    rto: Duration,
    deadline: Instant,
}

pub struct Session {
    keys: Keys,
    /// Where this node reads replies, named in every message it sends.
    inbox: Inbox,
    /// Whom this node answers; `None`: everyone.
    allowed: Option<Vec<Allowed>>,
    config: Config,
    epoch: Instant,
    epoch_unix_ms: u64,
    pending: HashMap<MessageId, Pending>,
    seen: Replay,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Session {
    /// A session reading replies on `inbox` and answering everyone (see [`Session::allowing`]).
    /// `epoch` and `epoch_unix_ms` name the same moment on the monotonic and the wall clock.
    pub fn new(
        keys: Keys,
        inbox: Inbox,
        config: Config,
        epoch: Instant,
        epoch_unix_ms: u64,
    ) -> Self {
        Self {
            keys,
            inbox,
            allowed: None,
            config,
            epoch,
            epoch_unix_ms,
            pending: HashMap::new(),
            seen: Replay::new(config.seen_capacity, config.seen_per_sender),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Takes in (and answers) only messages from keys `allowed` admits; `None`: everyone.
    pub fn allowing(mut self, allowed: Option<Vec<Allowed>>) -> Self {
        self.allowed = allowed;
        self
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// This node's own address for replies: its key and inbox.
    pub fn peer(&self) -> Peer {
        Peer {
            key: self.keys.public_key(),
            inbox: self.inbox,
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Unix milliseconds at `now`.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_millis();
        self.epoch_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Seals `payload` to `to` and queues it; it is retried until acked or expired.
    pub fn send(
        &mut self,
        now: Instant,
        to: &Peer,
        payload: Payload,
    ) -> Result<MessageId, MessageError> {
        let bytes = self.seal(now, to, payload)?;
        let id = bytes.0;
        self.transmits.push_back(Transmit {
            to: *to,
            bytes: bytes.1.clone(),
        });
        self.pending.insert(
            id,
            Pending {
                to: *to,
                bytes: bytes.1,
                next: now + self.config.initial_rto,
                rto: self.config.initial_rto,
                deadline: now + self.config.send_timeout,
            },
        );
        self.stats.sent += 1;
        Ok(id)
    }

    /// Stops retrying a message (its sender gave up waiting).
    pub fn cancel(&mut self, id: MessageId) {
        self.pending.remove(&id);
    }

    fn seal(
        &self,
        now: Instant,
        to: &Peer,
        payload: Payload,
    ) -> Result<(MessageId, Vec<u8>), MessageError> {
        let message = Message {
            from: self.keys.public_key(),
            to: to.key.id(),
            id: MessageId::random(),
            reply: self.inbox,
            timestamp_ms: self.unix_ms(now),
            payload,
        };
        Ok((message.id, message.seal(&self.keys, &to.key)?))
    }

    /// Takes in bytes a broker delivered on this node's topic.
    pub fn handle_incoming(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.len() > MAX_MESSAGE_LEN {
            self.stats.dropped_oversized += 1;
            return;
        }
        let message = match Message::open(&self.keys, bytes) {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!("signal: dropped a message: {e}");
                match e.class() {
                    DropClass::Garbage => self.stats.dropped_garbage += 1,
                    DropClass::Oversized => self.stats.dropped_oversized += 1,
                    DropClass::Undecryptable => self.stats.dropped_undecryptable += 1,
                    DropClass::Forged => self.stats.dropped_forged += 1,
                }
                return;
            }
        };
        if !identity::admitted(self.allowed.as_deref(), &message.from) {
            tracing::debug!(
                "signal: dropped a {} from {}, not allowed: no answer",
                message.payload.kind_name(),
                message.from.id()
            );
            self.stats.dropped_not_allowed += 1;
            return;
        }
        let now_ms = self.unix_ms(now);
        let max_age = duration_ms(self.config.max_age);
        let max_future = duration_ms(self.config.max_future);
        if message.timestamp_ms.saturating_add(max_age) < now_ms
            || message.timestamp_ms > now_ms.saturating_add(max_future)
        {
            tracing::debug!(
                "signal: dropped a stale message from {} ({} ms old)",
                message.from.id(),
                i128::from(now_ms) - i128::from(message.timestamp_ms)
            );
            self.stats.dropped_stale += 1;
            return;
        }
        let from = Peer {
            key: message.from,
            inbox: message.reply,
        };
        if let Payload::Ack(acked) = message.payload {
            // Acks are idempotent (a repeated one finds nothing pending), so not remembered.
            let ours = self
                .pending
                .get(&acked)
                .is_some_and(|p| p.to.key == from.key);
            if ours {
                self.pending.remove(&acked);
                self.stats.acked += 1;
                self.events.push_back(Event::Acked(acked));
            }
            return;
        }
        let sender = message.from.to_compressed();
        if let Some(last_ack) = self.seen.last_ack_mut(&sender, &message.id) {
            self.stats.dropped_replayed += 1;
            let due = match *last_ack {
                None => true,
                Some(at) => now.saturating_duration_since(at) >= self.config.reack_interval,
            };
            if due {
                *last_ack = Some(now);
                self.ack(now, &from, message.id);
            }
            return;
        }
        let forget_after_ms = message.timestamp_ms.saturating_add(max_age);
        match self
            .seen
            .insert(&sender, message.id, forget_after_ms, Some(now), now_ms)
        {
            Ok(()) => {}
            Err(Refused::SenderFull) => {
                tracing::debug!(
                    "signal: {} holds its quota of remembered messages: refused",
                    from.key.id()
                );
                self.stats.dropped_quota += 1;
                return;
            }
            Err(Refused::Full) => {
                self.stats.dropped_overload += 1;
                return;
            }
        }
        self.ack(now, &from, message.id);
        self.stats.delivered += 1;
        self.events.push_back(Event::Received {
            from,
            id: message.id,
            payload: message.payload,
        });
    }

    fn ack(&mut self, now: Instant, to: &Peer, id: MessageId) {
        match self.seal(now, to, Payload::Ack(id)) {
            Ok((_, bytes)) => {
                self.stats.sent += 1;
                self.stats.acks_sent += 1;
                self.transmits.push_back(Transmit { to: *to, bytes });
            }
            Err(e) => tracing::warn!("signal: cannot seal an ack: {e}"),
        }
    }

    /// Retransmits what is due and gives up what has expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (id, p) in &mut self.pending {
            if now >= p.deadline {
                expired.push(*id);
            } else if now >= p.next {
                self.transmits.push_back(Transmit {
                    to: p.to,
                    bytes: p.bytes.clone(),
                });
                self.stats.retransmitted += 1;
                p.rto = (p.rto * 2).min(self.config.max_rto);
                p.next = now + p.rto;
            }
        }
        expired.sort();
        for id in expired {
            self.pending.remove(&id);
            self.stats.expired += 1;
            self.events.push_back(Event::Expired(id));
        }
    }

    /// When [`Session::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next.min(p.deadline)).min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
