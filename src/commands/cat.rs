//! `weir cat DIGEST [PATH]`: print an artifact from the store.

use crate::StoreArg;
use std::io::Write;
use std::process::ExitCode;
use weir_runtime::Digest;
use weir_runtime::store::Store;
use weir_runtime::tree::{EntryKind, Tree};

/// Arguments of `weir cat`.
#[derive(clap::Args)]
pub struct Args {
    /// Artifact digest (or its first 6+ hex characters)
    digest: String,
    /// A file inside the artifact folder, e.g. report.md
    path: Option<String>,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir cat`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(args.store.resolve())?;
    let d: Digest = store.resolve(&args.digest)?;
    let bytes = store.read_object(&d)?;
    let Ok(mut tree) = Tree::decode(&bytes) else {
        std::io::stdout().write_all(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    };
    let Some(path) = args.path else {
        for e in &tree.entries {
            let kind = if e.kind == EntryKind::Folder {
                "folder"
            } else {
                "file"
            };
            outln!(
                "{:<6} {} {:>12} {}",
                kind,
                e.digest.short(),
                e.bytes,
                e.name
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(e) = tree.entries.iter().find(|e| e.name == *part).cloned() else {
            let names: Vec<&str> = tree.entries.iter().map(|e| e.name.as_str()).collect();
            anyhow::bail!(
                "artifact {} has no '{path}' (it holds: {})",
                d.short(),
                names.join(", ")
            );
        };
        let last = i + 1 == parts.len();
        match (e.kind, last) {
            (EntryKind::File, true) => {
                std::io::stdout().write_all(&store.read_object(&e.digest)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            (EntryKind::Folder, _) => tree = store.read_tree(&e.digest)?,
            (EntryKind::File, false) => {
                anyhow::bail!("'{part}' in '{path}' is a file, not a folder")
            }
        }
    }
    for e in &tree.entries {
        outln!("{} {:>12} {}", e.digest.short(), e.bytes, e.name);
    }
    Ok(ExitCode::SUCCESS)
}
