//! One process at a time in a run folder: an advisory lock on `RUN/.lock` (flock(2) through
//! [`std::fs::File::try_lock`]), taken by every command that writes into the folder.
//!
//! The operating system releases the lock when its process ends, however it ends (`kill -9` included), so a
//! dead process never blocks a folder: the next process takes the lock over and says whose it was. The lock
//! file holds the holder's process id, for messages only. On release the file is removed while still locked;
//! a process that opened the old file meanwhile notices (the path no longer names the file it locked) and
//! tries again, so two processes never both hold the lock. Advisory locks need a local file system (not
//! every network file system honours flock).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = ".lock";

/// Why a run folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error(
        "{dir} is in use by {holder}: wait for it to finish or stop it (it saves a checkpoint on Ctrl-C), \
         then try again"
    )]
    Busy {
        /// The run folder.
        dir: PathBuf,
        /// Who holds it, from the lock file.
        holder: String,
    },
    /// The lock file could not be opened, read or written.
    #[error("{path}: {detail}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// The lock of one run folder, released (and its file removed) when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    note: Option<String>,
}

impl RunLock {
    /// Locks `dir`, which must exist. Fails at once (no waiting) when another live process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |detail: String| LockError::Io {
            path: path.clone(),
            detail,
        };
        // A few rounds cover the race with a holder that releases (and removes the file) meanwhile.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io(format!("cannot open: {e}")))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Busy {
                        dir: dir.to_path_buf(),
                        holder: holder_of(&mut file),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(format!("cannot lock: {e}"))),
            }
            let same_file = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(locked), Ok(named)) => locked.dev() == named.dev() && locked.ino() == named.ino(),
                _ => false,
            };
            if !same_file {
                continue;
            }
            let previous = holder_of(&mut file);
            let note = (!previous.is_empty() && previous != "an unknown process").then(|| {
                format!(
                    "{}: took over the lock of {previous}, which is no longer running",
                    dir.display()
                )
            });
            file.set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| writeln!(file, "process {}", std::process::id()))
                .map_err(|e| io(format!("cannot write: {e}")))?;
            return Ok(Self { file, path, note });
        }
        Err(io(
            "the lock file keeps being replaced; is another process looping on it?".into(),
        ))
    }

    /// A message for the user when the lock was taken over from a process that had died holding it.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked: see the module's documentation.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Who the lock file names (`process N`), or "an unknown process" for an empty or unreadable file.
fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(256).read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => "an unknown process".to_owned(),
    }
}

/// Removes the temporary files of atomic writes (`NAME.tmp-PID`, `.NAME.tmp-*`) left in `dir` by a
/// process that died while writing; returns how many. Call it only while holding the folder's lock.
pub fn remove_temporaries(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if is_temporary(&name.to_string_lossy()) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether a file name is one of the temporaries of this project's atomic writes.
pub fn is_temporary(name: &str) -> bool {
    name.contains(".tmp-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferroflow-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_lock_is_refused_while_the_first_is_held_and_granted_after() {
        let dir = scratch("twice");
        let first = RunLock::acquire(&dir).unwrap();
        assert!(first.note().is_none());
        // flock locks belong to open files: a second open in this process conflicts like another process.
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains("in use by process") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        assert!(!dir.join(LOCK_FILE).exists(), "released locks remove their file");
        drop(RunLock::acquire(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over_with_a_note() {
        let dir = scratch("stale");
        std::fs::write(dir.join(LOCK_FILE), "process 4000000\n").unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        let note = lock.note().unwrap();
        assert!(
            note.contains("process 4000000") && note.contains("no longer running"),
            "{note}"
        );
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporaries_are_recognised_and_removed_and_nothing_else() {
        let dir = scratch("tmp");
        for name in [
            "checkpoint.safetensors.tmp-12",
            ".samples.tmp-3.png",
            "config.toml",
            "model.safetensors",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        assert_eq!(remove_temporaries(&dir).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["config.toml", "model.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
