//! Object storage as the shared store (issue 24): machines with stores of
//! their own share one records database (PostgreSQL) and one S3 bucket
//! (moto's S3 server, from PyPI, started by the test). What one machine
//! computed, another reuses with the same digests, fetching and verifying
//! the artifacts; a corrupt copy in the bucket is never used, and heals;
//! a bucket that cannot be written fails the run with the URL named.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's server: `$WEIR_TEST_MOTO`, or the venv `.ci/run` makes (made here
/// on first use if missing, from PyPI).
fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_TEST_MOTO") {
        return PathBuf::from(p);
    }
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let venv = repo().join("target/py-moto");
        let bin = venv.join("bin/moto_server");
        if !bin.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "moto[server]==5.2.6"])
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(
                ok,
                "could not install moto[server] from PyPI into {}",
                venv.display()
            );
        }
        bin
    })
    .clone()
}

/// An S3 server with one bucket, killed on drop.
struct S3 {
    child: Child,
    port: u16,
}

impl S3 {
    fn start(bucket: &str) -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let s3 = S3 { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, _) = s3.http("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "creating the bucket");
        s3
    }

    /// A plain request (moto does not check signatures): status and body.
    fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        c.write_all(body).unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&out[..split]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut body = out[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = unchunk(&body);
        }
        (status, body)
    }

    /// The keys under `prefix`.
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self.http("GET", &format!("/{bucket}?prefix={prefix}"), b"");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body).to_string();
        text.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Writes (`Some`) or reads an object with boto3 (moto's own
    /// dependency, in its venv): moto checks signatures on objects.
    fn object(&self, bucket: &str, key: &str, put: Option<&[u8]>) -> Vec<u8> {
        let python = moto_server().with_file_name("python");
        let script = "import boto3,sys\n\
s3=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id='k',aws_secret_access_key='s',region_name='us-east-1')\n\
if sys.argv[4]=='put': s3.put_object(Bucket=sys.argv[2],Key=sys.argv[3],Body=sys.stdin.buffer.read())\n\
else: sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[2],Key=sys.argv[3])['Body'].read())\n";
        let mut child = Command::new(python)
            .args([
                "-c",
                script,
                &format!("http://127.0.0.1:{}", self.port),
                bucket,
                key,
            ])
            .arg(if put.is_some() { "put" } else { "get" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(put.unwrap_or_default()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "boto3 on {key}");
        out.stdout
    }

    /// `weir` with this server's endpoint and (made-up) credentials.
    fn weir(&self) -> Command {
        let mut c = weir();
        c.env("AWS_ACCESS_KEY_ID", "weir-test")
            .env("AWS_SECRET_ACCESS_KEY", "weir-test-secret")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("AWS_ALLOW_HTTP", "true");
        c
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

/// `weir run` of the hello example on machine `store`: its stdout.
fn run_hello(s3: &S3, db: &str, remote: &str, store: &Path) -> String {
    let out = s3
        .weir()
        .args(["--records", db, "--remote", remote, "run", "--store"])
        .arg(store)
        .arg(repo().join("examples/hello/pipeline.rhai"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A run's steps: name to (state, outputs).
fn steps(db: &str, run: u32) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    shown_steps(Some(db), None, &run.to_string())
        .iter()
        .map(|s| {
            let outputs = s["outputs"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (
                s["step"].as_str().unwrap().to_string(),
                (s["state"].as_str().unwrap().to_string(), outputs),
            )
        })
        .collect()
}

#[test]
fn machines_sharing_postgres_and_a_bucket_compute_each_step_once() {
    let s3 = S3::start("weir-shared");
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let remote = "s3://weir-shared/team/weir";

    // Machine A computes and pushes every artifact.
    run_hello(&s3, &db.url, remote, &tmp.path().join("a"));
    let first = steps(&db.url, 1);
    assert!(
        first.values().all(|(state, _)| state == "succeeded"),
        "{first:?}"
    );
    let keys = s3.keys("weir-shared", "team/weir/objects/");
    let digests: Vec<&String> = first.values().flat_map(|(_, o)| o.values()).collect();
    for d in &digests {
        assert!(
            keys.iter().any(|k| k.ends_with(d.as_str())),
            "output {d} is in the bucket: {keys:?}"
        );
    }

    // Machine B, with an empty store, reuses all of it, fetched and verified.
    let b = tmp.path().join("b");
    let text = run_hello(&s3, &db.url, remote, &b);
    assert!(text.contains(" 0 executed"), "{text}");
    let second = steps(&db.url, 2);
    assert!(
        second.values().all(|(state, _)| state == "cached"),
        "{second:?}"
    );
    let outputs = |s: &BTreeMap<String, (String, BTreeMap<String, String>)>| {
        s.iter()
            .map(|(k, (_, o))| (k.clone(), o.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(outputs(&first), outputs(&second), "the same digests");
    for d in &digests {
        assert!(holds_object(&b, d), "machine B fetched {d}");
    }

    // A corrupt copy in the bucket is refused: machine C computes that
    // artifact again (the same digest), and its push heals the copy.
    let victim = digests[0].as_str();
    let key = keys.iter().find(|k| k.ends_with(victim)).unwrap();
    s3.object("weir-shared", key, Some(b"not what was stored"));
    let text = run_hello(&s3, &db.url, remote, &tmp.path().join("c"));
    assert!(!text.contains(" 0 executed"), "a step ran again: {text}");
    let third = steps(&db.url, 3);
    assert_eq!(outputs(&first), outputs(&third), "the same digests again");
    let healed = s3.object("weir-shared", key, None);
    assert_eq!(
        weir_runtime::Digest::of(&healed).to_hex(),
        victim,
        "the bucket's copy healed"
    );
}

#[test]
fn a_bucket_that_cannot_be_written_fails_the_run_naming_it() {
    let s3 = S3::start("weir-present");
    let tmp = tempfile::tempdir().unwrap();
    let out = s3
        .weir()
        .args(["--remote", "s3://no-such-bucket/x", "run", "--store"])
        .arg(tmp.path().join("store"))
        .arg(repo().join("examples/hello/pipeline.rhai"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("s3://no-such-bucket/x"), "{text}");
    assert!(
        !text.contains("weir-test-secret"),
        "no credentials in messages: {text}"
    );

    let out = weir()
        .args(["--remote", "ftp://host/x", "runs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--remote: expected object storage"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
