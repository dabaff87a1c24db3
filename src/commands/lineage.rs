//! `weir lineage DIGEST|NAME@VERSION`: the tree of steps and artifacts an
//! artifact came from, down to the files that entered from the host.

use crate::StoreArg;
use std::process::ExitCode;
use weir_runtime::lineage::{Lineage, Origin, lineage};
use weir_runtime::store::Store;

/// Arguments of `weir lineage`.
#[derive(clap::Args)]
pub struct Args {
    /// An artifact digest (6+ hex characters) or a registered model NAME@VERSION
    what: String,
    /// How many steps deep to go
    #[arg(long, default_value_t = 64)]
    depth: usize,
    /// Print JSON for tools
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

fn describe(l: &Lineage) -> String {
    match &l.origin {
        Origin::Step {
            run,
            step,
            output,
            component,
            params,
        } => {
            let params = match params.as_object() {
                Some(o) if !o.is_empty() => {
                    let text = serde_json::to_string(params).unwrap_or_default();
                    let text: String = text.chars().take(100).collect();
                    format!(" params {text}")
                }
                _ => String::new(),
            };
            format!(
                "{} = {step}.{output} (run {run}, component {}){params}",
                l.digest.short(),
                component.map(|c| c.short()).unwrap_or_else(|| "?".into())
            )
        }
        Origin::File { path } => format!("{} = file {}", l.digest.short(), path.display()),
        Origin::Unknown => format!("{} (not produced by a recorded step)", l.digest.short()),
        Origin::SeeAbove => format!("{} (shown above)", l.digest.short()),
    }
}

fn print(l: &Lineage, prefix: &str) -> std::io::Result<()> {
    for (i, (name, child)) in l.inputs.iter().enumerate() {
        let last = i + 1 == l.inputs.len();
        let (branch, more) = if last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        outln!("{prefix}{branch} {name}: {}", describe(child));
        print(child, &format!("{prefix}{more}"))?;
    }
    Ok(())
}

/// Runs `weir lineage`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.store.resolve();
    let records = super::open_records(&dir)?;
    let digest = if args.what.contains('@') {
        super::models::find(&*records, &args.what)?.digest
    } else {
        Store::open(&dir)?.resolve(&args.what)?
    };
    let tree = lineage(&*records, &digest, args.depth)?;
    if args.json {
        jsonln!("{}", serde_json::to_string_pretty(&tree)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{}", describe(&tree));
    print(&tree, "")?;
    Ok(ExitCode::SUCCESS)
}
