//! Regular (uniform, axis-aligned) grids in 1, 2 and 3 dimensions, and the fields that live on them.
//!
//! A [`Grid`] splits a box [`Domain`] into `cells[a]` equal cells along each axis `a`, of width
//! `spacing[a] = (upper[a] - lower[a]) / cells[a]`. Cell `i` (a multi-index) has its centre at
//! `lower[a] + (i[a] + 1/2) spacing[a]`. Two layouts of data are used, as in any finite-volume code
//! (LeVeque, *Finite Volume Methods for Hyperbolic Problems*, 2002, ch. 4):
//!
//! - *cell arrays* hold one value per cell (a density sampled at the cell centre), shape `cells`; a cell-centred
//!   vector field adds a trailing axis of length `dims`, shape `cells + [dims]`;
//! - a [`FaceField`] holds, for each axis `a`, the normal component along `a` of a vector field (a flux) at the
//!   centres of the faces orthogonal to `a`, shape `cells` with `cells[a] + 1` along axis `a`. Face `j` along `a`
//!   sits at coordinate `lower[a] + j spacing[a]` on that axis and at cell centres on the others, so face `j`
//!   separates cells `j - 1` and `j`.
//!
//! Point values at cell and face centres approximate cell and face averages to second order (the midpoint rule),
//! which is what makes every scheme in this crate second-order accurate.

use ndarray::{ArrayD, Dimension, IxDyn};

use crate::error::{ContinuityError, Result, check_evaluation, check_evaluations, check_inputs};

/// The largest number of dimensions a grid supports.
pub const MAX_DIMS: usize = 3;

/// An axis-aligned box `[lower[0], upper[0]] x ... ` in 1 to 3 dimensions.
///
/// The fields are public so a domain can be written as a literal; every function that uses a domain validates it
/// again, so an invalid literal is refused with a typed error rather than a panic.
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    /// The lower corner.
    pub lower: Vec<f64>,
    /// The upper corner; strictly above `lower` along every axis.
    pub upper: Vec<f64>,
}

impl Domain {
    /// Builds a domain, refusing mismatched corners, a dimension outside 1..=3, non-finite bounds and empty extents.
    pub fn new(lower: Vec<f64>, upper: Vec<f64>) -> Result<Self> {
        let domain = Self { lower, upper };
        domain.validate()?;
        Ok(domain)
    }

    /// Checks the invariants [`Domain::new`] enforces (needed because the fields are public).
    pub fn validate(&self) -> Result<()> {
        if self.lower.len() != self.upper.len() {
            return Err(ContinuityError::ShapeMismatch {
                what: "domain upper corner".into(),
                expected: vec![self.lower.len()],
                actual: vec![self.upper.len()],
            });
        }
        check_dims("domain", self.lower.len())?;
        check_inputs("domain lower corner", &self.lower)?;
        check_inputs("domain upper corner", &self.upper)?;
        for (axis, (&lower, &upper)) in self.lower.iter().zip(&self.upper).enumerate() {
            // Bounds are finite here, so `<=` is a total comparison: the extent must be strictly positive.
            if upper <= lower {
                return Err(ContinuityError::DegenerateDomain { axis, lower, upper });
            }
        }
        Ok(())
    }

    /// The number of dimensions.
    pub fn dims(&self) -> usize {
        self.lower.len()
    }

    /// The box's volume (length in 1-D, area in 2-D).
    pub fn volume(&self) -> f64 {
        self.lower
            .iter()
            .zip(&self.upper)
            .map(|(lower, upper)| upper - lower)
            .product()
    }
}

/// Refuses a dimension outside 1..=3.
pub(crate) fn check_dims(what: &'static str, dims: usize) -> Result<()> {
    if (1..=MAX_DIMS).contains(&dims) {
        Ok(())
    } else {
        Err(ContinuityError::DimensionOutOfRange { what, dims })
    }
}

/// A uniform grid of cells over a [`Domain`].
///
/// Fields are private because the spacing must stay consistent with the domain and the cell counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    domain: Domain,
    cells: Vec<usize>,
    spacing: Vec<f64>,
}

impl Grid {
    /// Builds a grid with `cells[a] >= 1` cells along axis `a`.
    pub fn new(domain: &Domain, cells: &[usize]) -> Result<Self> {
        domain.validate()?;
        if cells.len() != domain.dims() {
            return Err(ContinuityError::ShapeMismatch {
                what: "grid cell counts".into(),
                expected: vec![domain.dims()],
                actual: vec![cells.len()],
            });
        }
        for (axis, &count) in cells.iter().enumerate() {
            if count == 0 {
                return Err(ContinuityError::TooFewCells {
                    what: "grid",
                    axis,
                    cells: count,
                    min: 1,
                });
            }
        }
        let spacing = (0..domain.dims())
            .map(|axis| (domain.upper[axis] - domain.lower[axis]) / cells[axis] as f64)
            .collect();
        Ok(Self {
            domain: domain.clone(),
            cells: cells.to_vec(),
            spacing,
        })
    }

    /// Builds a grid with the same number of cells along every axis.
    pub fn uniform(domain: &Domain, cells_per_axis: usize) -> Result<Self> {
        Self::new(domain, &vec![cells_per_axis; domain.dims()])
    }

    /// The domain the grid covers.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The number of dimensions.
    pub fn dims(&self) -> usize {
        self.cells.len()
    }

    /// The number of cells along each axis (the shape of a cell array).
    pub fn cells(&self) -> &[usize] {
        &self.cells
    }

    /// The cell width along each axis.
    pub fn spacing(&self) -> &[f64] {
        &self.spacing
    }

    /// The smallest cell width over all axes.
    pub fn min_spacing(&self) -> f64 {
        self.spacing.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// The volume of one cell (the product of the spacings).
    pub fn cell_volume(&self) -> f64 {
        self.spacing.iter().product()
    }

    /// The area of one face orthogonal to `axis` (the product of the other spacings; 1 in 1-D).
    pub fn face_area(&self, axis: usize) -> f64 {
        self.spacing
            .iter()
            .enumerate()
            .filter(|&(other, _)| other != axis)
            .map(|(_, spacing)| spacing)
            .product()
    }

    /// The total number of cells.
    pub fn n_cells(&self) -> usize {
        self.cells.iter().product()
    }

    /// The shape of the face array along `axis`: the cell shape with one more entry along `axis`.
    pub fn face_shape(&self, axis: usize) -> Vec<usize> {
        let mut shape = self.cells.clone();
        if let Some(count) = shape.get_mut(axis) {
            *count += 1;
        }
        shape
    }

    /// Writes the centre of cell `index` into `out[..dims]`. Entries of `index` past the grid are not checked: the
    /// result then lies outside the domain, which is what ghost-cell style callers want.
    pub fn cell_center(&self, index: &[usize], out: &mut [f64]) {
        for ((coordinate, (&i, &spacing)), &lower) in out
            .iter_mut()
            .zip(index.iter().zip(&self.spacing))
            .zip(&self.domain.lower)
        {
            *coordinate = lower + (i as f64 + 0.5) * spacing;
        }
    }

    /// Writes the centre of face `index` of the faces orthogonal to `axis` into `out[..dims]`: on `axis` the face
    /// coordinate `lower + index[axis] * spacing`, elsewhere the cell-centre coordinate.
    pub fn face_center(&self, axis: usize, index: &[usize], out: &mut [f64]) {
        self.cell_center(index, out);
        if let (Some(coordinate), Some(&i)) = (out.get_mut(axis), index.get(axis)) {
            *coordinate = self.domain.lower[axis] + i as f64 * self.spacing[axis];
        }
    }

    /// Samples a scalar function at every cell centre; `what` names it in errors.
    pub fn sample_cells<F>(&self, what: &'static str, function: F) -> Result<ArrayD<f64>>
    where
        F: Fn(&[f64]) -> f64,
    {
        let dims = self.dims();
        let mut point = [0.0; MAX_DIMS];
        let mut values = ArrayD::zeros(IxDyn(&self.cells));
        for (index, slot) in values.indexed_iter_mut() {
            self.cell_center(index.slice(), &mut point[..dims]);
            *slot = check_evaluation(what, &point[..dims], f64::NAN, function(&point[..dims]))?;
        }
        Ok(values)
    }

    /// Samples a vector function at every cell centre into an array of shape `cells + [dims]`. The function writes
    /// the vector into its second argument (length `dims`).
    pub fn sample_vector_cells<F>(&self, what: &'static str, function: F) -> Result<ArrayD<f64>>
    where
        F: Fn(&[f64], &mut [f64]),
    {
        let dims = self.dims();
        let mut shape = self.cells.clone();
        shape.push(dims);
        let mut values = ArrayD::zeros(IxDyn(&shape));
        let mut point = [0.0; MAX_DIMS];
        let mut vector = [0.0; MAX_DIMS];
        for (flat, chunk) in values
            .as_slice_mut()
            .into_iter()
            .flat_map(|slice| slice.chunks_mut(dims))
            .enumerate()
        {
            let index = unravel(flat, &self.cells);
            self.cell_center(&index[..dims], &mut point[..dims]);
            function(&point[..dims], &mut vector[..dims]);
            check_evaluations(what, &point[..dims], f64::NAN, &vector[..dims])?;
            chunk.copy_from_slice(&vector[..dims]);
        }
        Ok(values)
    }

    /// Samples the normal components of a vector function at every face centre (see [`FaceField`]).
    pub fn sample_faces<F>(&self, what: &'static str, function: F) -> Result<FaceField>
    where
        F: Fn(&[f64], &mut [f64]),
    {
        let dims = self.dims();
        let mut vector = [0.0; MAX_DIMS];
        self.faces_from_fn(|axis, point| {
            function(point, &mut vector[..dims]);
            check_evaluations(what, point, f64::NAN, &vector[..dims])?;
            Ok(vector[axis])
        })
    }

    /// Fills a [`FaceField`] by calling `normal(axis, face_centre)` at every face; the crate's flux builders use it.
    pub(crate) fn faces_from_fn<F>(&self, mut normal: F) -> Result<FaceField>
    where
        F: FnMut(usize, &[f64]) -> Result<f64>,
    {
        let dims = self.dims();
        let mut point = [0.0; MAX_DIMS];
        let mut normal_components = Vec::with_capacity(dims);
        for axis in 0..dims {
            let mut values = ArrayD::zeros(IxDyn(&self.face_shape(axis)));
            for (index, slot) in values.indexed_iter_mut() {
                self.face_center(axis, index.slice(), &mut point[..dims]);
                *slot = normal(axis, &point[..dims])?;
            }
            normal_components.push(values);
        }
        Ok(FaceField { normal_components })
    }

    /// Refuses an array whose shape is not the cell shape.
    pub(crate) fn check_cell_shape(&self, what: &str, shape: &[usize]) -> Result<()> {
        check_shape(what, &self.cells, shape)
    }

    /// Refuses a grid with fewer than `min` cells along some axis; `what` names the stencil that needs them.
    pub(crate) fn require_cells(&self, what: &'static str, min: usize) -> Result<()> {
        for (axis, &cells) in self.cells.iter().enumerate() {
            if cells < min {
                return Err(ContinuityError::TooFewCells {
                    what,
                    axis,
                    cells,
                    min,
                });
            }
        }
        Ok(())
    }
}

/// Refuses `actual` unless it equals `expected`.
pub(crate) fn check_shape(what: &str, expected: &[usize], actual: &[usize]) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(ContinuityError::ShapeMismatch {
            what: what.into(),
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        })
    }
}

/// Turns a row-major flat index into a multi-index (at most [`MAX_DIMS`] axes).
fn unravel(mut flat: usize, shape: &[usize]) -> [usize; MAX_DIMS] {
    let mut index = [0; MAX_DIMS];
    for (axis, &extent) in shape.iter().enumerate().rev() {
        index[axis] = flat % extent;
        flat /= extent;
    }
    index
}

/// A vector field stored by its normal components on cell faces: the layout of a finite-volume flux.
///
/// `normal_components[a]` has the cell shape with one more entry along axis `a`; entry `j` along `a` is the
/// component along `a` at the centre of the face between cells `j - 1` and `j`. Functions that take a `FaceField`
/// check these shapes against their grid.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceField {
    /// One array per axis: the normal component on the faces orthogonal to that axis.
    pub normal_components: Vec<ArrayD<f64>>,
}

impl FaceField {
    /// Refuses a face field whose arrays do not match `grid`.
    pub fn check_against(&self, grid: &Grid) -> Result<()> {
        if self.normal_components.len() != grid.dims() {
            return Err(ContinuityError::ShapeMismatch {
                what: "face field (number of axes)".into(),
                expected: vec![grid.dims()],
                actual: vec![self.normal_components.len()],
            });
        }
        for (axis, values) in self.normal_components.iter().enumerate() {
            check_shape(
                &format!("face field along axis {axis}"),
                &grid.face_shape(axis),
                values.shape(),
            )?;
        }
        Ok(())
    }
}
