//! The embedding example runs end to end through the public API.

#[test]
fn the_embedded_host_runs_its_plan() {
    let store = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir-example-embed"))
        .env("WEIR_STORE", store.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("run 1 succeeded"), "{stdout}");
    assert!(stdout.contains("\"rows\": 150"), "{stdout}");
}
