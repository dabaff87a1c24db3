//! Publisher keys and the project trust file: `weir keygen`, `weir sign`,
//! `weir trust add` and `weir trust show`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use weir_runtime::signing;
use weir_runtime::{Digest, TrustPolicy};

/// Arguments of `weir keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (created with mode 0600; never overwritten)
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `weir sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// The component file (.wasm); the signature is written beside it as FILE.sig
    component: PathBuf,
    /// The secret key file from `weir keygen`
    #[arg(long)]
    key: PathBuf,
    /// The publisher name to put in the signature
    #[arg(long)]
    publisher: String,
}

/// What `weir trust` does.
#[derive(clap::Subcommand)]
pub enum TrustWhat {
    /// Add an entry to the project's trust file (weir.toml)
    Add {
        /// Trust components this publisher signed (give --key too)
        #[arg(long, conflicts_with_all = ["digest", "source"])]
        publisher: Option<String>,
        /// The publisher's public key, ed25519:<64 hex> (as `weir keygen` prints it)
        #[arg(long, requires = "publisher")]
        key: Option<String>,
        /// Trust one prebuilt component by digest (12+ hex characters)
        #[arg(long, conflicts_with = "source")]
        digest: Option<String>,
        /// Trust a step crate of this project (relative to the trust file)
        #[arg(long)]
        source: Option<PathBuf>,
        /// A capability to grant (repeatable; default: gpu)
        #[arg(long = "capability", default_values_t = vec!["gpu".to_string()])]
        capabilities: Vec<String>,
        /// The trust file [default: weir.toml in the current folder]
        #[arg(long, default_value = "weir.toml")]
        file: PathBuf,
    },
}

/// Runs `weir keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = signing::generate_key().map_err(anyhow::Error::msg)?;
    write_new(&args.out, signing::format_secret_key(&key).as_bytes())?;
    outln!("secret key {} (keep it private)", args.out.display());
    outln!(
        "public key {}",
        signing::format_public_key(&key.verifying_key())
    );
    outln!(
        "projects trust it with: weir trust add --publisher NAME --key {}",
        signing::format_public_key(&key.verifying_key())
    );
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {e}{}",
            path.display(),
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                " (weir keygen never overwrites a key)"
            } else {
                ""
            }
        )
    })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Runs `weir sign`.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    weir_runtime::names::check_name("publisher", &args.publisher)?;
    let key = signing::read_secret_key(&args.key).map_err(anyhow::Error::msg)?;
    let bytes = std::fs::read(&args.component)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.component.display()))?;
    let digest = Digest::of(&bytes);
    let sig = signing::sign(&digest, &key, &args.publisher);
    let path = signing::signature_path(&args.component);
    let tmp = path.with_extension("sig.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&sig)? + "\n")?;
    std::fs::rename(&tmp, &path)?;
    outln!(
        "signed {} ({}) as {}: {}",
        args.component.display(),
        digest.short(),
        args.publisher,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn toml_string(s: &str) -> String {
    // A TOML basic string: escape backslashes, quotes and control characters.
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `weir trust ...`.
pub fn trust(what: TrustWhat) -> anyhow::Result<ExitCode> {
    match what {
        TrustWhat::Add {
            publisher,
            key,
            digest,
            source,
            capabilities,
            file,
        } => {
            let mut entry = String::from("\n[[trust]]\n");
            match (&publisher, &key, &digest, &source) {
                (Some(p), Some(k), None, None) => {
                    weir_runtime::names::check_name("publisher", p)?;
                    entry.push_str(&format!(
                        "publisher = {}\nkey = {}\n",
                        toml_string(p),
                        toml_string(k)
                    ));
                }
                (Some(_), None, _, _) => anyhow::bail!(
                    "--publisher needs --key ed25519:... (the publisher's public key)"
                ),
                (None, None, Some(d), None) => {
                    entry.push_str(&format!("digest = {}\n", toml_string(d)))
                }
                (None, None, None, Some(s)) => {
                    entry.push_str(&format!("source = {}\n", toml_string(&s.to_string_lossy())))
                }
                _ => anyhow::bail!(
                    "give one of --publisher NAME --key KEY, --digest DIGEST or --source STEP_CRATE"
                ),
            }
            let caps: Vec<String> = capabilities.iter().map(|c| toml_string(c)).collect();
            entry.push_str(&format!("capabilities = [{}]\n", caps.join(", ")));
            let before = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    "# Which components may be granted capabilities (see docs/sandbox.md#trust).\n"
                        .to_string()
                }
                Err(e) => anyhow::bail!("cannot read {}: {e}", file.display()),
            };
            let after = format!(
                "{}{entry}",
                before.trim_end_matches('\n').to_string() + "\n"
            );
            // Check the whole new file before it replaces the old one.
            let tmp = file.with_extension("toml.tmp");
            std::fs::write(&tmp, &after)?;
            if let Err(e) = TrustPolicy::from_file(&tmp) {
                let _ = std::fs::remove_file(&tmp);
                anyhow::bail!(
                    "{}",
                    e.to_string()
                        .replace(&tmp.display().to_string(), &file.display().to_string())
                );
            }
            std::fs::rename(&tmp, &file)?;
            outln!("added to {}:{}", file.display(), entry.trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}
