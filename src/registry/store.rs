//! The registry's store: one SQLite table of names (rusqlite, bundled). WAL mode with
//! `synchronous=FULL`, so each write's commit is fsynced to the log before it returns and a
//! server killed at any moment (or a machine losing power) loses nothing it acknowledged. Each
//! write is one `BEGIN IMMEDIATE` transaction that reads the row, applies [`super::rules`] and
//! writes: writers are serialised, so two claims of one free name cannot both win. Readers use
//! their own connections and never wait for a writer's fsync.
//!
//! The API is blocking; the server calls it from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::rules::{self, Outcome, Policy, Refusal, Stored};
use crate::identity::PublicKey;
use crate::names::{Name, Record, Release};

/// Idle reader connections kept for reuse; more are opened when needed and closed after.
const IDLE_READERS: usize = 8;
/// A connection waits this long for another's lock (a checkpoint, say) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS names (
    name       TEXT PRIMARY KEY,
    key        BLOB NOT NULL,     -- the owner's compressed SEC1 key
    seq        INTEGER NOT NULL,  -- u64, stored bit for bit
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    record     BLOB NOT NULL      -- the signed bytes, served as they came
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS names_by_key ON names (key, expires_at);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the directory for {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("registry database cannot use WAL mode (journal_mode is {0})")]
    NotWal(String),
    #[error("registry database holds a damaged row for {0:?}")]
    Corrupt(String),
}

/// The names table behind one writer connection and a few readers.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(path.to_path_buf(), e))?;
        }
        let writer = connect(path)?;
        let mode: String = writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
        writer.execute_batch(SCHEMA)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The record bytes served for `name` at `now`: none once it has expired.
    pub fn lookup(&self, name: &Name, now: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT record FROM names WHERE name = ?1 AND expires_at > ?2")?
                .query_row(params![name.as_str(), to_sql(now)], |r| r.get(0))
                .optional()
        })
    }

    /// How many names are served at `now`.
    pub fn live_count(&self, now: u64) -> Result<u64, StoreError> {
        let n: i64 = self.read(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM names WHERE expires_at > ?1")?
                .query_row(params![to_sql(now)], |r| r.get(0))
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Applies a checked `record` (signed as `bytes`) in one transaction; the outcome is
    /// durable when this returns.
    pub fn claim(
        &self,
        record: &Record,
        bytes: &[u8],
        now: u64,
        policy: Policy,
    ) -> Result<Result<Outcome, Refusal>, StoreError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored = row(&tx, &record.name)?;
        let key = record.key.to_compressed();
        let held_elsewhere: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM names WHERE key = ?1 AND name != ?2 AND expires_at > ?3",
            )?
            .query_row(
                params![&key[..], record.name.as_str(), held_since(now, policy)],
                |r| r.get(0),
            )?;
        let held_elsewhere = u32::try_from(held_elsewhere).unwrap_or(u32::MAX);
        let decision =
            rules::decide_claim(stored.as_ref(), record, bytes, held_elsewhere, now, policy);
        if let Ok(Outcome::Claimed | Outcome::Renewed) = decision {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO names (name, key, seq, issued_at, expires_at, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                record.name.as_str(),
                &key[..],
                record.seq as i64,
                to_sql(record.issued_at),
                to_sql(record.expires_at),
                bytes,
            ])?;
            tx.commit()?;
        }
        Ok(decision)
    }

    /// Applies a checked `release` in one transaction; durable when this returns.
    pub fn release(
        &self,
        release: &Release,
        now: u64,
        policy: Policy,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored = row(&tx, &release.name)?;
        let decision = rules::decide_release(stored.as_ref(), release, now, policy);
        if decision.is_ok() {
            tx.prepare_cached("DELETE FROM names WHERE name = ?1")?
                .execute(params![release.name.as_str()])?;
            tx.commit()?;
        }
        Ok(decision)
    }

    /// Deletes the rows of names past their grace at `now` (free already); returns how many.
    pub fn purge(&self, now: u64, policy: Policy) -> Result<usize, StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let n = writer
            .prepare_cached("DELETE FROM names WHERE expires_at <= ?1")?
            .execute(params![held_since(now, policy)])?;
        Ok(n)
    }

    /// Runs `f` on a reader connection from the pool (or a new one).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.path)?,
        };
        let result = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        Ok(result?)
    }
}

/// A connection with the settings every connection needs (`synchronous` is per connection).
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// The stored row for `name`, if any.
fn row(conn: &Connection, name: &Name) -> Result<Option<Stored>, StoreError> {
    type Raw = (Vec<u8>, i64, i64, i64, Vec<u8>);
    let raw: Option<Raw> = conn
        .prepare_cached(
            "SELECT key, seq, issued_at, expires_at, record FROM names WHERE name = ?1",
        )?
        .query_row(params![name.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((key, seq, issued_at, expires_at, bytes)) = raw else {
        return Ok(None);
    };
    let corrupt = || StoreError::Corrupt(name.as_str().to_string());
    Ok(Some(Stored {
        key: PublicKey::from_sec1(&key).ok_or_else(corrupt)?,
        seq: seq as u64,
        issued_at: u64::try_from(issued_at).map_err(|_| corrupt())?,
        expires_at: u64::try_from(expires_at).map_err(|_| corrupt())?,
        bytes,
    }))
}

/// A time for SQL. Accepted records' times are near now, far below `i64::MAX`.
fn to_sql(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Names whose `expires_at` is above this are still held at `now` ([`Stored::is_held`]).
fn held_since(now: u64, policy: Policy) -> i64 {
    to_sql(now.saturating_sub(policy.grace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Address;
    use crate::identity::Identity;
    use std::sync::{Arc, Barrier};

    const NOW: u64 = 1_800_000_000;
    const POLICY: Policy = Policy {
        grace: 100,
        max_names: 2,
    };

    fn signed(owner: &Identity, name: &str, seq: u64, issued_at: u64) -> (Record, Vec<u8>) {
        let r = Record {
            name: Name::parse(name).unwrap(),
            key: owner.public_key(),
            address: Address::new(owner.public_key(), Vec::new()),
            seq,
            issued_at,
            expires_at: issued_at + 100,
        };
        let bytes = r.sign(owner).unwrap();
        (r, bytes)
    }

    #[test]
    fn claims_lookups_and_releases_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/registry.db");
        let alice = Identity::generate();
        let (r, bytes) = signed(&alice, "bob", 1, NOW);
        let bob = r.name.clone();
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.lookup(&bob, NOW).unwrap(), None);
            assert_eq!(
                store.claim(&r, &bytes, NOW, POLICY).unwrap(),
                Ok(Outcome::Claimed)
            );
            assert_eq!(
                store.claim(&r, &bytes, NOW, POLICY).unwrap(),
                Ok(Outcome::Unchanged)
            );
            assert_eq!(store.lookup(&bob, NOW).unwrap(), Some(bytes.clone()));
            assert_eq!(store.live_count(NOW).unwrap(), 1);
        }
        // Reopened: the claim is still there; served until expiry, then held through the grace.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.lookup(&bob, NOW + 99).unwrap(), Some(bytes));
        assert_eq!(store.lookup(&bob, NOW + 100).unwrap(), None);
        assert_eq!(store.live_count(NOW + 100).unwrap(), 0);
        let mallory = Identity::generate();
        let (theirs, their_bytes) = signed(&mallory, "bob", 1, NOW + 150);
        assert_eq!(
            store
                .claim(&theirs, &their_bytes, NOW + 150, POLICY)
                .unwrap(),
            Err(Refusal::Taken {
                owner: alice.public_key()
            })
        );
        let (renewed, renewed_bytes) = signed(&alice, "bob", 2, NOW + 150);
        assert_eq!(
            store
                .claim(&renewed, &renewed_bytes, NOW + 150, POLICY)
                .unwrap(),
            Ok(Outcome::Renewed)
        );
        let release = |who: &Identity, seq| Release {
            name: bob.clone(),
            key: who.public_key(),
            seq,
            issued_at: NOW + 160,
        };
        assert_eq!(
            store
                .release(&release(&mallory, 3), NOW + 160, POLICY)
                .unwrap(),
            Err(Refusal::Taken {
                owner: alice.public_key()
            })
        );
        assert!(store
            .release(&release(&alice, 2), NOW + 160, POLICY)
            .unwrap()
            .is_err());
        assert_eq!(
            store
                .release(&release(&alice, 3), NOW + 160, POLICY)
                .unwrap(),
            Ok(())
        );
        assert_eq!(store.lookup(&bob, NOW + 160).unwrap(), None);
        assert_eq!(
            store
                .release(&release(&alice, 4), NOW + 160, POLICY)
                .unwrap(),
            Err(Refusal::NotHeld)
        );
        assert_eq!(
            store
                .claim(&theirs, &their_bytes, NOW + 160, POLICY)
                .unwrap(),
            Ok(Outcome::Claimed)
        );
    }

    #[test]
    fn quota_counts_names_held_and_purge_frees_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).unwrap();
        let alice = Identity::generate();
        for name in ["a", "b"] {
            let (r, bytes) = signed(&alice, name, 1, NOW);
            assert_eq!(
                store.claim(&r, &bytes, NOW, POLICY).unwrap(),
                Ok(Outcome::Claimed)
            );
        }
        let (third, bytes) = signed(&alice, "c", 1, NOW);
        assert_eq!(
            store.claim(&third, &bytes, NOW, POLICY).unwrap(),
            Err(Refusal::Quota { max: 2 })
        );
        // Renewing a held name is not a new one.
        let (renew, renew_bytes) = signed(&alice, "a", 2, NOW);
        assert_eq!(
            store.claim(&renew, &renew_bytes, NOW, POLICY).unwrap(),
            Ok(Outcome::Renewed)
        );
        // "a" renewed in time stays held; once "b" is past its grace (expired at NOW+100,
        // grace 100) it no longer counts, and the purge forgets it.
        let (renew, renew_bytes) = signed(&alice, "a", 3, NOW + 50);
        assert_eq!(
            store.claim(&renew, &renew_bytes, NOW + 50, POLICY).unwrap(),
            Ok(Outcome::Renewed)
        );
        let later = NOW + 200;
        let (third, bytes) = signed(&alice, "c", 1, later);
        assert_eq!(
            store.claim(&third, &bytes, later, POLICY).unwrap(),
            Ok(Outcome::Claimed)
        );
        let (fourth, bytes) = signed(&alice, "d", 1, later);
        assert_eq!(
            store.claim(&fourth, &bytes, later, POLICY).unwrap(),
            Err(Refusal::Quota { max: 2 })
        );
        assert_eq!(store.purge(later, POLICY).unwrap(), 1);
        assert_eq!(store.purge(later, POLICY).unwrap(), 0);
        // Served at `later`: "c" only ("a" expired at NOW+150 and is in its grace).
        assert_eq!(store.live_count(later).unwrap(), 1);
    }

    #[test]
    fn concurrent_claims_of_one_name_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("r.db")).unwrap());
        let claims: Vec<_> = (0..8)
            .map(|_| signed(&Identity::generate(), "race", 1, NOW))
            .collect();
        let barrier = Arc::new(Barrier::new(claims.len()));
        let threads: Vec<_> = claims
            .into_iter()
            .map(|(r, bytes)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.claim(&r, &bytes, NOW, POLICY).unwrap()
                })
            })
            .collect();
        let threads: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = threads.iter().filter(|o| o.is_ok()).count();
        assert_eq!(wins, 1, "{threads:?}");
        assert!(threads
            .iter()
            .all(|o| matches!(o, Ok(Outcome::Claimed) | Err(Refusal::Taken { .. }))));
    }
}
