//! Builds step crates into components with `cargo build --target wasm32-wasip2`:
//! one crate, or every stale crate of a run with one cargo invocation per workspace.

use anyhow::{Context as _, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target steps are built for.
pub const STEP_TARGET: &str = "wasm32-wasip2";

/// Builds the step crate in `crate_dir` (release profile) and returns the
/// path of the component cargo wrote. Cargo decides what is stale, so an
/// up-to-date crate costs one no-op cargo invocation. A compile error is
/// returned with cargo's rendered diagnostics.
pub fn build_crate(crate_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = step_manifest(crate_dir)?;
    ensure_target(crate_dir);
    let root = workspace_manifest(&manifest).unwrap_or_else(|| manifest.clone());
    let built = cargo_build(&root, &|_| {})?;
    built
        .get(&manifest)
        .cloned()
        .ok_or_else(|| no_component(crate_dir))
}

/// The canonical manifest path of the step crate in `crate_dir`.
fn step_manifest(crate_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} is not a step crate (no Cargo.toml there); a step is a crate folder or a .wasm component file",
            crate_dir.display()
        );
    }
    manifest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.display()))
}

fn no_component(crate_dir: &Path) -> anyhow::Error {
    anyhow!(
        "cargo built {} but produced no component; a step crate needs `crate-type = [\"cdylib\"]` under [lib]",
        crate_dir.display()
    )
}

/// Runs one `cargo build --workspace --release --target wasm32-wasip2` on
/// the workspace of `manifest`, passing each of cargo's status lines
/// ("Compiling serde v1.0") to `progress` as it comes. Returns the component
/// cargo wrote for each package manifest (canonical paths).
///
/// Always the whole workspace: cargo unifies the features of the packages it
/// builds together, so building a different subset could give a step
/// different bytes (and a different cache key) from one run to the next.
fn cargo_build(
    manifest: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<HashMap<PathBuf, PathBuf>> {
    let folder = manifest.parent().unwrap_or(manifest);
    let what = || folder.display().to_string();
    let (mut cmd, cargo) = tool("cargo", folder);
    cmd.args([
        "build",
        "--release",
        "--target",
        STEP_TARGET,
        "--message-format=json-render-diagnostics",
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--workspace");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run cargo ({}) to build {}",
                cargo.to_string_lossy(),
                what()
            )
        })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (stdout, stderr) = std::thread::scope(|scope| {
        let err = scope.spawn(|| {
            let mut kept = String::new();
            for line in BufReader::new(stderr?).lines().map_while(Result::ok) {
                let status = line.trim_start();
                if ["Compiling", "Building", "Downloaded", "Updating", "Locking"]
                    .iter()
                    .any(|w| status.starts_with(w))
                {
                    progress(status);
                }
                kept.push_str(&line);
                kept.push('\n');
            }
            Some(kept)
        });
        let mut out = Vec::new();
        if let Some(mut s) = stdout {
            let _ = s.read_to_end(&mut out);
        }
        (out, err.join().ok().flatten().unwrap_or_default())
    });
    let status = child.wait()?;
    if !status.success() {
        bail!("{}", compile_error(&what(), &stderr));
    }
    Ok(components(&stdout))
}

/// The components of the `compiler-artifact` messages cargo printed, by
/// their package's canonical manifest path.
fn components(stdout: &[u8]) -> HashMap<PathBuf, PathBuf> {
    let mut out = HashMap::new();
    for line in stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        // A step is a cdylib; a bin is accepted too so that loading it can
        // say which world it implements instead.
        let component = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib" || k == "bin"));
        let manifest = msg["manifest_path"]
            .as_str()
            .and_then(|p| Path::new(p).canonicalize().ok());
        let wasm = msg["filenames"].as_array().and_then(|f| {
            f.iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
        });
        if let (true, Some(m), Some(w)) = (component, manifest, wasm) {
            out.insert(m, PathBuf::from(w));
        }
    }
    out
}

/// The error for a build that failed: cargo's diagnostics (the last 60
/// lines, without its "Compiling" lines) and a hint for a missing target.
fn compile_error(what: &str, stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("Compiling") && !l.starts_with("Building")
        })
        .collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    let hint = if stderr.contains("target may not be installed")
        || stderr.contains("can't find crate for `std`")
    {
        format!("\nhint: install the target with `rustup target add {STEP_TARGET}`")
    } else {
        String::new()
    };
    format!("step crate {what} does not compile:\n{tail}{hint}")
}

/// What [`build_crates`] reports.
#[derive(Debug, Clone)]
pub enum BuildEvent<'a> {
    /// Cargo starts on `crates` (package names) of the workspace at `workspace`.
    Started {
        /// The workspace folder.
        workspace: &'a Path,
        /// The packages built.
        crates: &'a [String],
    },
    /// One of cargo's status lines ("Compiling serde v1.0.228").
    Progress(&'a str),
    /// Cargo finished those crates.
    Finished {
        /// The packages built.
        crates: &'a [String],
        /// How long cargo took.
        took: std::time::Duration,
    },
}

/// Builds every stale crate of `crate_dirs` (fresh ones, by the rule of
/// [`build_crate_cached`], cost no cargo run) with one cargo invocation per
/// cargo workspace, so that the steps of one workspace share one dependency
/// build (features unified, one lock). Afterwards [`build_crate_cached`]
/// finds each crate's component without running cargo.
///
/// A step crate is always built with its whole workspace, here and in
/// [`build_crate`], so its bytes do not depend on which crates were stale.
///
/// Returns each crate's component (fresh or just built), by the folder it
/// was given as, so that loading it checks nothing again.
pub fn build_crates(
    crate_dirs: &[PathBuf],
    stamp_dir: &Path,
    on: &(dyn Fn(BuildEvent<'_>) + Sync),
) -> anyhow::Result<HashMap<PathBuf, PathBuf>> {
    let mut components = HashMap::new();
    let mut stale: Vec<(&PathBuf, PathBuf)> = Vec::new();
    let mut by_workspace: BTreeMap<PathBuf, Vec<(PathBuf, String)>> = BTreeMap::new();
    for dir in crate_dirs {
        let manifest = step_manifest(dir)?;
        if let Some(wasm) = fresh_stamp(&manifest, stamp_dir) {
            components.insert(dir.clone(), wasm);
            continue;
        }
        stale.push((dir, manifest.clone()));
        let package = package_name(&manifest)?;
        let root = workspace_manifest(&manifest).unwrap_or_else(|| manifest.clone());
        let group = by_workspace.entry(root).or_default();
        if !group.iter().any(|(m, _)| *m == manifest) {
            group.push((manifest, package));
        }
    }
    for (root, members) in by_workspace {
        let folder = root.parent().unwrap_or(&root);
        ensure_target(folder);
        let crates: Vec<String> = members.iter().map(|(_, p)| p.clone()).collect();
        on(BuildEvent::Started {
            workspace: folder,
            crates: &crates,
        });
        let start = std::time::Instant::now();
        let began = std::time::SystemTime::now();
        let built = cargo_build(&root, &|line| on(BuildEvent::Progress(line)))?;
        let began = built_at(&root, began);
        on(BuildEvent::Finished {
            crates: &crates,
            took: start.elapsed(),
        });
        for (manifest, _) in &members {
            if !built.contains_key(manifest) {
                return Err(no_component(manifest.parent().unwrap_or(manifest)));
            }
        }
        for (manifest, wasm) in &built {
            write_stamp(&manifest_stamp(manifest, stamp_dir), wasm, began);
        }
        for (dir, manifest) in &stale {
            if let Some(wasm) = built.get(manifest) {
                components.insert((*dir).clone(), wasm.clone());
            }
        }
    }
    Ok(components)
}

/// The `[package] name` of a manifest.
fn package_name(manifest: &Path) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        package: Option<Package>,
    }
    #[derive(serde::Deserialize)]
    struct Package {
        name: String,
    }
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let m: Manifest =
        toml::from_str(&text).with_context(|| format!("reading {}", manifest.display()))?;
    m.package.map(|p| p.name).ok_or_else(|| {
        anyhow!(
            "{} has no [package]: a step is a crate, not a workspace",
            manifest.display()
        )
    })
}

/// The manifest of the cargo workspace `manifest` belongs to (the nearest
/// manifest above it with a `[workspace]` table whose members include it),
/// as cargo itself says; `None` when cargo cannot tell.
fn workspace_manifest(manifest: &Path) -> Option<PathBuf> {
    let (mut cmd, _) = tool("cargo", manifest.parent()?);
    let out = cmd
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .arg("--manifest-path")
        .arg(manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .canonicalize()
        .ok()
}

/// A Rust tool (`cargo`, `rustc`, `rustup`) run in `dir`, so that rustup
/// picks the toolchain `dir`'s `rust-toolchain.toml` names (a project pins
/// its own; a step's component bytes depend on it). A toolchain rustup
/// chose for weir's own process (`RUSTUP_TOOLCHAIN` set by rustup when weir
/// runs under `cargo run`) is not passed on; one the user set is.
/// `$WEIR_CARGO` replaces `cargo`. Returns the command and the program.
fn tool(name: &str, dir: &Path) -> (Command, std::ffi::OsString) {
    let program = match name {
        "cargo" => std::env::var_os("WEIR_CARGO").unwrap_or_else(|| "cargo".into()),
        other => other.into(),
    };
    let mut cmd = Command::new(&program);
    cmd.current_dir(dir);
    let chosen_by_rustup = std::env::var("RUSTUP_TOOLCHAIN_SOURCE").is_ok_and(|s| s != "env");
    if chosen_by_rustup {
        cmd.env_remove("RUSTUP_TOOLCHAIN");
    }
    (cmd, program)
}

/// Installs the step target with rustup when the toolchain that will build
/// `crate_dir` lacks it (a fresh rustup toolchain has only the host target).
/// Without rustup this does nothing and cargo's own error explains.
fn ensure_target(crate_dir: &Path) {
    let sysroot = tool("rustc", crate_dir)
        .0
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output();
    let Ok(sysroot) = sysroot else { return };
    let root = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if root.join("lib/rustlib").join(STEP_TARGET).is_dir() {
        return;
    }
    eprintln!("weir: installing the {STEP_TARGET} target (rustup target add {STEP_TARGET})");
    let _ = tool("rustup", crate_dir)
        .0
        .args(["target", "add", STEP_TARGET])
        .stdin(Stdio::null())
        .status();
}

/// Like [`build_crate`], but skips cargo when the component from the last
/// build is newer than every file cargo recorded it was built from (its
/// dep-info file), than the manifests of those files' crates, and than the
/// manifests, lock file and toolchain file above the crate: the same
/// modification-time rule cargo applies, without starting cargo. `stamp_dir`
/// remembers where each crate's component is.
pub fn build_crate_cached(crate_dir: &Path, stamp_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = crate_dir.join("Cargo.toml");
    let Ok(manifest) = manifest.canonicalize() else {
        return build_crate(crate_dir);
    };
    if let Some(wasm) = fresh_stamp(&manifest, stamp_dir) {
        return Ok(wasm);
    }
    let began = std::time::SystemTime::now();
    let wasm = build_crate(crate_dir)?;
    let began = built_at(&manifest, began);
    write_stamp(&manifest_stamp(&manifest, stamp_dir), &wasm, began);
    Ok(wasm)
}

/// Where the path of `manifest`'s last component is remembered.
fn manifest_stamp(manifest: &Path, stamp_dir: &Path) -> PathBuf {
    stamp_dir.join(format!(
        "{}.path",
        crate::digest::Digest::of(manifest.to_string_lossy().as_bytes()).short()
    ))
}

/// The component of `manifest`'s last build, if it is still fresh.
fn fresh_stamp(manifest: &Path, stamp_dir: &Path) -> Option<PathBuf> {
    let stamp = manifest_stamp(manifest, stamp_dir);
    let text = std::fs::read_to_string(&stamp).ok()?;
    let wasm = PathBuf::from(text.trim());
    // Built when cargo last wrote the component, or when a cargo run that
    // found it up to date began (cargo leaves a fresh file alone, so after
    // a manifest above it changed, its own time would stay older forever).
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = mtime(&wasm)?.max(mtime(&stamp)?);
    is_fresh(manifest, &wasm, built).then_some(wasm)
}

/// When a cargo run that began at `began` on the crate or workspace of
/// `manifest` counts as having built: `began`, or later if that run wrote
/// the workspace's `Cargo.lock` (cargo records a new member or dependency
/// there as part of the build; the lock then says what was built, and must
/// not make the component look stale).
fn built_at(manifest: &Path, began: std::time::SystemTime) -> std::time::SystemTime {
    let lock = manifest
        .ancestors()
        .skip(1)
        .map(|d| d.join("Cargo.lock"))
        .find(|l| l.is_file());
    lock.and_then(|l| std::fs::metadata(l).and_then(|m| m.modified()).ok())
        .map_or(began, |written| written.max(began))
}

/// Remembers `wasm` as the component in `stamp`, dated `began` (when the
/// cargo run that built or checked it began: a file changed during that run
/// is newer, so it is not taken as built). Best effort: a missing stamp
/// only costs a cargo run next time.
fn write_stamp(stamp: &Path, wasm: &Path, began: std::time::SystemTime) {
    let Some(dir) = stamp.parent() else { return };
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = stamp.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::write(&tmp, wasm.to_string_lossy().as_bytes()).and_then(|()| {
            std::fs::File::options()
                .write(true)
                .open(&tmp)?
                .set_modified(began)
        });
        if written.is_ok() {
            let _ = std::fs::rename(&tmp, stamp);
        }
    }
}

/// Whether `wasm`, built at `built`, is newer than everything it was
/// built from.
fn is_fresh(manifest: &Path, wasm: &Path, built: std::time::SystemTime) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Ok(dep_info) = std::fs::read_to_string(wasm.with_extension("d")) else {
        return false;
    };
    let Some((_, deps)) = dep_info.split_once(": ") else {
        return false;
    };
    let mut files: Vec<PathBuf> = Vec::new();
    // Make-style list: spaces separate paths, `\ ` is a space inside one.
    let mut current = String::new();
    let mut chars = deps.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' | '\n' => {
                if !current.is_empty() {
                    files.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        files.push(PathBuf::from(current));
    }
    if files.is_empty() {
        return false;
    }
    // The manifests of every crate a source belongs to, and what sits above the step crate.
    let mut extra: Vec<PathBuf> = Vec::new();
    // (Only Rust sources: a file a macro reads, such as a `.wit` file, may
    // sit under another workspace's manifest that this build never reads.)
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        if let Some(m) = f
            .ancestors()
            .skip(1)
            .map(|d| d.join("Cargo.toml"))
            .find(|m| m.is_file())
            && !extra.contains(&m)
        {
            extra.push(m);
        }
    }
    // Manifests and the lock file up to the crate's workspace root (the
    // folder holding Cargo.lock; manifests above it are another workspace's
    // and cargo ignores them), toolchain files all the way up.
    let mut in_workspace = true;
    for dir in manifest.ancestors().skip(1) {
        for name in ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml"] {
            let p = dir.join(name);
            if (in_workspace || name == "rust-toolchain.toml") && p.is_file() && !extra.contains(&p)
            {
                extra.push(p);
            }
        }
        if dir.join("Cargo.lock").is_file() {
            in_workspace = false;
        }
    }
    files
        .into_iter()
        .chain(extra)
        .all(|f| mtime(&f).is_some_and(|m| m <= built))
}
