//! Host-defined capabilities: WIT interfaces that an embedding host
//! implements in Rust and grants to chosen steps.
//!
//! A capability has a name (what a pipeline requests with
//! `.requires("name")` and what the trust policy grants), a version (its
//! identity in the cache key, so changing what it returns invalidates cached
//! results), the WIT interfaces it provides (component import names such as
//! `acme:kv/lookup@0.1.0`), a function that adds them to a
//! [`wasmtime::component::Linker`], and optionally per-attempt state the
//! implementation reads back with [`HostState::extension`].
//!
//! ```ignore
//! wasmtime::component::bindgen!({
//!     inline: "package acme:kv@0.1.0; interface lookup { get: func(key: string) -> option<string>; } world kv { import lookup; }",
//!     wasmtime_crate: weir_runtime::wasmtime,
//! });
//! struct Kv(std::collections::HashMap<String, String>);
//! impl acme::kv::lookup::Host for HostState {
//!     fn get(&mut self, key: String) -> Option<String> {
//!         self.extension::<Kv>().and_then(|kv| kv.0.get(&key).cloned())
//!     }
//! }
//! let kv = Capability::new("kv", "1")
//!     .interface("acme:kv/lookup@0.1.0")
//!     .linker(|l| acme::kv::lookup::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s))
//!     .state(|| Kv(table.clone()));
//! let config = Config::new(".weir").capability(kv);
//! ```

use crate::executor::HostState;
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use wasmtime::component::Linker;

type LinkFn = dyn Fn(&mut Linker<HostState>) -> wasmtime::Result<()> + Send + Sync;
type StateFn = dyn Fn() -> Box<dyn Any + Send> + Send + Sync;

/// A capability an embedding host adds; see the module docs.
#[derive(Clone)]
pub struct Capability {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) interfaces: Vec<String>,
    pub(crate) link: Option<Arc<LinkFn>>,
    pub(crate) state: Option<Arc<StateFn>>,
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capability")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl Capability {
    /// A capability named `name` (what pipelines request and trust entries
    /// grant) at `version` (part of every cache key of steps that use it).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Capability {
        Capability {
            name: name.into(),
            version: version.into(),
            interfaces: Vec::new(),
            link: None,
            state: None,
        }
    }

    /// A component import this capability provides, as the component names
    /// it (`package:name/interface@version`).
    pub fn interface(mut self, import: impl Into<String>) -> Capability {
        self.interfaces.push(import.into());
        self
    }

    /// Adds the capability's functions to a linker (usually the
    /// `add_to_linker` that `wasmtime::component::bindgen!` generated).
    pub fn linker(
        mut self,
        f: impl Fn(&mut Linker<HostState>) -> wasmtime::Result<()> + Send + Sync + 'static,
    ) -> Capability {
        self.link = Some(Arc::new(f));
        self
    }

    /// State made fresh for each attempt of a step granted this capability,
    /// reachable from the implementation through [`HostState::extension`].
    pub fn state<T: Any + Send>(mut self, f: impl Fn() -> T + Send + Sync + 'static) -> Capability {
        self.state = Some(Arc::new(move || Box::new(f()) as Box<dyn Any + Send>));
        self
    }

    /// The name pipelines request.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The identity that enters cache keys: `name@version`.
    pub fn identity(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        crate::names::check_name("capability", &self.name).map_err(|e| e.to_string())?;
        if self.name == "gpu" {
            return Err("capability 'gpu' is built in; give a host capability another name".into());
        }
        if self.interfaces.is_empty() {
            return Err(format!(
                "capability '{}' provides no interface (add .interface(\"pkg:name/iface@version\"))",
                self.name
            ));
        }
        if self.link.is_none() {
            return Err(format!("capability '{}' has no linker function", self.name));
        }
        Ok(())
    }
}
