//! Products `M_1 x ... x M_k` of manifolds: a point is the concatenation of its factors' ambient coordinates.
//!
//! Every map acts block by block (factor `i` owns the ambient coordinates `blocks()[i]`); the metric is the
//! sum of the factors' metrics, so the geodesic distance is `sqrt(sum_i dist_i^2)`, the volume is the product of
//! the factors' volumes and log-densities of independent factors add. An error raised inside a factor names
//! the product's coordinates. `S^2 x T^1` is
//! `Product::new(vec![Box::new(Sphere::new(3)?), Box::new(FlatTorus::new(1)?)])`, with ambient coordinates
//! `0..3` on the sphere and `3..4` the angle.

use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView1, s};
use rand::RngCore;

use crate::manifold::{GeodesicPoint, non_empty};
use crate::{Manifold, Result, check};

/// A factor of a product: any manifold that can be shared between threads.
pub type BoxedManifold = Box<dyn Manifold + Send + Sync>;

/// The product of a non-empty list of manifolds.
pub struct Product {
    factors: Vec<BoxedManifold>,
    blocks: Vec<Range<usize>>,
}

impl std::fmt::Debug for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Product")
            .field("name", &self.name())
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl Product {
    /// The product of `factors`, in order. Refuses an empty list.
    pub fn new(factors: Vec<BoxedManifold>) -> Result<Self> {
        non_empty(&factors, "product", "factor")?;
        let mut blocks = Vec::with_capacity(factors.len());
        let mut start = 0;
        for factor in &factors {
            blocks.push(start..start + factor.ambient_dim());
            start += factor.ambient_dim();
        }
        Ok(Self { factors, blocks })
    }

    /// The factors, in order.
    pub fn factors(&self) -> &[BoxedManifold] {
        &self.factors
    }

    /// The ambient coordinates of each factor, in order.
    pub fn blocks(&self) -> &[Range<usize>] {
        &self.blocks
    }

    fn check(&self, what: &'static str, v: ArrayView1<f64>) -> Result<()> {
        check::vector(self, what, v)
    }

    /// Applies `map` to each factor with its block of every argument, and writes the results into one vector.
    fn blockwise<'a>(
        &self,
        arguments: &[ArrayView1<'a, f64>],
        mut map: impl FnMut(&dyn Manifold, &[ArrayView1<'a, f64>]) -> Result<Array1<f64>>,
    ) -> Result<Array1<f64>> {
        let mut out = Array1::zeros(self.ambient_dim());
        let mut parts = Vec::with_capacity(arguments.len());
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            parts.clear();
            parts.extend(arguments.iter().map(|a| (*a).slice_move(s![block.clone()])));
            let value = map(factor.as_ref(), &parts).map_err(|e| e.shifted(block.start))?;
            out.slice_mut(s![block.clone()]).assign(&value);
        }
        Ok(out)
    }

    /// Sums `map` over the factors with their blocks of every argument.
    fn blockwise_sum<'a>(
        &self,
        arguments: &[ArrayView1<'a, f64>],
        mut map: impl FnMut(&dyn Manifold, &[ArrayView1<'a, f64>]) -> Result<f64>,
    ) -> Result<f64> {
        let mut total = 0.0;
        let mut parts = Vec::with_capacity(arguments.len());
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            parts.clear();
            parts.extend(arguments.iter().map(|a| (*a).slice_move(s![block.clone()])));
            total += map(factor.as_ref(), &parts).map_err(|e| e.shifted(block.start))?;
        }
        Ok(total)
    }
}

impl Manifold for Product {
    fn name(&self) -> String {
        self.factors
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(" x ")
    }
    fn ambient_dim(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.end)
    }
    fn intrinsic_dim(&self) -> usize {
        self.factors.iter().map(|f| f.intrinsic_dim()).sum()
    }

    fn check_point(&self, x: ArrayView1<f64>, tolerance: f64) -> Result<()> {
        self.check("x", x)?;
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            factor
                .check_point(x.slice(s![block.clone()]), tolerance)
                .map_err(|e| e.shifted(block.start))?;
        }
        Ok(())
    }

    fn project(&self, x: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.blockwise(&[x.view()], |f, p| f.project(p[0]))
    }

    fn project_tangent(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("v", v)?;
        self.blockwise(&[x.view(), v.view()], |f, p| f.project_tangent(p[0], p[1]))
    }

    fn exp(&self, x: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("v", v)?;
        self.blockwise(&[x.view(), v.view()], |f, p| f.exp(p[0], p[1]))
    }

    fn log(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("y", y)?;
        self.blockwise(&[x.view(), y.view()], |f, p| f.log(p[0], p[1]))
    }

    fn inner(&self, x: ArrayView1<f64>, u: ArrayView1<f64>, v: ArrayView1<f64>) -> Result<f64> {
        self.check("x", x)?;
        self.check("u", u)?;
        self.check("v", v)?;
        self.blockwise_sum(&[x.view(), u.view(), v.view()], |f, p| f.inner(p[0], p[1], p[2]))
    }

    fn log_volume(&self) -> f64 {
        self.factors.iter().map(|f| f.log_volume()).sum()
    }

    fn sample_uniform(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        let mut out = Array2::zeros((n_samples, self.ambient_dim()));
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            out.slice_mut(s![.., block.clone()])
                .assign(&factor.sample_uniform(n_samples, rng));
        }
        out
    }

    fn dist(&self, x: ArrayView1<f64>, y: ArrayView1<f64>) -> Result<f64> {
        self.check("x", x)?;
        self.check("y", y)?;
        Ok(self
            .blockwise_sum(&[x.view(), y.view()], |f, p| f.dist(p[0], p[1]).map(|d| d * d))?
            .sqrt())
    }

    fn geodesic(&self, x: ArrayView1<f64>, v: ArrayView1<f64>, s: f64) -> Result<GeodesicPoint> {
        self.check("x", x)?;
        self.check("v", v)?;
        let mut position = Array1::zeros(self.ambient_dim());
        let mut velocity = Array1::zeros(self.ambient_dim());
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            let point = factor
                .geodesic(x.slice(s![block.clone()]), v.slice(s![block.clone()]), s)
                .map_err(|e| e.shifted(block.start))?;
            position.slice_mut(s![block.clone()]).assign(&point.position);
            velocity.slice_mut(s![block.clone()]).assign(&point.velocity);
        }
        Ok(GeodesicPoint { position, velocity })
    }

    fn log_differential(
        &self,
        x: ArrayView1<f64>,
        y: ArrayView1<f64>,
        w: ArrayView1<f64>,
    ) -> Result<Array1<f64>> {
        self.check("x", x)?;
        self.check("y", y)?;
        self.check("w", w)?;
        self.blockwise(&[x.view(), y.view(), w.view()], |f, p| {
            f.log_differential(p[0], p[1], p[2])
        })
    }

    fn tangent_basis(&self, x: ArrayView1<f64>) -> Result<Array2<f64>> {
        self.check("x", x)?;
        let mut basis = Array2::zeros((self.intrinsic_dim(), self.ambient_dim()));
        let mut row_start = 0;
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            let factor_basis = factor
                .tangent_basis(x.slice(s![block.clone()]))
                .map_err(|e| e.shifted(block.start))?;
            let rows = factor_basis.nrows();
            basis
                .slice_mut(s![row_start..row_start + rows, block.clone()])
                .assign(&factor_basis);
            row_start += rows;
        }
        Ok(basis)
    }
}
