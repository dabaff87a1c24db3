//! Per-step resource limits and their defaults: the one place they are defined.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default linear-memory cap of a step: 512 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
/// Default wall-clock timeout of one attempt: 10 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default total size of a step's outputs: 1 GiB.
pub const DEFAULT_OUTPUT_BYTES: u64 = 1 << 30;
/// Default number of files and folders in a step's outputs: 100,000.
pub const DEFAULT_OUTPUT_FILES: u64 = 100_000;
/// Default bytes kept of each of stdout and stderr: 1 MiB (the rest is counted, not kept).
pub const DEFAULT_STDIO_BYTES: u64 = 1 << 20;
/// Default number of log lines kept per attempt: 10,000.
pub const DEFAULT_LOG_LINES: u64 = 10_000;
/// The largest memory cap a step may ask for: 4 GiB (wasm32's address space).
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;
/// The most steps one pipeline may declare (map children not counted):
/// 100,000. A plan this size builds in about a second and a run of it stays
/// within a few hundred MiB; a script that declares more is refused where it
/// crosses the line, before it can exhaust the host.
pub const MAX_STEPS: usize = 100_000;

/// What a step attempt may use. Every field has a documented default
/// ([`Limits::default`]); a pipeline overrides them per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear-memory cap in bytes, summed over the component's memories.
    pub memory_bytes: u64,
    /// Wall-clock timeout of one attempt, in milliseconds. Enforced while the
    /// guest computes (epoch interruption) and while it waits in a host call.
    pub timeout_ms: u64,
    /// Optional fuel budget (roughly, wasm instructions); `None` is unlimited.
    pub fuel: Option<u64>,
    /// Total bytes of all files in the step's outputs.
    pub output_bytes: u64,
    /// Number of files and folders in the step's outputs.
    pub output_files: u64,
    /// Bytes kept of each of stdout and stderr.
    pub stdio_bytes: u64,
    /// Log lines kept per attempt.
    pub log_lines: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
            fuel: None,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            output_files: DEFAULT_OUTPUT_FILES,
            stdio_bytes: DEFAULT_STDIO_BYTES,
            log_lines: DEFAULT_LOG_LINES,
        }
    }
}

impl Limits {
    /// These limits, each lowered to `cap`'s where `cap` is stricter (a fuel
    /// cap applies even to a step without a fuel budget).
    pub fn capped_by(&self, cap: &Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.min(cap.memory_bytes),
            timeout_ms: self.timeout_ms.min(cap.timeout_ms),
            fuel: match (self.fuel, cap.fuel) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            output_bytes: self.output_bytes.min(cap.output_bytes),
            output_files: self.output_files.min(cap.output_files),
            stdio_bytes: self.stdio_bytes.min(cap.stdio_bytes),
            log_lines: self.log_lines.min(cap.log_lines),
        }
    }

    /// The timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks that the limits are usable, naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(format!(
                "memory limit must be between 1 byte and 4 GiB, found {} bytes",
                self.memory_bytes
            ));
        }
        if self.timeout_ms == 0 {
            return Err("timeout must be at least 1 ms, found 0".into());
        }
        if self.fuel == Some(0) {
            return Err("fuel must be at least 1 when set, found 0".into());
        }
        Ok(())
    }
}
