//! The integral form of mass conservation over a box of cells: `d/dt int_R rho dx = -oint_{dR} J . n dS`.
//!
//! A [`CellRegion`] is a box of whole cells, so its boundary is made of grid faces. Then:
//!
//! - the mass `int_R rho dx` is approximated by the midpoint rule, `sum_{i in R} rho(x_i) |C_i|` ([`region_integral`]);
//! - the outflow `oint_{dR} J . n dS` is the sum of face fluxes times face areas over the region's boundary faces,
//!   with the sign of the outward normal ([`boundary_outflow`]);
//! - the divergence theorem holds *exactly* in the discrete setting: `sum_{i in R} (div_h J)_i |C_i|` equals the
//!   boundary outflow up to rounding, because interior face fluxes cancel in pairs (the telescoping property of a
//!   conservative scheme, LeVeque 2002, sec. 4.1).
//!
//! Consequently the local and integral forms can be checked against each other: summing the Eulerian residual
//! times cell volume over `R` gives `d/dt (mass of R) + outflow` ([`mass_balance`]), which vanishes (up to the
//! discretisation error) exactly when the local residual does, on average over `R`.

use ndarray::{ArrayViewD, Axis, IxDyn, Slice};

use crate::error::{ContinuityError, Result, check_evaluation, check_inputs, check_positive};
use crate::grid::{FaceField, Grid, MAX_DIMS};

/// A non-empty box of cells `lower[a] .. upper[a]` (half-open) along every axis of a grid.
///
/// Fields are private: [`CellRegion::new`] checks the box against a grid, and every function using a region
/// checks it again against its own grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellRegion {
    lower: Vec<usize>,
    upper: Vec<usize>,
}

impl CellRegion {
    /// Builds the region of cells `lower[a] .. upper[a]` along each axis, refusing an empty range or one that
    /// leaves `grid`.
    pub fn new(grid: &Grid, lower: &[usize], upper: &[usize]) -> Result<Self> {
        let region = Self {
            lower: lower.to_vec(),
            upper: upper.to_vec(),
        };
        region.check_against(grid)?;
        Ok(region)
    }

    /// The region of all cells of `grid`.
    pub fn whole(grid: &Grid) -> Self {
        Self {
            lower: vec![0; grid.dims()],
            upper: grid.cells().to_vec(),
        }
    }

    /// The first cell index along each axis.
    pub fn lower(&self) -> &[usize] {
        &self.lower
    }

    /// One past the last cell index along each axis.
    pub fn upper(&self) -> &[usize] {
        &self.upper
    }

    /// Refuses the region unless it is a non-empty box inside `grid`.
    pub fn check_against(&self, grid: &Grid) -> Result<()> {
        for (what, corner) in [
            ("region lower corner", &self.lower),
            ("region upper corner", &self.upper),
        ] {
            if corner.len() != grid.dims() {
                return Err(ContinuityError::ShapeMismatch {
                    what: what.into(),
                    expected: vec![grid.dims()],
                    actual: vec![corner.len()],
                });
            }
        }
        for (axis, &cells) in grid.cells().iter().enumerate() {
            let (lower, upper) = (self.lower[axis], self.upper[axis]);
            if lower >= upper || upper > cells {
                return Err(ContinuityError::InvalidRegion {
                    axis,
                    lower,
                    upper,
                    cells,
                });
            }
        }
        Ok(())
    }

    fn slice_info(&self) -> impl Iterator<Item = (usize, Slice)> + '_ {
        self.lower
            .iter()
            .zip(&self.upper)
            .enumerate()
            .map(|(axis, (&lower, &upper))| (axis, Slice::from(lower..upper)))
    }
}

/// `sum_{i in R} values_i |C_i|`: the midpoint-rule integral of a cell array over the region (the mass when
/// `values` is a density).
pub fn region_integral(grid: &Grid, region: &CellRegion, values: ArrayViewD<'_, f64>) -> Result<f64> {
    grid.check_cell_shape("cell array", values.shape())?;
    region.check_against(grid)?;
    check_inputs("cell array", values.iter())?;
    let mut view = values;
    for (axis, slice) in region.slice_info() {
        view.slice_axis_inplace(Axis(axis), slice);
    }
    Ok(view.sum() * grid.cell_volume())
}

/// `oint_{dR} J . n dS`: the net flux out of the region through its boundary faces.
pub fn boundary_outflow(grid: &Grid, region: &CellRegion, flux: &FaceField) -> Result<f64> {
    flux.check_against(grid)?;
    region.check_against(grid)?;
    let mut outflow = 0.0;
    for (axis, faces) in flux.normal_components.iter().enumerate() {
        check_inputs("face flux", faces.iter())?;
        let mut view = faces.view();
        for (other, slice) in region.slice_info() {
            if other != axis {
                view.slice_axis_inplace(Axis(other), slice);
            }
        }
        // Face `upper` closes the region on the high side (outward normal +e_a), face `lower` on the low side
        // (outward normal -e_a).
        let high = view.index_axis(Axis(axis), region.upper[axis]).sum();
        let low = view.index_axis(Axis(axis), region.lower[axis]).sum();
        outflow += (high - low) * grid.face_area(axis);
    }
    Ok(outflow)
}

/// The terms of the integral balance `d/dt int_R rho + oint_{dR} J . n = 0` at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MassBalance {
    /// `int_R rho(x, t) dx` by the midpoint rule.
    pub mass: f64,
    /// `[M(t + dt) - M(t - dt)] / (2 dt)`, the centred rate of change of the region's mass.
    pub mass_rate: f64,
    /// `oint_{dR} J . n dS` at time `t`.
    pub outflow: f64,
}

impl MassBalance {
    /// `mass_rate + outflow`: zero for exact conservation, and equal (to rounding) to the region integral of the
    /// Eulerian residual built from the same density, time step and flux.
    pub fn imbalance(&self) -> f64 {
        self.mass_rate + self.outflow
    }
}

/// The integral balance over `region` at time `t`: the mass and its centred rate of change (step `time_step`)
/// from the density closure, and the outflow of the face flux `flux` (which should be the flux at time `t`).
pub fn mass_balance<R>(
    grid: &Grid,
    region: &CellRegion,
    t: f64,
    time_step: f64,
    density: R,
    flux: &FaceField,
) -> Result<MassBalance>
where
    R: Fn(&[f64], f64) -> f64,
{
    check_inputs("time t", &[t])?;
    check_positive("time_step", time_step)?;
    region.check_against(grid)?;
    let (later, earlier) = (t + time_step, t - time_step);
    let mass_at = |time: f64| region_mass(grid, region, time, &density);
    let mass = mass_at(t)?;
    let mass_rate = (mass_at(later)? - mass_at(earlier)?) / (later - earlier);
    let outflow = boundary_outflow(grid, region, flux)?;
    Ok(MassBalance {
        mass,
        mass_rate,
        outflow,
    })
}

/// Midpoint-rule mass of the region at time `time`, sampling only the region's cells.
fn region_mass<R>(grid: &Grid, region: &CellRegion, time: f64, density: &R) -> Result<f64>
where
    R: Fn(&[f64], f64) -> f64,
{
    let dims = grid.dims();
    let extent: Vec<usize> = region
        .lower
        .iter()
        .zip(&region.upper)
        .map(|(lower, upper)| upper - lower)
        .collect();
    let mut index = [0; MAX_DIMS];
    let mut point = [0.0; MAX_DIMS];
    let mut sum = 0.0;
    for offset in ndarray::indices(IxDyn(&extent)) {
        for axis in 0..dims {
            index[axis] = region.lower[axis] + offset[axis];
        }
        grid.cell_center(&index[..dims], &mut point[..dims]);
        sum += check_evaluation("density", &point[..dims], time, density(&point[..dims], time))?;
    }
    Ok(sum * grid.cell_volume())
}
