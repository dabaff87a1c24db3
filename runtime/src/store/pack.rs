//! Small objects, packed: every object of at most [`PACKED_MAX`] bytes lives
//! as a row of one SQLite file (`<store>/objects.db`) instead of a file of its
//! own under `objects/`.
//!
//! A pipeline of tiny steps makes mostly tiny objects (a tree per output, a
//! few bytes of value): as files, each cost an inode, a 4 KiB block, a
//! `fdatasync` and a share of a folder `fsync`. Packed, a whole commit batch of
//! them becomes durable with one write-ahead-log sync. Digests do not change:
//! an object's name is still the blake3 of its bytes, wherever it lives, and
//! readers ([`crate::store::Store`]) look in the pack, then in `objects/`.
//!
//! New objects wait in memory ([`Pack::put`]) and are visible to this process
//! at once; [`Pack::commit`] writes them in one transaction (called by
//! `Store::sync`, before any record names them). Other processes see them
//! from then on, as they see object files only once synced.

use crate::digest::Digest;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Objects of at most this many bytes are packed; bigger ones are files.
pub const PACKED_MAX: u64 = 16 * 1024;

/// The pack of one store. All methods take `&self`.
pub(crate) struct Pack {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Put since the last commit: readable here, not yet durable.
    pending: Mutex<HashMap<Digest, Arc<[u8]>>>,
}

fn sql_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{}: {e}", path.display()))
}

fn digest_of(blob: Vec<u8>) -> Option<Digest> {
    <[u8; 32]>::try_from(blob).ok().map(Digest::from_bytes)
}

impl Pack {
    /// Opens (creating if needed) the pack at `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Pack> {
        let conn = Connection::open(path).map_err(sql_err(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql_err(path))?;
        // WAL with FULL sync: a commit is durable when it returns (one sync
        // of the log), and readers in other processes never block it.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_err(path))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_err(path))?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS objects (digest BLOB NOT NULL PRIMARY KEY, bytes BLOB NOT NULL)",
            [],
        )
        .map_err(sql_err(path))?;
        Ok(Pack {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<[u8]>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds object `d` (the caller has hashed `bytes`); durable at the next
    /// [`Pack::commit`].
    pub(crate) fn put(&self, d: Digest, bytes: &[u8]) {
        self.pending().entry(d).or_insert_with(|| Arc::from(bytes));
    }

    /// The bytes stored under `d`, unverified (`None`: not in the pack).
    pub(crate) fn get(&self, d: &Digest) -> io::Result<Option<Vec<u8>>> {
        if let Some(b) = self.pending().get(d) {
            return Ok(Some(b.to_vec()));
        }
        self.conn()
            .prepare_cached("SELECT bytes FROM objects WHERE digest = ?1")
            .and_then(|mut s| {
                s.query_row(params![d.as_bytes().as_slice()], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_err(&self.path))
    }

    /// Whether `d` is in the pack (committed or pending), without reading it.
    pub(crate) fn contains(&self, d: &Digest) -> io::Result<bool> {
        if self.pending().contains_key(d) {
            return Ok(true);
        }
        self.conn()
            .prepare_cached("SELECT 1 FROM objects WHERE digest = ?1")
            .and_then(|mut s| s.exists(params![d.as_bytes().as_slice()]))
            .map_err(sql_err(&self.path))
    }

    /// Makes every object put since the last commit durable, in one
    /// transaction; returns their digests. On failure they stay pending.
    pub(crate) fn commit(&self) -> io::Result<Vec<Digest>> {
        let batch: Vec<(Digest, Arc<[u8]>)> = self.pending().drain().collect();
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let written = (|| {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO objects (digest, bytes) VALUES (?1, ?2)",
                )?;
                for (d, bytes) in &batch {
                    insert.execute(params![d.as_bytes().as_slice(), &bytes[..]])?;
                }
            }
            tx.commit()
        })();
        match written {
            Ok(()) => Ok(batch.into_iter().map(|(d, _)| d).collect()),
            Err(e) => {
                let mut pending = self.pending();
                for (d, bytes) in batch {
                    pending.entry(d).or_insert(bytes);
                }
                Err(sql_err(&self.path)(e))
            }
        }
    }

    /// The objects whose hex digest starts with `prefix` (lowercase hex, at
    /// most 64 characters), committed or pending; at most `limit`.
    pub(crate) fn with_prefix(&self, prefix: &str, limit: usize) -> io::Result<Vec<Digest>> {
        let bound = |fill: char| -> Option<Digest> {
            let mut hex = prefix.to_string();
            while hex.len() < 64 {
                hex.push(fill);
            }
            hex.parse().ok()
        };
        let (Some(low), Some(high)) = (bound('0'), bound('f')) else {
            return Ok(Vec::new());
        };
        let mut found: Vec<Digest> = self
            .pending()
            .keys()
            .filter(|d| d.to_hex().starts_with(prefix))
            .copied()
            .collect();
        let conn = self.conn();
        let mut s = conn
            .prepare_cached("SELECT digest FROM objects WHERE digest BETWEEN ?1 AND ?2 LIMIT ?3")
            .map_err(sql_err(&self.path))?;
        let rows = s
            .query_map(
                params![
                    low.as_bytes().as_slice(),
                    high.as_bytes().as_slice(),
                    limit as i64
                ],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .map_err(sql_err(&self.path))?;
        for row in rows {
            if let Some(d) = digest_of(row.map_err(sql_err(&self.path))?)
                && !found.contains(&d)
            {
                found.push(d);
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Every committed object's digest and size.
    pub(crate) fn list(&self) -> io::Result<Vec<(Digest, u64)>> {
        let conn = self.conn();
        let mut s = conn
            .prepare("SELECT digest, length(bytes) FROM objects")
            .map_err(sql_err(&self.path))?;
        let rows = s
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sql_err(&self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let (d, len) = row.map_err(sql_err(&self.path))?;
            // A row not named like an object cannot be asked for: skip it.
            if let Some(d) = digest_of(d) {
                out.push((d, len.max(0) as u64));
            }
        }
        Ok(out)
    }

    /// Removes objects (committed or pending), in one transaction.
    pub(crate) fn remove(&self, digests: &[Digest]) -> io::Result<()> {
        {
            let mut pending = self.pending();
            for d in digests {
                pending.remove(d);
            }
        }
        let mut conn = self.conn();
        (|| {
            let tx = conn.transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM objects WHERE digest = ?1")?;
                for d in digests {
                    delete.execute(params![d.as_bytes().as_slice()])?;
                }
            }
            tx.commit()
        })()
        .map_err(sql_err(&self.path))?;
        if !digests.is_empty() {
            // Gives the freed pages back to the filesystem. Best effort: a
            // reader in another process (`weir serve`) can make it fail, and
            // the pages are reused by later objects anyway.
            if let Err(e) = conn.execute_batch("VACUUM") {
                tracing::debug!("compacting {}: {e}", self.path.display());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_readable_at_once_and_durable_after_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("objects.db");
        let pack = Pack::open(&path).unwrap();
        let d = Digest::of(b"tiny");
        pack.put(d, b"tiny");
        assert_eq!(pack.get(&d).unwrap().as_deref(), Some(&b"tiny"[..]));
        // Another opener (another process) sees nothing before the commit.
        assert_eq!(Pack::open(&path).unwrap().get(&d).unwrap(), None);
        assert!(pack.contains(&d).unwrap());
        assert_eq!(pack.commit().unwrap(), vec![d]);
        // Nothing is left pending.
        assert!(pack.commit().unwrap().is_empty());
        let other = Pack::open(&path).unwrap();
        assert_eq!(other.get(&d).unwrap().as_deref(), Some(&b"tiny"[..]));
        assert_eq!(other.list().unwrap(), vec![(d, 4)]);
        // A second put of the same object is harmless.
        pack.put(d, b"tiny");
        pack.commit().unwrap();
        assert_eq!(other.list().unwrap().len(), 1);
        // Found by a prefix of its hex digest, as `weir cat` and the API do.
        let hex = d.to_hex();
        assert_eq!(other.with_prefix(&hex[..7], 2).unwrap(), vec![d]);
        assert_eq!(pack.with_prefix(&hex, 2).unwrap(), vec![d]);
        let other_prefix = if hex.starts_with('0') { "1" } else { "0" };
        assert!(other.with_prefix(other_prefix, 2).unwrap().is_empty());
        other.remove(&[d]).unwrap();
        assert_eq!(pack.get(&d).unwrap(), None);
        assert!(!pack.contains(&d).unwrap());
    }
}
