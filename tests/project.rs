//! A project of one's own (issue 20): `weir init`, `weir new step` and
//! `weir run` from a folder with no weir checkout in reach. The project
//! carries the step SDK and WIT contract `weir` wrote into it; its steps
//! are one cargo workspace built with one cargo invocation.

mod common;

use common::*;
use std::path::Path;

/// Every file of `dir` (but build output and the store) that mentions `text`.
fn files_mentioning(dir: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "target" || name == ".weir" {
            continue;
        }
        if p.is_dir() {
            found.extend(files_mentioning(&p, text));
        } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(text)) {
            found.push(p.display().to_string());
        }
    }
    found
}

const DOUBLE: &str = r#"use weir_sdk::{Context, Result};

fn run(ctx: &mut Context<()>) -> Result<()> {
    let text = std::fs::read_to_string(ctx.input("in")?.join("greeting.txt"))?;
    std::fs::write(ctx.output("out")?.join("twice.txt"), format!("{text}{text}"))?;
    Ok(())
}

weir_sdk::step!(run);
"#;

#[test]
fn a_new_project_builds_and_runs_with_no_checkout_in_reach() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo().canonicalize().unwrap();
    let proj = tmp.path().canonicalize().unwrap().join("my-project");
    assert!(
        !proj.starts_with(&repo),
        "the test folder must be outside the checkout"
    );
    // Cargo must build into the project, as it would for a user.
    let weir_here = || {
        let mut c = weir();
        c.current_dir(&proj).env_remove("CARGO_TARGET_DIR");
        c
    };

    let (said, _) = succeeded(weir().arg("init").arg(&proj).output().unwrap());
    assert!(said.contains("created weir project my-project"), "{said}");
    for f in [
        "weir.toml",
        "pipeline.rhai",
        ".gitignore",
        "steps/Cargo.toml",
        "steps/Cargo.lock",
        "steps/rust-toolchain.toml",
        "steps/hello/src/lib.rs",
        "steps/sdk/weir-sdk/src/lib.rs",
        "steps/sdk/wit/step.wit",
    ] {
        assert!(proj.join(f).is_file(), "weir init did not write {f}");
    }
    // A second init does not touch the project.
    let again = weir().arg("init").arg(&proj).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds a project already"));

    // A second step joins the workspace.
    let (said, _) = succeeded(
        weir_here()
            .args(["new", "step", "double"])
            .output()
            .unwrap(),
    );
    assert!(said.contains("a member of"), "{said}");
    let manifest = std::fs::read_to_string(proj.join("steps/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("\"hello\",\n    \"double\","),
        "{manifest}"
    );
    std::fs::write(proj.join("steps/double/src/lib.rs"), DOUBLE).unwrap();
    let dup = weir_here()
        .args(["new", "step", "double"])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    let outside = weir()
        .args(["new", "step", "x"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&outside.stderr).contains("weir init"));

    // Nothing in the project points into a weir checkout.
    assert_eq!(
        files_mentioning(&proj, &repo.to_string_lossy()),
        Vec::<String>::new()
    );

    let mut pipeline = std::fs::read_to_string(proj.join("pipeline.rhai")).unwrap();
    pipeline = pipeline.replace("p.step(\"hello\"", "let hello = p.step(\"hello\"");
    pipeline.push_str(
        "p.step(\"double\", \"steps/double\").input(\"in\", hello.out(\"out\")).output(\"out\");\n",
    );
    std::fs::write(proj.join("pipeline.rhai"), pipeline).unwrap();

    // First run: both crates built by one cargo invocation, shown as it goes.
    let (stdout, stderr) = succeeded(weir_here().args(["run", "pipeline.rhai"]).output().unwrap());
    assert!(stdout.contains("2 steps, 2 executed, 0 cached"), "{stdout}");
    let builds: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("build "))
        .collect();
    assert_eq!(builds.len(), 1, "{stderr}");
    assert!(
        builds[0].contains("hello, double") && builds[0].contains("one cargo run"),
        "{stderr}"
    );
    assert!(stderr.contains("  built  hello, double ("), "{stderr}");
    // Without a terminal, a long build still says what it is doing.
    assert!(stderr.contains("  ...    building: Compiling "), "{stderr}");
    let show: serde_json::Value = serde_json::from_slice(
        &weir_here()
            .args(["show", "1", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let out = show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "double")
        .unwrap()["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();
    let (twice, _) = succeeded(
        weir_here()
            .args(["cat", &out, "twice.txt"])
            .output()
            .unwrap(),
    );
    assert_eq!(twice, "hellohello");

    // The re-run builds nothing and runs nothing.
    let (stdout, stderr) = succeeded(weir_here().args(["run", "pipeline.rhai"]).output().unwrap());
    assert!(stdout.contains("0 executed, 2 cached"), "{stdout}");
    assert!(!stderr.contains("build"), "{stderr}");

    // A crate added to the workspace (and not used yet) makes the next run
    // check with cargo once; the run after it starts no cargo at all.
    succeeded(weir_here().args(["new", "step", "later"]).output().unwrap());
    let (_, stderr) = succeeded(weir_here().args(["run", "pipeline.rhai"]).output().unwrap());
    assert!(stderr.contains("build"), "{stderr}");
    let (stdout, stderr) = succeeded(weir_here().args(["run", "pipeline.rhai"]).output().unwrap());
    assert!(stdout.contains("0 executed, 2 cached"), "{stdout}");
    assert!(
        !stderr.contains("build"),
        "cargo ran again for fresh crates:\n{stderr}"
    );

    // An edit to one step's source is noticed; only that step runs again.
    let lib = proj.join("steps/double/src/lib.rs");
    std::fs::write(&lib, DOUBLE.replace("{text}{text}", "{text} {text}")).unwrap();
    let (stdout, _) = succeeded(weir_here().args(["run", "pipeline.rhai"]).output().unwrap());
    assert!(stdout.contains("1 executed, 1 cached"), "{stdout}");
}
