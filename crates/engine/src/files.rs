//! Run folders and the files in them, all written atomically (temporary file, then rename): `.npy` arrays
//! (loadable with `numpy.load`); run folders themselves are claimed and locked by [`crate::run`]. A failed write leaves no
//! temporary file behind (`ferroflow_models::checkpoint::TemporaryFile`). `.npy` files are read by
//! [`crate::npy`], which checks every size before allocating.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use ferroflow_models::checkpoint::TemporaryFile;
use ndarray::{Array2, ArrayView2};
use ndarray_npy::WriteNpyExt;

use crate::npy::{self, NpyError};

/// Writes bytes to `path` through a temporary file beside it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| Ok(file.write_all(bytes)?))
}

/// Writes `path` through a temporary file beside it: `write` fills the (buffered) temporary file, which is
/// then flushed and renamed into place. On any failure, the temporary file is removed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let tmp = TemporaryFile::beside(path);
    let file = std::fs::File::create(tmp.path())
        .with_context(|| format!("cannot create {}", tmp.path().display()))?;
    let mut buffered = std::io::BufWriter::new(file);
    write(&mut buffered)
        .and_then(|()| Ok(buffered.into_inner().map_err(|e| e.into_error())?))
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.rename_to(path)
        .with_context(|| format!("cannot move {} into place", path.display()))
}

/// Writes a 2-D array as `.npy`.
pub fn write_npy(path: &Path, array: ArrayView2<f32>) -> Result<()> {
    write_atomic_with(path, |file| Ok(array.write_npy(file)?))
}

/// Writes a 1-D array as `.npy`.
pub fn write_npy_1d(path: &Path, array: ndarray::ArrayView1<f64>) -> Result<()> {
    write_atomic_with(path, |file| Ok(array.write_npy(file)?))
}

/// Reads a 2-D `.npy` of `f32` or `f64` values as `f32` in standard layout, refusing non-finite entries;
/// see [`npy::read_f32_2d`].
pub fn read_npy(path: &Path) -> Result<Array2<f32>, NpyError> {
    npy::read_f32_2d(path)
}

/// Reads points `[n, dim]` from a `.npy` as [`read_npy`] does, refusing an array without rows or columns.
pub fn read_points(path: &Path) -> Result<Array2<f32>, NpyError> {
    npy::read_points(path)
}
