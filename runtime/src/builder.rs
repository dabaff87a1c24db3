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
