//! Watched folders (`p.after_change("incoming")`): the server polls each
//! folder a pipeline watches and starts a run when its contents change,
//! by content: a file rewritten with the same bytes starts nothing. A
//! change is acted on once the folder has stood still for [`SETTLE`] (a
//! copy in progress is not a change yet). The digest a pipeline last
//! reacted to is kept in the slot records, so a change made while the
//! server was down starts a run when it is back; the first sight of a
//! folder is its baseline.

use super::{Origin, Server};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often watched folders are looked at (their files' sizes and times).
const POLL: Duration = Duration::from_millis(500);
/// How long a folder must stand still before its change is acted on.
const SETTLE: Duration = Duration::from_secs(1);

/// What was last seen of one watched folder.
struct Seen {
    /// Its files' names, sizes and modification times.
    listing: blake3::Hash,
    /// When `listing` was first seen.
    since: Instant,
    /// The listing whose content was last compared with the recorded digest.
    checked: Option<blake3::Hash>,
}

/// Polls the watched folders until the server shuts down.
pub async fn run_watcher(server: Arc<Server>) {
    let mut seen: HashMap<(String, PathBuf), Seen> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = server.shutdown.cancelled() => return,
        }
        // Among servers sharing the records, only the leader acts on changes.
        if !server.leads().await {
            continue;
        }
        let watched: Vec<(String, String, PathBuf)> = server
            .pipelines()
            .into_values()
            .filter(|p| p.error.is_none())
            .flat_map(|p| {
                let base = server
                    .project
                    .join(p.script.parent().unwrap_or(Path::new("")));
                p.serve
                    .after_change
                    .iter()
                    .map(|d| (p.name.clone(), d.clone(), base.join(d)))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (pipeline, dir, path) in watched {
            if let Err(e) = look(&server, &mut seen, &pipeline, &dir, &path).await {
                tracing::warn!(%pipeline, %dir, "watching the folder: {e:#}");
            }
        }
    }
}

/// One look at one watched folder: a run if its content changed.
async fn look(
    server: &Arc<Server>,
    seen: &mut HashMap<(String, PathBuf), Seen>,
    pipeline: &str,
    dir: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let p = path.to_path_buf();
    let listing = tokio::task::spawn_blocking(move || listing(&p)).await??;
    let now = Instant::now();
    let s = seen
        .entry((pipeline.to_string(), path.to_path_buf()))
        .or_insert(Seen {
            listing,
            since: now,
            checked: None,
        });
    if s.listing != listing {
        s.listing = listing;
        s.since = now;
        return Ok(());
    }
    if now - s.since < SETTLE || s.checked == Some(listing) {
        return Ok(());
    }
    let p = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || content(&p))
        .await??
        .to_hex()
        .to_string();
    let before = server.slots.watched(pipeline, dir)?;
    match before {
        None => server.slots.set_watched(pipeline, dir, &digest)?,
        Some(d) if d == digest => {}
        Some(_) => {
            let what = format!("{dir} changed (content {})", &digest[..12]);
            let origin = Origin::Watch(what.clone());
            match server
                .trigger(pipeline, BTreeMap::new(), None, origin)
                .await
            {
                Ok(run) => {
                    tracing::info!(%pipeline, %run, "{what}: run started");
                    server.slots.set_watched(pipeline, dir, &digest)?;
                }
                Err(e) => {
                    // Still due: looked at again on the next poll.
                    tracing::info!(%pipeline, "{what}: not started yet: {}", e.1);
                    return Ok(());
                }
            }
        }
    }
    if let Some(s) = seen.get_mut(&(pipeline.to_string(), path.to_path_buf())) {
        s.checked = Some(listing);
    }
    Ok(())
}

/// The files below `dir` (relative path, size, modification time), hashed;
/// a missing folder is empty.
fn listing(dir: &Path) -> anyhow::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    for (rel, path) in files(dir)? {
        let m = std::fs::metadata(&path)?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(&m.len().to_le_bytes());
        h.update(&mtime.as_nanos().to_le_bytes());
    }
    Ok(h.finalize())
}

/// The content of the files below `dir` (relative paths and bytes),
/// hashed.
fn content(dir: &Path) -> anyhow::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    for (rel, path) in files(dir)? {
        let mut f = blake3::Hasher::new();
        f.update_reader(std::fs::File::open(&path)?)?;
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(f.finalize().as_bytes());
    }
    Ok(h.finalize())
}

/// The regular files below `dir`, by relative path, in name order (links
/// not followed).
fn files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", d.display())),
        };
        for e in entries {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap_or(&e.path())
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}
