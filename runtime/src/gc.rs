//! Garbage collection of a store: what no kept run, model version or cache
//! entry needs is removed (`weir store gc`).
//!
//! Kept: runs that are still running, runs newer than the policy's age, the
//! newest runs of each pipeline, and the runs that registered a model
//! version. Live artifacts are everything those runs read or wrote, every
//! model version's artifact, and the outputs of the cache entries whose
//! outputs are all live (the others are forgotten). Everything else goes:
//! the other runs' records, objects no live artifact contains, views of
//! dead artifacts and of tiny ones (every file packed: laid out again from
//! the pack when needed), and compiled components no kept run used (unless
//! compiled within the age window).
//!
//! Safe against runs in other processes: [`collect`] runs under the store's
//! exclusive [`StoreLease`](crate::store::StoreLease), which waits for runs
//! in progress to end and holds new ones back until it is done. Records go
//! first, files after, so a crash in between leaves only unreferenced files
//! (removed next time), never a record naming a removed object.

use crate::digest::Digest;
use crate::records::{Records, RunId, RunState};
use crate::store::Store;
use crate::tree::EntryKind;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

/// Which runs a collection keeps (a run kept by any rule is kept).
#[derive(Debug, Clone, Copy)]
pub struct KeepPolicy {
    /// Runs started within this many days.
    pub days: u32,
    /// The newest runs of each pipeline.
    pub last: usize,
}

impl Default for KeepPolicy {
    /// 30 days, and the last 10 runs of each pipeline.
    fn default() -> KeepPolicy {
        KeepPolicy { days: 30, last: 10 }
    }
}

/// What a collection removes (or, in a dry run, would remove).
#[derive(Debug, Default)]
pub struct GcPlan {
    /// Runs kept.
    pub runs_kept: usize,
    /// Runs removed, with their records.
    pub runs_removed: Vec<RunId>,
    /// Cache entries forgotten (some output was not live).
    pub cache_removed: Vec<Digest>,
    /// Object files removed, with their sizes.
    pub objects_removed: Vec<(PathBuf, u64)>,
    /// Packed objects removed, with their sizes.
    pub packed_removed: Vec<(Digest, u64)>,
    /// Views removed: of dead artifacts (hard links: they free no object
    /// bytes), and of tiny live ones (copies of packed objects).
    pub views_removed: Vec<PathBuf>,
    /// Compiled components removed, with their sizes.
    pub compiled_removed: Vec<(PathBuf, u64)>,
}

impl GcPlan {
    /// Bytes freed: objects and compiled components.
    pub fn bytes(&self) -> u64 {
        let files: u64 = self
            .objects_removed
            .iter()
            .chain(&self.compiled_removed)
            .map(|(_, b)| b)
            .sum();
        files + self.packed_removed.iter().map(|(_, b)| b).sum::<u64>()
    }

    /// Objects removed, packed or files.
    pub fn objects(&self) -> usize {
        self.objects_removed.len() + self.packed_removed.len()
    }
}

/// Works out what a collection under `policy` removes, as of `now_ms`.
/// Call it under the store's exclusive lease for a plan that stays true.
pub fn plan(
    store: &Store,
    records: &dyn Records,
    policy: &KeepPolicy,
    now_ms: i64,
) -> anyhow::Result<GcPlan> {
    let mut out = GcPlan::default();
    let models = records.models(None)?;
    let registered: HashSet<RunId> = models.iter().map(|m| m.run).collect();
    let kept = kept_runs(records, policy, now_ms, &registered, &mut out)?;
    // Live artifacts and components.
    let mut live: HashSet<Digest> = HashSet::new();
    let mut components: HashSet<Digest> = HashSet::new();
    for run in &kept {
        for s in records.steps(*run)? {
            live.extend(s.inputs.values().chain(s.outputs.values()));
            components.extend(s.component);
        }
    }
    live.extend(models.iter().map(|m| m.digest));
    for e in records.cache_entries()? {
        if e.outputs.values().all(|d| live.contains(d)) {
            continue;
        }
        // An entry of a kept run with an output no step record names
        // (it cannot happen today) is kept, with its outputs.
        if kept.contains(&e.run) {
            live.extend(e.outputs.values());
        } else {
            out.cache_removed.push(e.key);
        }
    }
    let objects = live_objects(store, &live);
    out.objects_removed = dead_objects(store, &objects)?;
    out.packed_removed = store
        .packed_objects()?
        .into_iter()
        .filter(|(d, _)| !objects.contains(d))
        .collect();
    out.views_removed = dead_views(store, &live)?;
    let window_ms = i64::from(policy.days) * 86_400_000;
    out.compiled_removed = dead_compiled(store, &components, now_ms - window_ms)?;
    Ok(out)
}

/// Removes what `plan` lists: records first (one transaction for the runs),
/// then packed objects (one transaction), then files.
pub fn apply(store: &Store, records: &dyn Records, plan: &GcPlan) -> anyhow::Result<()> {
    for key in &plan.cache_removed {
        records.cache_forget(key)?;
    }
    records.delete_runs(&plan.runs_removed)?;
    let packed: Vec<Digest> = plan.packed_removed.iter().map(|(d, _)| *d).collect();
    store
        .remove_packed(&packed)
        .map_err(|e| anyhow::anyhow!("cannot remove packed objects: {e}"))?;
    for (p, _) in plan.objects_removed.iter().chain(&plan.compiled_removed) {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot remove {}: {e}", p.display()),
        }
    }
    for v in &plan.views_removed {
        crate::store::make_writable(v);
        if let Err(e) = std::fs::remove_dir_all(v)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            anyhow::bail!("cannot remove {}: {e}", v.display());
        }
    }
    Ok(())
}

/// Takes the store's exclusive lease (calling `waiting` if runs are in
/// progress), works out the plan and, unless `dry_run`, applies it.
pub fn collect(
    store: &Store,
    records: &dyn Records,
    policy: &KeepPolicy,
    dry_run: bool,
    waiting: &dyn Fn(),
) -> anyhow::Result<GcPlan> {
    let _lease = store
        .lease_exclusive(waiting)
        .map_err(|e| anyhow::anyhow!("cannot hold the store for garbage collection: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let plan = plan(store, records, policy, now)?;
    if !dry_run {
        apply(store, records, &plan)?;
    }
    Ok(plan)
}

/// The runs the policy keeps (`registered`: the runs that registered a
/// model version); the others go into `out.runs_removed`.
fn kept_runs(
    records: &dyn Records,
    policy: &KeepPolicy,
    now_ms: i64,
    registered: &HashSet<RunId>,
    out: &mut GcPlan,
) -> anyhow::Result<BTreeSet<RunId>> {
    let since = now_ms - i64::from(policy.days) * 86_400_000;
    let mut per_pipeline: HashMap<String, usize> = HashMap::new();
    let mut kept = BTreeSet::new();
    // Newest first.
    for r in records.runs(usize::MAX)? {
        let n = per_pipeline.entry(r.pipeline.clone()).or_default();
        *n += 1;
        let keep = r.state == RunState::Running
            || r.started_ms >= since
            || *n <= policy.last
            || registered.contains(&r.id);
        if keep {
            kept.insert(r.id);
        } else {
            out.runs_removed.push(r.id);
        }
    }
    out.runs_kept = kept.len();
    Ok(kept)
}

/// Every object the live artifacts consist of: each tree, and what it lists.
fn live_objects(store: &Store, live: &HashSet<Digest>) -> HashSet<Digest> {
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut todo: Vec<Digest> = live.iter().copied().collect();
    while let Some(d) = todo.pop() {
        if !seen.insert(d) {
            continue;
        }
        // A blob (or a missing object) lists nothing.
        if let Ok(tree) = store.read_tree(&d) {
            for e in tree.entries {
                match e.kind {
                    EntryKind::File => {
                        seen.insert(e.digest);
                    }
                    EntryKind::Folder => todo.push(e.digest),
                }
            }
        }
    }
    seen
}

fn dead_objects(store: &Store, live: &HashSet<Digest>) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut dead = Vec::new();
    let objects = store.root().join("objects");
    for shard in std::fs::read_dir(&objects)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(shard.path())? {
            let e = e?;
            let Ok(d) = e.file_name().to_string_lossy().parse::<Digest>() else {
                continue;
            };
            if !live.contains(&d) {
                dead.push((e.path(), e.metadata()?.len()));
            }
        }
    }
    Ok(dead)
}

/// Views of dead artifacts, and views of live ones whose every file is
/// packed: those hold copies (an inode and a block each) that
/// [`Store::view`] lays out again from the pack when a step or a user needs
/// them. Views of bigger files are hard links and cost only their folders.
fn dead_views(store: &Store, live: &HashSet<Digest>) -> anyhow::Result<Vec<PathBuf>> {
    let mut dead = Vec::new();
    for e in std::fs::read_dir(store.root().join("views"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(d) = name.parse::<Digest>() else {
            continue;
        };
        if !live.contains(&d) || store.is_packed_tree(&d).unwrap_or(false) {
            dead.push(e.path());
        }
    }
    Ok(dead)
}

/// Compiled components (`<wasm digest>-<engine tag>.cwasm`) of components
/// no kept run used, compiled before `before_ms`.
fn dead_compiled(
    store: &Store,
    used: &HashSet<Digest>,
    before_ms: i64,
) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut dead = Vec::new();
    for e in std::fs::read_dir(store.compiled_dir())? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(d) = name
            .split_once('-')
            .and_then(|(d, _)| d.parse::<Digest>().ok())
        else {
            continue;
        };
        let m = e.metadata()?;
        let modified = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |t| t.as_millis() as i64);
        if !used.contains(&d) && modified < before_ms {
            dead.push((e.path(), m.len()));
        }
    }
    Ok(dead)
}
