//! A trained MLP's sampling and likelihood through the fused kernel's tile-by-tile solves give the numbers
//! of the step-by-step solves (the solver's stepper over the kernel's velocity and divergence), for the
//! fixed-step methods they take, batch sizes that do not fill the last tile, several chunks, exact and
//! Hutchinson divergences, and one or two threads; and a field that leaves the finite numbers is reported at
//! the step where it does, as the stepper reports it.

use ferroflow_engine::config::{
    DataSection, FlowSection, ModelSection, RunSection, SampleSection, TrainSection,
};
use ferroflow_engine::data::Dataset;
use ferroflow_engine::sample::{TrainedFlow, integrate_unit_interval};
use ferroflow_engine::train::{MODEL_FILE, build_model};
use ferroflow_solvers::{Method, OdeOptions, SolverError};
use tch::{Device, Kind, Tensor};

fn flow_in(dir: &std::path::Path, weights_scale: f64) -> TrainedFlow {
    std::fs::create_dir_all(dir).unwrap();
    let config = ferroflow_engine::RunConfig {
        run: RunSection::named("tiles", dir),
        data: DataSection {
            source: Dataset::Gaussian { dim: 2, std: 1.0 },
            target: Dataset::EightGaussians {},
            manifold: None,
        },
        flow: FlowSection::default(),
        model: ModelSection::default(),
        train: TrainSection::default(),
        sample: SampleSection::default(),
    };
    let net = build_model(&config).unwrap();
    let flat = tch::no_grad(|| net.params().flat() * weights_scale);
    ferroflow_models::checkpoint::save_tensors(&net.params().named_of(&flat), &dir.join(MODEL_FILE)).unwrap();
    TrainedFlow::from_config(config, dir).unwrap()
}

fn step_by_step(flow: &TrainedFlow, x0: &Tensor, options: &OdeOptions) -> Result<Tensor, SolverError> {
    let mut field = |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(flow.velocity(x, t)) };
    integrate_unit_interval(&mut field, x0.copy(), options, None).map(|s| s.state)
}

#[test]
fn the_tile_by_tile_solve_gives_the_step_by_step_numbers() {
    let dir = std::env::temp_dir().join(format!("ferroflow-tiles-{}", std::process::id()));
    let mut flow = flow_in(&dir, 1.0);
    for threads in [1, 2] {
        flow.threads = ferroflow_engine::threads::Threads::Fixed(threads);
        for (method, steps) in [
            (Method::Euler, 7),
            (Method::Midpoint, 5),
            (Method::Rk4, 3),
            (Method::Heun, 4),
        ] {
            for n in [1, 255, 700] {
                let x0 = Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 1.5;
                let options = OdeOptions::fixed(method, steps);
                let tiles = flow.integrate(x0.copy(), &options, None).unwrap();
                assert_eq!(tiles.stats.steps, steps);
                assert_eq!(tiles.stats.field_evals, steps * method.tableau().n_stages());
                let reference = step_by_step(&flow, &x0, &options).unwrap();
                let gap = (&tiles.state - &reference).abs().max().double_value(&[]);
                assert_eq!(
                    gap, 0.0,
                    "{method:?}, {steps} steps, {n} points, {threads} threads"
                );
                // Not the identity: the flow moved the points.
                assert!((&tiles.state - &x0).abs().max().double_value(&[]) > 1e-3);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_solve_that_overflows_is_reported_at_the_step_where_it_does() {
    let dir = std::env::temp_dir().join(format!("ferroflow-tiles-overflow-{}", std::process::id()));
    // Weights 1e12 times their initial size: the velocity of a point is about 1e36 and the first Euler step
    // overflows f32 (or turns NaN) for some points.
    let flow = flow_in(&dir, 1e12);
    let x0 = Tensor::randn([600, 2], (Kind::Float, Device::Cpu));
    let options = OdeOptions::fixed(Method::Euler, 10);
    let tiles = flow.integrate(x0.copy(), &options, None).unwrap_err();
    let reference = step_by_step(&flow, &x0, &options).unwrap_err();
    assert!(matches!(tiles, SolverError::NonFiniteState { .. }), "{tiles}");
    assert_eq!(tiles.to_string(), reference.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `log p1` of `data` by the path `log_likelihood_with` takes without the tile solve: the solver's
/// augmented stepper over the kernel's velocity and divergence, chunk by chunk with the same probe seeds.
fn likelihood_step_by_step(
    flow: &TrainedFlow,
    data: &Tensor,
    settings: &ferroflow_engine::likelihood::LikelihoodSettings,
    options: &OdeOptions,
) -> Vec<f64> {
    use ferroflow_models::autograd::{AutogradDivergence, ProbeSchedule};
    let source = ferroflow_engine::likelihood::GaussianSource::of(&flow.config.data.source).unwrap();
    let n = data.size()[0] as usize;
    let mut out = Vec::new();
    for (chunk_idx, first) in (0..n).step_by(settings.chunk_size).enumerate() {
        let end = (first + settings.chunk_size).min(n);
        let chunk = data.narrow(0, first as i64, (end - first) as i64);
        let seed = settings.chunk_seed(chunk_idx);
        let mut velocity = |x: &Tensor, t: f64| flow.velocity_with_grad(x, t);
        let forward = |x: &Tensor, t: f64, probes: Option<&Tensor>| flow.divergence_forward(x, t, probes);
        let mut field = AutogradDivergence::with_forward_mode(
            &mut velocity,
            forward,
            settings.estimator,
            ProbeSchedule::fixed(seed),
        )
        .unwrap();
        let result =
            ferroflow_solvers::log_likelihood(&mut field, &chunk, |x0| source.log_density(x0), options)
                .unwrap();
        out.extend(Vec::<f64>::try_from(result.log_density.to_kind(Kind::Double)).unwrap());
    }
    out
}

#[test]
fn the_tile_by_tile_likelihood_gives_the_step_by_step_numbers() {
    use ferroflow_engine::likelihood::{LikelihoodSettings, log_likelihood_with};
    use ferroflow_models::autograd::{DivergenceEstimator, ProbeDistribution};
    let dir = std::env::temp_dir().join(format!("ferroflow-tiles-likelihood-{}", std::process::id()));
    let mut flow = flow_in(&dir, 1.0);
    let data = Tensor::randn([300, 2], (Kind::Float, Device::Cpu)) * 2.0;
    let estimators = [
        DivergenceEstimator::Exact,
        DivergenceEstimator::Hutchinson {
            probes: 2,
            distribution: ProbeDistribution::Rademacher,
        },
        DivergenceEstimator::Hutchinson {
            probes: 1,
            distribution: ProbeDistribution::Gaussian,
        },
    ];
    for threads in [1, 2] {
        flow.threads = ferroflow_engine::threads::Threads::Fixed(threads);
        for estimator in estimators {
            for (method, steps) in [(Method::Midpoint, 6), (Method::Rk4, 3), (Method::Euler, 5)] {
                let settings = LikelihoodSettings {
                    chunk_size: 130,
                    ..LikelihoodSettings::new(estimator, 11)
                };
                let options = OdeOptions::fixed(method, steps);
                let tiles = log_likelihood_with(&flow, &data, &settings, &options).unwrap();
                assert_eq!(tiles.steps, 3 * steps, "three chunks");
                assert_eq!(tiles.field_evals, 3 * steps * method.tableau().n_stages());
                let reference = likelihood_step_by_step(&flow, &data, &settings, &options);
                assert_eq!(
                    tiles.log_density.to_vec(),
                    reference,
                    "{estimator:?}, {method:?}, {threads} threads"
                );
                assert!(tiles.log_density.iter().all(|v| v.is_finite() && *v < 0.0));
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
