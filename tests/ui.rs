//! Golden files for user-facing script errors: each `tests/ui/NAME.rhai`
//! must fail with exactly the message in `tests/ui/NAME.err`.
//! Regenerate after an intended change with `WEIR_BLESS=1 cargo test --test ui`.

use std::path::Path;

#[test]
fn every_bad_script_fails_with_its_golden_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    paths.sort();
    let mut mismatches = Vec::new();
    for path in &paths {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(path).unwrap();
        let shown = format!("ui/{name}.rhai");
        let got = match weir_dsl::compile_str(&source, &shown, Path::new("/project")) {
            Ok(_) => "(compiled without error)".to_string(),
            Err(e) => e.to_string(),
        };
        let golden = path.with_extension("err");
        if bless {
            std::fs::write(&golden, format!("{got}\n")).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want.trim_end() != got {
            mismatches.push(format!(
                "{name}:\n  want: {}\n  got:  {got}",
                want.trim_end()
            ));
        }
    }
    assert!(paths.len() >= 20, "only {} ui cases", paths.len());
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
