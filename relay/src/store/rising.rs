//! Numbers that only rise (read positions, the webhooks' cursors), as the writer thread
//! takes them between message batches: the highest per key, written in one transaction
//! behind the messages, so a client marking every message read (or a webhook batch a
//! second) costs one row write per batch; on failure (a full disk) they stay for the next
//! batch, while the rooms go on with theirs.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use rusqlite::{params, Connection, Statement};

use super::sql_int;

/// A key of a [`Rising`] table: how its row is upserted.
pub(super) trait Row: Eq + Hash {
    /// The statement's parameters are the key's columns, then the number.
    fn upsert(&self, statement: &mut Statement<'_>, seq: i64) -> rusqlite::Result<usize>;
}

/// A room (its name).
impl Row for Arc<str> {
    fn upsert(&self, statement: &mut Statement<'_>, seq: i64) -> rusqlite::Result<usize> {
        statement.execute(params![&**self, seq])
    }
}

/// A person in a room.
impl Row for (Arc<str>, Box<str>) {
    fn upsert(&self, statement: &mut Statement<'_>, seq: i64) -> rusqlite::Result<usize> {
        statement.execute(params![&*self.0, &*self.1, seq])
    }
}

#[derive(Debug)]
pub(super) struct Rising<K> {
    latest: HashMap<K, u64>,
    /// What the log line calls them.
    what: &'static str,
    /// The upsert of one row; it keeps the higher of the stored and the new number.
    upsert: &'static str,
    /// The last write failed (logged once until one succeeds; the numbers are retried).
    failing: bool,
}

impl<K: Row> Rising<K> {
    pub(super) fn new(what: &'static str, upsert: &'static str) -> Self {
        Self {
            latest: HashMap::new(),
            what,
            upsert,
            failing: false,
        }
    }

    /// Numbers waiting to be written.
    pub(super) fn len(&self) -> usize {
        self.latest.len()
    }

    pub(super) fn add(&mut self, key: K, seq: u64) {
        let at = self.latest.entry(key).or_insert(0);
        *at = (*at).max(seq);
    }

    /// Writes every number taken (one transaction) and forgets them, or keeps them for the
    /// next batch when that fails.
    pub(super) fn store(&mut self, db: &mut Connection) {
        if self.latest.is_empty() {
            return;
        }
        match self.write(db) {
            Ok(()) => {
                self.latest.clear();
                self.failing = false;
            }
            Err(err) => {
                if !self.failing {
                    tracing::warn!(error = %err, count = self.latest.len(), what = self.what, "could not store; retrying with the next batch");
                }
                self.failing = true;
            }
        }
    }

    fn write(&self, db: &mut Connection) -> rusqlite::Result<()> {
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(self.upsert)?;
            for (key, seq) in &self.latest {
                key.upsert(&mut upsert, sql_int(*seq))?;
            }
        }
        tx.commit()
    }
}
