//! `weir diff RUN_A RUN_B`: per step, what changed between two runs.

use crate::StoreArg;
use std::collections::BTreeMap;
use std::process::ExitCode;
use weir_runtime::records::StepSummary;

/// Arguments of `weir diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The earlier run
    a: String,
    /// The later run
    b: String,
    #[command(flatten)]
    store: StoreArg,
}

fn word(same: bool) -> &'static str {
    if same { "same" } else { "CHANGED" }
}

/// Runs `weir diff`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let records = super::open_records(&args.store.resolve())?;
    let (a, b) = (super::parse_run(&args.a)?, super::parse_run(&args.b)?);
    super::need_run(&*records, a)?;
    super::need_run(&*records, b)?;
    let index = |steps: Vec<StepSummary>| {
        steps
            .into_iter()
            .map(|s| (s.step.clone(), s))
            .collect::<BTreeMap<_, _>>()
    };
    let (sa, sb) = (index(records.steps(a)?), index(records.steps(b)?));
    let (pa, pb) = (
        super::step_params(&*records, a)?,
        super::step_params(&*records, b)?,
    );
    let mut names: Vec<&String> = sa.keys().chain(sb.keys()).collect();
    names.sort();
    names.dedup();
    outln!(
        "{:<24} {:<8} {:<8} {:<8} outputs",
        "step",
        "code",
        "params",
        "inputs"
    );
    for n in names {
        match (sa.get(n), sb.get(n)) {
            (Some(x), Some(y)) => {
                let base = weir_runtime::names::UnitName::parse(n).step;
                let outputs: Vec<String> = x
                    .outputs
                    .keys()
                    .chain(y.outputs.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .filter(|o| x.outputs.get(*o) != y.outputs.get(*o))
                    .map(|o| format!("{o} differs"))
                    .collect();
                outln!(
                    "{:<24} {:<8} {:<8} {:<8} {}",
                    n,
                    word(x.component == y.component),
                    word(pa.get(base) == pb.get(base)),
                    word(x.inputs == y.inputs),
                    if outputs.is_empty() {
                        "same".to_string()
                    } else {
                        outputs.join(", ")
                    }
                );
            }
            (Some(_), None) => outln!("{n:<24} only in run {a}"),
            (None, Some(_)) => outln!("{n:<24} only in run {b}"),
            (None, None) => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
