//! Which process runs a run: enough to tell later, from another process,
//! whether it is still alive or was killed (a run it left `running` would
//! never end on its own).
//!
//! An owner is the machine's boot, the process id and the process's start
//! time since boot (from `/proc`), so a reboot or a reused pid does not
//! pass for the same process. `boot:pid:start`, e.g.
//! `1f0c...:4242:8812345`.

use std::fmt;

/// A process, as recorded for the runs it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The kernel's boot id.
    pub boot: String,
    /// The process id.
    pub pid: u32,
    /// Its start time, in clock ticks since boot.
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            boot: boot_id(),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the process ran on this machine since its last boot (only
    /// then can [`Owner::is_alive`] tell anything: a process of another
    /// machine, one sharing a records database, cannot be seen from here).
    pub fn is_this_boot(&self) -> bool {
        self.boot == boot_id()
    }

    /// Whether the process is still running: same boot, and a process with
    /// its pid that started when it did.
    pub fn is_alive(&self) -> bool {
        if !self.is_this_boot() {
            return false;
        }
        match start_time(self.pid) {
            Some(t) => self.start == 0 || t == self.start,
            None => false,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.boot, self.pid, self.start)
    }
}

impl std::str::FromStr for Owner {
    type Err = String;

    fn from_str(s: &str) -> Result<Owner, String> {
        let mut parts = s.rsplitn(3, ':');
        let (Some(start), Some(pid), Some(boot)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("not an owner: {s:?}"));
        };
        Ok(Owner {
            boot: boot.to_string(),
            pid: pid.parse().map_err(|_| format!("bad pid in {s:?}"))?,
            start: start.parse().map_err(|_| format!("bad start in {s:?}"))?,
        })
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`: when the process started, in ticks.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::Owner;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_not() {
        let me = Owner::current();
        assert!(me.is_alive());
        assert_eq!(me.to_string().parse::<Owner>().unwrap(), me);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let gone = Owner {
            pid,
            start: 1,
            ..me.clone()
        };
        child.wait().unwrap();
        assert!(!gone.is_alive());
        let other_boot = Owner {
            boot: "another-boot".into(),
            ..me
        };
        assert!(!other_boot.is_alive());
    }
}
