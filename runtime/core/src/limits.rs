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
/// The longest timeout a step may ask for: 7 days.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most retries a step may ask for: 100.
pub const MAX_RETRIES: u32 = 100;
/// The longest wait between attempts a step may ask for: 1 day.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);
/// The largest memory cap a step may ask for: 4 GiB (wasm32's address space).
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;
/// Fixed bounds on what a guest passes through host calls and grows, the
/// same for every step: the longest log message kept (longer ones are cut
/// and marked `[truncated]`): 64 KiB.
pub const MAX_LOG_MESSAGE_BYTES: usize = 64 << 10;
/// The most log text (messages and metric names) kept per attempt: 16 MiB.
/// Lines past it are counted and dropped, like lines past `log_lines`: a
/// step that logs hundreds of megabytes cannot make its host (or `weir
/// serve`, which shows them live) hold them.
pub const MAX_LOG_BYTES: usize = 16 << 20;
/// The longest metric name kept: 256 bytes.
pub const MAX_METRIC_NAME_BYTES: usize = 256;
/// The longest name (of an input, output, file or column) a guest may pass
/// to a host call: 4 KiB.
pub const MAX_NAME_BYTES: usize = 4 << 10;
/// The most random bytes one `get-random-bytes` call may ask for: 16 MiB
/// (a larger request traps).
pub const MAX_RANDOM_BYTES_PER_CALL: u64 = 16 << 20;
/// The most handles (open files and folders, streams, pollables) one step
/// may hold at once: 1,024. Less where the process's descriptor limit is
/// too small for every running step to hold this many (the executor
/// divides what is left after [`HOST_RESERVED_DESCRIPTORS`] among them),
/// but never less than [`MIN_HANDLES`].
pub const MAX_HANDLES: usize = 1024;
/// The fewest handles a step is given: 64.
pub const MIN_HANDLES: usize = 64;
/// File descriptors kept for the host's own work (the store's files, the
/// records, the server's connections) whatever the steps hold: 1,024.
pub const HOST_RESERVED_DESCRIPTORS: u64 = 1024;
/// The most elements a table may grow to: 1,000,000.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;
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
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(LimitError::out_of_range(
                "memory limit",
                "between 1 byte and 4 GiB",
                format!("{} bytes", self.memory_bytes),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(LimitError::out_of_range("timeout", "at least 1 ms", "0"));
        }
        if self.timeout_ms > MAX_TIMEOUT.as_millis() as u64 {
            return Err(LimitError::out_of_range(
                "timeout",
                format!("at most 7 days ({} ms)", MAX_TIMEOUT.as_millis()),
                format!("{} ms", self.timeout_ms),
            ));
        }
        if self.fuel == Some(0) {
            return Err(LimitError::out_of_range("fuel", "at least 1 when set", "0"));
        }
        Ok(())
    }
}

/// Why a limit, a size or a duration is not usable: each says what was
/// expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A value outside its field's range.
    #[error("{field} must be {expected}, found {found}")]
    OutOfRange {
        /// The field ("timeout", "limits.memory").
        field: String,
        /// Its range, in words.
        expected: String,
        /// The value given.
        found: String,
    },
    /// Text that does not start with a number.
    #[error("expected {expected}, found {found}")]
    NotANumber {
        /// What was expected ("a size such as \"256MiB\"").
        expected: &'static str,
        /// The text, quoted (and shortened).
        found: String,
    },
    /// A number too large to be one.
    #[error("{found} is too large for {expected}")]
    TooLarge {
        /// What was expected.
        expected: &'static str,
        /// The text, quoted (and shortened).
        found: String,
    },
    /// A unit that is not one of `units`.
    #[error("unknown {what} unit {unit:?} in {found} (use {units})")]
    UnknownUnit {
        /// "size" or "duration".
        what: &'static str,
        /// The unit given.
        unit: String,
        /// The whole text, quoted (and shortened).
        found: String,
        /// The units that are known.
        units: &'static str,
    },
}

impl LimitError {
    /// `field` must be `expected`, found `found`.
    pub fn out_of_range(
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> LimitError {
        LimitError::OutOfRange {
            field: field.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// Splits `"2.5 GiB"` into the trimmed text, its number and its unit
/// (trimmed, maybe empty); `what` names what was expected, for the error.
fn number_and_unit<'a>(
    text: &'a str,
    what: &'static str,
) -> Result<(&'a str, f64, &'a str), LimitError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| LimitError::NotANumber {
        expected: what,
        found: shorten(t),
    })?;
    if !n.is_finite() || n >= 1e18 {
        return Err(LimitError::TooLarge {
            expected: what,
            found: shorten(t),
        });
    }
    Ok((t, n, unit.trim()))
}

/// `text` quoted for a message, cut in the middle when long: a script's
/// twenty-thousand-digit number does not fill the screen.
pub fn shorten(text: &str) -> String {
    const KEEP: usize = 24;
    let chars = text.chars().count();
    if chars <= 2 * KEEP + 8 {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(KEEP).collect();
    let tail: String = text.chars().skip(chars - 8).collect();
    format!("\"{head}...{tail}\" ({chars} characters)")
}

/// Parses a size: a number of bytes (`"512"`) or a number with a unit
/// (`"64KiB"`, `"256MiB"`, `"2GiB"`, `"1GB"`); the DSL and the trust file
/// share this reading.
pub fn parse_size(text: &str) -> Result<u64, LimitError> {
    let (t, n, unit) = number_and_unit(text, "a size such as \"256MiB\"")?;
    let mult: f64 = match unit {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        u => {
            return Err(LimitError::UnknownUnit {
                what: "size",
                unit: u.to_string(),
                found: shorten(t),
                units: "B, KiB, MiB, GiB, KB, MB or GB",
            });
        }
    };
    Ok((n * mult) as u64)
}

/// Parses a duration in milliseconds: seconds (`"30"`) or a number with a
/// unit (`"500ms"`, `"30s"`, `"5m"`, `"2h"`).
pub fn parse_duration_ms(text: &str) -> Result<u64, LimitError> {
    let (t, n, unit) = number_and_unit(text, "a duration such as \"30s\"")?;
    let mult = match unit {
        "ms" => 1.0,
        "" | "s" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        u => {
            return Err(LimitError::UnknownUnit {
                what: "duration",
                unit: u.to_string(),
                found: shorten(t),
                units: "ms, s, m or h",
            });
        }
    };
    Ok((n * mult) as u64)
}

/// Upper bounds on some of a step's limits, as a trust file states them
/// (`[limits]` for every component, `limits = { .. }` in a `[[trust]]`
/// entry for the components it names). A field left out caps nothing.
///
/// ```toml
/// [limits]
/// memory = "256MiB"
/// timeout = "5m"
/// output = "100MiB"
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsCap {
    /// Linear memory, bytes (TOML: a size, `"2GiB"` or a number of bytes).
    #[serde(default, with = "cap_size")]
    pub memory: Option<u64>,
    /// Wall clock per attempt, milliseconds (TOML: `"30m"`, `"90s"`, or seconds).
    #[serde(default, with = "cap_duration")]
    pub timeout: Option<u64>,
    /// Fuel per attempt; a step without a budget gets this one.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Total bytes of the step's outputs (TOML: a size).
    #[serde(default, with = "cap_size")]
    pub output: Option<u64>,
    /// Files and folders in the step's outputs.
    #[serde(default)]
    pub output_files: Option<u64>,
    /// Bytes kept of each of stdout and stderr (TOML: a size).
    #[serde(default, with = "cap_size")]
    pub stdio: Option<u64>,
    /// Log lines and metrics kept per attempt.
    #[serde(default)]
    pub log_lines: Option<u64>,
}

impl LimitsCap {
    /// `limits`, each field lowered to this cap where the cap is stricter.
    pub fn apply(&self, limits: &Limits) -> Limits {
        let min = |v: u64, c: Option<u64>| c.map_or(v, |c| v.min(c));
        Limits {
            memory_bytes: min(limits.memory_bytes, self.memory),
            timeout_ms: min(limits.timeout_ms, self.timeout),
            fuel: match (limits.fuel, self.fuel) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            output_bytes: min(limits.output_bytes, self.output),
            output_files: min(limits.output_files, self.output_files),
            stdio_bytes: min(limits.stdio_bytes, self.stdio),
            log_lines: min(limits.log_lines, self.log_lines),
        }
    }

    /// This cap with `over`'s fields where `over` sets them.
    pub fn overlaid(&self, over: &LimitsCap) -> LimitsCap {
        LimitsCap {
            memory: over.memory.or(self.memory),
            timeout: over.timeout.or(self.timeout),
            fuel: over.fuel.or(self.fuel),
            output: over.output.or(self.output),
            output_files: over.output_files.or(self.output_files),
            stdio: over.stdio.or(self.stdio),
            log_lines: over.log_lines.or(self.log_lines),
        }
    }

    /// The more generous of two caps, field by field (a field either
    /// leaves uncapped is uncapped).
    pub fn widest(&self, other: &LimitsCap) -> LimitsCap {
        let max = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a.max(b));
        LimitsCap {
            memory: max(self.memory, other.memory),
            timeout: max(self.timeout, other.timeout),
            fuel: max(self.fuel, other.fuel),
            output: max(self.output, other.output),
            output_files: max(self.output_files, other.output_files),
            stdio: max(self.stdio, other.stdio),
            log_lines: max(self.log_lines, other.log_lines),
        }
    }

    /// Checks that the cap leaves a step something to run with, naming the field.
    pub fn validate(&self) -> Result<(), LimitError> {
        let checks = [
            ("memory", self.memory),
            ("timeout", self.timeout),
            ("fuel", self.fuel),
            ("output", self.output),
            ("output_files", self.output_files),
            ("stdio", self.stdio),
        ];
        if let Some((name, _)) = checks.iter().find(|(_, v)| *v == Some(0)) {
            return Err(LimitError::out_of_range(
                format!("limits.{name}"),
                "above 0",
                "0",
            ));
        }
        if let Some(m) = self.memory.filter(|m| *m > MAX_MEMORY_BYTES) {
            return Err(LimitError::out_of_range(
                "limits.memory",
                "at most 4 GiB",
                format!("{m} bytes"),
            ));
        }
        Ok(())
    }

    /// One line for people: `memory 256 MiB, timeout 300 s`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.memory {
            parts.push(format!("memory {} MiB", m >> 20));
        }
        if let Some(t) = self.timeout {
            parts.push(format!("timeout {} s", t as f64 / 1000.0));
        }
        if let Some(f) = self.fuel {
            parts.push(format!("fuel {f}"));
        }
        if let Some(o) = self.output {
            parts.push(format!("output {} MiB", o >> 20));
        }
        if let Some(n) = self.output_files {
            parts.push(format!("output_files {n}"));
        }
        if let Some(s) = self.stdio {
            parts.push(format!("stdio {} KiB", s >> 10));
        }
        if let Some(n) = self.log_lines {
            parts.push(format!("log_lines {n}"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A size or duration in a TOML file: a number or a string with a unit.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

mod cap_size {
    use super::NumOrText;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(Some(n)),
            NumOrText::Text(t) => super::parse_size(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(NumOrText::Num).serialize(s)
    }
}

mod cap_duration {
    use super::NumOrText;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(Some(n.saturating_mul(1000))),
            NumOrText::Text(t) => super::parse_duration_ms(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|ms| NumOrText::Text(format!("{ms}ms"))).serialize(s)
    }
}
