//! Run folders and the files in them, all written atomically (temporary file, then rename): `.npy` arrays
//! (loadable with `numpy.load`) and new run folders, which are never overwritten.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayView2};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

/// Writes bytes to `path` through a temporary file beside it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = ferroflow_models::checkpoint::temporary_path(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
}

/// Writes a 2-D array as `.npy`.
pub fn write_npy(path: &Path, array: ArrayView2<f32>) -> Result<()> {
    let mut bytes = Vec::new();
    array
        .write_npy(&mut bytes)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Writes a 1-D array as `.npy`.
pub fn write_npy_1d(path: &Path, array: ndarray::ArrayView1<f64>) -> Result<()> {
    let mut bytes = Vec::new();
    array
        .write_npy(&mut bytes)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Reads a 2-D `.npy` of `f32` or `f64` values as `f32`, refusing non-finite entries.
pub fn read_npy(path: &Path) -> Result<Array2<f32>> {
    let open = || std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let array = match Array2::<f32>::read_npy(open()?) {
        Ok(a) => a,
        Err(_) => Array2::<f64>::read_npy(open()?)
            .map(|a| a.mapv(|v| v as f32))
            .with_context(|| format!("{} is not a 2-D float32/float64 .npy array", path.display()))?,
    };
    if let Some(((row, col), value)) = array.indexed_iter().find(|(_, v)| !v.is_finite()) {
        bail!("{}: entry [{row}, {col}] is {value}, not finite", path.display());
    }
    Ok(array)
}

/// Creates a new run folder, refusing one that exists (a run is never overwritten).
pub fn create_run_dir(out_dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let dir = out_dir.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "run folder {} exists already (key run.name = {name:?}): choose another name, remove it, or \
             continue it with `ferroflow train --resume {}`",
            dir.display(),
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
}
