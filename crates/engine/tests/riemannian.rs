//! Riemannian flows through the engine: the Riemannian divergence against closed forms (a rotation field on
//! S^2 is divergence free; the gradient field of a.x has divergence -2 a.x), the likelihood of a rotation of
//! a von Mises-Fisher distribution against its closed form, a tiny run on S^2 and on T^2 whose samples stay on
//! the manifold, and the config's refusals.

use std::path::Path;

use ferroflow_engine::RunConfig;
use ferroflow_engine::manifold::{
    LikelihoodSolve, ManifoldSpec, log_likelihood_of_tangent_field, riemannian_divergence,
};
use ferroflow_manifolds::{ManifoldDensity, ManifoldOdeMethod, VonMisesFisher};
use ferroflow_models::DivergenceEstimator;
use ferroflow_models::autograd::ProbeDistribution;
use ndarray::{Array2, array};
use tch::{Kind, Tensor};

const S2: ManifoldSpec = ManifoldSpec::Sphere { dim: 3 };

/// Unit vectors from a fixed set of directions.
fn sphere_points() -> Array2<f64> {
    let raw: Array2<f64> = array![
        [1.0, 0.2, -0.3],
        [0.1, 1.0, 0.4],
        [-0.5, 0.3, 0.8],
        [0.3, -0.9, 0.2],
        [-0.7, -0.2, -0.6],
        [0.0, 0.1, -1.0]
    ];
    let norms = raw.map_axis(ndarray::Axis(1), |r| r.dot(&r).sqrt());
    &raw / &norms.insert_axis(ndarray::Axis(1))
}

fn tensor(x: &Array2<f64>) -> Tensor {
    Tensor::from_slice(&x.iter().map(|&v| v as f32).collect::<Vec<_>>()).view([x.nrows() as i64, 3])
}

/// Rotation about the z axis at angular speed `omega`: v(x) = omega (-y, x, 0).
fn rotation(omega: f64) -> impl Fn(&Tensor, f64) -> Tensor {
    move |x: &Tensor, _t: f64| {
        let (px, py) = (x.select(1, 0), x.select(1, 1));
        Tensor::stack(&[-&py * omega, &px * omega, px.zeros_like()], 1)
    }
}

#[test]
fn divergences_match_their_closed_forms_exact_and_hutchinson() {
    let x = tensor(&sphere_points());
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
    let div = riemannian_divergence(&rotation(1.3), &S2, &x, 0.0, DivergenceEstimator::Exact, &mut rng);
    assert!(div.abs().max().double_value(&[]) < 1e-5, "{div}");
    // v = P a: the Riemannian gradient of a.x, with divergence -(d - 1) a.x = -2 a.x on S^2.
    let a = Tensor::from_slice(&[0.4f32, -1.1, 0.7]);
    let gradient = |x: &Tensor, _t: f64| a.expand_as(x) * 1.0;
    let expected = (&x * &a).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) * -2.0;
    let exact = riemannian_divergence(&gradient, &S2, &x, 0.0, DivergenceEstimator::Exact, &mut rng);
    let error = (&exact - &expected).abs().max().double_value(&[]);
    assert!(error < 1e-5, "exact {exact} vs {expected}");
    let hutchinson = riemannian_divergence(
        &gradient,
        &S2,
        &x,
        0.0,
        DivergenceEstimator::Hutchinson {
            probes: 20_000,
            distribution: ProbeDistribution::Gaussian,
        },
        &mut rng,
    );
    let error = (&hutchinson - &expected).abs().max().double_value(&[]);
    // Standard error of the mean over 20,000 Gaussian probes of a 3 x 3 quadratic form: about 0.02.
    assert!(error < 0.1, "hutchinson {hutchinson} vs {expected}");
}

#[test]
fn likelihood_of_a_rotated_vmf_matches_the_closed_form() {
    // The rotation by angle omega about z carries vMF(mu, kappa) to vMF(R mu, kappa) without changing volume.
    let (omega, kappa) = (1.1f64, 4.0);
    let mu = array![0.6, 0.0, 0.8];
    let source = VonMisesFisher::new(mu.view(), kappa).unwrap();
    let rotated_mu = array![0.6 * omega.cos(), 0.6 * omega.sin(), 0.8];
    let target = VonMisesFisher::new(rotated_mu.view(), kappa).unwrap();
    let points = sphere_points();
    let expected = target.log_density_batch(points.view()).unwrap();
    for estimator in [
        DivergenceEstimator::Exact,
        DivergenceEstimator::Hutchinson {
            probes: 1,
            distribution: ProbeDistribution::Rademacher,
        },
    ] {
        let found = log_likelihood_of_tangent_field(
            &rotation(omega),
            &S2,
            &source,
            points.view(),
            &LikelihoodSolve {
                estimator,
                steps: 20,
                method: ManifoldOdeMethod::Rk4,
                seed: 3,
                device: tch::Device::Cpu,
            },
        )
        .unwrap();
        let error = (&found - &expected).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
        assert!(error < 1e-3, "{estimator:?}: {found} vs {expected}");
    }
    // Points off the sphere are refused by row.
    let mut off = sphere_points();
    off[[2, 0]] += 0.1;
    let err = log_likelihood_of_tangent_field(
        &rotation(omega),
        &S2,
        &source,
        off.view(),
        &LikelihoodSolve {
            estimator: DivergenceEstimator::Exact,
            steps: 4,
            method: ManifoldOdeMethod::Euler,
            seed: 0,
            device: tch::Device::Cpu,
        },
    )
    .unwrap_err();
    assert!(err.contains("sample 2") || err.contains("row 2"), "{err}");
}

fn tiny_run(dir: &Path, name: &str, data: &str) -> std::path::PathBuf {
    let text = format!(
        "[run]\nname = \"{name}\"\nout_dir = \"{}\"\n[data]\n{data}\n[model]\nwidth = 32\n[train]\nsteps = 60\n\
         batch_size = 64\n[flow]\ncoupling = {{ kind = \"exact_ot\" }}\n[sample]\nsolver = \"midpoint\"\nsteps = 10\n\
         n_samples = 300\nw2_samples = 200\n",
        dir.display()
    );
    let config = RunConfig::parse(&text, Path::new("tiny.toml")).unwrap();
    ferroflow_engine::run::train_new(&config, &mut [], None).unwrap()
}

#[test]
fn tiny_runs_on_the_sphere_and_the_torus_keep_their_samples_on_the_manifold() {
    let dir = std::env::temp_dir().join(format!("ferroflow-riemannian-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sphere = tiny_run(
        &dir,
        "sphere",
        "manifold = { kind = \"sphere\", dim = 3 }\ntarget = { kind = \"vmf_mixture\", weights = [1.0, 1.0], \
         means = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], concentrations = [10.0, 10.0] }",
    );
    let samples = ferroflow_engine::files::read_npy(&sphere.join("samples.npy")).unwrap();
    assert_eq!(samples.ncols(), 3);
    for row in samples.rows() {
        let norm = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "a sample of norm {norm}");
    }
    // The learned density is a density: over the sphere's equal-area grid (longitude x z, area-preserving)
    // it integrates to 1, up to the grid's and the solver's error (0.987 here; 0.998 with 100 x 100 cells and
    // 60 RK4 steps, so the gap is discretisation).
    let flow = ferroflow_engine::sample::TrainedFlow::load(&sphere).unwrap();
    let cells = 40usize;
    let grid = Array2::from_shape_fn((cells * cells, 3), |(row, col)| {
        let lon = -std::f64::consts::PI
            + (2.0 * std::f64::consts::PI) * ((row % cells) as f64 + 0.5) / cells as f64;
        let z = -1.0 + 2.0 * ((row / cells) as f64 + 0.5) / cells as f64;
        let r = (1.0 - z * z).sqrt();
        [r * lon.cos(), r * lon.sin(), z][col]
    });
    let log_density = ferroflow_engine::manifold::log_likelihood_on_manifold(
        &flow,
        &S2,
        grid.view(),
        DivergenceEstimator::Exact,
        20,
        ManifoldOdeMethod::Midpoint,
        0,
    )
    .unwrap();
    let cell_area = 4.0 * std::f64::consts::PI / (cells * cells) as f64;
    let mass: f64 = log_density.iter().map(|l| l.exp() * cell_area).sum();
    assert!(
        (mass - 1.0).abs() < 0.03,
        "the learned density integrates to {mass}"
    );
    let metrics = ferroflow_engine::run::evaluate(&sphere).unwrap();
    let (w2, kl) = (metrics.w2.unwrap(), metrics.kl_estimate.unwrap());
    assert!(
        w2.is_finite() && w2 > 0.0 && w2 < std::f64::consts::PI,
        "{metrics:?}"
    );
    assert!(kl.is_finite() && metrics.nll.unwrap().is_finite(), "{metrics:?}");
    let torus = tiny_run(
        &dir,
        "torus",
        "manifold = { kind = \"torus\", dim = 2 }\ntarget = { kind = \"torus_checkerboard\" }",
    );
    let samples = ferroflow_engine::files::read_npy(&torus.join("samples.npy")).unwrap();
    let pi = std::f32::consts::PI;
    assert!(
        samples.iter().all(|a| (-pi..pi).contains(a)),
        "angles outside [-pi, pi)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn manifold_configs_refuse_what_does_not_fit() {
    let parse = |data: &str, extra: &str| {
        RunConfig::parse(
            &format!("[run]\nname = \"m\"\n[data]\n{data}\n{extra}"),
            Path::new("m.toml"),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let sphere = "manifold = { kind = \"sphere\", dim = 3 }";
    let vmf = "target = { kind = \"vmf_mixture\", weights = [1.0], means = [[0.0, 0.0, 1.0]], concentrations = [5.0] }";
    parse(&format!("{sphere}\n{vmf}"), "").unwrap();
    // A manifold with a Euclidean data set, and a manifold data set without the manifold.
    let err = parse(&format!("{sphere}\ntarget = {{ kind = \"moons\" }}"), "").unwrap_err();
    assert!(err.contains("data.target") && err.contains("Euclidean"), "{err}");
    let err = parse(vmf, "").unwrap_err();
    assert!(err.contains("data.manifold") && err.contains("S^2"), "{err}");
    let err = parse(&format!("manifold = {{ kind = \"torus\", dim = 2 }}\n{vmf}"), "").unwrap_err();
    assert!(err.contains("S^2") && err.contains("T^2"), "{err}");
    // Means off the sphere, settings a geodesic flow does not have.
    let off = vmf.replace("[[0.0, 0.0, 1.0]]", "[[0.0, 0.0, 2.0]]");
    let err = parse(&format!("{sphere}\n{off}"), "").unwrap_err();
    assert!(err.contains("data.target"), "{err}");
    for (extra, key) in [
        ("[flow]\nsigma = 0.1\n", "flow.path"),
        ("[flow]\nprediction = \"epsilon\"\n", "flow.prediction"),
        ("[flow]\ncoupling = { kind = \"sinkhorn\" }\n", "flow.coupling"),
        ("[sample]\nsolver = \"dopri5\"\n", "sample.solver"),
    ] {
        let err = parse(&format!("{sphere}\n{vmf}"), extra).unwrap_err();
        assert!(err.contains(key), "{extra}: {err}");
    }
}

#[test]
fn torus_angles_reach_the_network_as_cosines_and_sines_unless_switched_off() {
    let text = r#"
[run]
name = "angles"

[data]
manifold = { kind = "product", factors = [{ kind = "sphere", dim = 3 }, { kind = "torus", dim = 2 }] }
target = { kind = "product", factors = [{ kind = "vmf_mixture", weights = [1.0], means = [[0.0, 0.0, 1.0]], concentrations = [5.0] }, { kind = "torus_checkerboard" }] }
"#;
    let config = RunConfig::parse(text, Path::new("<test>")).unwrap();
    assert!(config.model.angle_features);
    let manifold = config.data.manifold.as_ref();
    assert_eq!(config.model.mlp_config(5, manifold).angle_columns, vec![3, 4]);
    // The first layer takes the sphere's 3 coordinates, cos and sin of both angles, and the time.
    let net = ferroflow_engine::train::build_model(&config).unwrap();
    assert_eq!(net.params().specs()[0].shape[1], 3 + 2 * 2 + 1);

    let raw = RunConfig::parse(
        &format!("{text}[model]\nangle_features = false\n"),
        Path::new("<test>"),
    )
    .unwrap();
    assert!(
        raw.model
            .mlp_config(5, raw.data.manifold.as_ref())
            .angle_columns
            .is_empty()
    );
    // Euclidean runs never get angle columns.
    let plain = RunConfig::parse(
        "[run]\nname = \"plain\"\n[data]\ntarget = { kind = \"moons\" }\n",
        Path::new("<test>"),
    )
    .unwrap();
    assert!(
        plain
            .model
            .mlp_config(2, plain.data.manifold.as_ref())
            .angle_columns
            .is_empty()
    );
}
