//! `weir store verify`: re-hash every object and check every record's references.

use crate::StoreArg;
use std::process::ExitCode;
use weir_runtime::records::Records;
use weir_runtime::store::Store;

/// What `weir store` does.
#[derive(clap::Subcommand)]
pub enum What {
    /// Re-hash every object, check that every artifact the records name is
    /// present and whole, and clean temporary files of dead processes
    Verify(VerifyArgs),
}

/// Arguments of `weir store verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir store`.
pub fn run(what: What) -> anyhow::Result<ExitCode> {
    let What::Verify(args) = what;
    let dir = args.store.resolve();
    let records = super::open_records(&dir)?;
    let store = Store::open(&dir)?;
    let cleaned = store.clean_tmp()?;
    let objects = store.verify_objects()?;
    let mut missing = Vec::new();
    let mut checked = 0usize;
    let mut seen = std::collections::HashSet::new();
    for (place, d) in records.references()? {
        if seen.insert(d) {
            checked += 1;
        }
        if !store.is_valid_tree(&d)? {
            missing.push(format!(
                "{place}: artifact {} is missing or damaged",
                d.short()
            ));
        }
    }
    outln!(
        "{} objects ({} bytes) re-hashed: {} corrupt; {} stray files; {checked} artifacts referenced by records: {} missing or damaged; {cleaned} temporary leftovers removed",
        objects.objects,
        objects.bytes,
        objects.corrupt.len(),
        objects.stray.len(),
        missing.len()
    );
    for d in &objects.corrupt {
        outln!("corrupt object {d} (moved to corrupt/; the step that made it will run again)");
    }
    for p in &objects.stray {
        outln!("stray file {}", p.display());
    }
    for m in &missing {
        outln!("{m}");
    }
    Ok(if objects.corrupt.is_empty() && missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
