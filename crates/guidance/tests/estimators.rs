//! The divergence-gradient estimators against closed forms: finite differences of an analytic divergence,
//! zero for linear fields (no crash on a root without a gradient), the Gaussian-mixture marginal field of
//! ferroflow-paths, Hutchinson's mean against the exact gradient, and one [`DivergenceEstimator`] value
//! driving both a likelihood's divergence field and a guided field.

use ferroflow_guidance::{
    MixtureVelocity, ModeSeeking, ModeSeekingField, divergence_gradient_exact, divergence_gradient_hutchinson,
};
use ferroflow_models::autograd::{AutogradDivergence, DivergenceEstimator, ProbeDistribution, ProbeSchedule};
use ferroflow_models::{Mlp, MlpConfig, VelocityNet};
use ferroflow_paths::{AffinePath, CondOtScheduler, GaussianMixture, MixtureMarginal};
use ndarray::{Array1, Array2, Array3, array};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

const A: [[f64; 3]; 3] = [[0.9, -0.4, 0.3], [0.5, 1.2, -0.7], [-0.2, 0.6, 0.8]];
const B: [[f64; 3]; 3] = [[0.3, 0.1, -0.2], [-0.4, 0.25, 0.15], [0.05, -0.3, 0.45]];

fn matrix(values: [[f64; 3]; 3]) -> Tensor {
    Tensor::from_slice(values.as_flattened()).reshape([3, 3])
}

/// v_i(x) = tanh((A x)_i) + sum_j B_ij x_j^2, in tensor operations.
fn nonlinear_field(x: &Tensor) -> Tensor {
    x.matmul(&matrix(A).tr()).tanh() + (x * x).matmul(&matrix(B).tr())
}

/// div v(x) = sum_i A_ii (1 - tanh^2((A x)_i)) + 2 B_ii x_i, in plain f64.
fn nonlinear_divergence(x: &[f64; 3]) -> f64 {
    (0..3)
        .map(|i| {
            let a: f64 = (0..3).map(|j| A[i][j] * x[j]).sum();
            A[i][i] * (1.0 - a.tanh().powi(2)) + 2.0 * B[i][i] * x[i]
        })
        .sum()
}

fn points() -> Vec<[f64; 3]> {
    vec![
        [0.3, -0.7, 1.1],
        [-1.2, 0.4, 0.2],
        [0.0, 0.0, 0.0],
        [2.0, -1.5, 0.6],
        [0.8, 0.9, -0.3],
    ]
}

fn batch(points: &[[f64; 3]]) -> Tensor {
    Tensor::from_slice(points.as_flattened()).reshape([points.len() as i64, 3])
}

fn values(tensor: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(tensor.to_kind(Kind::Double).reshape([-1])).unwrap()
}

#[test]
fn exact_gradient_matches_finite_differences_of_the_analytic_divergence() {
    let pts = points();
    let result = divergence_gradient_exact(nonlinear_field, &batch(&pts)).unwrap();
    let gradient = values(&result.gradient);
    let divergence = values(&result.divergence);
    let h = 1e-5;
    for (sample_idx, point) in pts.iter().enumerate() {
        assert!((divergence[sample_idx] - nonlinear_divergence(point)).abs() < 1e-12);
        for k in 0..3 {
            let (mut plus, mut minus) = (*point, *point);
            plus[k] += h;
            minus[k] -= h;
            let expected = -(nonlinear_divergence(&plus) - nonlinear_divergence(&minus)) / (2.0 * h);
            let got = gradient[sample_idx * 3 + k];
            assert!(
                (got - expected).abs() < 1e-7,
                "sample {sample_idx} coordinate {k}: {got} vs {expected}"
            );
        }
    }
    // The velocity comes back too, and detached.
    assert!(!result.gradient.requires_grad() && !result.velocity.requires_grad());
    assert!(
        result
            .velocity
            .allclose(&nonlinear_field(&batch(&pts)), 1e-12, 1e-12, false)
    );
}

#[test]
fn linear_fields_have_zero_gradient_without_crashing() {
    let x = batch(&points());
    // An analytic linear field: the divergence is a constant without a gradient.
    let linear = |x: &Tensor| x.matmul(&matrix(A).tr());
    let exact = divergence_gradient_exact(linear, &x).unwrap();
    let probes = ProbeDistribution::Rademacher.draw(3, &x, &mut ChaCha8Rng::seed_from_u64(1));
    let estimate = divergence_gradient_hutchinson(linear, &x, &probes).unwrap();
    for result in [&exact, &estimate] {
        assert_eq!(result.gradient.size(), x.size());
        assert_eq!(result.gradient.abs().max().double_value(&[]), 0.0);
    }
    let trace = A[0][0] + A[1][1] + A[2][2];
    assert!(
        values(&exact.divergence)
            .iter()
            .all(|d| (d - trace).abs() < 1e-12)
    );

    // A linear layer whose weight requires a gradient: the divergence then has a gradient (through the
    // weight) but does not depend on x.
    let weight = matrix(A).set_requires_grad(true);
    let layer = |x: &Tensor| x.matmul(&weight.tr()) + 1.0;
    let result = divergence_gradient_exact(layer, &x).unwrap();
    assert_eq!(result.gradient.abs().max().double_value(&[]), 0.0);
    let probes = ProbeDistribution::Gaussian.draw(2, &x, &mut ChaCha8Rng::seed_from_u64(2));
    let result = divergence_gradient_hutchinson(layer, &x, &probes).unwrap();
    assert_eq!(result.gradient.abs().max().double_value(&[]), 0.0);
}

#[test]
fn the_caller_input_stays_out_of_the_graph_and_samples_do_not_mix() {
    tch::manual_seed(3);
    let net = Mlp::new(MlpConfig::benchmark(4), Device::Cpu).unwrap();
    let times = Tensor::from_slice(&[0.4f32]);
    let field = |x: &Tensor| net.forward(x, &times);
    let x = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
    let all = divergence_gradient_exact(field, &x).unwrap();
    assert!(!x.requires_grad());
    for sample_idx in 0..6 {
        let one = divergence_gradient_exact(field, &x.narrow(0, sample_idx, 1)).unwrap();
        assert!(
            one.gradient
                .allclose(&all.gradient.narrow(0, sample_idx, 1), 1e-5, 1e-6, false)
        );
    }
    assert!(all.gradient.abs().max().double_value(&[]) > 0.0);
}

fn mixture() -> GaussianMixture {
    GaussianMixture::new(
        array![0.5, 0.3, 0.2],
        array![[1.5, 0.0], [-1.0, 1.0], [0.0, -2.0]],
        Array3::from_shape_vec(
            (3, 2, 2),
            vec![0.3, 0.1, 0.1, 0.2, 0.5, -0.2, -0.2, 0.4, 0.1, 0.0, 0.0, 0.6],
        )
        .unwrap(),
    )
    .unwrap()
}

fn cond_ot() -> AffinePath<CondOtScheduler> {
    AffinePath::new(CondOtScheduler, 0.0).unwrap()
}

#[test]
fn mixture_field_matches_ferroflow_paths_and_its_divergence_matches_finite_differences() {
    let marginal = MixtureMarginal::new(mixture(), cond_ot(), 1.0).unwrap();
    let field = MixtureVelocity::new(&mixture(), cond_ot(), 1.0).unwrap();
    let pts: Array2<f64> = array![[0.2, -0.4], [1.4, 0.3], [-0.9, 1.2], [0.1, -1.7], [2.5, 2.5]];
    let x = Tensor::from_slice(pts.as_slice().unwrap()).reshape([5, 2]);
    for t in [0.1, 0.5, 0.9] {
        let times = Array1::from_elem(5, t);
        let closed_form = marginal.velocity(pts.view(), times.view()).unwrap();
        let tensor = values(&field.velocity(&x, t).unwrap());
        for (got, expected) in tensor.iter().zip(closed_form.iter()) {
            assert!((got - expected).abs() < 1e-10, "t = {t}: {got} vs {expected}");
        }
        let log_density = values(&field.log_density(&x, t).unwrap());
        let expected = marginal.log_density(pts.view(), times.view()).unwrap();
        for (got, expected) in log_density.iter().zip(expected.iter()) {
            assert!((got - expected).abs() < 1e-10);
        }

        let result = divergence_gradient_exact(|x| field.velocity(x, t).unwrap(), &x).unwrap();
        let divergence = values(&result.divergence);
        let h = 1e-5;
        let fd_divergence = |point: [f64; 2]| -> f64 {
            let mut total = 0.0;
            for k in 0..2 {
                let (mut plus, mut minus) = (point, point);
                plus[k] += h;
                minus[k] -= h;
                let (mut v_plus, mut v_minus) = ([0.0; 2], [0.0; 2]);
                marginal.velocity_at(&plus, t, &mut v_plus).unwrap();
                marginal.velocity_at(&minus, t, &mut v_minus).unwrap();
                total += (v_plus[k] - v_minus[k]) / (2.0 * h);
            }
            total
        };
        for (sample_idx, row) in pts.rows().into_iter().enumerate() {
            let expected = fd_divergence([row[0], row[1]]);
            let got = divergence[sample_idx];
            assert!(
                (got - expected).abs() < 1e-6 * (1.0 + expected.abs()),
                "t = {t}: {got} vs {expected}"
            );
        }
        // And the gradient of the divergence against second differences of the closed form.
        let gradient = values(&result.gradient);
        let h2 = 1e-3;
        for (sample_idx, row) in pts.rows().into_iter().enumerate() {
            for k in 0..2 {
                let (mut plus, mut minus) = ([row[0], row[1]], [row[0], row[1]]);
                plus[k] += h2;
                minus[k] -= h2;
                let expected = -(fd_divergence(plus) - fd_divergence(minus)) / (2.0 * h2);
                let got = gradient[sample_idx * 2 + k];
                assert!(
                    (got - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                    "t = {t}: {got} vs {expected}"
                );
            }
        }
    }
    assert!(
        field.velocity(&x, 1.0).is_err(),
        "v* is singular at t = 1 without noise"
    );
}

#[test]
fn hutchinson_mean_is_within_four_standard_errors_of_the_exact_gradient() {
    let pts = points();
    let x = batch(&pts);
    let exact = values(&divergence_gradient_exact(nonlinear_field, &x).unwrap().gradient);
    for (kind, seed) in [
        (ProbeDistribution::Rademacher, 11),
        (ProbeDistribution::Gaussian, 12),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n_runs = 400;
        let runs: Vec<Vec<f64>> = (0..n_runs)
            .map(|_| {
                let probes = kind.draw(1, &x, &mut rng);
                values(
                    &divergence_gradient_hutchinson(nonlinear_field, &x, &probes)
                        .unwrap()
                        .gradient,
                )
            })
            .collect();
        for (element, &target) in exact.iter().enumerate() {
            let mean = runs.iter().map(|r| r[element]).sum::<f64>() / n_runs as f64;
            let variance =
                runs.iter().map(|r| (r[element] - mean).powi(2)).sum::<f64>() / (n_runs - 1) as f64;
            let standard_error = (variance / n_runs as f64).sqrt();
            if standard_error == 0.0 {
                // Rademacher probes make the diagonal terms exact; nothing random is left for this entry.
                assert!(
                    (mean - target).abs() < 1e-10,
                    "{kind:?} element {element}: {mean} vs {target}"
                );
                continue;
            }
            let z = (mean - target).abs() / standard_error;
            assert!(
                z < 4.0,
                "{kind:?} element {element}: mean {mean}, exact {target}, z = {z}"
            );
        }
        // The estimator is genuinely random (not the exact value in disguise).
        assert!(runs[0] != runs[1]);
    }
}

#[test]
fn many_probes_at_once_average_like_separate_runs() {
    let x = batch(&points());
    let exact = divergence_gradient_exact(nonlinear_field, &x).unwrap();
    let probes = ProbeDistribution::Rademacher.draw(4000, &x, &mut ChaCha8Rng::seed_from_u64(5));
    let estimate = divergence_gradient_hutchinson(nonlinear_field, &x, &probes).unwrap();
    let error = (&estimate.gradient - &exact.gradient)
        .abs()
        .max()
        .double_value(&[]);
    assert!(error < 0.05, "max error {error}");
}

/// The likelihood's use of an estimator: a divergence field with probes drawn once from `seed`, evaluated
/// twice at `x` (the same probes both times).
fn likelihood_divergences(estimator: DivergenceEstimator, seed: u64, x: &Tensor) -> [Vec<f64>; 2] {
    let velocity = |x: &Tensor, _t: f64| nonlinear_field(x);
    let mut field = AutogradDivergence::new(velocity, estimator, ProbeSchedule::fixed(seed)).unwrap();
    [0, 1].map(|_| values(&field.velocity_and_divergence(0.0, x).unwrap().1))
}

/// Guidance's use of an estimator: a mode-seeking field with `lambda = 0.5`, probes drawn from `seed` afresh
/// at every evaluation, evaluated twice at `x`.
fn guided_velocities(estimator: DivergenceEstimator, seed: u64, x: &Tensor) -> [Vec<f64>; 2] {
    let mut config = ModeSeeking::exact(0.5);
    config.estimator = estimator;
    config.seed = seed;
    let velocity = |x: &Tensor, _t: f64| nonlinear_field(x);
    let mut field = ModeSeekingField::new(velocity, config).unwrap();
    [0, 1].map(|_| values(&field.guided_velocity(0.0, x).unwrap()))
}

fn assert_pinned(got: &[f64], pinned: &[f64], what: &str) {
    assert_eq!(got.len(), pinned.len(), "{what}");
    for (g, p) in got.iter().zip(pinned) {
        assert!(
            (g - p).abs() < 1e-12 * (1.0 + p.abs()),
            "{what}: {got:?} vs {pinned:?}"
        );
    }
}

#[test]
fn one_estimator_value_drives_likelihood_and_guidance_as_the_separate_types_did() {
    // The numbers were computed, in f64, by the code before the estimator types were merged: the
    // likelihood's `DivergenceMethod::Hutchinson(HutchinsonOptions { refresh: Fixed, seed: 11, .. })` and
    // guidance's `Estimator::Hutchinson { .. }` with `seed = 11`. The probes come from the same ChaCha8 stream
    // in both uses, so a change in how either draws them shows here.
    let x = batch(&points()[..2]);
    let gaussian = DivergenceEstimator::Hutchinson {
        probes: 3,
        distribution: ProbeDistribution::Gaussian,
    };
    let rademacher = DivergenceEstimator::Hutchinson {
        probes: 2,
        distribution: ProbeDistribution::Rademacher,
    };
    let cases: [(DivergenceEstimator, [f64; 2], [[f64; 6]; 2]); 2] = [
        (
            gaussian,
            [3.560030756859636, 3.470048797221279],
            [
                [
                    0.3203472057888623,
                    -1.55052900398708,
                    0.4319394453387084,
                    -0.7897613030451809,
                    -1.5194427897473775,
                    0.42629151771111673,
                ],
                [
                    0.4604128020611695,
                    -0.6717157259039718,
                    0.5995201299701196,
                    -0.5702462304709619,
                    -1.0905887799689826,
                    0.6405754879849742,
                ],
            ],
        ),
        (
            rademacher,
            [1.7051705828601664, 2.9924401414219455],
            [
                [
                    0.5994660910344614,
                    -1.2500417851894223,
                    0.8005636686413057,
                    -0.6685783555395448,
                    -1.3827048117464749,
                    0.6469707098779056,
                ],
                [
                    0.31189825891051987,
                    -1.020580589823719,
                    0.6021767313022699,
                    -1.1401369194257998,
                    -1.7365107646583589,
                    0.6143359216148759,
                ],
            ],
        ),
    ];
    for (estimator, divergence_pin, guided_pin) in cases {
        let [first, second] = likelihood_divergences(estimator, 11, &x);
        assert_pinned(&first, &divergence_pin, &format!("{estimator}: likelihood"));
        assert_eq!(first, second, "{estimator}: fixed probes give one value");
        // The guided field's first evaluation draws the likelihood's probes: the same divergence underlies it.
        let probes = match estimator {
            DivergenceEstimator::Hutchinson { probes, distribution } => {
                distribution.draw(probes, &x, &mut ChaCha8Rng::seed_from_u64(11))
            }
            DivergenceEstimator::Exact => unreachable!("only Hutchinson cases are pinned"),
        };
        let direct = divergence_gradient_hutchinson(nonlinear_field, &x, &probes).unwrap();
        assert_pinned(
            &values(&direct.divergence),
            &divergence_pin,
            &format!("{estimator}: guidance"),
        );
        let guided = guided_velocities(estimator, 11, &x);
        for (evaluation, pinned) in guided.iter().zip(&guided_pin) {
            assert_pinned(evaluation, pinned, &format!("{estimator}: guided velocity"));
        }
        assert_ne!(
            guided[0], guided[1],
            "{estimator}: fresh probes at every evaluation"
        );
    }
}

/// `v_i(x) = tanh(r_i x_i) + 0.1 x_i^2`: nonlinear, with a diagonal Jacobian.
fn diagonal_field(x: &Tensor) -> Tensor {
    let rates = Tensor::from_slice(&[0.5f64, -0.3, 0.8]).reshape([1, 3]);
    (x * rates).tanh() + x * x * 0.1
}

#[test]
fn rademacher_hutchinson_is_exact_for_a_diagonal_jacobian_in_both_uses() {
    // `e^T J e = sum_i J_ii e_i^2 = tr J` for a diagonal `J` and entries `e_i = +-1`, whatever the draw; so
    // likelihood and guidance must both reproduce the exact estimator with one probe.
    let x = batch(&points());
    let velocity = |x: &Tensor, _t: f64| diagonal_field(x);
    let divergence = |estimator| {
        let mut field = AutogradDivergence::new(velocity, estimator, ProbeSchedule::fixed(3)).unwrap();
        values(&field.velocity_and_divergence(0.0, &x).unwrap().1)
    };
    let guided = |estimator| {
        let mut config = ModeSeeking::exact(0.5);
        config.estimator = estimator;
        config.seed = 3;
        let mut field = ModeSeekingField::new(velocity, config).unwrap();
        values(&field.guided_velocity(0.0, &x).unwrap())
    };
    let exact = DivergenceEstimator::Exact;
    let rademacher = DivergenceEstimator::hutchinson(1);
    let gaussian = DivergenceEstimator::Hutchinson {
        probes: 1,
        distribution: ProbeDistribution::Gaussian,
    };
    assert_pinned(&divergence(rademacher), &divergence(exact), "likelihood");
    assert_pinned(&guided(rademacher), &guided(exact), "guidance");
    // Gaussian probes have `e_i^2 != 1`: the same check has teeth.
    let off: f64 = divergence(gaussian)
        .iter()
        .zip(divergence(exact))
        .map(|(g, e)| (g - e).abs())
        .sum();
    assert!(off > 1e-3, "Gaussian probes should not be exact here ({off})");
}
