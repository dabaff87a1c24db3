//! Tries to get out of its sandbox in every way a step plausibly could, and
//! writes what happened to `/out/out/report.txt`, one `name: outcome` line
//! per attempt (`DENIED ...` or `ALLOWED ...`). With param `symlink: true` it
//! also leaves a symlink in its output, which the host must refuse.

use std::fmt::Write as _;
use std::io::Write as _;
use weir_sdk::serde_json::Value;
use weir_sdk::{Context, Result};

fn outcome<T: std::fmt::Debug>(r: std::io::Result<T>) -> String {
    match r {
        Ok(v) => format!("ALLOWED {:?}", v).chars().take(120).collect(),
        Err(e) => format!("DENIED {e}"),
    }
}

/// Creates a symlink `link` (in the output folder) pointing at `target`,
/// through the raw WASI call (std has no stable symlink on WASI).
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    let dirs = wasip2::filesystem::preopens::get_directories();
    let (dir, _) = dirs
        .iter()
        .find(|(_, p)| p == "/out/out")
        .ok_or_else(|| std::io::Error::other("no /out/out preopen"))?;
    dir.symlink_at(target, link)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))
}

fn run(ctx: &mut Context<Value>) -> Result<()> {
    let input = ctx.input_file("data")?;
    let out = ctx.output("out")?.to_path_buf();
    let mut report = String::new();
    let mut t = |name: &str, r: String| {
        let _ = writeln!(report, "{name}: {r}");
    };
    t(
        "read /etc/passwd",
        outcome(std::fs::read_to_string("/etc/passwd")),
    );
    t(
        "read via .. from input",
        outcome(std::fs::read_to_string("/in/data/../../etc/passwd")),
    );
    t(
        "read via .. from output",
        outcome(std::fs::read_to_string("/out/out/../../etc/passwd")),
    );
    t(
        "read relative ..",
        outcome(std::fs::read_to_string("../etc/passwd")),
    );
    t("list /", outcome(std::fs::read_dir("/").map(|d| d.count())));
    t(
        "list /in/..",
        outcome(std::fs::read_dir("/in/data/..").map(|d| d.count())),
    );
    t(
        "read canary by absolute host path",
        outcome(std::fs::read_to_string("/tmp/weir-canary.txt")),
    );
    t(
        "write into input folder",
        outcome(std::fs::write("/in/data/evil.txt", "x")),
    );
    t(
        "open input for writing",
        outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&input)
                .and_then(|mut f| f.write_all(b"evil")),
        ),
    );
    t(
        "truncate input",
        outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&input),
        ),
    );
    t("remove input", outcome(std::fs::remove_file(&input)));
    t(
        "rename input into output",
        outcome(std::fs::rename(&input, out.join("stolen.csv"))),
    );
    t(
        "create absolute symlink",
        outcome(symlink("/etc/passwd", "abs-link")),
    );
    // A relative link may be created, but never followed out of the sandbox.
    let _ = symlink("../../../../etc/passwd", "rel-link");
    t(
        "read through a symlink pointing out",
        outcome(std::fs::read_to_string(out.join("rel-link"))),
    );
    let _ = std::fs::remove_file(out.join("rel-link"));
    t(
        "tcp connect",
        outcome(std::net::TcpStream::connect("127.0.0.1:80")),
    );
    t(
        "tcp bind",
        outcome(std::net::TcpListener::bind("127.0.0.1:0")),
    );
    t(
        "udp bind",
        outcome(std::net::UdpSocket::bind("127.0.0.1:0")),
    );
    use std::net::ToSocketAddrs;
    t(
        "dns lookup",
        outcome(("localhost", 80).to_socket_addrs().map(|a| a.count())),
    );
    let envs: Vec<(String, String)> = std::env::vars().collect();
    t(
        "environment",
        if envs.is_empty() {
            "DENIED empty".into()
        } else {
            format!("ALLOWED {envs:?}")
        },
    );
    let args: Vec<String> = std::env::args().collect();
    t(
        "arguments",
        if args.is_empty() {
            "DENIED empty".into()
        } else {
            format!("ALLOWED {args:?}")
        },
    );
    t(
        "list the current folder",
        outcome(std::fs::read_dir(".").map(|d| d.count())),
    );
    std::fs::write(out.join("report.txt"), &report)?;
    if ctx.params().get("symlink").and_then(Value::as_bool) == Some(true) {
        symlink("report.txt", "inner-link")?;
    }
    Ok(())
}

weir_sdk::step!(run);
