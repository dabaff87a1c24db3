//! Builds step crates into components with `cargo build --target wasm32-wasip2`.

use anyhow::{Context as _, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target steps are built for.
pub const STEP_TARGET: &str = "wasm32-wasip2";

/// Builds the step crate in `crate_dir` (release profile) and returns the
/// path of the component cargo wrote. Cargo decides what is stale, so an
/// up-to-date crate costs one no-op cargo invocation. A compile error is
/// returned with cargo's rendered diagnostics.
pub fn build_crate(crate_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} is not a step crate (no Cargo.toml there); a step is a crate folder or a .wasm component file",
            crate_dir.display()
        );
    }
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.display()))?;
    ensure_target(crate_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            STEP_TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "cannot run cargo ({}) to build {}",
                cargo.to_string_lossy(),
                crate_dir.display()
            )
        })?;
    let mut wasm = None;
    for line in out.stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same = msg["manifest_path"]
            .as_str()
            .and_then(|p| Path::new(p).canonicalize().ok())
            .is_some_and(|p| p == manifest);
        // A step is a cdylib; a bin is accepted too so that loading it can
        // say which world it implements instead.
        let component = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib" || k == "bin"));
        if same && component {
            wasm = msg["filenames"]
                .as_array()
                .and_then(|f| {
                    f.iter()
                        .filter_map(|f| f.as_str())
                        .find(|f| f.ends_with(".wasm"))
                })
                .map(PathBuf::from);
        }
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim_start().starts_with("Compiling"))
            .collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        let hint = if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `std`")
        {
            format!("\nhint: install the target with `rustup target add {STEP_TARGET}`")
        } else {
            String::new()
        };
        bail!(
            "step crate {} does not compile:\n{tail}{hint}",
            crate_dir.display()
        );
    }
    wasm.ok_or_else(|| {
        anyhow!(
            "cargo built {} but produced no component; a step crate needs `crate-type = [\"cdylib\"]` under [lib]",
            crate_dir.display()
        )
    })
}

/// Installs the step target with rustup when the toolchain that will build
/// `crate_dir` lacks it (a fresh rustup toolchain has only the host target).
/// Without rustup this does nothing and cargo's own error explains.
fn ensure_target(crate_dir: &Path) {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(crate_dir)
        .stderr(Stdio::null())
        .output();
    let Ok(sysroot) = sysroot else { return };
    let root = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if root.join("lib/rustlib").join(STEP_TARGET).is_dir() {
        return;
    }
    eprintln!("weir: installing the {STEP_TARGET} target (rustup target add {STEP_TARGET})");
    let _ = Command::new("rustup")
        .args(["target", "add", STEP_TARGET])
        .current_dir(crate_dir)
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
    let stamp = stamp_dir.join(format!(
        "{}.path",
        crate::digest::Digest::of(manifest.to_string_lossy().as_bytes()).short()
    ));
    if let Ok(text) = std::fs::read_to_string(&stamp) {
        let wasm = PathBuf::from(text.trim());
        if is_fresh(&manifest, &wasm) {
            return Ok(wasm);
        }
    }
    let wasm = build_crate(crate_dir)?;
    if std::fs::create_dir_all(stamp_dir).is_ok() {
        let tmp = stamp.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, wasm.to_string_lossy().as_bytes()).is_ok() {
            let _ = std::fs::rename(&tmp, &stamp);
        }
    }
    Ok(wasm)
}

/// Whether `wasm` is newer than everything it was built from.
fn is_fresh(manifest: &Path, wasm: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = mtime(wasm) else {
        return false;
    };
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
