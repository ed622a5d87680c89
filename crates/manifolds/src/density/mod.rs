//! Data distributions on manifolds with closed-form densities, so that learned likelihoods can be checked.
//!
//! Every density is with respect to the manifold's Riemannian volume (area on `S^2`, `d theta_1 ... d theta_d`
//! on the flat torus), so the uniform distribution has log-density [`Manifold::log_uniform_density`] and the
//! densities of independent factors of a product add.
//!
//! - [`VonMisesFisher`] on `S^2`, [`WrappedGaussian`] on `T^d`, [`Checkerboard`] on `T^2`;
//! - [`Mixture`] of any densities on one manifold (mixtures of vMFs, of wrapped Gaussians);
//! - [`ProductDensity`] of independent factors, for example `S^2 x T^1` as a vMF times a wrapped Gaussian.
//!
//! Each samples ([`ManifoldDensity::sample`]) and evaluates its log-density ([`ManifoldDensity::log_density`],
//! refusing points off the manifold beyond [`crate::ON_MANIFOLD_TOLERANCE`]); the entropy `-E[ln p]` is
//! estimable by Monte Carlo ([`ManifoldDensity::entropy_monte_carlo`]), and [`VonMisesFisher::entropy`] and
//! [`Checkerboard::entropy`] give it in closed form.
//!
//! ```
//! use ferroflow_manifolds::{ManifoldDensity, ProductDensity, VonMisesFisher, WrappedGaussian};
//! use ndarray::array;
//! use rand::SeedableRng;
//!
//! let vmf = VonMisesFisher::new(array![0.0, 0.0, 1.0].view(), 5.0)?;
//! let angle = WrappedGaussian::new(array![0.5].view(), array![0.3].view())?;
//! let density = ProductDensity::new(vec![Box::new(vmf), Box::new(angle)])?;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let samples = density.sample(4, &mut rng);
//! assert_eq!(samples.shape(), [4, 4]);
//! assert!(density.log_density(samples.row(0))?.is_finite());
//! # Ok::<(), ferroflow_manifolds::ManifoldError>(())
//! ```

mod checkerboard;
mod von_mises_fisher;
mod wrapped_gaussian;

pub use checkerboard::Checkerboard;
pub use von_mises_fisher::VonMisesFisher;
pub use wrapped_gaussian::{WrappedGaussian, wrapped_normal_terms};

use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, s};
use rand::{Rng, RngCore};

use crate::manifold::non_empty;
use crate::product::{BoxedManifold, Product};
use crate::special::log_sum_exp;
use crate::{ManifoldError, Result, check};

/// A Monte Carlo estimate with its standard error (the sample standard deviation over `sqrt(n)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonteCarloEstimate {
    /// The sample mean.
    pub estimate: f64,
    /// Its standard error.
    pub standard_error: f64,
    /// The number of samples it used.
    pub n_samples: usize,
}

/// A probability distribution on a manifold with a log-density that can be evaluated.
pub trait ManifoldDensity {
    /// The manifold it lives on (a fresh value: manifolds here are small descriptions).
    fn manifold(&self) -> BoxedManifold;
    /// The number of ambient coordinates of a sample.
    fn ambient_dim(&self) -> usize;
    /// `n_samples` independent draws, one per row.
    fn sample(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64>;
    /// `ln p(x)` with respect to the Riemannian volume; `-inf` where the density is zero. Refuses points off
    /// the manifold beyond [`crate::ON_MANIFOLD_TOLERANCE`].
    fn log_density(&self, x: ArrayView1<f64>) -> Result<f64>;

    /// [`ManifoldDensity::log_density`] of every row.
    fn log_density_batch(&self, x: ArrayView2<f64>) -> Result<Array1<f64>> {
        if x.ncols() != self.ambient_dim() {
            return Err(ManifoldError::ShapeMismatch {
                what: "points",
                found: x.shape().to_vec(),
                expected: format!("[n_samples, {}]", self.ambient_dim()),
            });
        }
        x.rows()
            .into_iter()
            .enumerate()
            .map(|(sample_idx, row)| self.log_density(row).map_err(|e| e.in_sample(sample_idx)))
            .collect()
    }

    /// The entropy `-E[ln p(X)]` estimated from `n_samples >= 2` fresh draws.
    fn entropy_monte_carlo(&self, n_samples: usize, rng: &mut dyn RngCore) -> Result<MonteCarloEstimate> {
        check::parameter("n_samples", n_samples as f64, "an integer >= 2", |n| n >= 2.0)?;
        let values = -self.log_density_batch(self.sample(n_samples, rng).view())?;
        let estimate = values.mean().unwrap_or(f64::NAN);
        let variance = values.var(1.0);
        Ok(MonteCarloEstimate {
            estimate,
            standard_error: (variance / n_samples as f64).sqrt(),
            n_samples,
        })
    }
}

/// A density that can be shared between threads, as stored by mixtures and products.
pub type BoxedDensity = Box<dyn ManifoldDensity + Send + Sync>;

/// A finite mixture `p(x) = sum_k w_k p_k(x)` of densities on the same manifold.
pub struct Mixture {
    components: Vec<BoxedDensity>,
    log_weights: Vec<f64>,
    cumulative_weights: Vec<f64>,
}

impl std::fmt::Debug for Mixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixture")
            .field("n_components", &self.components.len())
            .field("log_weights", &self.log_weights)
            .finish()
    }
}

impl Mixture {
    /// The mixture of `components` with `weights` (non-negative, summing to 1 within `1e-9`; renormalised).
    /// Refuses an empty list, a weight count that differs from the component count, and components on
    /// different manifolds.
    pub fn new(components: Vec<BoxedDensity>, weights: &[f64]) -> Result<Self> {
        non_empty(&components, "mixture", "component")?;
        if weights.len() != components.len() {
            return Err(ManifoldError::InvalidWeights {
                reason: format!("{} weights for {} components", weights.len(), components.len()),
            });
        }
        if let Some((index, weight)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(ManifoldError::InvalidWeights {
                reason: format!("weight {index} is {weight}, expected a finite number >= 0"),
            });
        }
        let total: f64 = weights.iter().sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(ManifoldError::InvalidWeights {
                reason: format!("weights sum to {total}, expected 1 within 1e-9"),
            });
        }
        let name = components[0].manifold().name();
        for (index, component) in components.iter().enumerate() {
            let other = component.manifold().name();
            if other != name || component.ambient_dim() != components[0].ambient_dim() {
                return Err(ManifoldError::Incompatible {
                    what: "mixture",
                    reason: format!("component {index} lives on {other}, component 0 on {name}"),
                });
            }
        }
        let mut cumulative = 0.0;
        let cumulative_weights = weights
            .iter()
            .map(|w| {
                cumulative += w / total;
                cumulative
            })
            .collect();
        Ok(Self {
            components,
            log_weights: weights.iter().map(|w| (w / total).ln()).collect(),
            cumulative_weights,
        })
    }

    /// The components, in order.
    pub fn components(&self) -> &[BoxedDensity] {
        &self.components
    }

    /// The mixture weights, in order.
    pub fn weights(&self) -> Vec<f64> {
        self.log_weights.iter().map(|w| w.exp()).collect()
    }
}

impl ManifoldDensity for Mixture {
    fn manifold(&self) -> BoxedManifold {
        self.components[0].manifold()
    }
    fn ambient_dim(&self) -> usize {
        self.components[0].ambient_dim()
    }

    fn sample(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        // Draw every sample's component first, then each component's samples in one call, so that a
        // component's own sampler runs once per batch.
        let last = self.components.len() - 1;
        let labels: Vec<usize> = (0..n_samples)
            .map(|_| {
                let u: f64 = rng.random();
                self.cumulative_weights
                    .iter()
                    .position(|&c| u < c)
                    .unwrap_or(last)
            })
            .collect();
        let mut out = Array2::zeros((n_samples, self.ambient_dim()));
        for (component_idx, component) in self.components.iter().enumerate() {
            let rows: Vec<usize> = (0..n_samples).filter(|&i| labels[i] == component_idx).collect();
            if rows.is_empty() {
                continue;
            }
            let draws = component.sample(rows.len(), rng);
            for (draw, &row) in draws.rows().into_iter().zip(&rows) {
                out.row_mut(row).assign(&draw);
            }
        }
        out
    }

    fn log_density(&self, x: ArrayView1<f64>) -> Result<f64> {
        let mut terms = Vec::with_capacity(self.components.len());
        for (component, &log_weight) in self.components.iter().zip(&self.log_weights) {
            if log_weight > f64::NEG_INFINITY {
                terms.push(log_weight + component.log_density(x)?);
            }
        }
        Ok(log_sum_exp(terms.iter().copied()))
    }
}

/// The product of independent densities: a sample concatenates one draw of each factor, and the
/// log-density is the sum of the factors' (see [`Product`] for the coordinate blocks).
pub struct ProductDensity {
    factors: Vec<BoxedDensity>,
    blocks: Vec<Range<usize>>,
}

impl std::fmt::Debug for ProductDensity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductDensity")
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl ProductDensity {
    /// The product of `factors`, in order. Refuses an empty list.
    pub fn new(factors: Vec<BoxedDensity>) -> Result<Self> {
        non_empty(&factors, "product density", "factor")?;
        let mut blocks = Vec::with_capacity(factors.len());
        let mut start = 0;
        for factor in &factors {
            blocks.push(start..start + factor.ambient_dim());
            start += factor.ambient_dim();
        }
        Ok(Self { factors, blocks })
    }

    /// The factors, in order.
    pub fn factors(&self) -> &[BoxedDensity] {
        &self.factors
    }
}

impl ManifoldDensity for ProductDensity {
    fn manifold(&self) -> BoxedManifold {
        let factors = self.factors.iter().map(|f| f.manifold()).collect();
        Box::new(Product::new(factors).expect("a product density has at least one factor"))
    }
    fn ambient_dim(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.end)
    }

    fn sample(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        let mut out = Array2::zeros((n_samples, self.ambient_dim()));
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            out.slice_mut(s![.., block.clone()])
                .assign(&factor.sample(n_samples, rng));
        }
        out
    }

    fn log_density(&self, x: ArrayView1<f64>) -> Result<f64> {
        if x.len() != self.ambient_dim() {
            return Err(ManifoldError::DimensionMismatch {
                what: "x",
                manifold: self.manifold().name(),
                expected: self.ambient_dim(),
                found: x.len(),
            });
        }
        let mut total = 0.0;
        for (factor, block) in self.factors.iter().zip(&self.blocks) {
            total += factor
                .log_density(x.slice(s![block.clone()]))
                .map_err(|e| e.shifted(block.start))?;
        }
        Ok(total)
    }
}
