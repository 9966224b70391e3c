//! The database file: where it lives, the one relay that may use it, its schema and the
//! checks before anything is written to it.
//!
//! SQLite in WAL mode: readers (room opens, scroll-back) never wait for the writer, and a
//! commit is one append to the write-ahead log. Schema (documented in README "History on
//! disk" for operators who inspect it with `sqlite3`):
//!
//! ```sql
//! CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
//!                     epoch TEXT NOT NULL, last_seq INTEGER NOT NULL);
//! CREATE TABLE messages (room_id INTEGER NOT NULL, seq INTEGER NOT NULL,
//!                        ts INTEGER NOT NULL, event TEXT NOT NULL,
//!                        ref TEXT, person TEXT,
//!                        PRIMARY KEY (room_id, seq)) WITHOUT ROWID;
//! CREATE TABLE reads (room_id INTEGER NOT NULL, person TEXT NOT NULL,
//!                     seq INTEGER NOT NULL,
//!                     PRIMARY KEY (room_id, person)) WITHOUT ROWID;
//! CREATE TABLE webhook_cursors (room_id INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
//! ```
//!
//! `event` is the message event's JSON exactly as clients received it; `ts` its timestamp
//! in milliseconds (for `--retain-age`); `ref` and `person` the sender's `ref` and who sent
//! it, for a send with `ref` (a resend after a restart is recognised from them). `reads`
//! holds each person's read position in a room (`person`: a token's `sub`, or a username
//! without authentication). `webhook_cursors` holds, per room, the seq up to which the
//! webhooks (`--webhook-url`) delivered its log (docs/HOOKS.md).
//!
//! A new file gets the first version's schema and then every migration step; a file of an
//! older version gets the steps it lacks ([`MIGRATIONS`]), in one transaction, when the
//! relay opens it (after `quick_check`: a damaged file is refused, never half-migrated).

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use crate::config::Fsync;

/// `PRAGMA application_id`: marks the file as chatrelay's ("CRLY").
const APPLICATION_ID: i64 = 0x4352_4c59;
/// `PRAGMA user_version` of the schema this relay writes; a file with a higher one was
/// written by a newer relay and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 3;

/// Bytes the write-ahead log keeps when it starts over (64 MiB).
const WAL_LIMIT: u64 = 64 << 20;

/// The schema of version 1 (the first release), which every file starts from.
pub const CREATE_V1: &str = "
    CREATE TABLE rooms (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        epoch TEXT NOT NULL,
        last_seq INTEGER NOT NULL
    );
    CREATE TABLE messages (
        room_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (room_id, seq)
    ) WITHOUT ROWID;
";

/// What each version adds, as `(version, statement)` steps in order: a file of version `v`
/// gets every step of a version above `v`. One statement per step, so changes to the same
/// version from different work merge as added lines.
const MIGRATIONS: &[(i64, &str)] = &[
    // 2: read positions, and the ref and person of a send with `ref`.
    (
        2,
        "CREATE TABLE reads (
            room_id INTEGER NOT NULL,
            person TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (room_id, person)
        ) WITHOUT ROWID",
    ),
    (2, "ALTER TABLE messages ADD COLUMN ref TEXT"),
    (2, "ALTER TABLE messages ADD COLUMN person TEXT"),
    // 3: how far the webhooks have delivered each room's log (`store::feed`).
    (
        3,
        "CREATE TABLE webhook_cursors (
            room_id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL
        )",
    ),
];

/// Brings a file of schema `from` to [`SCHEMA_VERSION`]: every step it lacks and the new
/// version, in one transaction (a crash midway leaves the old version whole).
fn migrate(db: &Connection, from: i64) -> rusqlite::Result<()> {
    let mut script = String::from("BEGIN;");
    for (version, step) in MIGRATIONS {
        if *version > from {
            script.push_str(step);
            script.push(';');
        }
    }
    script.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"));
    db.execute_batch(&script)
}

/// The database file inside `--data-dir`.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("chatrelay.sqlite3")
}

/// Creates `dir` if needed and takes its lock: two relays appending to one database would
/// hand out the same seqs. The lock is the OS's (released when the process ends, also on
/// `kill -9`), held through the returned file.
pub fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::dir(dir, "cannot be created", &e))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::dir(dir, "cannot be written", &e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::dir(dir, "cannot be locked", &e)),
    }
}

/// Opens the writer's connection: creates the schema in a new file, refuses a file of a
/// newer schema, another program's, or a damaged one, and proves the file writable.
pub fn open_writer(dir: &Path, fsync: Fsync, max_bytes: u64) -> Result<Connection, StoreError> {
    let path = db_path(dir);
    let db =
        Connection::open(&path).map_err(|e| StoreError::file(&path, "cannot be opened", &e))?;
    let damaged = |e: rusqlite::Error| StoreError::Damaged {
        path: path.clone(),
        detail: e.to_string(),
    };
    // WAL: a commit appends to the log and readers never block. A file that is not a
    // database fails here, before anything is written to it.
    let mode: String = db
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(damaged)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::file(
            &path,
            "cannot use write-ahead logging",
            &format!("journal_mode is {mode}"),
        ));
    }
    let synchronous = match fsync {
        // FULL syncs the log at every commit; NORMAL only at checkpoints (the writer syncs
        // the log itself every --fsync-interval, and not at all with `off`). Never OFF: in
        // WAL mode that can leave a damaged file after an OS crash, which the relay would
        // then refuse to start on.
        Fsync::Always => "FULL",
        Fsync::Interval | Fsync::Off => "NORMAL",
    };
    // Checkpoints are the syncer thread's (`store::syncer`), never a commit's: an automatic
    // one would copy and sync megabytes in the middle of the writer's next transaction.
    // A log that grew in a burst is cut back to this when it starts over (`syncer::catch_up`).
    db.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA journal_size_limit = {WAL_LIMIT};"
    ))
    .map_err(damaged)?;
    let app: i64 = db
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(damaged)?;
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(damaged)?;
    let tables: i64 = db
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(damaged)?;
    if app == 0 && version == 0 && tables == 0 {
        db.execute_batch(&format!(
            "BEGIN; {CREATE_V1} PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = 1; COMMIT;"
        ))
        .map_err(|e| StoreError::file(&path, "cannot be written", &e))?;
        migrate(&db, 1).map_err(|e| StoreError::file(&path, "cannot be written", &e))?;
    } else if app != APPLICATION_ID {
        return Err(StoreError::Foreign(path));
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path,
            version,
            known: SCHEMA_VERSION,
        });
    }
    let check: String = db
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(damaged)?;
    if check == "ok" && (1..SCHEMA_VERSION).contains(&version) {
        // An older relay's file: upgraded in place (checked first, so a damaged file is
        // refused as before rather than half-migrated).
        migrate(&db, version).map_err(|e| StoreError::file(&path, "cannot be migrated", &e))?;
        tracing::info!(path = %path.display(), from = version, to = SCHEMA_VERSION, "upgraded the history database's schema");
    }
    if check != "ok" {
        // One line, as every start-up error: SQLite lists each damaged page on its own.
        let mut detail = check.split_whitespace().collect::<Vec<_>>().join(" ");
        if detail.len() > 160 {
            let cut = (0..=160)
                .rev()
                .find(|&i| detail.is_char_boundary(i))
                .unwrap_or(0);
            detail.truncate(cut);
            detail.push_str("...");
        }
        return Err(StoreError::Damaged { path, detail });
    }
    // Proves the file and its directory writable now rather than at the first message.
    db.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(|e| StoreError::file(&path, "cannot be written", &e))?;
    if max_bytes > 0 {
        let page: i64 = db
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(damaged)?;
        let pages = (max_bytes / page.max(1) as u64).max(1);
        // Past it every write fails with SQLITE_FULL, exactly as on a full disk.
        db.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(damaged)?;
    }
    Ok(db)
}

/// The syncer's connection: read-write, because a checkpoint writes the database file.
pub fn open_syncer(dir: &Path) -> Result<Connection, StoreError> {
    open_beside_writer(dir, OpenFlags::default(), "cannot be opened")
}

/// A read-only connection for room opens or scroll-back (WAL readers see every commit and
/// never wait for the writer).
pub fn open_reader(dir: &Path) -> Result<Connection, StoreError> {
    open_beside_writer(
        dir,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        "cannot be opened for reading",
    )
}

/// A connection beside the writer's. It waits for a lock only while the writer restarts the
/// log after a checkpoint, which is brief.
fn open_beside_writer(
    dir: &Path,
    flags: OpenFlags,
    what: &'static str,
) -> Result<Connection, StoreError> {
    let path = db_path(dir);
    let db =
        Connection::open_with_flags(&path, flags).map_err(|e| StoreError::file(&path, what, &e))?;
    db.busy_timeout(std::time::Duration::from_millis(500))
        .map_err(|e| StoreError::file(&path, what, &e))?;
    Ok(db)
}
