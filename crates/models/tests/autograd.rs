//! Tests of the autograd helpers against closed forms and finite differences: divergences of linear fields
//! (traces, including the constant-divergence case that must not crash), of nonlinear fields, Hutchinson's
//! estimator within its standard error, gradients of divergences, the divergence field in a likelihood
//! solve, and the [`DivergenceEstimator`] settings (TOML form, strict parsing, validation, display).

use ferroflow_models::ModelError;
use ferroflow_models::autograd::{
    AutogradDivergence, DivergenceEstimator, ProbeDistribution, ProbeRefresh, ProbeSchedule,
    divergence_exact, divergence_hutchinson, gaussian_probes, rademacher_probes, vjp,
};
use ferroflow_solvers::{Method, OdeOptions, log_likelihood, standard_normal_log_density};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn values(tensor: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(tensor.to_kind(Kind::Double).reshape([-1])).unwrap()
}

/// A seeded random `[rows, cols]` matrix in f64.
fn random_matrix(rows: i64, cols: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([rows, cols], F64)
}

/// `x -> x A^T + b`.
fn linear(a: &Tensor, b: &Tensor) -> impl Fn(&Tensor) -> Tensor {
    let (a, b) = (a.shallow_clone(), b.shallow_clone());
    move |x: &Tensor| x.matmul(&a.tr()) + &b
}

/// `x -> tanh(x A^T + b) * s + 0.1 x^2`, elementwise square: a nonlinear field with a full Jacobian.
fn nonlinear<'a>(a: &'a Tensor, b: &'a Tensor) -> impl Fn(&Tensor) -> Tensor + Copy + 'a {
    move |x: &Tensor| (x.matmul(&a.tr()) + b).tanh() * 1.5 + x * x * 0.1
}

/// Central finite-difference divergence of `f` at each sample of `x` (`[batch, dim]`, f64).
fn fd_divergence(f: impl Fn(&Tensor) -> Tensor, x: &Tensor, h: f64) -> Vec<f64> {
    let (batch, dim) = (x.size()[0], x.size()[1]);
    let mut div = vec![0.0; batch as usize];
    for coordinate in 0..dim {
        let shift = Tensor::zeros([batch, dim], F64);
        let _ = shift.select(1, coordinate).fill_(h);
        let plus = tch::no_grad(|| f(&(x + &shift)));
        let minus = tch::no_grad(|| f(&(x - &shift)));
        let column = (plus - minus).select(1, coordinate) / (2.0 * h);
        for (d, c) in div.iter_mut().zip(values(&column)) {
            *d += c;
        }
    }
    div
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (idx, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}[{idx}]: got {g}, want {w} (tol {tol})"
        );
    }
}

#[test]
fn exact_divergence_of_linear_fields_is_the_trace() {
    for (seed, dim) in [(1, 1), (2, 2), (3, 5), (4, 17)] {
        let a = random_matrix(dim, dim, seed);
        let b = random_matrix(1, dim, seed + 100);
        let x = random_matrix(7, dim, seed + 200);
        let trace = values(&a.trace())[0];
        let (v, div) = divergence_exact(linear(&a, &b), &x, false).unwrap();
        assert_eq!(v.size(), x.size());
        assert_eq!(div.size(), vec![7]);
        assert_close(&values(&div), &[trace; 7], 1e-10, &format!("div, dim {dim}"));
        // The divergence is a constant: with create_graph it has no gradient, and differentiating it must
        // return zeros instead of backpropagating a root without a gradient (which crashes libtorch).
        let x_leaf = x.copy().set_requires_grad(true);
        let (_, div) = divergence_exact(linear(&a, &b), &x_leaf, true).unwrap();
        assert_close(&values(&div), &[trace; 7], 1e-10, "div with create_graph");
        let grad = vjp(&div, &x_leaf, &div.ones_like(), false).unwrap();
        assert_eq!(grad.size(), x.size());
        assert!(values(&grad).iter().all(|&g| g == 0.0));
    }
}

#[test]
fn a_field_that_ignores_x_has_zero_divergence() {
    let x = random_matrix(4, 3, 5);
    let constant = Tensor::ones([4, 3], F64);
    let (_, div) = divergence_exact(|_x: &Tensor| constant.shallow_clone(), &x, true).unwrap();
    assert!(values(&div).iter().all(|&d| d == 0.0));
    let probes = rademacher_probes(3, &x, &mut ChaCha8Rng::seed_from_u64(1));
    let (_, div) = divergence_hutchinson(|_x: &Tensor| constant.shallow_clone(), &x, &probes, false).unwrap();
    assert!(values(&div).iter().all(|&d| d == 0.0));
}

#[test]
fn exact_divergence_of_a_nonlinear_field_matches_finite_differences() {
    let dim = 6;
    let a = random_matrix(dim, dim, 11) * 0.7;
    let b = random_matrix(1, dim, 12);
    let x = random_matrix(9, dim, 13);
    let field = nonlinear(&a, &b);
    let (_, div) = divergence_exact(field, &x, false).unwrap();
    let fd = fd_divergence(field, &x, 1e-5);
    assert_close(&values(&div), &fd, 1e-7, "exact vs FD");
}

#[test]
fn samples_of_any_shape_are_flattened() {
    // [batch, 2, 3] samples through a field that acts on the flattened sample.
    let a = random_matrix(6, 6, 21) * 0.5;
    let b = random_matrix(1, 6, 22);
    let x = random_matrix(5, 6, 23);
    let field = nonlinear(&a, &b);
    let x_shaped = x.reshape([5, 2, 3]);
    let (v, div) = divergence_exact(
        |x: &Tensor| field(&x.reshape([5, 6])).reshape([5, 2, 3]),
        &x_shaped,
        false,
    )
    .unwrap();
    assert_eq!(v.size(), vec![5, 2, 3]);
    let (_, flat_div) = divergence_exact(field, &x, false).unwrap();
    assert_close(&values(&div), &values(&flat_div), 1e-12, "shaped vs flat");
}

#[test]
fn vjp_matches_the_jacobian_transpose_times_the_cotangent() {
    let dim = 4;
    let a = random_matrix(dim, dim, 31);
    let b = random_matrix(1, dim, 32);
    let x = random_matrix(3, dim, 33).set_requires_grad(true);
    let cotangent = random_matrix(3, dim, 34);
    let v = linear(&a, &b)(&x);
    // For x A^T + b the VJP of each sample is c A.
    let got = vjp(&v, &x, &cotangent, false).unwrap();
    assert_close(&values(&got), &values(&cotangent.matmul(&a)), 1e-12, "vjp");
    // The graph is kept: a second product from the same forward pass works.
    let again = vjp(&v, &x, &cotangent, false).unwrap();
    assert_close(&values(&again), &values(&got), 0.0, "second vjp");
    // An output without a gradient has a zero Jacobian.
    let detached = v.detach();
    let zeros = vjp(&detached, &x, &cotangent, false).unwrap();
    assert!(values(&zeros).iter().all(|&z| z == 0.0));
}

#[test]
fn vjp_refuses_bad_inputs() {
    let x = random_matrix(3, 2, 41);
    let leaf = x.copy().set_requires_grad(true);
    let v = &leaf * 2.0;
    let wrong = Tensor::ones([3, 3], F64);
    assert!(matches!(
        vjp(&v, &leaf, &wrong, false),
        Err(ModelError::Shape {
            name: "cotangent",
            ..
        })
    ));
    // An input outside the graph is refused with a message, not a crash.
    let err = vjp(&v, &x, &v.ones_like(), false).unwrap_err();
    assert!(matches!(err, ModelError::Autograd { .. }));
    assert!(err.to_string().contains("[3, 2]"), "{err}");
    // Probes of the wrong shape are refused with both shapes named.
    let probes = Tensor::ones([2, 3, 5], F64);
    let err = divergence_hutchinson(|x: &Tensor| x * 2.0, &x, &probes, false).unwrap_err();
    assert!(
        err.to_string().contains("[2, 3, 5]") && err.to_string().contains("[3, 2]"),
        "{err}"
    );
    // A field that changes the shape is refused.
    let err = divergence_exact(
        |x: &Tensor| x.sum_dim_intlist([1i64].as_slice(), false, Kind::Double),
        &x,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Shape { name: "velocity", .. }), "{err}");
}

/// The per-probe Hutchinson estimates of one sample batch, one row per probe.
fn per_probe_estimates(
    field: impl Fn(&Tensor) -> Tensor + Copy,
    x: &Tensor,
    probes: &Tensor,
) -> Vec<Vec<f64>> {
    (0..probes.size()[0])
        .map(|probe_idx| {
            let (_, estimate) =
                divergence_hutchinson(field, x, &probes.narrow(0, probe_idx, 1), false).unwrap();
            values(&estimate)
        })
        .collect()
}

#[test]
fn hutchinson_is_unbiased_within_four_standard_errors() {
    let dim = 5;
    let a = random_matrix(dim, dim, 51) * 0.8;
    let b = random_matrix(1, dim, 52);
    let x = random_matrix(3, dim, 53);
    let field = nonlinear(&a, &b);
    let (_, exact) = divergence_exact(field, &x, false).unwrap();
    let exact = values(&exact);
    let n_probes = 4000;
    for kind in [ProbeDistribution::Rademacher, ProbeDistribution::Gaussian] {
        let mut rng = ChaCha8Rng::seed_from_u64(54);
        let probes = kind.draw(n_probes, &x, &mut rng);
        assert_eq!(probes.size(), vec![n_probes as i64, 3, dim]);
        let (_, averaged) = divergence_hutchinson(field, &x, &probes, false).unwrap();
        let averaged = values(&averaged);
        let rows = per_probe_estimates(field, &x, &probes);
        for sample_idx in 0..3 {
            let column: Vec<f64> = rows.iter().map(|row| row[sample_idx]).collect();
            let mean = column.iter().sum::<f64>() / n_probes as f64;
            let variance = column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n_probes as f64 - 1.0);
            let standard_error = (variance / n_probes as f64).sqrt();
            // One call with K probes averages exactly what K single-probe calls give.
            assert!(
                (averaged[sample_idx] - mean).abs() < 1e-9,
                "{kind:?}: average of probes"
            );
            assert!(
                standard_error > 1e-4,
                "{kind:?}: the estimator should be noisy here"
            );
            let error = (mean - exact[sample_idx]).abs();
            assert!(
                error < 4.0 * standard_error,
                "{kind:?} sample {sample_idx}: mean {mean}, exact {}, se {standard_error}",
                exact[sample_idx]
            );
        }
    }
}

#[test]
fn rademacher_probes_are_signs_and_reproducible() {
    let like = Tensor::zeros([10, 7], (Kind::Float, Device::Cpu));
    let probes = rademacher_probes(100, &like, &mut ChaCha8Rng::seed_from_u64(3));
    assert_eq!(probes.size(), vec![100, 10, 7]);
    assert_eq!(probes.kind(), Kind::Float);
    let signs = values(&probes);
    assert!(signs.iter().all(|&s| s == 1.0 || s == -1.0));
    let mean = signs.iter().sum::<f64>() / signs.len() as f64;
    assert!(mean.abs() < 4.0 / (signs.len() as f64).sqrt(), "mean {mean}");
    let again = rademacher_probes(100, &like, &mut ChaCha8Rng::seed_from_u64(3));
    assert_eq!(values(&again), signs);
    let other = rademacher_probes(100, &like, &mut ChaCha8Rng::seed_from_u64(4));
    assert_ne!(values(&other), signs);
    let gaussian = values(&gaussian_probes(100, &like, &mut ChaCha8Rng::seed_from_u64(3)));
    let second_moment = gaussian.iter().map(|g| g * g).sum::<f64>() / gaussian.len() as f64;
    assert!((second_moment - 1.0).abs() < 0.1, "E[e^2] = {second_moment}");
}

/// Central finite differences of the per-sample sum of `div(x)` (each sample's divergence depends only on
/// that sample, so this is the gradient of each sample's divergence).
fn fd_gradient(divergence: impl Fn(&Tensor) -> Tensor, x: &Tensor, h: f64) -> Vec<f64> {
    let (batch, dim) = (x.size()[0], x.size()[1]);
    let mut grad = vec![0.0; (batch * dim) as usize];
    for coordinate in 0..dim {
        let shift = Tensor::zeros([batch, dim], F64);
        let _ = shift.select(1, coordinate).fill_(h);
        let plus = values(&divergence(&(x + &shift)));
        let minus = values(&divergence(&(x - &shift)));
        for sample_idx in 0..batch as usize {
            grad[sample_idx * dim as usize + coordinate as usize] =
                (plus[sample_idx] - minus[sample_idx]) / (2.0 * h);
        }
    }
    grad
}

#[test]
fn gradient_of_the_divergence_matches_finite_differences() {
    let dim = 4;
    let a = random_matrix(dim, dim, 61) * 0.9;
    let b = random_matrix(1, dim, 62);
    let x = random_matrix(5, dim, 63);
    let field = nonlinear(&a, &b);
    let exact_div = |x: &Tensor| divergence_exact(field, x, false).unwrap().1;
    let x_leaf = x.copy().set_requires_grad(true);
    let (_, div) = divergence_exact(field, &x_leaf, true).unwrap();
    assert!(div.requires_grad());
    let grad = vjp(&div, &x_leaf, &div.ones_like(), false).unwrap();
    assert_close(
        &values(&grad),
        &fd_gradient(exact_div, &x, 1e-5),
        1e-6,
        "grad of exact div",
    );

    // The same through Hutchinson's estimate with fixed probes: one more backward pass through its graph.
    let probes = rademacher_probes(3, &x, &mut ChaCha8Rng::seed_from_u64(64));
    let estimate = |x: &Tensor| divergence_hutchinson(field, x, &probes, false).unwrap().1;
    let x_leaf = x.copy().set_requires_grad(true);
    let (_, div) = divergence_hutchinson(field, &x_leaf, &probes, true).unwrap();
    let grad = vjp(&div, &x_leaf, &div.ones_like(), false).unwrap();
    assert_close(
        &values(&grad),
        &fd_gradient(estimate, &x, 1e-5),
        1e-6,
        "grad of Hutchinson",
    );
}

/// `dx/dt = a * x` per coordinate (diagonal `a`) from N(0, I): `x1 = e^a x0`, so
/// `log p1(x) = log N(e^{-a} x; 0, I) - sum a`.
fn diagonal_linear_log_density(x: &[f64], rates: &[f64]) -> f64 {
    x.iter()
        .zip(rates)
        .map(|(&xi, &a)| {
            let z = xi * (-a).exp();
            -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln() - a
        })
        .sum()
}

#[test]
fn divergence_field_gives_the_closed_form_likelihood_of_a_linear_flow() {
    let rates = [0.5f64, -0.3, 0.8];
    let rate_tensor = Tensor::from_slice(&rates).to_kind(Kind::Float).reshape([1, 3]);
    let velocity = |x: &Tensor, _t: f64| x * &rate_tensor;
    tch::manual_seed(71);
    let x1 = Tensor::randn([50, 3], (Kind::Float, Device::Cpu)) * 1.3;
    let points = values(&x1);
    let want: Vec<f64> = points
        .chunks(3)
        .map(|p| diagonal_linear_log_density(p, &rates))
        .collect();
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-7, 1e-7);
    // Rademacher probes give e^T diag(a) e = sum a exactly, so every estimator must match here; the
    // divergence is a constant (no gradient), which the field must survive at every evaluation.
    let methods = [
        (DivergenceEstimator::Exact, ProbeSchedule::default()),
        (DivergenceEstimator::hutchinson(1), ProbeSchedule::fixed(7)),
        (
            DivergenceEstimator::Hutchinson {
                probes: 2,
                distribution: ProbeDistribution::Rademacher,
            },
            ProbeSchedule::every_step(2, 8),
        ),
    ];
    for method @ (estimator, schedule) in methods {
        let options = match schedule.refresh {
            ProbeRefresh::EveryStep { .. } => OdeOptions::fixed(Method::Midpoint, 400),
            ProbeRefresh::Fixed => options.clone(),
        };
        let mut field = AutogradDivergence::new(velocity, estimator, schedule).unwrap();
        let result = log_likelihood(&mut field, &x1, standard_normal_log_density, &options).unwrap();
        assert_eq!(field.evals(), result.stats.field_evals, "{method:?}");
        assert_close(&values(&result.log_density), &want, 2e-4, &format!("{method:?}"));
    }
}

#[test]
fn every_step_refresh_redraws_and_fixed_does_not() {
    // A field whose Hutchinson estimate depends on the probes: a full (non-diagonal) linear map.
    let a = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).reshape([2, 2]);
    let x = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
    let estimates = |refresh| {
        let estimator = DivergenceEstimator::Hutchinson {
            probes: 1,
            distribution: ProbeDistribution::Gaussian,
        };
        let schedule = ProbeSchedule { refresh, seed: 9 };
        let mut field =
            AutogradDivergence::new(|x: &Tensor, _t: f64| x.matmul(&a), estimator, schedule).unwrap();
        (0..4)
            .map(|_| values(&field.velocity_and_divergence(0.0, &x).unwrap().1)[0])
            .collect::<Vec<f64>>()
    };
    let fixed = estimates(ProbeRefresh::Fixed);
    assert!(fixed.iter().all(|&e| e == fixed[0]), "{fixed:?}");
    let every_two = estimates(ProbeRefresh::EveryStep { evals_per_step: 2 });
    assert_eq!(every_two[0], every_two[1]);
    assert_eq!(every_two[2], every_two[3]);
    assert_ne!(every_two[1], every_two[2]);
    assert!(
        AutogradDivergence::new(
            |x: &Tensor, _t: f64| x * 1.0,
            DivergenceEstimator::hutchinson(0),
            ProbeSchedule::fixed(1)
        )
        .is_err()
    );
}

/// The estimator as a key of a settings file, as likelihood and guidance settings hold it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    estimator: DivergenceEstimator,
}

fn parse(estimator: &str) -> Result<DivergenceEstimator, toml::de::Error> {
    toml::from_str::<Settings>(&format!("estimator = {estimator}")).map(|settings| settings.estimator)
}

#[test]
fn every_estimator_round_trips_through_toml() {
    let estimators = [
        DivergenceEstimator::Exact,
        DivergenceEstimator::hutchinson(1),
        DivergenceEstimator::Hutchinson {
            probes: 4,
            distribution: ProbeDistribution::Gaussian,
        },
    ];
    for estimator in estimators {
        let text = toml::to_string(&Settings { estimator }).unwrap();
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.estimator, estimator, "{text}");
    }
    let text = toml::to_string(&Settings {
        estimator: estimators[2],
    })
    .unwrap();
    for key in [
        "kind = \"hutchinson\"",
        "probes = 4",
        "distribution = \"gaussian\"",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
    assert_eq!(parse("{ kind = \"exact\" }").unwrap(), DivergenceEstimator::Exact);
    // Rademacher when the distribution is left out.
    assert_eq!(
        parse("{ kind = \"hutchinson\", probes = 2 }").unwrap(),
        DivergenceEstimator::hutchinson(2)
    );
    assert_eq!(DivergenceEstimator::default(), DivergenceEstimator::Exact);
}

#[test]
fn the_old_guidance_key_probe_still_parses() {
    assert_eq!(
        parse("{ kind = \"hutchinson\", probes = 3, probe = \"gaussian\" }").unwrap(),
        DivergenceEstimator::Hutchinson {
            probes: 3,
            distribution: ProbeDistribution::Gaussian,
        }
    );
}

#[test]
fn keys_of_another_kind_unknown_keys_and_missing_probes_are_refused() {
    for bad in [
        "{ kind = \"exact\", probes = 3 }",
        "{ kind = \"exact\", distribution = \"gaussian\" }",
        "{ kind = \"exact\", probe = \"gaussian\" }",
        "{ kind = \"hutchinson\" }",
        "{ kind = \"hutchinson\", distribution = \"rademacher\" }",
        "{ kind = \"hutchinson\", probes = 2, n_probes = 2 }",
        "{ kind = \"hutchinson\", probes = 2, distribution = \"uniform\" }",
        "{ kind = \"hutchinson\", probes = 2, probe = \"gaussian\", distribution = \"gaussian\" }",
        "{ kind = \"stochastic\" }",
        "{ probes = 2 }",
    ] {
        assert!(parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn zero_probes_are_refused_naming_the_key() {
    let parsed = parse("{ kind = \"hutchinson\", probes = 0 }").unwrap();
    let err = parsed.validate().unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::InvalidConfig {
                key: "estimator.probes",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("estimator.probes"), "{err}");
    assert!(DivergenceEstimator::Exact.validate().is_ok());
    assert!(DivergenceEstimator::hutchinson(1).validate().is_ok());
    let err = ProbeSchedule::every_step(0, 1).validate().unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::InvalidConfig {
                key: "refresh.evals_per_step",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn estimators_read_well_in_reports() {
    assert_eq!(DivergenceEstimator::Exact.to_string(), "exact");
    assert_eq!(
        DivergenceEstimator::hutchinson(1).to_string(),
        "hutchinson K=1 (rademacher)"
    );
    let gaussian = DivergenceEstimator::Hutchinson {
        probes: 16,
        distribution: ProbeDistribution::Gaussian,
    };
    assert_eq!(gaussian.to_string(), "hutchinson K=16 (gaussian)");
}
