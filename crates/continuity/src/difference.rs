//! Discrete derivatives on a [`Grid`]: the conservative finite-volume divergence of a face flux, and central
//! finite differences of cell arrays.
//!
//! **Finite-volume divergence.** Integrating `div F` over cell `C_i` and applying the divergence theorem gives
//! `int_{C_i} div F dx = oint_{dC_i} F . n dS`. With the face integrals approximated by face-centre values times
//! face areas and the result divided by the cell volume, the discrete divergence is
//!
//! `(div_h F)_i = sum_a (F_a[i + e_a] - F_a[i]) / h_a`,
//!
//! where `F_a[j]` is the normal component on face `j` along axis `a` (see [`FaceField`]). Each interior face
//! appears once with each sign in neighbouring cells, so the sum of `(div_h F)_i * cell volume` over any box of
//! cells telescopes to exactly the net flux through the box's boundary faces: the scheme is *conservative*
//! (LeVeque 2002, sec. 4.1). With point values at face centres, `(F(x + h/2) - F(x - h/2)) / h = F'(x) +
//! h^2 F'''(x) / 24 + O(h^4)`, so the divergence is second-order accurate at cell centres.
//!
//! **Central differences.** For cell arrays, `df/dx_a` at interior cells is `(f[i + 1] - f[i - 1]) / (2 h_a)`
//! (error `h^2 f''' / 6`); at the first and last cell the one-sided second-order formulas
//! `(-3 f[0] + 4 f[1] - f[2]) / (2h)` and `(3 f[n-1] - 4 f[n-2] + f[n-3]) / (2h)` keep the order at 2 (Fornberg,
//! *Generation of finite difference formulas on arbitrarily spaced grids*, Math. Comp. 1988). These need three
//! cells along every axis. All three formulas are exact for quadratics.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice, Zip};

use crate::error::{Result, check_inputs};
use crate::grid::{FaceField, Grid, check_shape};

/// The fewest cells per axis that the second-order central-difference stencils need.
pub const MIN_CELLS_CENTRAL: usize = 3;

/// The conservative finite-volume divergence `sum_a (F_a[i + e_a] - F_a[i]) / h_a` of a face flux, one value per
/// cell.
pub fn fv_divergence(grid: &Grid, flux: &FaceField) -> Result<ArrayD<f64>> {
    flux.check_against(grid)?;
    for faces in &flux.normal_components {
        check_inputs("face flux", faces.iter())?;
    }
    let mut divergence = ArrayD::zeros(IxDyn(grid.cells()));
    for (axis, faces) in flux.normal_components.iter().enumerate() {
        let cells = grid.cells()[axis];
        let inverse_spacing = 1.0 / grid.spacing()[axis];
        let upper_faces = faces.slice_axis(Axis(axis), Slice::from(1..));
        let lower_faces = faces.slice_axis(Axis(axis), Slice::from(..cells));
        Zip::from(&mut divergence)
            .and(&upper_faces)
            .and(&lower_faces)
            .for_each(|out, &upper, &lower| {
                *out += (upper - lower) * inverse_spacing;
            });
    }
    Ok(divergence)
}

/// The derivative along `axis` of a cell array by central differences (one-sided second order at the two ends).
/// `values` must have at least [`MIN_CELLS_CENTRAL`] entries along `axis`; callers check this.
fn derivative_along(values: &ArrayViewD<'_, f64>, axis: usize, spacing: f64) -> ArrayD<f64> {
    let ax = Axis(axis);
    let cells = values.len_of(ax);
    let scale = 1.0 / (2.0 * spacing);
    let mut out = ArrayD::zeros(values.raw_dim());
    Zip::from(out.slice_axis_mut(ax, Slice::from(1..cells - 1)))
        .and(values.slice_axis(ax, Slice::from(2..)))
        .and(values.slice_axis(ax, Slice::from(..cells - 2)))
        .for_each(|out, &next, &previous| *out = (next - previous) * scale);
    Zip::from(out.index_axis_mut(ax, 0))
        .and(values.index_axis(ax, 0))
        .and(values.index_axis(ax, 1))
        .and(values.index_axis(ax, 2))
        .for_each(|out, &f0, &f1, &f2| *out = (-3.0 * f0 + 4.0 * f1 - f2) * scale);
    Zip::from(out.index_axis_mut(ax, cells - 1))
        .and(values.index_axis(ax, cells - 1))
        .and(values.index_axis(ax, cells - 2))
        .and(values.index_axis(ax, cells - 3))
        .for_each(|out, &f0, &f1, &f2| *out = (3.0 * f0 - 4.0 * f1 + f2) * scale);
    out
}

/// The gradient of a cell array by second-order central differences, shape `cells + [dims]`.
pub fn central_gradient(grid: &Grid, values: ArrayViewD<'_, f64>) -> Result<ArrayD<f64>> {
    grid.check_cell_shape("scalar cell array", values.shape())?;
    grid.require_cells("central-difference stencil", MIN_CELLS_CENTRAL)?;
    check_inputs("scalar cell array", values.iter())?;
    let dims = grid.dims();
    let mut shape = grid.cells().to_vec();
    shape.push(dims);
    let mut gradient = ArrayD::zeros(IxDyn(&shape));
    for axis in 0..dims {
        let derivative = derivative_along(&values, axis, grid.spacing()[axis]);
        gradient.index_axis_mut(Axis(dims), axis).assign(&derivative);
    }
    Ok(gradient)
}

/// The divergence `sum_a d v_a / dx_a` of a cell-centred vector field (shape `cells + [dims]`) by second-order
/// central differences, one value per cell.
pub fn central_divergence(grid: &Grid, vector: ArrayViewD<'_, f64>) -> Result<ArrayD<f64>> {
    let dims = grid.dims();
    let mut shape = grid.cells().to_vec();
    shape.push(dims);
    check_shape("cell-centred vector field", &shape, vector.shape())?;
    grid.require_cells("central-difference stencil", MIN_CELLS_CENTRAL)?;
    check_inputs("cell-centred vector field", vector.iter())?;
    let mut divergence = ArrayD::zeros(IxDyn(grid.cells()));
    for axis in 0..dims {
        let component = vector.index_axis(Axis(dims), axis);
        divergence += &derivative_along(&component, axis, grid.spacing()[axis]);
    }
    Ok(divergence)
}

/// Moves a cell-centred vector field (shape `cells + [dims]`) onto faces: interior faces take the mean of their two
/// cells, boundary faces the linear extrapolation `(3 v[0] - v[1]) / 2` (and its mirror), both second order.
/// Needs two cells along every axis.
pub fn faces_from_cells(grid: &Grid, vector: ArrayViewD<'_, f64>) -> Result<FaceField> {
    let dims = grid.dims();
    let mut shape = grid.cells().to_vec();
    shape.push(dims);
    check_shape("cell-centred vector field", &shape, vector.shape())?;
    grid.require_cells("face interpolation", 2)?;
    check_inputs("cell-centred vector field", vector.iter())?;
    let mut normal_components = Vec::with_capacity(dims);
    for axis in 0..dims {
        let ax = Axis(axis);
        let cells = grid.cells()[axis];
        let component = vector.index_axis(Axis(dims), axis);
        let mut faces = ArrayD::zeros(IxDyn(&grid.face_shape(axis)));
        Zip::from(faces.slice_axis_mut(ax, Slice::from(1..cells)))
            .and(component.slice_axis(ax, Slice::from(1..)))
            .and(component.slice_axis(ax, Slice::from(..cells - 1)))
            .for_each(|out, &upper, &lower| *out = 0.5 * (upper + lower));
        Zip::from(faces.index_axis_mut(ax, 0))
            .and(component.index_axis(ax, 0))
            .and(component.index_axis(ax, 1))
            .for_each(|out, &v0, &v1| *out = 1.5 * v0 - 0.5 * v1);
        Zip::from(faces.index_axis_mut(ax, cells))
            .and(component.index_axis(ax, cells - 1))
            .and(component.index_axis(ax, cells - 2))
            .for_each(|out, &v0, &v1| *out = 1.5 * v0 - 0.5 * v1);
        normal_components.push(faces);
    }
    Ok(FaceField { normal_components })
}
