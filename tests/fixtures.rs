//! Every guest fixture under tests/guests is used by at least one test, so no
//! fixture rots unnoticed (the rule wasmtime's test-programs follow).

use std::path::Path;

#[test]
fn every_fixture_has_a_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut tests = String::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") && p.file_name() != Some("fixtures.rs".as_ref())
        {
            tests.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    let manifest = std::fs::read_to_string(root.join("guests/Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("a members line");
    let mut count = 0;
    for name in members.split('"').skip(1).step_by(2) {
        count += 1;
        assert!(
            tests.contains(&format!("fixture(\"{name}\")")),
            "fixture '{name}' is used by no test in tests/*.rs"
        );
        assert!(
            root.join("guests").join(name).join("Cargo.toml").is_file(),
            "{name}"
        );
    }
    assert!(count >= 7, "found only {count} fixtures");
}
