//! What `weir run` prints for large pipelines (issue 23): a map's children
//! are counted on the map's line, not listed one per line (failures are),
//! and `--quiet` prints no line per step.

mod common;

use common::*;

fn script(dir: &std::path::Path) -> std::path::PathBuf {
    let echo = fixture("echo");
    let files: Vec<String> = (0..30)
        .map(|i| format!("\"f{i:02}.txt\": \"{i}\""))
        .collect();
    let f = dir.join("p.rhai");
    std::fs::write(
        &f,
        format!(
            "let p = pipeline(\"wide\");\n\
             let src = p.step(\"src\", \"{e}\").output(\"out\").params(#{{ bare: true, files: #{{ {files} }} }});\n\
             p.map(\"each\", \"{e}\", src.out(\"out\")).output(\"out\");\n",
            e = echo.display(),
            files = files.join(", "),
        ),
    )
    .unwrap();
    f
}

#[test]
fn a_maps_children_are_counted_not_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let f = script(tmp.path());
    let out = run_script(&f, &tmp.path().join(".weir"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("each["), "children listed:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(" each ("))
        .unwrap_or_else(|| panic!("no line for the map:\n{stderr}"));
    assert!(line.contains("[30 children: 30 succeeded]"), "{line}");
    assert!(stderr.lines().count() < 10, "{stderr}");

    // --quiet: the summary only.
    let out = weir()
        .args(["run", "--quiet"])
        .arg(&f)
        .arg("--store")
        .arg(tmp.path().join(".weir"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "", "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("run 2 succeeded: 2 steps, 0 executed, 2 cached"),
        "{stdout}"
    );
}
