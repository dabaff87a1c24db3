//! The gpu capability on its CPU backend: trusted steps train and score
//! through the host; untrusted or unrequested imports are refused at link time.

mod common;

use common::*;
use std::path::Path;
use weir_runtime::{Config, InputSource, RunState, Runtime, StepState, TrustPolicy};

fn write_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x: u64 = 5;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 40) as f64 / 16777216.0) as f32 * 2.0 - 1.0
    };
    for (file, n) in [("train.csv", 400), ("test.csv", 200)] {
        let mut s = String::from("x1,x2,label\n");
        for i in 0..n {
            let class = i % 2;
            let c = if class == 0 { -1.0 } else { 1.0 };
            s.push_str(&format!("{},{},{class}\n", c + next(), c + next()));
        }
        std::fs::write(dir.join(file), s).unwrap();
    }
}

fn trainer_plan(base: &Path, hidden: &[u32], request: bool) -> weir_runtime::Plan {
    let trainer = fixture("trainer");
    let mut train = step("train", &trainer);
    train
        .inputs
        .insert("data".into(), InputSource::Path(base.join("data")));
    train.params = serde_json::json!({ "mode": "train", "file": "train.csv", "features": ["x1", "x2"], "label": "label", "classes": 2, "hidden": hidden });
    let mut score = step("score", &trainer);
    score
        .inputs
        .insert("data".into(), InputSource::Path(base.join("data")));
    wire(&mut score, "model", "train", "out");
    score.params = serde_json::json!({ "mode": "score", "file": "test.csv", "features": ["x1", "x2"], "label": "label", "classes": 2 });
    if request {
        train.capabilities.insert("gpu".into());
        score.capabilities.insert("gpu".into());
    }
    plan(base, vec![train, score])
}

fn digest_of(wasm: &Path) -> weir_runtime::Digest {
    weir_runtime::Digest::of(&std::fs::read(wasm).unwrap())
}

#[test]
fn a_trusted_step_trains_logistic_regression_and_an_mlp_and_scores_them() {
    let tmp = tempfile::tempdir().unwrap();
    write_data(&tmp.path().join("data"));
    let d = digest_of(&fixture("trainer"));
    let mut trust = TrustPolicy::default();
    trust.trust(&d.to_hex()[..16]).unwrap();
    let mut cfg = Config::new(tmp.path().join(".weir"));
    cfg.jobs(2);
    cfg.trust(&trust);
    let rt = Runtime::new(&cfg).unwrap();
    for hidden in [vec![], vec![8u32]] {
        let r = run(&rt, &trainer_plan(tmp.path(), &hidden, true));
        assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
        let train = r.step("train").unwrap();
        let acc = |s: &weir_runtime::run::StepReport, m: &str| {
            s.metrics
                .iter()
                .find(|x| x.name == m)
                .map(|x| x.value)
                .unwrap()
        };
        assert!(acc(train, "train_accuracy") > 0.9, "{:?}", train.metrics);
        assert!(
            acc(r.step("score").unwrap(), "accuracy") > 0.9,
            "{:?}",
            r.step("score").unwrap().metrics
        );
        let model = r.output_path(rt.store(), "train", "out").unwrap();
        let meta = std::fs::read_to_string(model.join("model.json")).unwrap();
        assert!(
            meta.contains("\"backend\":\"cpu\"")
                && meta.contains(if hidden.is_empty() {
                    "\"kind\":\"logistic\""
                } else {
                    "\"kind\":\"mlp\""
                }),
            "{meta}"
        );
        assert!(
            std::fs::metadata(model.join("model.safetensors"))
                .unwrap()
                .len()
                > 8
        );
        let logs = rt.records().logs(r.run, "train").unwrap();
        assert!(
            logs.iter()
                .any(|(_, l)| l.message.contains("with backend cpu")),
            "{logs:?}"
        );
    }
    // Deterministic: the same run again is all cache hits with the same model.
    let again = run(&rt, &trainer_plan(tmp.path(), &[8], true));
    assert!(again.steps.iter().all(|s| s.state == StepState::Cached));
}

#[test]
fn an_untrusted_or_unrequested_gpu_import_is_refused_at_link_time() {
    let tmp = tempfile::tempdir().unwrap();
    write_data(&tmp.path().join("data"));
    let d = digest_of(&fixture("trainer"));
    // Requested, but the policy trusts nothing.
    let rt = runtime(tmp.path());
    let e = format!(
        "{:#}",
        try_run(&rt, &trainer_plan(tmp.path(), &[], true)).unwrap_err()
    );
    assert!(e.starts_with("step 'train': "), "{e}");
    assert!(e.contains("imports the 'gpu' capability (weir:step/gpu@0.1.0), which is granted only to components the trust policy names"), "{e}");
    assert!(
        e.contains(&format!(
            "trust the component (TrustPolicy::trust(\"{}\")",
            d.short()
        )),
        "{e}"
    );
    // Trusted, but the pipeline does not request it.
    let mut cfg = Config::new(tmp.path().join(".weir2"));
    cfg.trust(TrustPolicy::default().trust_all());
    let rt = Runtime::new(&cfg).unwrap();
    let e = format!(
        "{:#}",
        try_run(&rt, &trainer_plan(tmp.path(), &[], false)).unwrap_err()
    );
    assert!(e.contains("request it with .requires(\"gpu\")"), "{e}");
    // A step that requests the gpu but whose component is not trusted.
    let rt = runtime(&tmp.path().join("other"));
    let mut p = plan(tmp.path(), vec![step("plain", &fixture("noop"))]);
    p.steps[0].capabilities.insert("gpu".into());
    let e = format!("{:#}", try_run(&rt, &p).unwrap_err());
    assert!(
        e.contains(
            "requests capability 'gpu', which the trust policy does not grant to its component"
        ),
        "{e}"
    );
    assert!(rt.records().runs(5).unwrap().is_empty());
}

/// The trainer fixture as a step crate (built by the runtime), so trust by
/// source applies.
fn crate_plan(base: &Path) -> weir_runtime::Plan {
    let mut p = trainer_plan(base, &[], true);
    for s in &mut p.steps {
        s.component = weir_runtime::ComponentSource::Crate(repo().join("tests/guests/trainer"));
    }
    p
}

#[test]
fn a_trust_file_grants_gpu_to_a_named_step_crate_and_only_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_data(&tmp.path().join("data"));
    let trainer = repo().join("tests/guests/trainer");

    // Named by source: trusted whatever its digest.
    let file = tmp.path().join("weir.toml");
    std::fs::write(
        &file,
        format!(
            "[[trust]]\nsource = {:?}\ncapabilities = [\"gpu\"]\n",
            trainer.display().to_string()
        ),
    )
    .unwrap();
    assert_eq!(
        TrustPolicy::find_file(tmp.path()).unwrap(),
        file.canonicalize().unwrap()
    );
    let mut cfg = Config::new(tmp.path().join(".weir"));
    cfg.jobs(2);
    cfg.trust(&TrustPolicy::from_file(&file).unwrap());
    let rt = Runtime::new(&cfg).unwrap();
    let r = run(&rt, &crate_plan(tmp.path()));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);

    // Another crate is named: the trainer is refused before anything runs,
    // and the message says how to grant it.
    std::fs::write(
        &file,
        format!(
            "[[trust]]\nsource = {:?}\ncapabilities = [\"gpu\"]\n[build]\nroots = [{:?}]\n",
            repo().join("tests/guests/noop").display().to_string(),
            repo().join("tests/guests").display().to_string()
        ),
    )
    .unwrap();
    let mut cfg = Config::new(tmp.path().join(".weir2"));
    cfg.jobs(2);
    cfg.trust(&TrustPolicy::from_file(&file).unwrap());
    let rt = Runtime::new(&cfg).unwrap();
    let e = format!("{:#}", try_run(&rt, &crate_plan(tmp.path())).unwrap_err());
    assert!(
        e.contains("step 'score'") || e.contains("step 'train'"),
        "{e}"
    );
    assert!(e.contains("gpu") && e.contains("weir.toml"), "{e}");

    // Bad files are errors naming the file and the entry.
    for (text, want) in [
        (
            "[[trust]]\nsource = \"nowhere\"\ncapabilities = [\"gpu\"]\n",
            "entry 1: cannot trust step crate",
        ),
        (
            "[[trust]]\ndigest = \"abc\"\ncapabilities = [\"gpu\"]\n",
            "entry 1: a trusted component digest has 12 to 64 hex characters",
        ),
        (
            "[[trust]]\ndigest = \"0123456789abcdef\"\ncapabilities = [\"network\"]\n",
            "entry 1: unknown capability 'network'",
        ),
        (
            "[[trust]]\ndigest = \"0123456789abcdef\"\ncapabilities = []\n",
            "entry 1: grants nothing",
        ),
        (
            "[[trust]]\ncapabilities = [\"gpu\"]\n",
            "entry 1: give exactly one of `source`",
        ),
        (
            "[[trust]]\nsauce = \"x\"\ncapabilities = [\"gpu\"]\n",
            "unknown field `sauce`",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let e = TrustPolicy::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("weir.toml") && e.contains(want), "{text}: {e}");
    }
}

/// A version-1 `.npy` file of `<f4` values, as host-gpu writes them.
fn npy(rows: usize, cols: usize, values: &[f32]) -> Vec<u8> {
    let m = weir_host_gpu::Matrix::from_vec(rows, cols, values.to_vec()).unwrap();
    weir_host_gpu::npy::write_npy(&m)
}

#[test]
fn a_trusted_step_trains_from_npy_tensors_read_by_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let c = if i % 2 == 0 { -1.0 } else { 1.0 };
        x.extend([
            c + ((i * 7) % 10) as f32 / 20.0,
            c - ((i * 3) % 10) as f32 / 20.0,
        ]);
        y.push((i % 2) as f32);
    }
    std::fs::write(data.join("x.npy"), npy(300, 2, &x)).unwrap();
    std::fs::write(data.join("y.npy"), npy(300, 1, &y)).unwrap();
    std::fs::write(data.join("bad.npy"), b"\x93NUMPY\x01\x00garbage").unwrap();
    let trainer = fixture("trainer");
    let mut cfg = Config::new(tmp.path().join(".weir"));
    cfg.jobs(2);
    cfg.trust(TrustPolicy::default().trust_all());
    let rt = Runtime::new(&cfg).unwrap();
    let mut train = step("train", &trainer);
    train
        .inputs
        .insert("data".into(), InputSource::Path(data.clone()));
    train.capabilities.insert("gpu".into());
    train.params = serde_json::json!({ "mode": "train", "file": "x.npy", "features": [], "label": "y.npy", "classes": 2 });
    let r = run(&rt, &plan(tmp.path(), vec![train.clone()]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let acc = r
        .step("train")
        .unwrap()
        .metrics
        .iter()
        .find(|m| m.name == "train_accuracy")
        .unwrap()
        .value;
    assert!(acc > 0.95, "train accuracy {acc}");

    train.params["file"] = "bad.npy".into();
    let r = run(&rt, &plan(tmp.path(), vec![train]));
    assert_eq!(r.state, RunState::Failed);
    let e = r.step("train").unwrap().error.clone().unwrap();
    assert!(
        e.contains("file 'bad.npy'") && e.contains("not a readable .npy file"),
        "{e}"
    );
}

#[test]
fn requiring_cuda_where_none_works_fails_before_the_run_and_cpu_always_works() {
    let tmp = tempfile::tempdir().unwrap();
    write_data(&tmp.path().join("data"));
    let mut cfg = Config::new(tmp.path().join(".weir"));
    cfg.jobs(2);
    cfg.trust(TrustPolicy::default().trust_all());
    cfg.gpu("cuda".parse().unwrap());
    let rt = Runtime::new(&cfg).unwrap();
    match try_run(&rt, &trainer_plan(tmp.path(), &[], true)) {
        // A machine with a working GPU.
        Ok(r) => assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.contains("CUDA was required but cannot be used"), "{e}");
            assert!(
                rt.records().runs(10).unwrap().is_empty(),
                "nothing is recorded"
            );
        }
    }
    let mut cfg = Config::new(tmp.path().join(".weir-cpu"));
    cfg.jobs(2);
    cfg.trust(TrustPolicy::default().trust_all());
    cfg.gpu("cpu".parse().unwrap());
    let rt = Runtime::new(&cfg).unwrap();
    let r = run(&rt, &trainer_plan(tmp.path(), &[], true));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
}

#[test]
fn a_component_signed_by_a_trusted_publisher_gets_gpu_and_a_forged_or_unknown_one_does_not() {
    use weir_runtime::signing;
    let tmp = tempfile::tempdir().unwrap();
    write_data(&tmp.path().join("data"));
    let wasm = tmp.path().join("trainer.wasm");
    std::fs::copy(fixture("trainer"), &wasm).unwrap();
    let with_component = |p: &Path| {
        let mut plan = trainer_plan(tmp.path(), &[], true);
        for s in &mut plan.steps {
            s.component = weir_runtime::ComponentSource::Wasm(p.to_path_buf());
        }
        plan
    };
    let acme = signing::generate_key().unwrap();
    let sig = signing::sign(&digest_of(&wasm), &acme, "acme");
    std::fs::write(
        signing::signature_path(&wasm),
        serde_json::to_string(&sig).unwrap(),
    )
    .unwrap();
    let mut policy = TrustPolicy::default();
    policy
        .trust_publisher("acme", &signing::format_public_key(&acme.verifying_key()))
        .unwrap();
    let runtime_with = |p: &TrustPolicy, dir: &str| {
        let mut cfg = Config::new(tmp.path().join(dir));
        cfg.jobs(2);
        cfg.trust(p);
        Runtime::new(&cfg).unwrap()
    };
    let r = run(&runtime_with(&policy, ".a"), &with_component(&wasm));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);

    // Signed by a key the policy does not name: refused before anything runs.
    let stranger = signing::generate_key().unwrap();
    let sig2 = signing::sign(&digest_of(&wasm), &stranger, "acme");
    std::fs::write(
        signing::signature_path(&wasm),
        serde_json::to_string(&sig2).unwrap(),
    )
    .unwrap();
    let e = try_run(&runtime_with(&policy, ".b"), &with_component(&wasm)).unwrap_err();
    assert!(format!("{e:#}").contains("gpu"), "{e:#}");

    // A genuine signature on other bytes (the component was swapped): refused.
    std::fs::write(
        signing::signature_path(&wasm),
        serde_json::to_string(&sig).unwrap(),
    )
    .unwrap();
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.extend_from_slice(b"\0");
    let swapped = tmp.path().join("swapped.wasm");
    std::fs::write(&swapped, &bytes).unwrap();
    std::fs::copy(
        signing::signature_path(&wasm),
        signing::signature_path(&swapped),
    )
    .unwrap();
    assert!(try_run(&runtime_with(&policy, ".c"), &with_component(&swapped)).is_err());

    // Unsigned: refused.
    std::fs::remove_file(signing::signature_path(&wasm)).unwrap();
    assert!(try_run(&runtime_with(&policy, ".d"), &with_component(&wasm)).is_err());
}

#[test]
fn keygen_sign_and_trust_add_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = tmp.path().join("trainer.wasm");
    std::fs::copy(fixture("trainer"), &wasm).unwrap();
    let cli = |args: &[&str]| {
        let out = weir().args(args).current_dir(tmp.path()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&["keygen", "--out", "acme.key"]);
    assert!(ok, "{out}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("ed25519:"))
        .unwrap()
        .to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("acme.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the secret key is private");
    }
    let (ok, out) = cli(&["keygen", "--out", "acme.key"]);
    assert!(!ok && out.contains("never overwrites"), "{out}");
    let (ok, out) = cli(&[
        "sign",
        "trainer.wasm",
        "--key",
        "acme.key",
        "--publisher",
        "acme",
    ]);
    assert!(ok, "{out}");
    let store = tmp.path().join(".weir");
    let store = store.to_str().unwrap();
    let (_, out) = cli(&["inspect", "trainer.wasm", "--store", store]);
    assert!(
        out.contains("signature valid, by publisher 'acme'") && out.contains("would grant nothing"),
        "{out}"
    );
    let (ok, out) = cli(&["trust", "add", "--publisher", "acme", "--key", &key]);
    assert!(ok, "{out}");
    let (_, out) = cli(&["inspect", "trainer.wasm", "--store", store]);
    assert!(
        out.contains("trusted as 'acme'") && out.contains("would grant the gpu capability"),
        "{out}"
    );
    // A bad entry is refused and leaves the file as it was.
    let before = std::fs::read_to_string(tmp.path().join("weir.toml")).unwrap();
    let (ok, out) = cli(&["trust", "add", "--publisher", "x", "--key", "ed25519:00"]);
    assert!(!ok && out.contains("weir.toml: [[trust]] entry 2"), "{out}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("weir.toml")).unwrap(),
        before
    );
}
