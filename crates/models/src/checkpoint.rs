//! Atomic safetensors files.
//!
//! A checkpoint is written to a temporary file beside its final name and renamed into place, so an
//! interrupted write never leaves a corrupt file under the real name (rename is atomic on one file system).

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::ModelError;

/// Writes named tensors to `path` (safetensors), atomically.
pub fn save_tensors(named: &[(String, Tensor)], path: &Path) -> Result<(), ModelError> {
    let tmp = temporary_path(path);
    let io_err = |e: tch::TchError| ModelError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    Tensor::write_safetensors(named, &tmp).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })
}

/// Reads every named tensor of a safetensors file.
pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    if !path.is_file() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            detail: "no such file".into(),
        });
    }
    Tensor::read_safetensors(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        detail: format!("not a safetensors file: {e}"),
    })
}

/// `dir/name.tmp-<pid>` beside `path`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}
