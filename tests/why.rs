//! `weir why RUN STEP` (issue 28): why a step ran (which param, input or
//! component changed against its last success) or why it did not (a cache
//! hit, with the run that made its outputs).

mod common;

use common::*;

#[test]
fn why_names_the_change_that_made_a_step_run_and_the_run_a_hit_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    let echo = fixture("echo");
    let f = tmp.path().join("p.rhai");
    std::fs::write(
        &f,
        format!(
            "let n = param(\"n\", 1);\nlet p = pipeline(\"why\");\n\
             let a = p.step(\"a\", \"{e}\").output(\"out\").params(#{{ note: n }});\n\
             p.step(\"b\", \"{e}\").input(\"in\", a.out(\"out\")).output(\"out\");\n\
             p.step(\"c\", \"{e}\").output(\"out\").params(#{{ note: \"fixed\" }});\n",
            e = echo.display()
        ),
    )
    .unwrap();
    let store = tmp.path().join(".weir");
    for n in ["1", "2", "2"] {
        succeeded(
            weir()
                .arg("run")
                .arg(&f)
                .args(["-p", &format!("n={n}"), "--store"])
                .arg(&store)
                .output()
                .unwrap(),
        );
    }
    let why = |run: &str, step: &str| {
        let out = weir()
            .args(["why", run, step, "--store"])
            .arg(&store)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (_, t) = why("1", "a");
    assert!(t.contains("no earlier run of this pipeline ran it"), "{t}");
    let (_, t) = why("2", "a");
    assert!(
        t.contains("against run 1") && t.contains("param 'note' changed: 1 -> 2"),
        "{t}"
    );
    let (_, t) = why("2", "b");
    assert!(
        t.contains("input 'in' changed") && t.contains("the output of step a in this run"),
        "{t}"
    );
    let (_, t) = why("2", "c");
    assert!(
        t.contains("did not run in run 2") && t.contains("the execution that made them: run 1"),
        "{t}"
    );
    let (_, t) = why("3", "a");
    assert!(t.contains("the execution that made them: run 2"), "{t}");
    let (ok, t) = why("3", "zz");
    assert!(!ok && t.contains("run 3 has no step 'zz'"), "{t}");
}
