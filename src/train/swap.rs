//! Checkpoint folders replaced whole: a new folder is filled beside its destination, then swapped
//! into place, so that a crash never leaves a half-written checkpoint; and the recovery of a swap
//! a crash interrupted.
//!
//! The swap of `P/NAME` by process PID, and what a kill at each point leaves:
//!   1. fill `P/.NAME.tmpPID`                → NAME intact, a partial tmp: remove it
//!   2. rename `NAME` → `P/.NAME.oldPID`      → no NAME, a complete tmp: finish (3, 4)
//!   3. rename `.NAME.tmpPID` → `NAME`       → NAME new, the old copy: remove it
//!   4. remove `.NAME.oldPID`
//!
//! Step 2 happens only once the fill is complete, so an `old` beside a `tmp` marks a complete tmp.

use crate::error::{Error, Result};
use crate::failpoint;
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

fn tmp_name(name: &str, pid: u32) -> String {
    format!(".{name}.tmp{pid}")
}

fn old_name(name: &str, pid: u32) -> String {
    format!(".{name}.old{pid}")
}

/// Writes into `dir` by filling a fresh sibling folder and swapping it into place.
pub fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(tmp_name(&name, std::process::id()));
    let old = parent.join(old_name(&name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    failpoint::reach(&format!("swap:{name}:filled"));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    failpoint::reach(&format!("swap:{name}:old-moved"));
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    failpoint::reach(&format!("swap:{name}:new-in-place"));
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// What [`recover`] did, for the progress output.
#[derive(Debug, Default, PartialEq)]
pub struct Recovery {
    /// Folders whose interrupted swap was finished (the new copy put in place).
    pub finished: Vec<PathBuf>,
    /// Folders whose interrupted swap was rolled back (the old copy put back).
    pub rolled_back: Vec<PathBuf>,
    /// Stale temporary folders and files removed, and their bytes.
    pub removed: Vec<PathBuf>,
    pub removed_bytes: u64,
}

impl Recovery {
    pub fn is_empty(&self) -> bool {
        self.finished.is_empty() && self.rolled_back.is_empty() && self.removed.is_empty()
    }

    /// Adds what another recovery did.
    pub fn absorb(&mut self, other: Recovery) {
        self.finished.extend(other.finished);
        self.rolled_back.extend(other.rolled_back);
        self.removed.extend(other.removed);
        self.removed_bytes += other.removed_bytes;
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for d in &self.finished {
            parts.push(format!("finished the interrupted save of {}", d.display()));
        }
        for d in &self.rolled_back {
            parts.push(format!("rolled back the interrupted save of {}", d.display()));
        }
        if !self.removed.is_empty() {
            let mib = self.removed_bytes as f64 / (1024.0 * 1024.0);
            parts.push(format!("removed {} stale temporary files or folders ({mib:.1} MiB)", self.removed.len()));
        }
        parts.join("; ")
    }
}

/// A temporary entry of a swap or an atomic write: (kind, destination name, pid).
#[derive(Debug, PartialEq)]
enum Temp {
    /// `.NAME.tmpPID` (folder swap, step 1).
    Fill(String, u32),
    /// `.NAME.oldPID` (folder swap, step 2).
    Old(String, u32),
    /// `.NAME.PID.tmp` (util::write_atomically).
    File(String, u32),
}

fn parse_temp(entry: &str) -> Option<Temp> {
    let rest = entry.strip_prefix('.')?;
    if let Some(stem) = rest.strip_suffix(".tmp") {
        let (name, pid) = stem.rsplit_once('.')?;
        return Some(Temp::File(name.to_string(), pid.parse().ok()?));
    }
    for (marker, old) in [(".tmp", false), (".old", true)] {
        if let Some((name, pid)) = rest.rsplit_once(marker)
            && let Ok(pid) = pid.parse::<u32>()
            && !name.is_empty()
        {
            return Some(if old { Temp::Old(name.to_string(), pid) } else { Temp::Fill(name.to_string(), pid) });
        }
    }
    None
}

/// Whether another live process may still own a temp of `pid` (Linux's /proc; elsewhere the
/// caller's lock on the folder is the only guard).
fn alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists()
}

fn size_of(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path).map(|r| r.flatten().map(|e| size_of(&e.path())).sum()).unwrap_or(0)
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn remove(path: &Path, r: &mut Recovery) -> Result<()> {
    let bytes = size_of(path);
    let gone = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    gone.map_err(io(path))?;
    r.removed.push(path.to_path_buf());
    r.removed_bytes += bytes;
    Ok(())
}

/// Finishes or rolls back every swap in `folder` that a dead process left half done, and removes
/// the temporary folders and files of dead processes. The caller holds the folder's lock.
pub fn recover(folder: &Path) -> Result<Recovery> {
    let mut r = Recovery::default();
    let Ok(entries) = std::fs::read_dir(folder) else { return Ok(r) };
    let temps: Vec<Temp> = entries.flatten().filter_map(|e| parse_temp(&e.file_name().to_string_lossy())).collect();
    // Swaps first: a missing destination with its old copy beside it.
    for t in &temps {
        let Temp::Old(name, pid) = t else { continue };
        if alive(*pid) {
            continue;
        }
        let (dest, old, tmp) =
            (folder.join(name), folder.join(old_name(name, *pid)), folder.join(tmp_name(name, *pid)));
        if !dest.exists() {
            if tmp.is_dir() {
                std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
                r.finished.push(dest);
            } else {
                std::fs::rename(&old, &dest).map_err(io(&dest))?;
                r.rolled_back.push(dest);
            }
        }
    }
    for t in temps {
        let (path, pid) = match &t {
            Temp::Fill(n, pid) => (folder.join(tmp_name(n, *pid)), *pid),
            Temp::Old(n, pid) => (folder.join(old_name(n, *pid)), *pid),
            Temp::File(n, pid) => (folder.join(format!(".{n}.{pid}.tmp")), *pid),
        };
        if !alive(pid) && std::fs::symlink_metadata(&path).is_ok() {
            remove(&path, &mut r)?;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse() {
        assert_eq!(parse_temp(".last.tmp123"), Some(Temp::Fill("last".into(), 123)));
        assert_eq!(parse_temp(".best.old7"), Some(Temp::Old("best".into(), 7)));
        assert_eq!(parse_temp(".metrics.jsonl.42.tmp"), Some(Temp::File("metrics.jsonl".into(), 42)));
        assert_eq!(parse_temp("last"), None);
        assert_eq!(parse_temp(".lock"), None);
        assert_eq!(parse_temp(".last.tmpx"), None);
    }
}
