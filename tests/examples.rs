//! The flowers example runs end to end, its gate both ways.

mod common;

use common::*;

#[test]
fn the_flowers_example_maps_over_species_and_gates_its_report() {
    let store = tempfile::tempdir().unwrap();
    let script = repo().join("examples/flowers/pipeline.rhai");
    let out = weir()
        .arg("run")
        .arg(&script)
        .arg("--store")
        .arg(store.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("succeeded: 5 steps, 4 executed, 0 cached, 1 skipped"),
        "{stdout}"
    );
    // The map's children are counted on its line, and listed by `weir show`.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" summarize (") && l.contains("[3 children: 3 succeeded]")),
        "{stderr}"
    );
    let show = weir()
        .args(["show", "1", "--store"])
        .arg(store.path())
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    for child in [
        "summarize[setosa.csv]",
        "summarize[versicolor.csv]",
        "summarize[virginica.csv]",
    ] {
        assert!(show.contains(child), "{child} not in\n{show}");
    }
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("report.report"))
        .unwrap();
    let view = std::path::Path::new(line.split_whitespace().last().unwrap());
    let md = std::fs::read_to_string(view.join("report.md")).unwrap();
    assert!(md.starts_with("# Flowers by species"), "{md}");
    assert!(
        md.contains("| setosa | 50 |") && md.contains("| virginica | 50 |"),
        "{md}"
    );

    let out = weir()
        .arg("run")
        .arg(&script)
        .args(["--param", "min_rows=1000", "--store"])
        .arg(store.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("succeeded: 5 steps, 1 executed, 3 cached, 1 skipped"),
        "{stdout}"
    );
    assert!(stdout.contains("too_few_rows.report"), "{stdout}");
}
