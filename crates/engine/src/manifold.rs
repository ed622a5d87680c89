//! Runs on manifolds: the `data.manifold` config key, the manifold data sets' densities (from
//! `ferroflow-manifolds`), the tangent projection of the network's output on tensors, and the geodesic
//! Wasserstein distance.
//!
//! Riemannian flow matching (Chen & Lipman 2024) trains v_theta on the geodesic path
//! `x_t = exp_{x0}(kappa_t log_{x0}(x1))` with `kappa_t` the scheduler's data coefficient (t for cond_ot); the
//! network sees ambient coordinates (unit vectors on a sphere, angles in [-pi, pi) on a torus) and its output
//! is projected onto the tangent space at x before the loss, in sampling and in likelihoods. On the sphere and
//! the flat torus the Riemannian metric is the ambient Euclidean one restricted to the tangent space, so the
//! loss `|P_x v - u_t|^2_g` is a Euclidean squared norm.

use ferroflow_coupling::SolverKind;
use ferroflow_manifolds::product::BoxedManifold;
use ferroflow_manifolds::{
    BoxedDensity, Checkerboard, FlatTorus, Manifold, ManifoldDensity, Mixture, ProductDensity, Sphere,
    VonMisesFisher, WrappedGaussian,
};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::data::Dataset;
use crate::error::ConfigError;

/// A manifold of the config (`[data] manifold = { kind = "sphere", dim = 3 }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum ManifoldSpec {
    /// The unit sphere S^(dim-1) in R^dim (`dim = 3`: S^2).
    Sphere {
        /// Ambient dimension.
        dim: usize,
    },
    /// The flat torus T^dim, angles in [-pi, pi).
    Torus {
        /// Number of angles.
        dim: usize,
    },
    /// A product of spheres and tori, coordinates in the order of the factors (S^2 x T^1: 3 + 1).
    Product {
        /// The factors.
        factors: Vec<ManifoldSpec>,
    },
}

/// The most ambient coordinates of a manifold here.
pub const MAX_MANIFOLD_DIM: usize = 64;

impl ManifoldSpec {
    /// Number of ambient coordinates.
    pub fn ambient_dim(&self) -> usize {
        match self {
            ManifoldSpec::Sphere { dim } | ManifoldSpec::Torus { dim } => *dim,
            ManifoldSpec::Product { factors } => factors.iter().map(ManifoldSpec::ambient_dim).sum(),
        }
    }

    /// A short name for tables (`S^2`, `T^2`, `S^2 x T^1`).
    pub fn name(&self) -> String {
        match self {
            ManifoldSpec::Sphere { dim } => format!("S^{}", dim.saturating_sub(1)),
            ManifoldSpec::Torus { dim } => format!("T^{dim}"),
            ManifoldSpec::Product { factors } => factors
                .iter()
                .map(ManifoldSpec::name)
                .collect::<Vec<_>>()
                .join(" x "),
        }
    }

    /// Checks sizes (`key` names the config key in messages).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match self {
            ManifoldSpec::Sphere { dim } if !(2..=MAX_MANIFOLD_DIM).contains(dim) => Err(ConfigError::value(
                format!("{key}.dim"),
                format!("{dim} is outside 2..={MAX_MANIFOLD_DIM} (a sphere S^(dim-1) in R^dim)"),
            )),
            ManifoldSpec::Torus { dim } if !(1..=MAX_MANIFOLD_DIM).contains(dim) => Err(ConfigError::value(
                format!("{key}.dim"),
                format!("{dim} is outside 1..={MAX_MANIFOLD_DIM}"),
            )),
            ManifoldSpec::Product { factors } => {
                if factors.len() < 2 {
                    return Err(ConfigError::value(
                        format!("{key}.factors"),
                        "a product needs at least two factors",
                    ));
                }
                for (idx, factor) in factors.iter().enumerate() {
                    if matches!(factor, ManifoldSpec::Product { .. }) {
                        return Err(ConfigError::value(
                            format!("{key}.factors[{idx}]"),
                            "list the factors of a nested product directly",
                        ));
                    }
                    factor.validate(&format!("{key}.factors[{idx}]"))?;
                }
                if self.ambient_dim() > MAX_MANIFOLD_DIM {
                    return Err(ConfigError::value(
                        key,
                        format!("{} coordinates, more than {MAX_MANIFOLD_DIM}", self.ambient_dim()),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The manifold of the math crate.
    pub fn build(&self) -> Result<BoxedManifold, ConfigError> {
        let err = |e: ferroflow_manifolds::ManifoldError| ConfigError::value("data.manifold", e.to_string());
        Ok(match self {
            ManifoldSpec::Sphere { dim } => Box::new(Sphere::new(*dim).map_err(err)?),
            ManifoldSpec::Torus { dim } => Box::new(FlatTorus::new(*dim).map_err(err)?),
            ManifoldSpec::Product { factors } => Box::new(
                ferroflow_manifolds::product::Product::new(
                    factors
                        .iter()
                        .map(ManifoldSpec::build)
                        .collect::<Result<_, _>>()?,
                )
                .map_err(err)?,
            ),
        })
    }

    /// The columns of a point that are torus angles, in increasing order (a sphere's coordinates are not).
    pub fn angle_columns(&self) -> Vec<usize> {
        match self {
            ManifoldSpec::Sphere { .. } => Vec::new(),
            ManifoldSpec::Torus { dim } => (0..*dim).collect(),
            ManifoldSpec::Product { factors } => {
                let mut start = 0;
                let mut columns = Vec::new();
                for factor in factors {
                    columns.extend(factor.angle_columns().into_iter().map(|c| c + start));
                    start += factor.ambient_dim();
                }
                columns
            }
        }
    }

    /// Projects `v` (`[n, ambient]`) onto the tangent spaces at the points `x` (`[n, ambient]`, on the
    /// manifold): `v - <v, x> x` on each sphere block, the identity on torus blocks. Differentiable.
    pub fn project_tangent(&self, x: &Tensor, v: &Tensor) -> Tensor {
        match self {
            ManifoldSpec::Sphere { .. } => {
                let radial = (v * x).sum_dim_intlist([1i64].as_slice(), true, tch::Kind::Float);
                v - radial * x
            }
            ManifoldSpec::Torus { .. } => v.shallow_clone(),
            ManifoldSpec::Product { factors } => {
                let mut start = 0i64;
                let blocks: Vec<Tensor> = factors
                    .iter()
                    .map(|factor| {
                        let width = factor.ambient_dim() as i64;
                        let block =
                            factor.project_tangent(&x.narrow(1, start, width), &v.narrow(1, start, width));
                        start += width;
                        block
                    })
                    .collect();
                Tensor::cat(&blocks, 1)
            }
        }
    }
}

/// The manifold a data set lives on (`None` for the Euclidean data sets).
pub fn manifold_of(dataset: &Dataset) -> Option<ManifoldSpec> {
    match dataset {
        Dataset::Uniform { manifold } => Some(manifold.clone()),
        Dataset::VmfMixture { means, .. } => Some(ManifoldSpec::Sphere {
            dim: means.first().map_or(3, Vec::len),
        }),
        Dataset::WrappedGaussianMixture { means, .. } => Some(ManifoldSpec::Torus {
            dim: means.first().map_or(1, Vec::len),
        }),
        Dataset::TorusCheckerboard {} => Some(ManifoldSpec::Torus { dim: 2 }),
        Dataset::Product { factors } => factors
            .iter()
            .map(manifold_of)
            .collect::<Option<Vec<_>>>()
            .map(|factors| ManifoldSpec::Product { factors }),
        _ => None,
    }
}

/// The uniform distribution on a manifold (the usual source of Riemannian flows), with the spec it was
/// built from.
struct Uniform(BoxedManifold, ManifoldSpec);

impl ManifoldDensity for Uniform {
    fn manifold(&self) -> BoxedManifold {
        self.1.build().expect("a spec that built once builds again")
    }
    fn ambient_dim(&self) -> usize {
        self.0.ambient_dim()
    }
    fn sample(&self, n_samples: usize, rng: &mut dyn RngCore) -> Array2<f64> {
        self.0.sample_uniform(n_samples, rng)
    }
    fn log_density(&self, x: ArrayView1<f64>) -> ferroflow_manifolds::Result<f64> {
        self.0
            .check_point(x, ferroflow_manifolds::ON_MANIFOLD_TOLERANCE)?;
        Ok(self.0.log_uniform_density())
    }
}

/// The density of a manifold data set (errors name `key`).
pub fn density_of(dataset: &Dataset, key: &str) -> Result<BoxedDensity, ConfigError> {
    let err = |e: ferroflow_manifolds::ManifoldError| ConfigError::value(key, e.to_string());
    let components = |weights: &[f64], parts: Vec<BoxedDensity>| -> Result<BoxedDensity, ConfigError> {
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one component"));
        }
        let total: f64 = weights.iter().sum();
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || !(total.is_finite() && total > 0.0) {
            return Err(ConfigError::value(
                format!("{key}.weights"),
                format!(
                    "{weights:?}: finite, non-negative, with a positive finite sum (normalised when used)"
                ),
            ));
        }
        let normalised: Vec<f64> = weights.iter().map(|w| w / total).collect();
        Ok(Box::new(Mixture::new(parts, &normalised).map_err(err)?))
    };
    match dataset {
        Dataset::Uniform { manifold } => Ok(Box::new(Uniform(manifold.build()?, manifold.clone()))),
        Dataset::VmfMixture {
            weights,
            means,
            concentrations,
        } => {
            check_lengths(key, weights.len(), means.len(), concentrations.len())?;
            let parts = means
                .iter()
                .zip(concentrations)
                .map(|(mean, kappa)| {
                    VonMisesFisher::new(Array1::from(mean.clone()).view(), *kappa)
                        .map(|d| Box::new(d) as BoxedDensity)
                        .map_err(err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            components(weights, parts)
        }
        Dataset::WrappedGaussianMixture { weights, means, stds } => {
            check_lengths(key, weights.len(), means.len(), stds.len())?;
            let parts = means
                .iter()
                .zip(stds)
                .map(|(mean, std)| {
                    WrappedGaussian::new(
                        Array1::from(mean.clone()).view(),
                        Array1::from(std.clone()).view(),
                    )
                    .map(|d| Box::new(d) as BoxedDensity)
                    .map_err(err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            components(weights, parts)
        }
        Dataset::TorusCheckerboard {} => Ok(Box::new(Checkerboard::default())),
        Dataset::Product { factors } => {
            let parts = factors
                .iter()
                .enumerate()
                .map(|(idx, factor)| density_of(factor, &format!("{key}.factors[{idx}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Box::new(ProductDensity::new(parts).map_err(err)?))
        }
        other => Err(ConfigError::value(
            key,
            format!("{} is not a data set on a manifold", other.name()),
        )),
    }
}

fn check_lengths(key: &str, weights: usize, means: usize, spreads: usize) -> Result<(), ConfigError> {
    if weights == 0 || weights != means || weights != spreads {
        return Err(ConfigError::value(
            key,
            format!(
                "{weights} weights, {means} means and {spreads} spreads: they must match and be at least 1"
            ),
        ));
    }
    Ok(())
}

/// The exact 2-Wasserstein distance with geodesic cost between two equal-size samples on `manifold`:
/// `sqrt(min over permutations of the mean squared geodesic distance)`.
pub fn geodesic_w2(manifold: &dyn Manifold, a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<f64, String> {
    let cost = ferroflow_manifolds::cost_matrix(manifold, a, b).map_err(|e| e.to_string())?;
    let assignment = SolverKind::Jv
        .build()
        .solve(cost.view())
        .map_err(|e| e.to_string())?;
    Ok((assignment.total_cost / a.nrows().max(1) as f64).sqrt())
}

/// The manifold ODE methods the config's `sample.solver` may name.
pub struct ManifoldMethod;

impl ManifoldMethod {
    /// The manifold method of a solver method (`None` for those without one: adaptive and Heun).
    pub fn of(method: ferroflow_solvers::Method) -> Option<ferroflow_manifolds::ManifoldOdeMethod> {
        use ferroflow_manifolds::ManifoldOdeMethod as M;
        use ferroflow_solvers::Method;
        match method {
            Method::Euler => Some(M::Euler),
            Method::Midpoint => Some(M::Midpoint),
            Method::Rk4 => Some(M::Rk4),
            _ => None,
        }
    }
}

/// `[n, D, D]` tangent projectors at the points `x` (`[n, D]`): `I - x x^T` on sphere blocks, `I` on torus
/// blocks.
pub fn tangent_projectors(spec: &ManifoldSpec, x: &Tensor) -> Tensor {
    let (n, dim) = (x.size()[0], x.size()[1]);
    let eye = Tensor::eye(dim, (tch::Kind::Float, x.device()))
        .unsqueeze(0)
        .expand([n, dim, dim], true)
        .contiguous();
    let mut start = 0i64;
    let blocks: Vec<ManifoldSpec> = match spec {
        ManifoldSpec::Product { factors } => factors.clone(),
        single => vec![single.clone()],
    };
    let projector = eye;
    for block in blocks {
        let width = block.ambient_dim() as i64;
        if let ManifoldSpec::Sphere { .. } = block {
            let xb = x.narrow(1, start, width);
            let outer = xb.unsqueeze(2).matmul(&xb.unsqueeze(1));
            let update = projector.narrow(1, start, width).narrow(2, start, width) - outer;
            projector
                .narrow(1, start, width)
                .narrow(2, start, width)
                .copy_(&update);
        }
        start += width;
    }
    projector
}

/// The Riemannian divergence `tr(P J P)` of the learned tangent field `f(x) = P(x) v(x, t)` at the points
/// `x` (`[n, D]`, on the manifold): exactly from the D rows of the ambient Jacobian, or by Hutchinson's
/// estimate `z^T J z` with tangent probes `z = P eps` (`eps` Gaussian or Rademacher, `K` of them, drawn
/// from `rng`), whose mean is `tr(J P) = tr(P J P)`.
pub fn riemannian_divergence(
    velocity: &dyn Fn(&Tensor, f64) -> Tensor,
    spec: &ManifoldSpec,
    x: &Tensor,
    t: f64,
    estimator: ferroflow_models::DivergenceEstimator,
    rng: &mut dyn RngCore,
) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let field = spec.project_tangent(&x, &velocity(&x, t));
    let projector = tangent_projectors(spec, &x.detach());
    let dim = x.size()[1];
    let grad = |output: &Tensor, keep: bool| -> Tensor {
        Tensor::run_backward(&[output], &[&x], keep, false)
            .pop()
            .expect("one input, one gradient")
    };
    match estimator {
        ferroflow_models::DivergenceEstimator::Exact => {
            let rows: Vec<Tensor> = (0..dim)
                .map(|i| grad(&field.select(1, i).sum(tch::Kind::Float), i + 1 < dim))
                .collect();
            // J[n, i, j] = d f_i / d x_j; tr(J P) = sum_ij J_ij P_ji.
            let jacobian = Tensor::stack(&rows, 1);
            (jacobian * projector.transpose(1, 2))
                .sum_dim_intlist([1i64, 2].as_slice(), false, tch::Kind::Float)
                .detach()
        }
        ferroflow_models::DivergenceEstimator::Hutchinson { probes, distribution } => {
            let mut total = Tensor::zeros([x.size()[0]], (tch::Kind::Float, x.device()));
            // E[eps eps^T] = I for both distributions, so E[z z^T] = P P^T = P. Drawn from the caller's
            // generator, not libtorch's process-wide one, so concurrent solves keep their own probes.
            let all = distribution.draw(probes, &x.detach().to_kind(tch::Kind::Float), rng);
            for k in 0..probes {
                let eps = all.get(k as i64);
                let z = projector.matmul(&eps.unsqueeze(2)).squeeze_dim(2);
                let jtz = grad(&(&field * &z).sum(tch::Kind::Float), k + 1 < probes);
                total += (jtz * &z).sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Float);
            }
            (total / probes as f64).detach()
        }
    }
}

/// `log p1(x)` of points on the run's manifold under the trained `flow` (see
/// [`log_likelihood_of_tangent_field`]), from the run's source density.
pub fn log_likelihood_on_manifold(
    flow: &crate::sample::TrainedFlow,
    spec: &ManifoldSpec,
    points: ArrayView2<f64>,
    estimator: ferroflow_models::DivergenceEstimator,
    steps: usize,
    method: ferroflow_manifolds::ManifoldOdeMethod,
    seed: u64,
) -> Result<Array1<f64>, String> {
    let source = density_of(&flow.config.data.source, "data.source").map_err(|e| e.to_string())?;
    let velocity = |x: &Tensor, t: f64| flow.velocity_with_grad(x, t);
    log_likelihood_of_tangent_field(
        &velocity,
        spec,
        source.as_ref(),
        points,
        &LikelihoodSolve {
            estimator,
            steps,
            method,
            seed,
            device: flow.device(),
        },
    )
}

/// How [`log_likelihood_of_tangent_field`] integrates.
#[derive(Clone, Copy, Debug)]
pub struct LikelihoodSolve {
    /// Exact divergence or Hutchinson's estimate.
    pub estimator: ferroflow_models::DivergenceEstimator,
    /// Steps from t = 1 back to t = 0.
    pub steps: usize,
    /// Euler, midpoint or RK4 through the exp map.
    pub method: ferroflow_manifolds::ManifoldOdeMethod,
    /// Seed of Hutchinson's probes.
    pub seed: u64,
    /// Where the field is evaluated.
    pub device: tch::Device,
}

/// `log p1(x) = log p0(x(0)) - int_0^1 div_M v dt` for the flow of `velocity` (which records the autograd
/// graph; its output is projected onto the tangent space) from `source`, integrated backwards from t = 1 by
/// `solve.steps` steps through the exp map; the divergence integral by Simpson's rule over each step (the
/// divergence at its start, at the midpoint reached by a half step, and at its end). Points off the manifold
/// are refused by row.
pub fn log_likelihood_of_tangent_field(
    velocity: &dyn Fn(&Tensor, f64) -> Tensor,
    spec: &ManifoldSpec,
    source: &dyn ManifoldDensity,
    points: ArrayView2<f64>,
    solve: &LikelihoodSolve,
) -> Result<Array1<f64>, String> {
    let manifold = spec.build().map_err(|e| e.to_string())?;
    manifold
        .check_points(points, ferroflow_manifolds::ON_MANIFOLD_TOLERANCE * 10.0)
        .map_err(|e| format!("the points are not on {}: {e}", spec.name()))?;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(solve.seed);
    let device = solve.device;
    let as_tensor = |x: &Array2<f64>| crate::sample::from_array(x.view(), device);
    let mut divergence = |x: &Array2<f64>, t: f64| -> Array1<f64> {
        let div = riemannian_divergence(velocity, spec, &as_tensor(x), t, solve.estimator, &mut rng);
        Array1::from(Vec::<f32>::try_from(&div.to_device(tch::Device::Cpu)).unwrap_or_default())
            .mapv(f64::from)
    };
    let mut field = |t: f64, x: ArrayView2<f64>| -> ferroflow_manifolds::Result<Array2<f64>> {
        let points = crate::sample::from_array(x, device);
        let v = tch::no_grad(|| spec.project_tangent(&points, &velocity(&points, t)));
        Ok(crate::sample::to_array(&v).mapv(f64::from))
    };
    let steps = solve.steps.max(1);
    let h = -1.0 / steps as f64;
    let mut x = manifold.project_batch(points).map_err(|e| e.to_string())?;
    let mut t = 1.0;
    let mut integral = Array1::<f64>::zeros(x.nrows());
    let mut div_start = divergence(&x, t);
    for _ in 0..steps {
        let half =
            ferroflow_manifolds::step(manifold.as_ref(), &mut field, solve.method, t, h / 2.0, x.view())
                .map_err(|e| e.to_string())?;
        let next = ferroflow_manifolds::step(manifold.as_ref(), &mut field, solve.method, t, h, x.view())
            .map_err(|e| e.to_string())?;
        let div_half = divergence(&half, t + h / 2.0);
        let div_end = divergence(&next, t + h);
        integral = integral + (&div_start + &(4.0 * &div_half) + &div_end) * (-h / 6.0);
        x = next;
        t += h;
        div_start = div_end;
    }
    let log_source = source.log_density_batch(x.view()).map_err(|e| e.to_string())?;
    Ok(log_source - integral)
}
