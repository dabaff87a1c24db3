//! The content-addressed store: objects named by blake3, folders as trees.
//!
//! Layout under the store root (default `.weir/` beside the pipeline):
//!
//! - `objects.db`: objects of at most [`PACKED_MAX`] bytes (16 KiB), packed
//!   as rows of one SQLite file (`store/pack.rs`): most trees, params and
//!   small values;
//! - `objects/<2 hex>/<64 hex>`: bigger blobs and trees, read-only files whose
//!   name is the blake3 of their bytes;
//! - `views/<tree digest>/`: a folder artifact laid out as a real folder of
//!   hard links to its objects, mounted read-only into steps that read it;
//! - `compiled/`: components compiled by Cranelift, keyed by wasm digest and
//!   engine configuration;
//! - `tmp/`: staging for objects being written and for step outputs;
//! - `weir.db`: the run records (see [`crate::records`]);
//! - `gc.lock`: shared by runs, held alone by the garbage collector
//!   ([`StoreLease`], [`crate::gc`]).
//!
//! Object files become visible only by `rename` (or `link`) of a complete
//! file in the same filesystem, so no half-written object is ever seen under
//! its name; packed objects only by a committed transaction. Durability is
//! batched: the store remembers the objects it created, and [`Store::sync`]
//! flushes exactly those (`fdatasync` each file, then `fsync` their folders,
//! then one transaction for the packed ones) for a whole batch of finished
//! steps; the records that
//! reference them are committed only after it (see `sched/`). A crash
//! can therefore lose an object that no record references yet, never one that
//! a record does. Views and staging folders are caches and never synced. Objects are
//! checked before use: an object whose bytes do not hash to its name is moved to
//! `corrupt/` and treated as missing, never handed to a step.

mod pack;

pub use pack::PACKED_MAX;

use crate::digest::Digest;
use crate::faults::{Fault, Faults};
use crate::tree::{Entry, EntryKind, Tree, check_entry_name};
use pack::Pack;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Objects uploaded to a remote at once by [`Store::sync`].
pub const REMOTE_UPLOADS: usize = 8;

/// Files at least this big are hashed with memory mapping on all cores.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// Trees of at most this many entries are kept decoded once verified...
const MEMO_TREE_ENTRIES: usize = 256;
/// ...up to this many entries in all (the memo starts over when full).
const MEMO_ENTRIES: usize = 65_536;

/// Decoded trees by digest, with their entry count in all.
#[derive(Default)]
struct TreeMemo {
    trees: HashMap<Digest, std::sync::Arc<Tree>>,
    entries: usize,
}

/// Stat facts that change when a file's bytes are rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Fingerprint {
    fn of(m: &fs::Metadata) -> Fingerprint {
        Fingerprint {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        }
    }
}

/// An error while ingesting a step's output folder, naming the offending path.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Something that is not a regular file or folder.
    #[error("output path '{path}' is a {kind}; outputs may hold only regular files and folders")]
    SpecialFile {
        /// Path relative to the outputs' root.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A name that cannot be stored.
    #[error("output path '{path}' has an unusable name: {reason}")]
    BadName {
        /// Path relative to the outputs' root.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// Over the output quota.
    #[error("outputs exceed the {what} limit of {limit} (at '{path}')")]
    Quota {
        /// "size" or "file count".
        what: &'static str,
        /// The limit, formatted.
        limit: String,
        /// Where the limit was crossed.
        path: String,
    },
    /// An I/O failure.
    #[error("cannot store output '{path}': {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The failure.
        source: io::Error,
    },
}

/// What [`Store::ingest_output`] stored.
#[derive(Debug, Clone, Copy)]
pub struct Ingested {
    /// The folder artifact's digest.
    pub digest: Digest,
    /// Bytes of all files in it.
    pub bytes: u64,
    /// Files and folders in it.
    pub files: u64,
    /// Whether the folder's tree was new to the store: not here, nor on
    /// its remote, before this call stored it. No cache entry written
    /// before then can name it.
    pub created: bool,
}

/// What [`Store::verify_objects`] found.
#[derive(Debug, Default)]
pub struct ObjectsReport {
    /// Objects checked.
    pub objects: u64,
    /// Their total size.
    pub bytes: u64,
    /// Objects whose bytes did not match their name (now in `corrupt/`).
    pub corrupt: Vec<Digest>,
    /// Files in `objects/` that are not named like objects.
    pub stray: Vec<PathBuf>,
}

/// Objects created since the last [`Store::sync`], by where they live.
#[derive(Default)]
struct Unsynced {
    /// Files under `objects/`.
    files: Vec<Digest>,
    /// Rows of the pack.
    packed: Vec<Digest>,
}

/// What the pack holds under a digest.
enum Packed {
    /// Bytes that hash to the digest.
    Valid(Vec<u8>),
    /// A row whose bytes did not; it was just moved to `corrupt/`.
    Quarantined,
    /// No row.
    Absent,
}

/// Where a stored object's bytes are ([`Store::object`]): objects of at
/// most [`PACKED_MAX`] bytes are packed (see the module doc).
#[derive(Debug)]
pub enum StoredObject {
    /// A small object, read from the pack (verified).
    Packed(Vec<u8>),
    /// A file under `objects/` (read it as a stream; not verified here).
    File(PathBuf),
}

/// Caps applied while ingesting an output folder.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// Total file bytes.
    pub bytes: u64,
    /// Files plus folders.
    pub files: u64,
}

/// The content-addressed store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    root: PathBuf,
    objects: PathBuf,
    views: PathBuf,
    tmp: PathBuf,
    verified: Mutex<HashMap<Digest, Fingerprint>>,
    /// Small trees decoded since this store was opened, by digest (an
    /// object's bytes never change, so neither does its decoding): a cache
    /// hit re-checks its output trees with a stat each, without reading them.
    trees: Mutex<TreeMemo>,
    /// Objects created since the last [`Store::sync`].
    unsynced: Mutex<Unsynced>,
    /// Held through a [`Store::sync`]: one that returns has made durable
    /// everything created before it was called, even what a concurrent
    /// call took.
    syncing: Mutex<()>,
    /// Objects of at most [`PACKED_MAX`] bytes (`pack.rs`).
    pack: Pack,
    /// Packed objects hashed and found valid since this process last took
    /// a lease on the store: only the garbage collector removes rows, and
    /// it runs under the exclusive lease, so none of these can go while a
    /// lease is held.
    packed_ok: Mutex<std::collections::HashSet<Digest>>,
    /// Empty staging folders left by steps that wrote nothing, for reuse.
    empty_dirs: Mutex<Vec<PathBuf>>,
    /// A second home for objects (see [`crate::remote`]).
    remote: Option<std::sync::Arc<dyn crate::remote::ObjectRemote>>,
    /// Injected I/O failures (tests only; see [`crate::faults`]).
    faults: Faults,
}

impl Drop for Store {
    fn drop(&mut self) {
        for dir in self
            .empty_dirs
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Bytes free for unprivileged writers on the filesystem holding `path`
/// (`None` when it cannot be asked).
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by statvfs
    // before it is read (only when it returns 0).
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A hold on a store: shared by every run while it uses the store, or held
/// alone by the garbage collector ([`crate::gc`]), so that no object a run
/// may still read or reuse is removed under it. A `flock` on
/// `<root>/gc.lock`, released when dropped (or when its process dies).
#[derive(Debug)]
pub struct StoreLease(#[allow(dead_code)] fs::File);

impl Store {
    fn lock_file(&self) -> io::Result<fs::File> {
        let p = self.root.join("gc.lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_at(&p))
    }

    /// A shared hold for a run, or `None` (and nothing held) while the
    /// garbage collector holds the store; [`Store::lease_blocking`] waits.
    pub fn try_lease(&self) -> io::Result<Option<StoreLease>> {
        self.forget_packed_ok();
        let f = self.lock_file()?;
        match f.try_lock_shared() {
            Ok(()) => Ok(Some(StoreLease(f))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// A shared hold for a run, waiting for a garbage collection to end.
    pub fn lease_blocking(&self) -> io::Result<StoreLease> {
        self.forget_packed_ok();
        let f = self.lock_file()?;
        f.lock_shared()?;
        Ok(StoreLease(f))
    }

    /// The garbage collector's hold: exclusive, so no run is using the
    /// store. Calls `waiting` once if it has to wait for runs to end.
    pub fn lease_exclusive(&self, waiting: &dyn Fn()) -> io::Result<StoreLease> {
        let f = self.lock_file()?;
        match f.try_lock() {
            Ok(()) => return Ok(StoreLease(f)),
            Err(fs::TryLockError::WouldBlock) => waiting(),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        f.lock()?;
        Ok(StoreLease(f))
    }

    /// A garbage collection may have run since the last lease: packed
    /// objects are checked again from now on.
    fn forget_packed_ok(&self) {
        self.packed_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Store> {
        let root = root.into();
        let (objects, views, tmp) = (root.join("objects"), root.join("views"), root.join("tmp"));
        for d in [&root, &objects, &views, &tmp, &root.join("compiled")] {
            fs::create_dir_all(d).map_err(io_at(d))?;
        }
        Ok(Store {
            pack: Pack::open(&root.join("objects.db"))?,
            packed_ok: Mutex::new(std::collections::HashSet::new()),
            objects,
            views,
            tmp,
            root,
            verified: Mutex::new(HashMap::new()),
            trees: Mutex::new(TreeMemo::default()),
            unsynced: Mutex::new(Unsynced::default()),
            syncing: Mutex::new(()),
            empty_dirs: Mutex::new(Vec::new()),
            remote: None,
            faults: Faults::from_env(),
        })
    }

    /// Pushes new objects to `remote` and fetches missing ones from it.
    pub fn with_remote(mut self, remote: std::sync::Arc<dyn crate::remote::ObjectRemote>) -> Store {
        self.remote = Some(remote);
        self
    }

    /// Fetches object `d` from the remote into the store, verifying it;
    /// `false` if there is no remote, it lacks `d`, or its copy is corrupt.
    fn fetch(&self, d: &Digest) -> io::Result<bool> {
        let Some(remote) = &self.remote else {
            return Ok(false);
        };
        let tmp = self.temp_path("fetch");
        let got = remote.get(d, &tmp);
        let ok = match got {
            Ok(true) => {
                let len = fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
                hash_file(&tmp, len).map(|h| h == *d).unwrap_or(false)
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(object = %d, "cannot fetch from the remote: {e:#}");
                false
            }
        };
        if !ok {
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        let path = self.object_path(d);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        let mut perms = fs::metadata(&tmp).map_err(io_at(&tmp))?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(&tmp, perms).map_err(io_at(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        Ok(true)
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where compiled components are cached.
    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
    }

    /// Where an object lives (whether or not it exists).
    pub fn object_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.objects.join(&hex[..2]).join(hex)
    }

    /// Resolves a digest written in full or as a prefix of at least 6 hex
    /// characters (as `weir` prints them) to the one stored object it names.
    pub fn resolve(&self, text: &str) -> anyhow::Result<Digest> {
        let t = text.trim().to_ascii_lowercase();
        if t.len() == 64 {
            return t.parse().map_err(|e| anyhow::anyhow!("{e}"));
        }
        if t.len() < 6 || t.len() > 64 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
            anyhow::bail!("expected an artifact digest (6 to 64 hex characters), found {text:?}");
        }
        let mut found = self.pack.with_prefix(&t, 2)?;
        if let Ok(dir) = std::fs::read_dir(self.objects.join(&t[..2])) {
            for e in dir.flatten() {
                let name = e.file_name();
                if let Some(n) = name.to_str()
                    && n.starts_with(&t)
                    && let Ok(d) = n.parse::<Digest>()
                    && !found.contains(&d)
                {
                    found.push(d);
                }
            }
        }
        match found.len() {
            1 => Ok(found[0]),
            0 => anyhow::bail!("no artifact in the store has a digest starting with {t}"),
            n => {
                anyhow::bail!("{n} artifacts have digests starting with {t}; give more characters")
            }
        }
    }

    /// A fresh, unique path under `tmp/` (nothing is created): unique
    /// across processes (the pid) and across the stores one process opens
    /// on the same folder (one counter for the process: with a counter per
    /// store, two runtimes on one folder named their staging folders alike
    /// and one emptied the other's output).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// An empty folder under `tmp/` for a step's output: a reused one when a
    /// previous step left its output empty, else a new one.
    pub fn staging_dir(&self, what: &str) -> io::Result<PathBuf> {
        let reused = self
            .empty_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let dir = reused.unwrap_or_else(|| self.temp_path(what));
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(dir)
    }

    /// Re-hashes every object in the store. Objects whose bytes do not match
    /// their name are quarantined (moved to `corrupt/`) and listed.
    pub fn verify_objects(&self) -> io::Result<ObjectsReport> {
        let mut report = ObjectsReport::default();
        for shard in fs::read_dir(&self.objects).map_err(io_at(&self.objects))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                report.stray.push(shard.path());
                continue;
            }
            for e in fs::read_dir(shard.path())? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(d) = name.parse::<Digest>() else {
                    report.stray.push(e.path());
                    continue;
                };
                let len = e.metadata()?.len();
                report.objects += 1;
                report.bytes += len;
                if hash_file(&e.path(), len)? != d {
                    self.quarantine(&d, &e.path())?;
                    report.corrupt.push(d);
                } else if let Ok(m) = e.metadata() {
                    self.remember(d, &m);
                }
            }
        }
        for (d, len) in self.pack.list()? {
            report.objects += 1;
            report.bytes += len;
            if let Packed::Quarantined = self.packed(&d)? {
                report.corrupt.push(d);
            }
        }
        Ok(report)
    }

    /// Removes leftovers in `tmp/` from processes that are no longer running.
    pub fn clean_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for e in fs::read_dir(&self.tmp)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let pid: Option<u32> = name.split('-').nth(1).and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let p = e.path();
                let r = if e.file_type()?.is_dir() {
                    make_writable(&p);
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if r.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn unsynced(&self) -> std::sync::MutexGuard<'_, Unsynced> {
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every object created since the last call durable: `fdatasync`
    /// on each file, then `fsync` on each folder that gained one, then one
    /// transaction for the packed ones; then the uploads to the remote. Call
    /// it before committing records that name those objects. Cheap when
    /// nothing is new.
    pub fn sync(&self) -> io::Result<()> {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let pending = std::mem::take(&mut *self.unsynced());
        if pending.files.is_empty() && pending.packed.is_empty() {
            return Ok(());
        }
        self.sync_these(&pending).inspect_err(|_| {
            // Not durable yet: the next call tries them again.
            let mut u = self.unsynced();
            u.files.extend(pending.files.iter().copied());
            u.packed.extend(pending.packed.iter().copied());
        })
    }

    /// The objects created and not yet made durable: after a failed
    /// [`Store::sync`], those a crash could lose.
    pub fn not_durable(&self) -> std::collections::HashSet<Digest> {
        let u = self.unsynced();
        u.files.iter().chain(&u.packed).copied().collect()
    }

    fn sync_these(&self, pending: &Unsynced) -> io::Result<()> {
        self.faults
            .check(Fault::Sync)
            .map_err(io_at(&self.objects))?;
        if !pending.files.is_empty() {
            self.sync_files(&pending.files)?;
        }
        self.pack.commit()?;
        // The remote gets them too before any record names them.
        if let Some(remote) = &self.remote {
            let all: Vec<Digest> = pending
                .files
                .iter()
                .chain(&pending.packed)
                .copied()
                .collect();
            self.push(&**remote, &all)?;
        }
        Ok(())
    }

    fn sync_files(&self, pending: &[Digest]) -> io::Result<()> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for d in pending {
            let path = self.object_path(d);
            match fs::File::open(&path) {
                Ok(f) => f.sync_data().map_err(io_at(&path))?,
                // Quarantined meanwhile: nothing to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&path)(e)),
            }
            if let Some(parent) = path.parent()
                && !dirs.iter().any(|x| x == parent)
            {
                dirs.push(parent.to_path_buf());
            }
        }
        dirs.push(self.objects.clone());
        for dir in dirs {
            fs::File::open(&dir)
                .and_then(|f| f.sync_all())
                .map_err(io_at(&dir))?;
        }
        Ok(())
    }

    /// Uploads object `d` to `remote`, from its file or, for a packed one,
    /// from a temporary file of its bytes.
    fn push_one(&self, remote: &dyn crate::remote::ObjectRemote, d: &Digest) -> anyhow::Result<()> {
        let path = self.object_path(d);
        if path.exists() {
            return remote.put(d, &path);
        }
        let Some(bytes) = self.pack.get(d)? else {
            // Quarantined meanwhile: nothing to upload.
            return Ok(());
        };
        let tmp = self.temp_path("push");
        fs::write(&tmp, &bytes).map_err(io_at(&tmp))?;
        let pushed = remote.put(d, &tmp);
        let _ = fs::remove_file(&tmp);
        pushed
    }

    /// Uploads `pending` to `remote`, [`REMOTE_UPLOADS`] at a time (over a
    /// network, one at a time would make every group commit wait for N
    /// round trips). The first failure is returned once all have ended.
    fn push(&self, remote: &dyn crate::remote::ObjectRemote, pending: &[Digest]) -> io::Result<()> {
        let next = AtomicU64::new(0);
        let failed: Mutex<Option<io::Error>> = Mutex::new(None);
        let worker = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(d) = pending.get(i) else { return };
                if let Err(e) = self.push_one(remote, d) {
                    let e = io::Error::other(format!("pushing object {d} to the remote: {e:#}"));
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    return;
                }
            }
        };
        let workers = REMOTE_UPLOADS.min(pending.len());
        if workers <= 1 {
            worker();
        } else {
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(worker);
                }
            });
        }
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stores `bytes` as an object and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<Digest> {
        self.put_new(bytes).map(|(d, _)| d)
    }

    /// Stores `bytes` as an object; returns its digest and whether it was
    /// new (neither here nor on the remote before).
    fn put_new(&self, bytes: &[u8]) -> io::Result<(Digest, bool)> {
        let d = Digest::of(bytes);
        if self.is_valid(&d)? {
            return Ok((d, false));
        }
        if bytes.len() as u64 <= PACKED_MAX {
            self.faults
                .check(Fault::Write)
                .map_err(io_at(&self.objects))?;
            self.put_packed(d, bytes);
            return Ok((d, true));
        }
        let tmp = self.temp_path("obj");
        self.faults.check(Fault::Write).map_err(io_at(&tmp))?;
        {
            let mut f = fs::File::create(&tmp).map_err(io_at(&tmp))?;
            f.write_all(bytes).map_err(io_at(&tmp))?;
        }
        self.rename_into(&tmp, d)?;
        Ok((d, true))
    }

    /// Makes the complete file at `tmp` the object `d` by renaming it (an
    /// existing object of that name has the same bytes, so replacing it is harmless).
    fn rename_into(&self, tmp: &Path, d: Digest) -> io::Result<()> {
        let dst = self.object_path(&d);
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o444)).map_err(io_at(tmp))?;
        if let Err(e) = fs::rename(tmp, &dst) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(io_at(&dst)(e));
            }
            let parent = dst.parent().unwrap_or(&self.objects);
            fs::create_dir_all(parent).map_err(io_at(parent))?;
            fs::rename(tmp, &dst).map_err(io_at(&dst))?;
        }
        if let Ok(m) = fs::metadata(&dst) {
            self.remember(d, &m);
        }
        self.unsynced().files.push(d);
        Ok(())
    }

    /// Adds the small object `d` (of `bytes`) to the pack.
    fn put_packed(&self, d: Digest, bytes: &[u8]) {
        self.pack.put(d, bytes);
        self.unsynced().packed.push(d);
    }

    /// Stores the small output file at `src` (its `bytes`, hashing to `d`)
    /// in the pack; the file itself stays, read-only, in its view.
    fn pack_output_file(&self, src: &Path, d: Digest, bytes: &[u8]) -> io::Result<()> {
        self.faults.check(Fault::Write).map_err(io_at(src))?;
        fs::set_permissions(src, fs::Permissions::from_mode(0o444)).map_err(io_at(src))?;
        // Without a remote, a row the pack already has costs nothing to put
        // again (the commit ignores it), and asking first costs a query.
        if self.remote.is_none() || !self.is_valid(&d)? {
            self.put_packed(d, bytes);
        }
        Ok(())
    }

    /// Makes the complete file at `src` (in the store's filesystem) the object
    /// `d` by hard link, keeping `src` (an output file stays in its view).
    fn link_into(&self, src: &Path, d: Digest) -> io::Result<()> {
        let dst = self.object_path(&d);
        self.faults.check(Fault::Write).map_err(io_at(&dst))?;
        fs::set_permissions(src, fs::Permissions::from_mode(0o444)).map_err(io_at(src))?;
        let parent = dst.parent().unwrap_or(&self.objects);
        let linked = match fs::hard_link(src, &dst) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(parent).map_err(io_at(parent))?;
                match fs::hard_link(src, &dst) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(io_at(&dst)(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_at(&dst)(e)),
        };
        let linked = if !linked && !self.is_valid(&d)? {
            // The existing object was corrupt and has been quarantined: retry once.
            fs::hard_link(src, &dst).map_err(io_at(&dst))?;
            true
        } else {
            linked
        };
        if linked {
            self.unsynced().files.push(d);
        }
        if let Ok(m) = fs::metadata(&dst) {
            self.remember(d, &m);
        }
        Ok(())
    }

    fn remember(&self, d: Digest, m: &fs::Metadata) {
        if let Ok(mut v) = self.verified.lock() {
            v.insert(d, Fingerprint::of(m));
        }
    }

    /// Whether object `d` is present with bytes that hash to `d`. A present
    /// but corrupt object is quarantined (moved to `corrupt/`), after the
    /// views that link to it are dropped; the result is `false`.
    pub fn is_valid(&self, d: &Digest) -> io::Result<bool> {
        let ok = || self.packed_ok.lock().unwrap_or_else(|p| p.into_inner());
        if ok().contains(d) {
            return Ok(true);
        }
        if let Packed::Valid(_) = self.packed(d)? {
            ok().insert(*d);
            return Ok(true);
        }
        self.is_valid_file(d)
    }

    /// Whether object `d` is packed with bytes that hash to `d`; a packed
    /// row that does not is quarantined.
    fn packed(&self, d: &Digest) -> io::Result<Packed> {
        Ok(match self.pack.get(d)? {
            Some(bytes) if Digest::of(&bytes) == *d => Packed::Valid(bytes),
            Some(bytes) => {
                self.quarantine_packed(d, &bytes)?;
                Packed::Quarantined
            }
            None => Packed::Absent,
        })
    }

    /// [`Store::is_valid`] for the object's file (fetched from the remote
    /// if missing).
    fn is_valid_file(&self, d: &Digest) -> io::Result<bool> {
        let path = self.object_path(d);
        let m = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.fetch(d)? {
                    return Ok(false);
                }
                fs::symlink_metadata(&path).map_err(io_at(&path))?
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        let fp = Fingerprint::of(&m);
        if self
            .verified
            .lock()
            .map(|v| v.get(d) == Some(&fp))
            .unwrap_or(false)
        {
            return Ok(true);
        }
        if m.file_type().is_file() && hash_file(&path, m.len())? == *d {
            self.remember(*d, &m);
            return Ok(true);
        }
        self.quarantine(d, &path)?;
        Ok(false)
    }

    /// Moves the packed object `d`, whose `bytes` do not hash to `d`, out of
    /// the pack and into `corrupt/`.
    fn quarantine_packed(&self, d: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.packed_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(d);
        tracing::warn!(object = %d, "packed store object is corrupt; moving it to corrupt/ and recomputing");
        let corrupt = self.root.join("corrupt");
        if fs::create_dir_all(&corrupt).is_ok() {
            let _ = fs::write(corrupt.join(d.to_hex()), bytes);
        }
        self.pack.remove(&[*d])
    }

    fn quarantine(&self, d: &Digest, path: &Path) -> io::Result<()> {
        tracing::warn!(object = %d, "store object is corrupt; moving it to corrupt/ and recomputing");
        // Views hard-link objects, so those that link this one show the
        // corrupt bytes: they go first, while the object is still in place
        // (a crash in between leaves it to be found again). Other views
        // stay: steps may be reading them or about to mount them.
        if let Ok(m) = fs::symlink_metadata(path) {
            self.drop_views_showing(m.dev(), m.ino())?;
        }
        let dir = self.root.join("corrupt");
        fs::create_dir_all(&dir)?;
        let _ = fs::rename(
            path,
            dir.join(format!("{}-{}", d.to_hex(), std::process::id())),
        );
        if let Ok(mut v) = self.verified.lock() {
            v.remove(d);
        }
        Ok(())
    }

    /// Removes every view that holds the file `(dev, ino)` somewhere inside.
    fn drop_views_showing(&self, dev: u64, ino: u64) -> io::Result<()> {
        fn holds(dir: &Path, dev: u64, ino: u64) -> bool {
            use std::os::unix::fs::DirEntryExt;
            let Ok(rd) = fs::read_dir(dir) else {
                return false;
            };
            rd.flatten().any(|e| match e.file_type() {
                Ok(t) if t.is_dir() => holds(&e.path(), dev, ino),
                // The entry's inode comes with the listing; the device
                // needs a stat, only for a match.
                Ok(_) => e.ino() == ino && e.metadata().is_ok_and(|m| m.dev() == dev),
                Err(_) => false,
            })
        }
        let rd = match fs::read_dir(&self.views) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(&self.views)(e)),
        };
        for view in rd.flatten() {
            if holds(&view.path(), dev, ino) {
                let trash = self.temp_path("view-trash");
                if fs::rename(view.path(), &trash).is_ok() {
                    make_writable(&trash);
                    let _ = fs::remove_dir_all(&trash);
                }
            }
        }
        Ok(())
    }

    /// Reads a whole object, verifying it.
    pub fn read_object(&self, d: &Digest) -> io::Result<Vec<u8>> {
        let corrupt = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("object {d} is corrupt (its bytes hash differently); it was quarantined"),
            )
        };
        match self.packed(d)? {
            Packed::Valid(bytes) => return Ok(bytes),
            Packed::Quarantined => return Err(corrupt()),
            Packed::Absent => {}
        }
        let path = self.object_path(d);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        if Digest::of(&bytes) != *d {
            self.quarantine(d, &path)?;
            return Err(corrupt());
        }
        Ok(bytes)
    }

    /// An object's bytes from the pack or its file, not verified.
    fn stored_bytes(&self, d: &Digest) -> io::Result<Vec<u8>> {
        if let Some(bytes) = self.pack.get(d)? {
            return Ok(bytes);
        }
        let path = self.object_path(d);
        fs::read(&path).map_err(io_at(&path))
    }

    /// Where object `d` is: its verified bytes if packed, else its file
    /// (fetched from the remote if missing). `NotFound` if it is nowhere.
    pub fn object(&self, d: &Digest) -> io::Result<StoredObject> {
        if let Packed::Valid(bytes) = self.packed(d)? {
            return Ok(StoredObject::Packed(bytes));
        }
        if self.is_valid_file(d)? {
            return Ok(StoredObject::File(self.object_path(d)));
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("object {d} is not in the store"),
        ))
    }

    /// Whether every file below tree `d` is packed: its view holds copies
    /// the store can lay out again at any time (the garbage collector drops
    /// such views; see [`crate::gc`]).
    pub fn is_packed_tree(&self, d: &Digest) -> io::Result<bool> {
        for e in self.read_tree(d)?.entries {
            let packed = match e.kind {
                EntryKind::File => self.pack.contains(&e.digest)?,
                EntryKind::Folder => self.is_packed_tree(&e.digest)?,
            };
            if !packed {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every packed object's digest and size (for the garbage collector).
    pub fn packed_objects(&self) -> io::Result<Vec<(Digest, u64)>> {
        self.pack.list()
    }

    /// Removes packed objects (for the garbage collector).
    pub fn remove_packed(&self, digests: &[Digest]) -> io::Result<()> {
        {
            let mut ok = self.packed_ok.lock().unwrap_or_else(|p| p.into_inner());
            for d in digests {
                ok.remove(d);
            }
        }
        self.pack.remove(digests)
    }

    /// Reads and parses a tree object.
    pub fn read_tree(&self, d: &Digest) -> io::Result<Tree> {
        let bytes = self.read_object(d)?;
        Tree::decode(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{d}: {e}")))
    }

    /// Whether the tree `d` and every object below it are present and valid.
    pub fn is_valid_tree(&self, d: &Digest) -> io::Result<bool> {
        if !self.is_valid(d)? {
            return Ok(false);
        }
        let known = self.trees.lock().ok().and_then(|t| t.trees.get(d).cloned());
        let tree = match known {
            Some(t) => t,
            None => {
                // Just verified (hashed, or its stat matched an earlier hash): decode without hashing again.
                let Ok(tree) = Tree::decode(&self.stored_bytes(d)?) else {
                    return Ok(false);
                };
                let tree = std::sync::Arc::new(tree);
                if tree.entries.len() <= MEMO_TREE_ENTRIES
                    && let Ok(mut m) = self.trees.lock()
                {
                    // An empty tree counts as one, so the number of trees is bounded too.
                    let n = tree.entries.len().max(1);
                    if m.entries + n > MEMO_ENTRIES {
                        *m = TreeMemo::default();
                    }
                    if m.trees.insert(*d, tree.clone()).is_none() {
                        m.entries += n;
                    }
                }
                tree
            }
        };
        for e in &tree.entries {
            let ok = match e.kind {
                EntryKind::File => self.is_valid(&e.digest)?,
                EntryKind::Folder => self.is_valid_tree(&e.digest)?,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Copies a host file or folder into the store and returns the digest of
    /// the folder artifact holding it: a file `data.csv` becomes a folder with
    /// one entry `data.csv`; a folder becomes itself. Symlinks and special
    /// files are refused.
    pub fn ingest_path(&self, path: &Path) -> io::Result<Digest> {
        let m = fs::symlink_metadata(path).map_err(io_at(path))?;
        if m.file_type().is_dir() {
            return self.ingest_copy_dir(path);
        }
        if !m.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file or folder", path.display()),
            ));
        }
        let name = file_name(path)?;
        let (digest, bytes) = self.ingest_copy_file(path)?;
        let tree = Tree {
            entries: vec![Entry {
                name,
                kind: EntryKind::File,
                digest,
                bytes,
            }],
        };
        self.put_bytes(&tree.encode())
    }

    fn ingest_copy_file(&self, path: &Path) -> io::Result<(Digest, u64)> {
        let mut src = fs::File::open(path).map_err(io_at(path))?;
        if src.metadata().map_err(io_at(path))?.len() <= PACKED_MAX {
            let mut bytes = Vec::new();
            (&mut src)
                .take(PACKED_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(io_at(path))?;
            if bytes.len() as u64 <= PACKED_MAX {
                return Ok((self.put_bytes(&bytes)?, bytes.len() as u64));
            }
            // Grew meanwhile: store what it holds now, as a file.
            src = fs::File::open(path).map_err(io_at(path))?;
        }
        let tmp = self.temp_path("in");
        let mut dst = fs::File::create(&tmp).map_err(io_at(&tmp))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut n_total = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(io_at(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            dst.write_all(&buf[..n]).map_err(io_at(&tmp))?;
            n_total += n as u64;
        }
        drop(dst);
        let d = Digest::from(hasher.finalize());
        if self.is_valid(&d)? {
            fs::remove_file(&tmp).map_err(io_at(&tmp))?;
        } else {
            self.rename_into(&tmp, d)?;
        }
        Ok((d, n_total))
    }

    fn ingest_copy_dir(&self, dir: &Path) -> io::Result<Digest> {
        let mut tree = Tree::default();
        for e in fs::read_dir(dir).map_err(io_at(dir))? {
            let e = e.map_err(io_at(dir))?;
            let p = e.path();
            let name = file_name(&p)?;
            let ft = e.file_type().map_err(io_at(&p))?;
            if ft.is_dir() {
                let d = self.ingest_copy_dir(&p)?;
                let bytes = self.read_tree(&d)?.bytes();
                tree.entries.push(Entry {
                    name,
                    kind: EntryKind::Folder,
                    digest: d,
                    bytes,
                });
            } else if ft.is_file() {
                let (d, bytes) = self.ingest_copy_file(&p)?;
                tree.entries.push(Entry {
                    name,
                    kind: EntryKind::File,
                    digest: d,
                    bytes,
                });
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symlink or special file; inputs may hold only regular files and folders",
                        p.display()
                    ),
                ));
            }
        }
        tree.sort();
        self.put_bytes(&tree.encode())
    }

    /// Turns a step's finished output folder (in `tmp/`) into a folder
    /// artifact without copying: files are hashed and linked into `objects/`,
    /// and the folder itself becomes the artifact's view. Refuses symlinks and
    /// special files, and enforces `quota`.
    pub fn ingest_output(&self, dir: &Path, quota: Quota) -> Result<Ingested, IngestError> {
        // One walk, checked against the quota before anything is stored,
        // so an output over its quota stores nothing at all.
        let mut used = (0u64, 0u64);
        let entries = scan(dir, "", quota, &mut used)?;
        let io_err = |e: io::Error| IngestError::Io {
            path: String::from("."),
            source: e,
        };
        let (d, created) = if entries.is_empty() {
            // An empty folder is the empty tree.
            self.put_new(&Tree::default().encode()).map_err(io_err)?
        } else {
            let (d, _, created) = self.ingest_scanned(entries, "")?;
            (d, created)
        };
        let view = self.views.join(d.to_hex());
        if view.exists() {
            if used == (0, 0) {
                let mut pool = self.empty_dirs.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < 64 {
                    pool.push(dir.to_path_buf());
                    return Ok(Ingested {
                        digest: d,
                        bytes: 0,
                        files: 0,
                        created,
                    });
                }
            }
            fs::remove_dir_all(dir).map_err(io_err)?;
        } else {
            // Its subfolders were made read-only as they were stored.
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o555));
            if let Err(e) = fs::rename(dir, &view) {
                make_writable(dir);
                // Another writer may have made the same view meanwhile.
                if !view.exists() {
                    return Err(io_err(e));
                }
                let _ = fs::remove_dir_all(dir);
            }
        }
        Ok(Ingested {
            digest: d,
            bytes: used.0,
            files: used.1,
            created,
        })
    }

    /// Stores the files and folders `scan` found under an output folder
    /// (`rel`: their path from the output's root, for errors), and returns
    /// the folder's tree digest, its bytes, and whether the tree was new.
    /// Each subfolder is made read-only once stored (it becomes part of a view).
    fn ingest_scanned(
        &self,
        entries: Vec<Scanned>,
        rel: &str,
    ) -> Result<(Digest, u64, bool), IngestError> {
        let io_err = |path: &str| {
            let path = if path.is_empty() {
                ".".to_string()
            } else {
                path.to_string()
            };
            move |source| IngestError::Io { path, source }
        };
        let mut tree = Tree::default();
        for e in entries {
            let name = e.name.into_string().map_err(|_| IngestError::BadName {
                path: e.shown.clone(),
                reason: "file names must be UTF-8",
            })?;
            check_entry_name(&name).map_err(|reason| IngestError::BadName {
                path: e.shown.clone(),
                reason,
            })?;
            match e.kind {
                ScannedKind::Dir(inner) => {
                    let (d, bytes, _) = self.ingest_scanned(inner, &format!("{}/", e.shown))?;
                    let _ = fs::set_permissions(&e.path, fs::Permissions::from_mode(0o555));
                    tree.entries.push(Entry {
                        name,
                        kind: EntryKind::Folder,
                        digest: d,
                        bytes,
                    });
                }
                ScannedKind::File(len) => {
                    let d = if len <= PACKED_MAX {
                        let bytes = fs::read(&e.path).map_err(io_err(&e.shown))?;
                        let d = Digest::of(&bytes);
                        self.pack_output_file(&e.path, d, &bytes)
                            .map_err(io_err(&e.shown))?;
                        d
                    } else {
                        let d = hash_file(&e.path, len).map_err(io_err(&e.shown))?;
                        self.link_into(&e.path, d).map_err(io_err(&e.shown))?;
                        d
                    };
                    tree.entries.push(Entry {
                        name,
                        kind: EntryKind::File,
                        digest: d,
                        bytes: len,
                    });
                }
                ScannedKind::Special(kind) => {
                    return Err(IngestError::SpecialFile {
                        path: e.shown,
                        kind,
                    });
                }
            }
        }
        tree.sort();
        let (d, created) = self.put_new(&tree.encode()).map_err(io_err(rel))?;
        Ok((d, tree.bytes(), created))
    }

    /// The folder where tree `d` is laid out, creating it (as hard links to
    /// its objects) if needed. Callers check the tree's validity first.
    pub fn view(&self, d: &Digest) -> io::Result<PathBuf> {
        let view = self.views.join(d.to_hex());
        if view.is_dir() {
            return Ok(view);
        }
        let tmp = self.temp_path("view");
        self.lay_out(d, &tmp)?;
        make_read_only_dirs(&tmp);
        match fs::rename(&tmp, &view) {
            Ok(()) => Ok(view),
            Err(_) if view.is_dir() => {
                make_writable(&tmp);
                let _ = fs::remove_dir_all(&tmp);
                Ok(view)
            }
            Err(e) => Err(io_at(&view)(e)),
        }
    }

    fn lay_out(&self, d: &Digest, at: &Path) -> io::Result<()> {
        fs::create_dir(at).map_err(io_at(at))?;
        for e in self.read_tree(d)?.entries {
            let p = at.join(&e.name);
            match e.kind {
                EntryKind::File => match self.pack.get(&e.digest)? {
                    // A packed object: the view holds a read-only copy.
                    Some(bytes) => {
                        fs::write(&p, &bytes).map_err(io_at(&p))?;
                        fs::set_permissions(&p, fs::Permissions::from_mode(0o444))
                            .map_err(io_at(&p))?;
                    }
                    None => fs::hard_link(self.object_path(&e.digest), &p).map_err(io_at(&p))?,
                },
                EntryKind::Folder => self.lay_out(&e.digest, &p)?,
            }
        }
        Ok(())
    }
}

/// An entry of an output folder, as [`scan`] found it.
struct Scanned {
    /// Its name as the filesystem has it.
    name: std::ffi::OsString,
    path: PathBuf,
    /// Its path from the output's root, inert, for errors.
    shown: String,
    kind: ScannedKind,
}

enum ScannedKind {
    /// A regular file of this many bytes.
    File(u64),
    /// A folder, with what it holds.
    Dir(Vec<Scanned>),
    /// Anything else ("symlink", "FIFO", "socket", "device"): refused.
    Special(&'static str),
}

/// Lists an output folder's entries, recursively, without following links,
/// counting its bytes and entries against `quota` and failing at the first
/// limit crossed.
fn scan(
    dir: &Path,
    rel: &str,
    quota: Quota,
    used: &mut (u64, u64),
) -> Result<Vec<Scanned>, IngestError> {
    let io_err = |path: String| move |source| IngestError::Io { path, source };
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(if rel.is_empty() {
        ".".into()
    } else {
        rel.to_string()
    }))? {
        let e = e.map_err(io_err(rel.to_string()))?;
        let name = e.file_name();
        // Guest text: shown inert wherever the error goes.
        let shown = format!(
            "{rel}{}",
            crate::names::inert(&name.to_string_lossy(), false)
        );
        used.1 += 1;
        if used.1 > quota.files {
            return Err(IngestError::Quota {
                what: "file count",
                limit: quota.files.to_string(),
                path: shown,
            });
        }
        let ft = e.file_type().map_err(io_err(shown.clone()))?;
        let path = e.path();
        let kind = if ft.is_dir() {
            ScannedKind::Dir(scan(&path, &format!("{shown}/"), quota, used)?)
        } else if ft.is_file() {
            let len = e.metadata().map_err(io_err(shown.clone()))?.len();
            used.0 += len;
            if used.0 > quota.bytes {
                return Err(IngestError::Quota {
                    what: "size",
                    limit: format!("{} bytes", quota.bytes),
                    path: shown,
                });
            }
            ScannedKind::File(len)
        } else {
            use std::os::unix::fs::FileTypeExt;
            ScannedKind::Special(if ft.is_symlink() {
                "symlink"
            } else if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else {
                "device"
            })
        };
        out.push(Scanned {
            name,
            path,
            shown,
            kind,
        });
    }
    Ok(out)
}

fn file_name(p: &Path) -> io::Result<String> {
    let name = p.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a UTF-8 file name", p.display()),
        )
    })?;
    check_entry_name(name).map_err(|r| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {r}", p.display()))
    })?;
    Ok(name.to_string())
}

/// blake3 of a file, on all cores for big files.
pub fn hash_file(path: &Path, len: u64) -> io::Result<Digest> {
    let mut h = blake3::Hasher::new();
    if len >= MMAP_THRESHOLD {
        h.update_mmap_rayon(path)?;
    } else {
        let bytes = fs::read(path)?;
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

fn make_read_only_dirs(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_read_only_dirs(&e.path());
            }
        }
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o555));
}

/// Restores write permission on folders so they can be deleted.
pub(crate) fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote that records how many uploads overlap: each `put` waits (up
    /// to 5 s) for a second one to be in flight.
    #[derive(Default)]
    struct Overlap {
        state: Mutex<(usize, usize, usize)>, // in flight, most at once, done
        changed: std::sync::Condvar,
    }

    impl crate::remote::ObjectRemote for Overlap {
        fn put(&self, _: &Digest, _: &Path) -> anyhow::Result<()> {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            s.1 = s.1.max(s.0);
            self.changed.notify_all();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while s.1 < 2 && std::time::Instant::now() < deadline {
                s = self
                    .changed
                    .wait_timeout(s, deadline - std::time::Instant::now())
                    .unwrap()
                    .0;
            }
            s.0 -= 1;
            s.2 += 1;
            Ok(())
        }
        fn get(&self, _: &Digest, _: &Path) -> anyhow::Result<bool> {
            Ok(false)
        }
    }

    #[test]
    fn two_stores_on_one_folder_never_name_a_temporary_path_alike() {
        // Two runtimes of one process on one store folder (as two machines
        // sharing a folder): their staging folders must not collide.
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (
            Store::open(tmp.path()).unwrap(),
            Store::open(tmp.path()).unwrap(),
        );
        assert_ne!(a.temp_path("out"), b.temp_path("out"));
        assert_ne!(a.staging_dir("out").unwrap(), b.staging_dir("out").unwrap());
    }

    #[test]
    fn objects_are_pushed_to_the_remote_several_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = std::sync::Arc::new(Overlap::default());
        let store = Store::open(tmp.path()).unwrap().with_remote(remote.clone());
        for i in 0..16u32 {
            store.put_bytes(&i.to_le_bytes()).unwrap();
        }
        store.sync().unwrap();
        let (_, most, done) = *remote.state.lock().unwrap();
        assert_eq!(done, 16);
        assert!(most >= 2, "uploads ran one at a time");
        assert!(most <= REMOTE_UPLOADS);
    }

    #[test]
    fn ingest_view_and_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("s")).unwrap();
        let src = tmp.path().join("data.csv");
        // Over PACKED_MAX: a file object, hard-linked into views.
        let csv = format!("a,b\n{}", "1,2\n".repeat(5000));
        fs::write(&src, &csv).unwrap();
        let d = store.ingest_path(&src).unwrap();
        assert!(store.is_valid_tree(&d).unwrap());
        let view = store.view(&d).unwrap();
        assert_eq!(fs::read_to_string(view.join("data.csv")).unwrap(), csv);
        let other_src = tmp.path().join("other.csv");
        fs::write(&other_src, "c\n3\n").unwrap();
        let other = store.view(&store.ingest_path(&other_src).unwrap()).unwrap();
        let blob = Digest::of(csv.as_bytes());
        // Corrupt the blob behind the store's back: detected, quarantined,
        // the views that show it dropped, the others kept.
        let p = store.object_path(&blob);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, csv.replace("1,2", "9,9")).unwrap();
        assert!(!store.is_valid_tree(&d).unwrap());
        assert!(!p.exists());
        assert!(!view.exists());
        assert!(other.join("other.csv").is_file());
        // Ingesting again repairs it.
        assert_eq!(store.ingest_path(&src).unwrap(), d);
        assert!(store.is_valid_tree(&d).unwrap());
    }

    #[test]
    fn sync_flushes_exactly_the_new_objects_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("s")).unwrap();
        let pending = |s: &Store| {
            let u = s.unsynced.lock().unwrap();
            (u.files.len(), u.packed.len())
        };
        let big = vec![7u8; PACKED_MAX as usize + 1];
        let one = store.put_bytes(b"one").unwrap();
        store.put_bytes(b"two").unwrap();
        store.put_bytes(b"one").unwrap(); // already there: nothing new
        let b = store.put_bytes(&big).unwrap();
        assert_eq!(pending(&store), (1, 2));
        // Small objects are packed, big ones files.
        assert!(!store.object_path(&one).exists());
        assert!(store.object_path(&b).is_file());
        // Another process sees the packed ones only once they are durable.
        let other = Store::open(tmp.path().join("s")).unwrap();
        assert!(!other.is_valid(&one).unwrap());
        store.sync().unwrap();
        assert_eq!(pending(&store), (0, 0));
        assert_eq!(other.read_object(&one).unwrap(), b"one");
        assert!(matches!(other.object(&one).unwrap(), StoredObject::Packed(v) if v == b"one"));
        assert!(
            matches!(other.object(&b).unwrap(), StoredObject::File(p) if p == store.object_path(&b))
        );
        store.sync().unwrap();
    }

    #[test]
    fn a_corrupt_packed_object_is_quarantined_and_stored_again() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("s")).unwrap();
        let src = tmp.path().join("data.csv");
        fs::write(&src, "a,b\n1,2\n").unwrap();
        let d = store.ingest_path(&src).unwrap();
        store.sync().unwrap();
        let file = store.read_tree(&d).unwrap().entries[0].digest;
        // Tamper with the row behind the store's back.
        let db = rusqlite::Connection::open(tmp.path().join("s/objects.db")).unwrap();
        let n = db
            .execute(
                "UPDATE objects SET bytes = x'00' WHERE digest = ?1",
                [file.as_bytes().as_slice()],
            )
            .unwrap();
        assert_eq!(n, 1);
        let report = store.verify_objects().unwrap();
        assert_eq!(report.corrupt, vec![file]);
        assert!(tmp.path().join("s/corrupt").join(file.to_hex()).is_file());
        assert!(!store.is_valid_tree(&d).unwrap());
        assert_eq!(store.ingest_path(&src).unwrap(), d);
        assert!(store.is_valid_tree(&d).unwrap());
        // A view of packed objects holds read-only copies.
        let view = store.view(&d).unwrap();
        assert_eq!(fs::read(view.join("data.csv")).unwrap(), b"a,b\n1,2\n");
    }

    #[test]
    fn output_ingest_refuses_symlinks_and_quota() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("s")).unwrap();
        let out = store.temp_path("out");
        fs::create_dir_all(out.join("sub")).unwrap();
        fs::write(out.join("sub/x.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("link")).unwrap();
        let e = store
            .ingest_output(
                &out,
                Quota {
                    bytes: 100,
                    files: 100,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("'link' is a symlink"), "{e}");
        fs::remove_file(out.join("link")).unwrap();
        let e = store
            .ingest_output(
                &out,
                Quota {
                    bytes: 3,
                    files: 100,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("size limit") && e.contains("sub/x.txt"), "{e}");
        let d = store
            .ingest_output(
                &out,
                Quota {
                    bytes: 100,
                    files: 100,
                },
            )
            .unwrap();
        assert_eq!((d.bytes, d.files), (5, 2));
        assert!(d.created, "the first ingest of this folder stores its tree");
        // The same content again: stored already, so not new.
        let again = store.temp_path("out");
        fs::create_dir_all(again.join("sub")).unwrap();
        fs::write(again.join("sub/x.txt"), "hello").unwrap();
        let a = store
            .ingest_output(
                &again,
                Quota {
                    bytes: 100,
                    files: 100,
                },
            )
            .unwrap();
        assert_eq!(a.digest, d.digest);
        assert!(!a.created, "a tree already in the store is not new");
        let d = d.digest;
        assert!(!out.exists());
        assert_eq!(
            fs::read_to_string(store.view(&d).unwrap().join("sub/x.txt")).unwrap(),
            "hello"
        );
    }
}
