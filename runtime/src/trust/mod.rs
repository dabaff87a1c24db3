//! The trust policy: which components may be granted capabilities beyond
//! the `step` world (by digest, by the project's own step crates, by a
//! signing publisher, or all of them), what a pipeline script may read and
//! build (its project, and the roots the trust file adds), the hooks the
//! project declares, and the caps on steps' limits. Read from the project's
//! trust file (`weir.toml`), which the person running weir trusts.

pub mod signing;

use crate::digest::Digest;
use crate::limits::LimitsCap;
use anyhow::anyhow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which components may be granted capabilities beyond the `step` world.
/// A step gets a capability only if its pipeline requests it
/// (`.requires("gpu")`) *and* this policy trusts the step's component: by
/// digest (`--trust`), because it is built from a step crate the project's
/// trust file names (`weir.toml`), because a publisher the trust file names
/// signed it (see [`crate::trust::signing`]), or because everything is trusted
/// (`--trust-all`, for development machines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    all: bool,
    prefixes: Vec<(String, Grant)>,
    sources: Vec<(PathBuf, Grant)>,
    /// Publisher name and ed25519 public key.
    publishers: Vec<(String, [u8; 32], Grant)>,
    /// The trust file's `[limits]`: caps for every component that no
    /// entry with its own `limits` names.
    default_limits: Option<LimitsCap>,
    /// Where pipeline scripts may reach on the host (see [`Project`]).
    project: Option<Project>,
    /// Command hooks the trust file declares, by name (`[hooks.NAME]`).
    hooks: BTreeMap<String, Vec<String>>,
}

/// The part of the host a pipeline script may reach: a script may come
/// from someone else, so it may read host files (`.input("x", path)`) and
/// have weir build step crates (whose `build.rs` runs natively) only inside
/// its project folder and the roots the project's trust file adds
/// (`[inputs] roots`, `[build] roots`). The project folder is the trust
/// file's folder, or the script's own when there is no trust file
/// ([`TrustPolicy::confine_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Project {
    root: PathBuf,
    /// The trust file, for messages that say which line would allow something.
    file: Option<PathBuf>,
    inputs: Vec<PathBuf>,
    builds: Vec<PathBuf>,
}

impl Project {
    /// `Ok` if `path` (canonical) is inside the project or one of `extra`;
    /// else the refusal, naming the trust file line that would allow it.
    fn allows(
        &self,
        path: &Path,
        extra: &[PathBuf],
        what: &str,
        section: &str,
    ) -> anyhow::Result<()> {
        if path.starts_with(&self.root) || extra.iter().any(|r| path.starts_with(r)) {
            return Ok(());
        }
        let folder = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(path)
        };
        let toml_path = format!("{:?}", folder.display().to_string());
        let (file, where_) = match &self.file {
            Some(f) => (
                f.display().to_string(),
                format!("the folder of {}", f.display()),
            ),
            None => (
                self.root.join(TRUST_FILE).display().to_string(),
                "the pipeline script's folder; there is no weir.toml".to_string(),
            ),
        };
        Err(anyhow::anyhow!(
            "{what} {}, outside the project {} ({where_}); a pipeline script may reach only its own project, since it may come from someone else. To allow it, add to {file}:\n  [{section}]\n  roots = [{toml_path}]",
            path.display(),
            self.root.display()
        ))
    }
}

/// What one trust entry grants: every capability and any limits (`caps:
/// None`: `--trust`, the builder methods), or the listed capabilities and
/// the entry's limits (trust file entries).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    caps: Option<Vec<String>>,
    limits: Option<LimitsCap>,
}

impl Grant {
    const ALL: Grant = Grant {
        caps: None,
        limits: None,
    };
}

fn grant_has(g: &Grant, cap: &str) -> bool {
    g.caps
        .as_ref()
        .is_none_or(|caps| caps.iter().any(|c| c == cap))
}

/// The capabilities built into weir that a pipeline may request; an
/// embedding host adds its own ([`crate::Config::capability`]).
pub const CAPABILITIES: &[&str] = &["gpu"];

/// The name of a project's trust file, looked up beside a pipeline script
/// and in the folders above it.
pub const TRUST_FILE: &str = "weir.toml";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    limits: Option<LimitsCap>,
    #[serde(default)]
    trust: Vec<TrustEntry>,
    /// Host folders pipeline scripts may read besides the project.
    #[serde(default)]
    inputs: Roots,
    /// Folders of step crates weir may build besides the project's.
    #[serde(default)]
    build: Roots,
    /// Command hooks scripts may name.
    #[serde(default)]
    hooks: BTreeMap<String, HookEntry>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Roots {
    #[serde(default)]
    roots: Vec<PathBuf>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HookEntry {
    command: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustEntry {
    source: Option<PathBuf>,
    digest: Option<String>,
    publisher: Option<String>,
    key: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    limits: Option<LimitsCap>,
}

impl TrustPolicy {
    /// A policy from the trust file at `path` alone: the same as
    /// [`TrustPolicy::default`] then [`TrustPolicy::trust_file`].
    pub fn from_file(path: &Path) -> anyhow::Result<TrustPolicy> {
        let mut p = TrustPolicy::default();
        p.trust_file(path)?;
        Ok(p)
    }

    /// Trusts every component (for development machines).
    pub fn trust_all(&mut self) -> &mut Self {
        self.all = true;
        self
    }

    /// Trusts the component whose digest starts with `prefix` (at least 12 hex characters).
    pub fn trust(&mut self, prefix: &str) -> anyhow::Result<&mut Self> {
        self.add_digest(prefix, Grant::ALL)?;
        Ok(self)
    }

    /// Trusts whatever component weir builds from the step crate in `dir`
    /// (the project trusts its own source code, whatever its digest).
    pub fn trust_source(&mut self, dir: &Path) -> anyhow::Result<&mut Self> {
        self.add_source(dir, Grant::ALL)?;
        Ok(self)
    }

    /// Trusts components signed by the publisher with this public key
    /// (`ed25519:<64 hex>`, as `weir keygen` prints it).
    pub fn trust_publisher(&mut self, name: &str, key: &str) -> anyhow::Result<&mut Self> {
        self.add_publisher(name, key, Grant::ALL)?;
        Ok(self)
    }

    fn add_digest(&mut self, prefix: &str, grant: Grant) -> anyhow::Result<()> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.len() < 12 || p.len() > 64 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(anyhow::anyhow!(
                "a trusted component digest has 12 to 64 hex characters, found {prefix:?}"
            ));
        }
        self.prefixes.push((p, grant));
        Ok(())
    }

    fn add_source(&mut self, dir: &Path, grant: Grant) -> anyhow::Result<()> {
        let canon = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("cannot trust step crate {}: {e}", dir.display()))?;
        if !canon.join("Cargo.toml").is_file() {
            return Err(anyhow::anyhow!(
                "cannot trust step crate {}: it has no Cargo.toml",
                dir.display()
            ));
        }
        self.sources.push((canon, grant));
        Ok(())
    }

    fn add_publisher(&mut self, name: &str, key: &str, grant: Grant) -> anyhow::Result<()> {
        let k = crate::trust::signing::parse_public_key(key)?;
        self.publishers
            .push((name.to_string(), *k.as_bytes(), grant));
        Ok(())
    }

    /// The trusted publisher that signed the component file `wasm` (whose
    /// bytes have digest `d`), if any; a bad signature is `Err` with why.
    pub fn signer(&self, wasm: &Path, d: &Digest) -> anyhow::Result<Option<String>> {
        self.publisher_granting(wasm, d, None)
    }

    /// The trusted publisher that signed `wasm` and whose entry grants `cap`
    /// (any capability when `None`).
    fn publisher_granting(
        &self,
        wasm: &Path,
        d: &Digest,
        cap: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        let Some(s) = crate::trust::signing::verify(wasm, d)? else {
            return Ok(None);
        };
        Ok(self
            .publishers
            .iter()
            .find(|(_, k, g)| k == s.key.as_bytes() && cap.is_none_or(|c| grant_has(g, c)))
            .map(|(name, _, _)| name.clone()))
    }

    /// Adds the entries of a trust file (`weir.toml`):
    ///
    /// ```toml
    /// [[trust]]
    /// source = "steps/train_model"   # a step crate, relative to this file
    /// capabilities = ["gpu"]
    ///
    /// [[trust]]
    /// digest = "3f2a9c0d51e7"        # a prebuilt component, by digest prefix
    /// capabilities = ["gpu"]
    ///
    /// [[trust]]
    /// publisher = "acme"             # components acme signed (weir sign)
    /// key = "ed25519:<64 hex>"
    /// capabilities = ["gpu"]
    /// ```
    ///
    /// A file with an error changes nothing: the error names the file and
    /// the entry.
    pub fn trust_file(&mut self, path: &Path) -> anyhow::Result<&mut Self> {
        self.trust_file_for(path, &[])
    }

    /// Like [`TrustPolicy::trust_file`], also accepting the names of the
    /// host-defined capabilities `extra` in `capabilities` lists.
    pub fn trust_file_for(&mut self, path: &Path, extra: &[&str]) -> anyhow::Result<&mut Self> {
        // Read into a copy, so a file with an error leaves `self` as it was.
        let mut read = self.clone();
        read.read_file(path, extra)?;
        *self = read;
        Ok(self)
    }

    /// The whole of [`TrustPolicy::trust_file_for`], on `self`.
    fn read_file(&mut self, path: &Path, extra: &[&str]) -> anyhow::Result<()> {
        let known: Vec<&str> = CAPABILITIES.iter().chain(extra).copied().collect();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read trust file {}: {e}", path.display()))?;
        let file: TrustFile = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        self.read_project(path, base, &file)?;
        if let Some(l) = &file.limits {
            l.validate()
                .map_err(|m| anyhow!("{}: [limits]: {m}", path.display()))?;
            self.default_limits = Some(*l);
        }
        for (i, e) in file.trust.iter().enumerate() {
            let at = format!("{}: [[trust]] entry {}", path.display(), i + 1);
            if let Some(c) = e.capabilities.iter().find(|c| !known.contains(&c.as_str())) {
                anyhow::bail!(
                    "{at}: unknown capability '{c}' (capabilities: {})",
                    known.join(", ")
                );
            }
            if e.capabilities.is_empty() && e.limits.is_none() {
                anyhow::bail!(
                    "{at}: grants nothing; list `capabilities` (e.g. [\"gpu\"]) or `limits` (e.g. {{ memory = \"2GiB\" }})"
                );
            }
            if let Some(l) = &e.limits {
                l.validate().map_err(|m| anyhow!("{at}: {m}"))?;
            }
            let grant = Grant {
                caps: Some(e.capabilities.clone()),
                limits: e.limits,
            };
            match (&e.source, &e.digest, &e.publisher, &e.key) {
                (Some(src), None, None, None) => self
                    .add_source(&base.join(src), grant)
                    .map_err(|m| anyhow!("{at}: {m}"))?,
                (None, Some(d), None, None) => self
                    .add_digest(d, grant)
                    .map_err(|m| anyhow!("{at}: {m}"))?,
                (None, None, Some(name), Some(key)) => self
                    .add_publisher(name, key, grant)
                    .map_err(|m| anyhow!("{at}: {m}"))?,
                (None, None, Some(_), None) => {
                    anyhow::bail!("{at}: a `publisher` entry needs its `key` (ed25519:...)")
                }
                _ => anyhow::bail!(
                    "{at}: give exactly one of `source` (a step crate), `digest`, or `publisher` with `key`"
                ),
            }
        }
        Ok(())
    }

    /// The project part of a trust file: its folder, `[inputs]`, `[build]`
    /// and `[hooks]`.
    fn read_project(&mut self, path: &Path, base: &Path, file: &TrustFile) -> anyhow::Result<()> {
        let canon = |section: &str, r: &PathBuf| {
            base.join(r).canonicalize().map_err(|e| {
                anyhow!(
                    "{}: [{section}] roots: {}: {e}",
                    path.display(),
                    r.display()
                )
            })
        };
        let root = base
            .canonicalize()
            .map_err(|e| anyhow!("{}: {e}", base.display()))?;
        self.project = Some(Project {
            root,
            file: Some(path.canonicalize().unwrap_or_else(|_| path.to_path_buf())),
            inputs: file
                .inputs
                .roots
                .iter()
                .map(|r| canon("inputs", r))
                .collect::<anyhow::Result<_>>()?,
            builds: file
                .build
                .roots
                .iter()
                .map(|r| canon("build", r))
                .collect::<anyhow::Result<_>>()?,
        });
        for (name, h) in &file.hooks {
            crate::names::check_name("hook", name)
                .map_err(|e| anyhow!("{}: [hooks.{name}]: {e}", path.display()))?;
            if h.command.first().is_none_or(|p| p.is_empty()) {
                anyhow::bail!(
                    "{}: [hooks.{name}]: `command` must name a program, as in command = [\"notify-send\", \"weir\"]",
                    path.display()
                );
            }
            self.hooks.insert(name.clone(), h.command.clone());
        }
        Ok(())
    }

    /// Confines pipeline scripts to `dir` (the script's folder) when no
    /// trust file set the project already; see [`TrustPolicy::check_input`].
    pub fn confine_to(&mut self, dir: &Path) -> &mut Self {
        if self.project.is_none()
            && let Ok(root) = dir.canonicalize()
        {
            self.project = Some(Project {
                root,
                file: None,
                inputs: Vec::new(),
                builds: Vec::new(),
            });
        }
        self
    }

    /// Whether a pipeline may read the host file or folder `path` as an
    /// input: always, unless the policy confines scripts to a project (a
    /// trust file, or [`TrustPolicy::confine_to`]); then only inside it or
    /// its `[inputs] roots`. The refusal says which trust file line would
    /// allow it.
    pub fn check_input(&self, path: &Path) -> anyhow::Result<()> {
        let Some(p) = &self.project else {
            return Ok(());
        };
        // A path that does not resolve is reported by the read itself.
        let Ok(canon) = path.canonicalize() else {
            return Ok(());
        };
        p.allows(&canon, &p.inputs, "reads", "inputs")
    }

    /// Whether weir may build the step crate in `dir` for a pipeline (its
    /// `build.rs` would run natively): like [`TrustPolicy::check_input`],
    /// with `[build] roots`.
    pub fn check_build(&self, dir: &Path) -> anyhow::Result<()> {
        let Some(p) = &self.project else {
            return Ok(());
        };
        let canon = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("step crate {}: {e}", dir.display()))?;
        // A crate the trust file names as a `source` is the project's to build.
        if self.sources.iter().any(|(s, _)| *s == canon) {
            return Ok(());
        }
        p.allows(&canon, &p.builds, "builds the step crate", "build")
    }

    /// The command of the hook the trust file declares as `name`.
    pub fn hook(&self, name: &str) -> Option<&[String]> {
        self.hooks.get(name).map(Vec::as_slice)
    }

    /// The names of the hooks the trust file declares.
    pub fn hook_names(&self) -> impl Iterator<Item = &str> {
        self.hooks.keys().map(String::as_str)
    }

    /// Finds the trust file for a pipeline in `dir` or the folders above it.
    pub fn find_file(dir: &Path) -> Option<PathBuf> {
        let dir = dir.canonicalize().ok()?;
        dir.ancestors()
            .map(|d| d.join(TRUST_FILE))
            .find(|f| f.is_file())
    }

    /// Whether the component with digest `d` is trusted by digest (or
    /// `--trust-all`) with capability `cap`.
    pub fn allows(&self, cap: &str, d: &Digest) -> bool {
        self.all || {
            let hex = d.to_hex();
            self.prefixes
                .iter()
                .any(|(p, g)| hex.starts_with(p.as_str()) && grant_has(g, cap))
        }
    }

    /// Whether a component with digest `d` may be granted capability
    /// `cap`: `source` is the step crate it was built from, `wasm` the
    /// prebuilt file it was read from (whose `.sig` may name a trusted
    /// publisher).
    pub fn grants(
        &self,
        cap: &str,
        d: &Digest,
        source: Option<&Path>,
        wasm: Option<&Path>,
    ) -> bool {
        self.allows(cap, d)
            || source.and_then(|s| s.canonicalize().ok()).is_some_and(|s| {
                self.sources
                    .iter()
                    .any(|(p, g)| *p == s && grant_has(g, cap))
            })
            || (self.publishers.iter().any(|(_, _, g)| grant_has(g, cap))
                && wasm.is_some_and(|w| match self.publisher_granting(w, d, Some(cap)) {
                    Ok(found) => found.is_some(),
                    Err(why) => {
                        tracing::warn!("{why}");
                        false
                    }
                }))
    }

    /// Whether this policy caps any component's limits (a trust file with
    /// `[limits]` or an entry with `limits`).
    pub fn caps_limits(&self) -> bool {
        self.default_limits.is_some()
            || self.prefixes.iter().any(|(_, g)| g.limits.is_some())
            || self.sources.iter().any(|(_, g)| g.limits.is_some())
            || self.publishers.iter().any(|(_, _, g)| g.limits.is_some())
    }

    /// The caps on the limits of steps running the component with digest
    /// `d` (built from `source`, or read from `wasm`), `None` for no cap.
    /// The trust file's `[limits]` apply to every component; an entry that
    /// names the component and has its own `limits` replaces the fields it
    /// sets (several such entries: the most generous value of each field);
    /// a component trusted by `--trust`, `--trust-all` or the builder
    /// methods is not capped.
    pub fn limits_for(
        &self,
        d: &Digest,
        source: Option<&Path>,
        wasm: Option<&Path>,
    ) -> Option<LimitsCap> {
        if self.all || !self.caps_limits() {
            return None;
        }
        let hex = d.to_hex();
        let mut matching: Vec<&Grant> = self
            .prefixes
            .iter()
            .filter(|(p, _)| hex.starts_with(p.as_str()))
            .map(|(_, g)| g)
            .collect();
        if let Some(s) = source.and_then(|s| s.canonicalize().ok()) {
            matching.extend(self.sources.iter().filter(|(p, _)| *p == s).map(|(_, g)| g));
        }
        if !self.publishers.is_empty()
            && let Some(w) = wasm
            && let Ok(Some(sig)) = crate::trust::signing::verify(w, d)
        {
            matching.extend(
                self.publishers
                    .iter()
                    .filter(|(_, k, _)| k == sig.key.as_bytes())
                    .map(|(_, _, g)| g),
            );
        }
        if matching.iter().any(|g| g.caps.is_none()) {
            return None;
        }
        let base = self.default_limits.unwrap_or_default();
        let cap = matching
            .iter()
            .filter_map(|g| g.limits.as_ref())
            .map(|l| base.overlaid(l))
            .reduce(|a, b| a.widest(&b))
            .or(self.default_limits)?;
        (cap != LimitsCap::default()).then_some(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::TrustPolicy;

    #[test]
    fn a_trust_file_with_an_error_leaves_the_policy_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("weir.toml");
        // The first entry is good; the second names no component.
        std::fs::write(
            &file,
            "[limits]\nmemory = \"1GiB\"\n[[trust]]\ndigest = \"0123456789ab\"\ncapabilities = [\"gpu\"]\n[[trust]]\ncapabilities = [\"gpu\"]\n",
        )
        .unwrap();
        let mut p = TrustPolicy::default();
        p.trust("fedcba987654").unwrap();
        let before = p.clone();
        let e = p.trust_file(&file).unwrap_err().to_string();
        assert!(e.contains("entry 2"), "{e}");
        assert_eq!(p, before);
    }

    #[test]
    fn a_trust_file_sets_the_project_and_its_extra_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let (proj, data, shared) = (
            tmp.path().join("proj"),
            tmp.path().join("data"),
            tmp.path().join("shared"),
        );
        for d in [&proj, &data, &shared, &tmp.path().join("other")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let file = proj.join("weir.toml");
        std::fs::write(
            &file,
            "[inputs]\nroots = [\"../data\"]\n[build]\nroots = [\"../shared\"]\n[hooks.notify]\ncommand = [\"notify-send\", \"weir\"]\n",
        )
        .unwrap();
        let t = TrustPolicy::from_file(&file).unwrap();
        assert!(t.check_input(&proj).is_ok());
        assert!(t.check_input(&data).is_ok());
        assert!(t.check_build(&shared).is_ok());
        let e = t.check_build(&data).unwrap_err().to_string();
        assert!(e.contains("[build]") && e.contains("weir.toml"), "{e}");
        let e = t
            .check_input(&tmp.path().join("other"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[inputs]"), "{e}");
        assert_eq!(
            t.hook("notify"),
            Some(&["notify-send".to_string(), "weir".to_string()][..])
        );
        // Without a trust file, the script's folder is the project.
        let mut t = TrustPolicy::default();
        t.confine_to(&proj);
        assert!(t.check_input(&data).is_err());
        // Embedders that set neither are not confined.
        assert!(TrustPolicy::default().check_input(&data).is_ok());
    }
}
