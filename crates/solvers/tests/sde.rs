//! Euler-Maruyama and the stochastic flow sampler against closed forms: Ornstein-Uhlenbeck moments, weak order,
//! the `g = 0` limit, and marginal preservation on a Gaussian path.

mod common;

use common::{fitted_order, observed_orders, scientific};
use ferroflow_solvers::{
    DiagonalNoise, FnField, Method, NoiseSource, OdeOptions, Record, ScalarNoise, SdeOptions, SolverError,
    euler_maruyama, sample_flow_sde, solve,
};
use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const THETA: f64 = 1.0;
const SIGMA: f64 = 0.8;
const X0: f64 = 1.5;

fn ou_mean(t: f64) -> f64 {
    X0 * (-THETA * t).exp()
}

fn ou_variance(t: f64) -> f64 {
    SIGMA * SIGMA / (2.0 * THETA) * (1.0 - (-2.0 * THETA * t).exp())
}

/// The Ornstein-Uhlenbeck SDE `dX = -theta X dt + sigma dW`.
type OrnsteinUhlenbeck = ScalarNoise<FnField<fn(f64, &Array1<f64>) -> Array1<f64>>, fn(f64) -> f64>;

fn ou() -> OrnsteinUhlenbeck {
    fn drift(_t: f64, x: &Array1<f64>) -> Array1<f64> {
        x * -THETA
    }
    fn sigma(_t: f64) -> f64 {
        SIGMA
    }
    ScalarNoise {
        drift: FnField(drift as fn(f64, &Array1<f64>) -> Array1<f64>),
        sigma: sigma as fn(f64) -> f64,
    }
}

fn mean_and_variance(x: &Array1<f64>) -> (f64, f64) {
    let mean = x.mean().unwrap();
    (mean, x.var(1.0))
}

#[test]
fn ornstein_uhlenbeck_moments_match_the_closed_form() {
    let n_paths = 20_000;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let options = SdeOptions {
        t0: 0.0,
        t1: 1.0,
        n_steps: 200,
        record: Record::Final,
    };
    let solution = euler_maruyama(&mut ou(), Array1::from_elem(n_paths, X0), &options, &mut rng).unwrap();
    let (mean, variance) = mean_and_variance(&solution.state);
    let (exact_mean, exact_variance) = (ou_mean(1.0), ou_variance(1.0));
    // Euler-Maruyama's own expectations on this grid differ from the SDE's by O(h).
    let h = 1.0 / 200.0;
    let em_mean = X0 * (1.0 - THETA * h).powi(200);
    let decay = (1.0 - THETA * h).powi(2);
    let em_variance = SIGMA * SIGMA * h * (1.0 - decay.powi(200)) / (1.0 - decay);
    let mean_tolerance = 4.0 * (exact_variance / n_paths as f64).sqrt() + (em_mean - exact_mean).abs();
    let variance_tolerance =
        4.0 * exact_variance * (2.0 / (n_paths - 1) as f64).sqrt() + (em_variance - exact_variance).abs();
    eprintln!("OU: mean {mean:.5} vs {exact_mean:.5}, variance {variance:.5} vs {exact_variance:.5}");
    assert!(
        (mean - exact_mean).abs() < mean_tolerance,
        "mean {mean} vs {exact_mean} (tol {mean_tolerance})"
    );
    assert!(
        (variance - exact_variance).abs() < variance_tolerance,
        "variance {variance} vs {exact_variance}"
    );
    assert_eq!(solution.stats.steps, 200);
    assert_eq!(solution.stats.field_evals, 200);
}

/// Common random numbers: the same fine Brownian increments, summed into coarser ones, drive every resolution.
struct SharedIncrements {
    fine: Array2<f64>,
    group: usize,
    next_row: usize,
}

impl NoiseSource<Array1<f64>> for SharedIncrements {
    fn standard_normal_like(&mut self, like: &Array1<f64>) -> Array1<f64> {
        let rows = self
            .fine
            .slice(ndarray::s![self.next_row..self.next_row + self.group, ..]);
        self.next_row += self.group;
        let sum = rows.sum_axis(Axis(0)) / (self.group as f64).sqrt();
        assert_eq!(sum.len(), like.len());
        sum
    }
}

#[test]
fn euler_maruyama_has_weak_order_one() {
    let n_paths = 20_000;
    let n_fine = 128;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let fine = Array2::from_shape_fn((n_fine, n_paths), |_| {
        rand::Rng::sample(&mut rng, rand_distr::StandardNormal)
    });
    let mut mean_errors = Vec::new();
    let mut second_moment_errors = Vec::new();
    for n_steps in [8, 16, 32, 64] {
        let mut noise = SharedIncrements {
            fine: fine.clone(),
            group: n_fine / n_steps,
            next_row: 0,
        };
        let options = SdeOptions {
            t0: 0.0,
            t1: 1.0,
            n_steps,
            record: Record::Final,
        };
        let state = euler_maruyama(&mut ou(), Array1::from_elem(n_paths, X0), &options, &mut noise)
            .unwrap()
            .state;
        mean_errors.push(state.mean().unwrap() - ou_mean(1.0));
        second_moment_errors
            .push(state.mapv(|x| x * x).mean().unwrap() - ou_mean(1.0).powi(2) - ou_variance(1.0));
    }
    // The sampling error is (nearly) shared by all resolutions; successive differences cancel it and leave the
    // discretisation bias, which halves with the step for a weak order of 1.
    for (name, errors) in [("mean", &mean_errors), ("second moment", &second_moment_errors)] {
        let differences: Vec<f64> = errors.windows(2).map(|pair| (pair[0] - pair[1]).abs()).collect();
        let orders = observed_orders(&differences);
        let fitted = fitted_order(&differences);
        eprintln!(
            "EM weak {name}: errors {} orders {orders:.3?} fitted {fitted:.3}",
            scientific(errors)
        );
        assert!((fitted - 1.0).abs() < 0.3, "{name}: weak order {fitted}");
    }
}

#[test]
fn diagonal_noise_scales_each_component() {
    let n_paths = 20_000;
    let sigmas = [0.5, 1.0];
    let mut sde = DiagonalNoise {
        drift: FnField(|_t: f64, x: &Array2<f64>| x * -THETA),
        sigma: FnField(move |_t: f64, x: &Array2<f64>| {
            Array2::from_shape_fn(x.raw_dim(), |(_, column)| sigmas[column])
        }),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let options = SdeOptions {
        t0: 0.0,
        t1: 1.0,
        n_steps: 200,
        record: Record::Final,
    };
    let state = euler_maruyama(&mut sde, Array2::zeros((n_paths, 2)), &options, &mut rng)
        .unwrap()
        .state;
    for (column, sigma) in sigmas.iter().enumerate() {
        let variance = state.column(column).var(1.0);
        let exact = sigma * sigma / (2.0 * THETA) * (1.0 - (-2.0 * THETA).exp());
        let tolerance = 4.0 * exact * (2.0 / n_paths as f64).sqrt() + 0.01 * exact;
        assert!(
            (variance - exact).abs() < tolerance,
            "column {column}: {variance} vs {exact}"
        );
    }
}

/// A nonlinear velocity and an arbitrary score on a batch of 2-D samples.
fn velocity(t: f64, x: &Array2<f64>) -> Array2<f64> {
    x.mapv(|v| (v * (1.0 + t)).sin() - 0.3 * v)
}

#[test]
fn flow_sampler_without_diffusion_is_the_euler_ode_sampler_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x0 = Array2::from_shape_fn((64, 2), |_| {
        rand::Rng::sample(&mut rng, rand_distr::StandardNormal)
    });
    let n_steps = 37;
    let ode = solve(
        &mut FnField(velocity),
        x0.clone(),
        0.0,
        1.0,
        &OdeOptions::fixed(Method::Euler, n_steps),
    )
    .unwrap();
    let mut score = FnField(|_t: f64, x: &Array2<f64>| x * -1.0);
    let options = SdeOptions {
        t0: 0.0,
        t1: 1.0,
        n_steps,
        record: Record::EveryStep,
    };
    let sde = sample_flow_sde(
        &mut FnField(velocity),
        &mut score,
        |_t| 0.0,
        x0.clone(),
        &options,
        &mut rng,
    )
    .unwrap();
    assert_eq!(sde.state, ode.state);
    assert_eq!(sde.stats.field_evals, ode.stats.field_evals);
    assert_eq!(sde.trajectory.len(), n_steps + 1);
    assert_eq!(sde.trajectory[0], x0);
    assert_eq!(sde.times[n_steps], 1.0);
    // With diffusion switched on, the result differs.
    let noisy = sample_flow_sde(
        &mut FnField(velocity),
        &mut score,
        |_t| 0.1,
        x0,
        &options,
        &mut rng,
    )
    .unwrap();
    assert_ne!(noisy.state, ode.state);
}

#[test]
fn flow_sampler_keeps_the_gaussian_path_marginals_in_both_directions() {
    // CondOT path from N(0, 1) to N(mu, s1^2): x_t = t mu + s(t) z with s(t) = 1 - t + s1 t.
    let (mu, s1) = (2.0, 0.5);
    let std = move |t: f64| 1.0 - t + s1 * t;
    let mut velocity =
        FnField(move |t: f64, x: &Array2<f64>| x.mapv(|v| (s1 - 1.0) / std(t) * (v - t * mu) + mu));
    let mut score = FnField(move |t: f64, x: &Array2<f64>| x.mapv(|v| -(v - t * mu) / (std(t) * std(t))));
    let n_paths = 20_000;
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let z = Array2::from_shape_fn((n_paths, 1), |_| {
        rand::Rng::sample(&mut rng, rand_distr::StandardNormal)
    });
    // Forwards from the source, and backwards from data drawn from the target.
    let cases = [
        (0.0, 1.0, z.clone(), mu, s1),
        (1.0, 0.0, z.mapv(|v| mu + s1 * v), 0.0, 1.0),
    ];
    for (t0, t1, start, mean_exact, std_exact) in cases {
        let options = SdeOptions {
            t0,
            t1,
            n_steps: 400,
            record: Record::Final,
        };
        let state = sample_flow_sde(&mut velocity, &mut score, |_t| 0.8, start, &options, &mut rng)
            .unwrap()
            .state;
        let column = state.column(0);
        let (mean, variance) = (column.mean().unwrap(), column.var(1.0));
        let variance_exact = std_exact * std_exact;
        eprintln!(
            "flow SDE {t0} -> {t1}: mean {mean:.4} (exact {mean_exact}), variance {variance:.4} (exact {variance_exact})"
        );
        let mean_tolerance = 4.0 * std_exact / (n_paths as f64).sqrt() + 0.01;
        let variance_tolerance = 4.0 * variance_exact * (2.0 / n_paths as f64).sqrt() + 0.01;
        assert!(
            (mean - mean_exact).abs() < mean_tolerance,
            "{t0} -> {t1}: mean {mean}"
        );
        assert!(
            (variance - variance_exact).abs() < variance_tolerance,
            "{t0} -> {t1}: variance {variance}"
        );
    }
}

#[test]
fn flow_sampler_refuses_times_outside_the_unit_interval() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut score = FnField(|_t: f64, x: &Array2<f64>| x * -1.0);
    let options = SdeOptions {
        t0: 0.0,
        t1: 1.5,
        n_steps: 4,
        record: Record::Final,
    };
    let result = sample_flow_sde(
        &mut FnField(velocity),
        &mut score,
        |_t| 0.1,
        Array2::zeros((2, 2)),
        &options,
        &mut rng,
    );
    assert!(
        matches!(result, Err(SolverError::InvalidOption { key: "t1", .. })),
        "{result:?}"
    );
    let options = SdeOptions {
        n_steps: 0,
        ..SdeOptions::unit_interval(1)
    };
    let result = sample_flow_sde(
        &mut FnField(velocity),
        &mut score,
        |_t| 0.1,
        Array2::zeros((2, 2)),
        &options,
        &mut rng,
    );
    assert!(
        matches!(result, Err(SolverError::InvalidOption { key: "n_steps", .. })),
        "{result:?}"
    );
}

#[test]
fn euler_maruyama_stops_on_a_non_finite_state_naming_the_time() {
    let mut sde = ScalarNoise {
        drift: FnField(|t: f64, x: &Array1<f64>| {
            if t >= 0.25 {
                x.mapv(|_| f64::INFINITY)
            } else {
                x.clone()
            }
        }),
        sigma: |_t: f64| 0.1,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let options = SdeOptions {
        t0: 0.0,
        t1: 1.0,
        n_steps: 8,
        record: Record::Final,
    };
    let error = euler_maruyama(&mut sde, Array1::zeros(3), &options, &mut rng).unwrap_err();
    assert!(
        matches!(
            error,
            SolverError::NonFiniteState {
                t_reached: 0.25,
                t_attempted: 0.375
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("t = 0.25"), "{error}");
}
