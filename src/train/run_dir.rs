//! The `--out` folder of a run: locked for the run's life (a second run into it refuses), checked
//! before a fresh run (a folder that holds a run is replaced only with `--overwrite`, and then
//! cleared first), and recovered from a crash (see swap.rs).

use super::swap::{self, Recovery};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// What a run writes into its folder; these and the analysis's files (analysis::file_names), and
/// only these, mark a folder as holding a run and are what `--overwrite` clears.
const RUN_ENTRIES: [&str; 7] =
    ["best", "last", "predictions", "metrics.jsonl", "curves.svg", "pcgrad.svg", "gradvac.svg"];

const LOCK: &str = ".lock";

/// A locked run folder; the lock (an advisory lock on `.lock`, which holds the pid) goes with the
/// process, so a killed run leaves no stale lock behind.
pub struct RunDir {
    dir: PathBuf,
    lock: File,
    /// The folder did not exist before: a run that fails before writing anything removes it.
    created: bool,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

impl RunDir {
    /// Creates `dir` if needed and locks it, or says which process holds it.
    pub fn lock(dir: &Path) -> Result<RunDir> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK);
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match lock.try_lock() {
            // A run ending unlinks the file before unlocking it: the lock counts only while
            // the path still names the locked file.
            Ok(()) if !same_file(&lock, &path) => {
                let mut r = RunDir::lock(dir)?;
                r.created |= created;
                return Ok(r);
            }
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                return Err(Error::Config(format!(
                    "--out {}: another run is using this folder ({by}); wait for it or choose another --out",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        lock.set_len(0).map_err(io(&path))?;
        lock.rewind().map_err(io(&path))?;
        write!(lock, "{}", std::process::id()).map_err(io(&path))?;
        Ok(RunDir { dir: dir.to_path_buf(), lock, created })
    }

    /// The run entries present in the folder.
    fn run_entries(&self) -> Vec<String> {
        let all = RUN_ENTRIES.iter().map(|e| e.to_string()).chain(super::analysis::file_names());
        all.filter(|e| self.dir.join(e).exists()).collect()
    }

    /// Refuses a fresh run into a folder holding one, unless `overwrite`.
    pub fn check_fresh(&self, overwrite: bool) -> Result<()> {
        let found = self.run_entries();
        if found.is_empty() || overwrite {
            return Ok(());
        }
        let resume = if self.dir.join("last").is_dir() {
            format!("continue it with --resume {}, ", self.dir.join("last").display())
        } else {
            String::new()
        };
        Err(Error::Config(format!(
            "--out {} holds a run ({}): {resume}pass --overwrite to replace it, or choose another --out",
            self.dir.display(),
            found.join(", ")
        )))
    }

    /// Removes a previous run's entries (`--overwrite`), nothing else.
    pub fn clear(&self) -> Result<()> {
        for e in self.run_entries() {
            let path = self.dir.join(e);
            let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            gone.map_err(io(&path))?;
        }
        Ok(())
    }

    /// Finishes or rolls back the checkpoint saves a crash interrupted, and removes the temporary
    /// files of dead processes, in the folder and its predictions/.
    pub fn recover(&self) -> Result<Recovery> {
        let mut r = swap::recover(&self.dir)?;
        r.absorb(swap::recover(&self.dir.join("predictions"))?);
        Ok(r)
    }
}

#[cfg(unix)]
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Removed while still locked, so that no other process can lock the same file meanwhile
        // and a third one a new file. The lock itself goes with the handle.
        let _ = std::fs::remove_file(self.dir.join(LOCK));
        let _ = self.lock.unlock();
        // A run that failed before writing anything leaves no folder behind.
        if self.created {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}
