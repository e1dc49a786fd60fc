//! The replay set: the (sender, message id) pairs a node has taken in, each remembered until the
//! message would be stale anyway. Bounded in total and per sender: one sender flooding fresh ids
//! fills only its own quota, so it can neither push another sender's ids out (nothing is ever
//! evicted early, which would let that message be replayed) nor lock another sender out. A full
//! set refuses new messages rather than forget ids; the sender's retries get through once
//! entries expire.
//!
//! What a quota cannot stop is many keys (keys are free to make): enough of them, each at its
//! quota, still fill the set. A listener with `--allow` is immune, since messages from keys it
//! does not admit never reach this set ([`super::session`] drops them first).
//!
//! Neighbours: [`super::session`] consults it for every authentic, fresh message that is not an
//! acknowledgement (acks change nothing when repeated, so they are not remembered).

use std::collections::HashMap;
use std::time::Instant;

use super::message::MessageId;
use crate::identity::PUBLIC_KEY_LEN;

/// A sender, by its compressed public key.
pub type Sender = [u8; PUBLIC_KEY_LEN];

/// Why a new message was not taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its sender already has its quota of remembered ids.
    SenderFull,
    /// The whole set is full.
    Full,
}

struct Entry {
    /// Unix ms after which the message would be stale anyway, so the entry can go.
    forget_after_ms: u64,
    /// When this message was last acknowledged (a duplicate is re-acked at most so often).
    last_ack: Option<Instant>,
}

#[derive(Default)]
struct Ids {
    ids: HashMap<MessageId, Entry>,
    /// The smallest `forget_after_ms` among `ids`: nothing expires before it.
    earliest_ms: u64,
}

impl Ids {
    /// Forgets what expired by `now_ms`; returns how many went.
    fn forget(&mut self, now_ms: u64) -> usize {
        if now_ms <= self.earliest_ms {
            return 0;
        }
        let before = self.ids.len();
        self.ids.retain(|_, e| e.forget_after_ms >= now_ms);
        self.earliest_ms = self
            .ids
            .values()
            .map(|e| e.forget_after_ms)
            .min()
            .unwrap_or(u64::MAX);
        before - self.ids.len()
    }
}

pub struct Replay {
    capacity: usize,
    per_sender: usize,
    senders: HashMap<Sender, Ids>,
    len: usize,
}

impl Replay {
    /// At most `capacity` ids in all and `per_sender` from any one sender.
    pub fn new(capacity: usize, per_sender: usize) -> Self {
        Self {
            capacity,
            per_sender,
            senders: HashMap::new(),
            len: 0,
        }
    }

    /// Ids remembered, all senders together.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ids remembered from `sender`.
    pub fn held_by(&self, sender: &Sender) -> usize {
        self.senders.get(sender).map_or(0, |s| s.ids.len())
    }

    /// When a message already taken in was last acknowledged, to be updated by a re-ack; `None`
    /// when the message is new.
    pub fn last_ack_mut(
        &mut self,
        sender: &Sender,
        id: &MessageId,
    ) -> Option<&mut Option<Instant>> {
        self.senders
            .get_mut(sender)?
            .ids
            .get_mut(id)
            .map(|e| &mut e.last_ack)
    }

    /// Remembers a new message until `forget_after_ms`, unless its sender holds its quota or
    /// the set is full of ids not yet expired at `now_ms`.
    pub fn insert(
        &mut self,
        sender: &Sender,
        id: MessageId,
        forget_after_ms: u64,
        last_ack: Option<Instant>,
        now_ms: u64,
    ) -> Result<(), Refused> {
        if self.held_by(sender) >= self.per_sender {
            if let Some(ids) = self.senders.get_mut(sender) {
                self.len -= ids.forget(now_ms);
            }
            if self.held_by(sender) >= self.per_sender {
                return Err(Refused::SenderFull);
            }
        }
        if self.len >= self.capacity {
            self.forget(now_ms);
            if self.len >= self.capacity {
                return Err(Refused::Full);
            }
        }
        let ids = self.senders.entry(*sender).or_insert_with(|| Ids {
            ids: HashMap::new(),
            earliest_ms: u64::MAX,
        });
        ids.earliest_ms = ids.earliest_ms.min(forget_after_ms);
        if ids
            .ids
            .insert(
                id,
                Entry {
                    forget_after_ms,
                    last_ack,
                },
            )
            .is_none()
        {
            self.len += 1;
        }
        Ok(())
    }

    /// Forgets every id expired by `now_ms`, and senders left with none.
    fn forget(&mut self, now_ms: u64) {
        let mut gone = 0;
        self.senders.retain(|_, ids| {
            gone += ids.forget(now_ms);
            !ids.ids.is_empty()
        });
        self.len -= gone;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;
    const LIFE_MS: u64 = 120_000;

    fn id(n: u32) -> MessageId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        MessageId(id)
    }

    #[test]
    fn one_sender_flooding_fills_only_its_quota() {
        let (mallory, alice): (Sender, Sender) = ([1; PUBLIC_KEY_LEN], [2; PUBLIC_KEY_LEN]);
        let mut set = Replay::new(64, 8);
        set.insert(&alice, id(0), NOW_MS + LIFE_MS, None, NOW_MS)
            .unwrap();
        let refused = (1..1000)
            .filter(|&n| {
                set.insert(&mallory, id(n), NOW_MS + LIFE_MS, None, NOW_MS)
                    == Err(Refused::SenderFull)
            })
            .count();
        assert_eq!((refused, set.held_by(&mallory), set.len()), (991, 8, 9));
        // Alice's id is still remembered (her message cannot be replayed) and she still gets in.
        assert!(set.last_ack_mut(&alice, &id(0)).is_some());
        for n in 1..8 {
            assert_eq!(
                set.insert(&alice, id(n), NOW_MS + LIFE_MS, None, NOW_MS),
                Ok(())
            );
        }
        // Once Mallory's ids expire, she gets a quota again.
        let later = NOW_MS + LIFE_MS + 1;
        assert_eq!(
            set.insert(&mallory, id(5000), later + LIFE_MS, None, later),
            Ok(())
        );
        assert_eq!(set.held_by(&mallory), 1);
    }

    #[test]
    fn a_full_set_refuses_rather_than_forgets() {
        let mut set = Replay::new(16, 4);
        for sender in 0..4u8 {
            for n in 0..4 {
                let key = [sender; PUBLIC_KEY_LEN];
                assert_eq!(
                    set.insert(&key, id(n), NOW_MS + LIFE_MS, None, NOW_MS),
                    Ok(())
                );
            }
        }
        let newcomer = [9; PUBLIC_KEY_LEN];
        assert_eq!(
            set.insert(&newcomer, id(0), NOW_MS + LIFE_MS, None, NOW_MS),
            Err(Refused::Full)
        );
        assert!(set.last_ack_mut(&[0; PUBLIC_KEY_LEN], &id(0)).is_some());
        // Expired ids make room, and senders with none left are forgotten.
        let later = NOW_MS + LIFE_MS + 1;
        assert_eq!(
            set.insert(&newcomer, id(0), later + LIFE_MS, None, later),
            Ok(())
        );
        assert_eq!((set.len(), set.senders.len()), (1, 1));
    }
}
