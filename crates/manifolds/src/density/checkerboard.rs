//! A checkerboard on the flat torus `T^2`: uniform on alternating squares of an `n x n` grid of the periodic
//! square `[-pi, pi)^2` (`n = 4` by default).
//!
//! Cell `(i, j)` is `[-pi + i w, -pi + (i + 1) w) x [-pi + j w, -pi + (j + 1) w)`, `w = 2 pi / n`, and carries
//! mass when `i + j` is even. `n` must be even so that the pattern also alternates across the seam of the
//! torus. Half of the `n^2` cells are occupied, covering an area `n^2 / 2 w^2 = 2 pi^2` whatever `n`, so the
//! density is `1 / (2 pi^2)` on the occupied cells and 0 elsewhere (log-density `-inf`), and the entropy is
//! `ln(2 pi^2)`.

use std::f64::consts::PI;

use ndarray::{Array2, ArrayView1};
use rand::{Rng, RngCore};

use super::ManifoldDensity;
use crate::product::BoxedManifold;
use crate::{FlatTorus, Manifold, ON_MANIFOLD_TOLERANCE, Result, check, wrap_angle};

/// The checkerboard density on `T^2` (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkerboard {
    cells_per_side: usize,
}

impl Default for Checkerboard {
    /// The 4 x 4 checkerboard.
    fn default() -> Self {
        Self { cells_per_side: 4 }
    }
}

impl Checkerboard {
    /// The checkerboard with `cells_per_side` cells along each angle: an even number from 2 to 1024.
    pub fn new(cells_per_side: usize) -> Result<Self> {
        check::parameter(
            "cells_per_side",
            cells_per_side as f64,
            "an even integer in [2, 1024]",
            |n| (2.0..=1024.0).contains(&n) && cells_per_side.is_multiple_of(2),
        )?;
        Ok(Self { cells_per_side })
    }

    /// The number of cells along each angle.
    pub fn cells_per_side(&self) -> usize {
        self.cells_per_side
    }

    /// The entropy in closed form: `ln(2 pi^2)` nats.
    pub fn entropy(&self) -> f64 {
        (2.0 * PI * PI).ln()
    }

    fn cell_width(&self) -> f64 {
        2.0 * PI / self.cells_per_side as f64
    }

    /// The grid cell holding the (wrapped) angle.
    fn cell(&self, angle: f64) -> usize {
        let index = ((wrap_angle(angle) + PI) / self.cell_width()).floor();
        (index.max(0.0) as usize).min(self.cells_per_side - 1)
    }

    fn torus() -> FlatTorus {
        FlatTorus::new(2).expect("T^2 is a valid torus")
    }
}

impl ManifoldDensity for Checkerboard {
    fn manifold(&self) -> BoxedManifold {
        Box::new(Self::torus())
    }
    fn ambient_dim(&self) -> usize {
        2
    }

    fn sample(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        let n = self.cells_per_side;
        let width = self.cell_width();
        let mut out = Array2::zeros((n_samples, 2));
        for mut row in out.rows_mut() {
            // An occupied cell uniformly (row i, then a column of matching parity), then a uniform point in it;
            // a draw that round-off puts on the far edge (in the next cell) is redrawn.
            let i = rng.random_range(0..n);
            let j = 2 * rng.random_range(0..n / 2) + i % 2;
            loop {
                let first = -PI + (i as f64 + rng.random::<f64>()) * width;
                let second = -PI + (j as f64 + rng.random::<f64>()) * width;
                if self.cell(first) == i && self.cell(second) == j {
                    row[0] = first;
                    row[1] = second;
                    break;
                }
            }
        }
        out
    }

    fn log_density(&self, x: ArrayView1<f64>) -> Result<f64> {
        Self::torus().check_point(x, ON_MANIFOLD_TOLERANCE)?;
        if (self.cell(x[0]) + self.cell(x[1])).is_multiple_of(2) {
            Ok(-(2.0 * PI * PI).ln())
        } else {
            Ok(f64::NEG_INFINITY)
        }
    }
}
