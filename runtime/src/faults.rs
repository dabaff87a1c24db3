//! Injected I/O faults, so the store's durability claims are tested under
//! failure and not only under SIGKILL.
//!
//! Only with the cargo feature `fault-injection` (the test suite turns it
//! on; a normal build has none of it): `WEIR_FAULTS=write=N,sync=M` makes
//! the store's Nth object write (and every later one) and its Mth flush to
//! disk (and every later one) fail with `EIO`, as a failing disk would.
//! Without the feature, [`Faults`] is empty and every check is `Ok`.

use std::io;

/// An operation a fault can hit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Writing or linking a new object.
    Write,
    /// Making new objects durable (`fdatasync`, `fsync`).
    Sync,
}

/// The faults one store injects.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    #[cfg(feature = "fault-injection")]
    plan: [Option<u64>; 2],
    #[cfg(feature = "fault-injection")]
    seen: [std::sync::atomic::AtomicU64; 2],
}

impl Faults {
    /// The faults `WEIR_FAULTS` asks for (none without the feature).
    pub(crate) fn from_env() -> Faults {
        #[cfg(feature = "fault-injection")]
        {
            let mut f = Faults::default();
            let spec = std::env::var("WEIR_FAULTS").unwrap_or_default();
            for part in spec.split(',').filter(|p| !p.is_empty()) {
                let (what, n) = part.split_once('=').unwrap_or((part, "1"));
                let n = n.trim().parse().ok();
                match what.trim() {
                    "write" => f.plan[0] = n,
                    "sync" => f.plan[1] = n,
                    _ => {}
                }
            }
            f
        }
        #[cfg(not(feature = "fault-injection"))]
        Faults::default()
    }

    /// `Err(EIO)` if this `op` is one the plan fails.
    pub(crate) fn check(&self, op: Fault) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        {
            let i = match op {
                Fault::Write => 0,
                Fault::Sync => 1,
            };
            if let Some(n) = self.plan[i] {
                let seen = self.seen[i].fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if seen >= n {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
            }
        }
        let _ = op;
        Ok(())
    }
}
