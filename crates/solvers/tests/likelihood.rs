//! Likelihood integration against closed forms: a linear Gaussian flow (analytic marginals, exact divergence)
//! and a 1-D Gaussian-mixture flow (analytic marginal velocity and density, finite-difference divergence).
//!
//! The 1-D mixture's closed form is written here (independent of any other crate); the 2-D mixture uses
//! `ferroflow_paths::MixtureMarginal` (marginal velocity and log-density of a Gaussian mixture under a path).

use ferroflow_solvers::{
    Method, OdeOptions, SampleBatch, SolverError, log_likelihood, standard_normal_log_density,
};
use ndarray::{Array1, Array2, array};

/// What a likelihood field returns on a batch.
type VelocityAndDivergence = Result<(Array2<f64>, Array1<f64>), SolverError>;

/// Source N(0, I) pushed to N(mu, s1^2 I) along x_t = t mu + s(t) z, s(t) = 1 - t + s1 t: the velocity is
/// `v = a(t) (x - t mu) + mu` with `a = s'/s`, so `div v = D a(t)`.
struct LinearGaussian {
    mu: Array1<f64>,
    s1: f64,
}

impl LinearGaussian {
    fn std(&self, t: f64) -> f64 {
        1.0 - t + self.s1 * t
    }

    fn rate(&self, t: f64) -> f64 {
        (self.s1 - 1.0) / self.std(t)
    }

    fn field(&self) -> impl FnMut(f64, &Array2<f64>) -> VelocityAndDivergence + '_ {
        move |t, x| {
            let rate = self.rate(t);
            let velocity = (x - &(&self.mu * t)) * rate + &self.mu;
            let divergence = Array1::from_elem(x.nrows(), x.ncols() as f64 * rate);
            Ok((velocity, divergence))
        }
    }

    fn log_density_at_one(&self, x: &Array2<f64>) -> Array1<f64> {
        let dim = x.ncols() as f64;
        let standardised = (x - &self.mu) / self.s1;
        standardised.standard_normal_log_density() - dim * self.s1.ln()
    }
}

fn max_abs_difference(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    (a - b).iter().fold(0.0, |acc, v| acc.max(v.abs()))
}

fn samples() -> Array2<f64> {
    array![[1.0, -2.0], [0.0, 0.0], [1.3, -1.7], [2.5, -3.0], [-0.4, 0.9]]
}

#[test]
fn linear_gaussian_flow_log_density_matches_closed_form() {
    let flow = LinearGaussian {
        mu: array![1.0, -2.0],
        s1: 0.5,
    };
    let x = samples();
    let exact = flow.log_density_at_one(&x);
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-10, 1e-10);
    let result = log_likelihood(&mut flow.field(), &x, standard_normal_log_density, &options).unwrap();
    let error = max_abs_difference(&result.log_density, &exact);
    eprintln!(
        "linear Gaussian, dopri5 tol 1e-10: max |log p error| = {error:.3e}, stats {:?}",
        result.stats
    );
    assert!(error < 1e-6, "dopri5 log-density error {error:e}");
    // The flow maps x back to its standardisation, and the divergence integral is D ln s1.
    let x0_exact = (&x - &flow.mu) / flow.s1;
    assert!((&result.x0 - &x0_exact).iter().all(|v| v.abs() < 1e-8));
    let divergence_exact = 2.0 * flow.s1.ln();
    assert!(
        result
            .divergence_integral
            .iter()
            .all(|v| (v - divergence_exact).abs() < 1e-8)
    );

    // Fixed steps work too, with the method's accuracy.
    for (method, n_steps, tolerance) in [(Method::Rk4, 50, 1e-6), (Method::Euler, 1000, 1e-2)] {
        let options = OdeOptions::fixed(method, n_steps);
        let result = log_likelihood(&mut flow.field(), &x, standard_normal_log_density, &options).unwrap();
        let error = max_abs_difference(&result.log_density, &exact);
        eprintln!("linear Gaussian, {method:?} {n_steps} steps: max |log p error| = {error:.3e}");
        assert!(error < tolerance, "{method:?}: {error:e}");
        assert_eq!(result.stats.field_evals, n_steps * method.tableau().n_stages());
    }
}

/// A 1-D Gaussian mixture target `sum_k w_k N(mu_k, s_k^2)` reached from N(0, 1) by the independent-coupling
/// CondOT path `x_t = t x1 + (1 - t) x0`.
struct MixtureFlow {
    weights: [f64; 2],
    means: [f64; 2],
    stds: [f64; 2],
}

fn normal_density(x: f64, mean: f64, std: f64) -> f64 {
    (-(x - mean).powi(2) / (2.0 * std * std)).exp() / (std * (2.0 * std::f64::consts::PI).sqrt())
}

impl MixtureFlow {
    /// Component `k` at time `t` is `N(t mu_k, t^2 s_k^2 + (1 - t)^2)` and moves with the Gaussian velocity
    /// `mu_k + (t s_k^2 - (1 - t)) / var_k(t) * (x - t mu_k)`; the marginal velocity is their average weighted by
    /// `w_k p_k(x, t)` (the minimiser of the flow-matching regression).
    fn velocity(&self, t: f64, x: f64) -> f64 {
        let (mut numerator, mut denominator) = (0.0, 0.0);
        for k in 0..2 {
            let variance = t * t * self.stds[k].powi(2) + (1.0 - t).powi(2);
            let mean = t * self.means[k];
            let density = self.weights[k] * normal_density(x, mean, variance.sqrt());
            let velocity = self.means[k] + (t * self.stds[k].powi(2) - (1.0 - t)) / variance * (x - mean);
            numerator += density * velocity;
            denominator += density;
        }
        numerator / denominator
    }

    fn log_density_at_one(&self, x: f64) -> f64 {
        (0..2)
            .map(|k| self.weights[k] * normal_density(x, self.means[k], self.stds[k]))
            .sum::<f64>()
            .ln()
    }

    /// The velocity and its central finite-difference divergence (the derivative, in 1-D).
    fn field(&self) -> impl FnMut(f64, &Array2<f64>) -> VelocityAndDivergence + '_ {
        let step = 1e-5;
        move |t, x| {
            let velocity = x.mapv(|value| self.velocity(t, value));
            let divergence = x.column(0).mapv(|value| {
                (self.velocity(t, value + step) - self.velocity(t, value - step)) / (2.0 * step)
            });
            Ok((velocity, divergence))
        }
    }
}

#[test]
fn gaussian_mixture_flow_with_numeric_divergence_matches_closed_form() {
    let flow = MixtureFlow {
        weights: [0.3, 0.7],
        means: [-1.5, 2.0],
        stds: [0.4, 0.6],
    };
    let x = array![[-2.0], [-1.5], [0.0], [0.5], [2.0], [3.0]];
    let exact = x.column(0).mapv(|value| flow.log_density_at_one(value));
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-8, 1e-8);
    let result = log_likelihood(&mut flow.field(), &x, standard_normal_log_density, &options).unwrap();
    let error = max_abs_difference(&result.log_density, &exact);
    eprintln!(
        "mixture, dopri5 tol 1e-8, FD divergence: max |log p error| = {error:.3e}, stats {:?}",
        result.stats
    );
    assert!(error < 1e-3, "mixture log-density error {error:e}");
    assert_eq!(result.log_density.len(), x.n_samples());
}

#[test]
fn the_error_norm_covers_the_divergence_integral() {
    // A field whose x-part is constant (zero velocity) but whose divergence varies fast: only the integral
    // drives step control, so the adaptive solve must still resolve it.
    let mut field = |t: f64, x: &Array2<f64>| -> VelocityAndDivergence {
        Ok((
            Array2::zeros(x.raw_dim()),
            Array1::from_elem(x.nrows(), (20.0 * t).cos()),
        ))
    };
    let x = array![[0.3, 0.1]];
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-9, 1e-9);
    let result = log_likelihood(&mut field, &x, standard_normal_log_density, &options).unwrap();
    let exact_integral = (20.0f64).sin() / 20.0;
    assert!(
        (result.divergence_integral[0] - exact_integral).abs() < 1e-7,
        "{}",
        result.divergence_integral[0]
    );
    assert!(result.stats.steps > 5, "{:?}", result.stats);
}

/// A 2-D Gaussian mixture under the one-sided Gaussian path (`sigma_min = 0.05`, so the velocity is regular at
/// `t = 1`), with `ferroflow_paths`' closed-form marginal velocity and log-density and a central-difference
/// divergence.
#[test]
fn paths_mixture_flow_with_numeric_divergence_matches_its_marginal_density() {
    use ferroflow_paths::{GaussianMixture, MixtureMarginal, OneSidedGaussianPath};
    let mixture = GaussianMixture::isotropic(
        array![0.25, 0.45, 0.3],
        array![[-1.5, 0.0], [1.0, 1.2], [0.8, -1.4]],
        array![0.2, 0.35, 0.15],
    )
    .unwrap();
    let marginal = MixtureMarginal::new(mixture, OneSidedGaussianPath::new(0.05).unwrap(), 1.0).unwrap();
    let step = 1e-5;
    let mut field = |t: f64, x: &Array2<f64>| -> VelocityAndDivergence {
        let mut velocity = Array2::zeros(x.raw_dim());
        let mut divergence = Array1::zeros(x.nrows());
        let (mut plus, mut minus) = ([0.0; 2], [0.0; 2]);
        for (sample_idx, row) in x.outer_iter().enumerate() {
            let point = [row[0], row[1]];
            let mut out = [0.0; 2];
            marginal
                .velocity_at(&point, t, &mut out)
                .map_err(|error| SolverError::field(t, error))?;
            velocity.row_mut(sample_idx).assign(&Array1::from(out.to_vec()));
            for axis in 0..2 {
                let (mut up, mut down) = (point, point);
                up[axis] += step;
                down[axis] -= step;
                marginal
                    .velocity_at(&up, t, &mut plus)
                    .map_err(|error| SolverError::field(t, error))?;
                marginal
                    .velocity_at(&down, t, &mut minus)
                    .map_err(|error| SolverError::field(t, error))?;
                divergence[sample_idx] += (plus[axis] - minus[axis]) / (2.0 * step);
            }
        }
        Ok((velocity, divergence))
    };
    let x = array![[-1.5, 0.1], [1.0, 1.0], [0.0, 0.0], [0.9, -1.2], [2.0, -2.0]];
    let exact: Array1<f64> = x
        .outer_iter()
        .map(|row| marginal.log_density_at(&[row[0], row[1]], 1.0).unwrap())
        .collect();
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-8, 1e-8);
    let result = log_likelihood(&mut field, &x, standard_normal_log_density, &options).unwrap();
    let error = max_abs_difference(&result.log_density, &exact);
    eprintln!(
        "paths mixture 2-D, dopri5 tol 1e-8, FD divergence: max |log p error| = {error:.3e}, stats {:?}",
        result.stats
    );
    assert!(error < 1e-3, "mixture log-density error {error:e}");
}
