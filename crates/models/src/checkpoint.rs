//! Atomic safetensors files, and the temporary-file guard every atomic write of the workspace uses.
//!
//! A checkpoint is written to a temporary file beside its final name and renamed into place, so an
//! interrupted write never leaves a corrupt file under the real name (rename is atomic on one file system).
//! The temporary file is held by a [`TemporaryFile`], which removes it on every path that does not end in
//! the rename: a failed write, a failed rename, an early return or a panic.
//!
//! Reading checks the file's structure before tch sees it ([`check_safetensors`]): the header's length
//! against the file, the header as JSON, every tensor's dtype, shape and byte range. A corrupt or hostile
//! file is refused with a message naming it, never handed to a reader that could abort the process.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use tch::Tensor;

use crate::ModelError;

/// The longest safetensors header accepted, in bytes (the `safetensors` crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The dtypes tch reads, with their sizes in bytes.
const DTYPES: [(&str, u64); 10] = [
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("I16", 2),
    ("I32", 4),
    ("I64", 8),
    ("F16", 2),
    ("BF16", 2),
    ("F32", 4),
    ("F64", 8),
];

/// A temporary file that is removed when dropped, unless [`TemporaryFile::rename_to`] moved it into place.
#[derive(Debug)]
pub struct TemporaryFile {
    path: PathBuf,
    moved: bool,
}

impl TemporaryFile {
    /// A guard for a temporary file at [`temporary_path`] beside `target` (nothing is created yet).
    pub fn beside(target: &Path) -> Self {
        Self::at(temporary_path(target))
    }

    /// A guard for a temporary file at `path` (nothing is created yet).
    pub fn at(path: PathBuf) -> Self {
        Self { path, moved: false }
    }

    /// Where the temporary file is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the file to the disk, renames it to `target` and flushes the folder's entry, so that after a
    /// power cut the target holds either its old or its new content; on failure the guard is dropped and the
    /// file removed.
    pub fn rename_to(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::File::open(&self.path)?.sync_all()?;
        crash_point(target);
        std::fs::rename(&self.path, target)?;
        if let Some(folder) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Not every file system lets a folder be opened and flushed; the rename itself has happened.
            let _ = std::fs::File::open(folder).and_then(|f| f.sync_all());
        }
        self.moved = true;
        Ok(())
    }
}

/// The variable of the crash-safety tests' fault injection (see [`crash_point`]).
pub const CRASH_VARIABLE: &str = "FERROFLOW_CRASH_BEFORE_RENAME";

/// Fault injection for the crash-safety tests: with `FERROFLOW_CRASH_BEFORE_RENAME=NAME` (or `NAME#K`: the
/// K-th atomic write of a file named NAME in this process, counting from 1) the process aborts once the
/// temporary of NAME is written and before it is renamed, the worst moment for a `kill -9` or a power cut.
/// Unset (always, outside those tests), it does nothing.
fn crash_point(target: &Path) {
    static WRITES: std::sync::Mutex<Vec<(std::ffi::OsString, usize)>> = std::sync::Mutex::new(Vec::new());
    let Some(wanted) = std::env::var_os(CRASH_VARIABLE) else {
        return;
    };
    let wanted = wanted.to_string_lossy().into_owned();
    let (name, occurrence) = match wanted.split_once('#') {
        Some((name, k)) => (name.to_owned(), k.parse::<usize>().unwrap_or(1)),
        None => (wanted, 1),
    };
    let Some(file_name) = target.file_name() else {
        return;
    };
    if file_name.to_string_lossy() != name {
        return;
    }
    let mut writes = WRITES.lock().unwrap_or_else(|e| e.into_inner());
    let count = match writes.iter_mut().find(|(n, _)| n == file_name) {
        Some((_, count)) => {
            *count += 1;
            *count
        }
        None => {
            writes.push((file_name.to_os_string(), 1));
            1
        }
    };
    if count == occurrence {
        eprintln!("{CRASH_VARIABLE}: aborting before renaming {}", target.display());
        std::process::abort();
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        if !self.moved {
            // The file may not exist (the write failed before creating it); there is nothing to report then.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes named tensors to `path` (safetensors), atomically.
pub fn save_tensors(named: &[(String, Tensor)], path: &Path) -> Result<(), ModelError> {
    let tmp = TemporaryFile::beside(path);
    Tensor::write_safetensors(named, tmp.path()).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot write: {e}"),
    })?;
    tmp.rename_to(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot move into place: {e}"),
    })
}

/// Reads every named tensor of a safetensors file, after [`check_safetensors`].
pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    check_safetensors(path)?;
    Tensor::read_safetensors(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        detail: format!("not a safetensors file: {e}"),
    })
}

/// Checks the structure of a safetensors file without reading its data: an 8-byte little-endian header
/// length within the file and at most [`MAX_HEADER_BYTES`]; a header that is a JSON object; every tensor
/// with a dtype tch reads, a shape whose size in bytes is its byte range, and byte ranges that tile the data
/// section exactly (as the `safetensors` crate requires); `__metadata__`, if present, maps strings to
/// strings.
pub fn check_safetensors(path: &Path) -> Result<(), ModelError> {
    let invalid = |detail: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        detail,
    };
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot read: {e}"),
    };
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot open: {e}"),
    })?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    let file_len = metadata.len();
    if file_len < 8 {
        return Err(invalid(format!(
            "truncated: {file_len} bytes, but a safetensors file starts with an 8-byte header length"
        )));
    }
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(io)?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "the header claims {header_len} bytes, more than the limit of {MAX_HEADER_BYTES}"
        )));
    }
    if header_len > file_len - 8 {
        return Err(invalid(format!(
            "truncated: the header claims {header_len} bytes but only {} follow its length",
            file_len - 8
        )));
    }
    // Bounded by MAX_HEADER_BYTES and by the file's length.
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let data_len = file_len - 8 - header_len;
    check_header(&header, data_len).map_err(invalid)
}

/// Checks a header against a data section of `data_len` bytes.
fn check_header(header: &[u8], data_len: u64) -> Result<(), String> {
    // The safetensors crate insists on this, so it is checked here too rather than left to tch's error.
    if header.first() != Some(&b'{') {
        return Err("the header does not start with '{'".into());
    }
    let header: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| format!("the header is not JSON: {e}"))?;
    let serde_json::Value::Object(entries) = header else {
        return Err("the header is not a JSON object".into());
    };
    // Byte ranges, to check that they tile the data section.
    let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(entries.len());
    for (name, entry) in &entries {
        if name == "__metadata__" {
            let strings = entry
                .as_object()
                .is_some_and(|map| map.values().all(serde_json::Value::is_string));
            if !strings {
                return Err("`__metadata__` is not an object of strings".into());
            }
            continue;
        }
        let field = |key: &str| {
            entry
                .get(key)
                .ok_or_else(|| format!("tensor `{name}` has no `{key}`"))
        };
        let dtype = field("dtype")?;
        let Some(&(_, item_size)) = DTYPES.iter().find(|(known, _)| dtype.as_str() == Some(known)) else {
            let names: Vec<&str> = DTYPES.iter().map(|(known, _)| *known).collect();
            return Err(format!(
                "tensor `{name}` has dtype {dtype}; accepted: {}",
                names.join(", ")
            ));
        };
        let shape = field("shape")?
            .as_array()
            .ok_or_else(|| format!("tensor `{name}`: `shape` is not an array"))?;
        let mut n_elements: u64 = 1;
        for dim in shape {
            let dim = dim
                .as_u64()
                .filter(|&d| i64::try_from(d).is_ok())
                .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} holds {dim}, not a size"))?;
            n_elements = n_elements
                .checked_mul(dim)
                .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} overflows"))?;
        }
        let n_bytes = n_elements
            .checked_mul(item_size)
            .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} overflows"))?;
        let offsets = field("data_offsets")?
            .as_array()
            .filter(|pair| pair.len() == 2)
            .and_then(|pair| Some((pair[0].as_u64()?, pair[1].as_u64()?)))
            .ok_or_else(|| format!("tensor `{name}`: `data_offsets` is not a pair of byte offsets"))?;
        let (begin, end) = offsets;
        if begin > end || end > data_len {
            return Err(format!(
                "tensor `{name}`: data_offsets [{begin}, {end}] are outside the data section of {data_len} bytes"
            ));
        }
        if end - begin != n_bytes {
            return Err(format!(
                "tensor `{name}`: shape {} of {dtype} needs {n_bytes} bytes, but data_offsets [{begin}, {end}] \
                 hold {}",
                serde_json::Value::Array(shape.clone()),
                end - begin
            ));
        }
        ranges.push((begin, end, name));
    }
    ranges.sort_unstable();
    let mut covered = 0;
    for &(begin, end, name) in &ranges {
        if begin != covered {
            return Err(format!(
                "tensor `{name}` starts at byte {begin} of the data section, expected {covered} (tensors must \
                 cover the data without gaps or overlaps)"
            ));
        }
        covered = end;
    }
    if covered != data_len {
        return Err(format!(
            "the tensors cover {covered} bytes but the data section holds {data_len}"
        ));
    }
    Ok(())
}

/// `dir/name.tmp-<pid>-<k>` beside `path`, unique within the process.
pub fn temporary_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_file_is_removed_unless_moved() {
        let dir = std::env::temp_dir().join(format!("ferroflow-tmpfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.bin");
        let tmp = TemporaryFile::beside(&target);
        let tmp_path = tmp.path().to_path_buf();
        std::fs::write(&tmp_path, b"half").unwrap();
        drop(tmp);
        assert!(!tmp_path.exists());

        let tmp = TemporaryFile::beside(&target);
        std::fs::write(tmp.path(), b"whole").unwrap();
        tmp.rename_to(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_paths_are_unique_and_beside_their_target() {
        let a = temporary_path(Path::new("/runs/x/model.safetensors"));
        let b = temporary_path(Path::new("/runs/x/model.safetensors"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/runs/x")));
        assert!(a.to_str().unwrap().contains("model.safetensors.tmp-"));
    }
}
