//! The marginal velocities transport their densities: the finite-volume continuity residual of
//! `ferroflow-continuity` converges at second order for the exact pairs `(p_t, v*)` and stalls (order near 0)
//! for a perturbed velocity.

mod common;

use common::random_mixture;
use ferroflow_continuity::{ConvergenceConfig, ConvergenceReport, Domain, continuity_convergence_with};
use ferroflow_paths::{
    AffinePath, CondOtScheduler, ConditionalPath, CosineScheduler, Gaussian, GaussianOtMap, MixtureMarginal,
    OneSidedGaussianPath, PolynomialScheduler, SchrodingerBridgePath, VariancePreservingPath, VpScheduler,
};
use ndarray::array;

const RESOLUTIONS: [usize; 3] = [16, 32, 64];
/// Keeps `t +- dt` inside `[0, 1]` on the coarsest grid (cell width 10 / 16).
const CONFIG: ConvergenceConfig = ConvergenceConfig {
    time_step_per_spacing: 0.05,
};

fn domain() -> Domain {
    Domain::new(vec![-5.0, -5.0], vec![5.0, 5.0]).unwrap()
}

fn study<P: ConditionalPath>(
    marginal: &MixtureMarginal<P>,
    t: f64,
    velocity_scale: f64,
) -> ConvergenceReport {
    continuity_convergence_with(
        &domain(),
        &RESOLUTIONS,
        t,
        &CONFIG,
        |x, t| marginal.log_density_at(x, t).unwrap().exp(),
        |x, t, out| {
            marginal.velocity_at(x, t, out).unwrap();
            out.iter_mut().for_each(|v| *v *= velocity_scale);
        },
    )
    .unwrap()
}

fn assert_second_order(name: &str, report: &ConvergenceReport) {
    let order = report.final_order();
    assert!(
        (1.8..2.4).contains(&order),
        "{name}: observed orders {:?}, residual norms {:?}",
        report.observed_orders,
        report.residual_norms
    );
}

#[test]
fn mixture_marginal_velocity_solves_the_continuity_equation() {
    let mixture = random_mixture(41, 3, 2);
    let paths: Vec<Box<dyn ConditionalPath>> = vec![
        Box::new(AffinePath::without_noise(CondOtScheduler)),
        Box::new(AffinePath::new(CondOtScheduler, 0.3).unwrap()),
        Box::new(AffinePath::without_noise(PolynomialScheduler::new(2.0).unwrap())),
        Box::new(AffinePath::without_noise(VpScheduler::new(0.5, 5.0).unwrap())),
        Box::new(AffinePath::without_noise(CosineScheduler)),
        Box::new(OneSidedGaussianPath::new(0.05).unwrap()),
        Box::new(SchrodingerBridgePath::new(0.7).unwrap()),
        Box::new(VariancePreservingPath::new(0.25).unwrap()),
    ];
    for path in paths {
        let name = path.name();
        let marginal = MixtureMarginal::new(mixture.clone(), path, 1.0).unwrap();
        let report = study(&marginal, 0.55, 1.0);
        eprintln!(
            "{name}: orders {:?}, norms {:?}",
            report.observed_orders, report.residual_norms
        );
        assert_second_order(name, &report);
    }
}

#[test]
fn a_perturbed_velocity_does_not_converge() {
    // The negative control: the same study must fail for a field that is 10% off.
    let marginal = MixtureMarginal::new(
        random_mixture(41, 3, 2),
        AffinePath::without_noise(CondOtScheduler),
        1.0,
    )
    .unwrap();
    let report = study(&marginal, 0.55, 1.1);
    eprintln!(
        "perturbed: orders {:?}, norms {:?}",
        report.observed_orders, report.residual_norms
    );
    assert!(
        report.final_order().abs() < 0.3,
        "perturbed field: orders {:?}",
        report.observed_orders
    );
}

#[test]
fn displacement_interpolation_solves_the_continuity_equation() {
    let source = Gaussian::new(array![-1.0, 0.5], array![[1.0, 0.3], [0.3, 0.6]]).unwrap();
    let target = Gaussian::new(array![1.5, -0.5], array![[0.4, -0.2], [-0.2, 1.5]]).unwrap();
    let map = GaussianOtMap::new(source, target).unwrap();
    let report = continuity_convergence_with(
        &domain(),
        &RESOLUTIONS,
        0.4,
        &CONFIG,
        |x, t| map.interpolation(t).unwrap().log_density_at(x).unwrap().exp(),
        |x, t, out| map.velocity_at(x, t, out).unwrap(),
    )
    .unwrap();
    eprintln!(
        "displacement: orders {:?}, norms {:?}",
        report.observed_orders, report.residual_norms
    );
    assert_second_order("displacement interpolation", &report);
}
