//! An S3-compatible server for tests: moto's, from PyPI (in a venv `.ci/run`
//! makes, or made on first use), started per test and killed on drop.

use super::*;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's server: `$WEIR_TEST_MOTO`, or the venv `.ci/run` makes (made here
/// on first use if missing, from PyPI).
pub fn moto_server() -> PathBuf {
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
pub struct S3 {
    child: Child,
    pub port: u16,
}

impl S3 {
    pub fn start(bucket: &str) -> S3 {
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
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
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
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
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
    pub fn object(&self, bucket: &str, key: &str, put: Option<&[u8]>) -> Vec<u8> {
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
    pub fn weir(&self) -> Command {
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
