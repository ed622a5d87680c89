//! The local (Eulerian), integral and Lagrangian forms of mass conservation, checked against each other and
//! against closed forms: linear fields, a translating Gaussian and the nonlinear flow `x' = sin x`.

mod common;

use common::{Matrix, mat_vec, scientific};
use ferroflow_continuity::{
    CellRegion, Domain, Grid, TimeSpan, advective_flux, continuity_convergence, continuity_residual,
    integrate_log_density, integrate_log_density_numeric, mass_balance, region_integral,
};

/// A Gaussian translated by the constant field `v = c` in 2-D: `N(m0 + c t, s^2 I)`.
fn translating_density(x: &[f64], t: f64) -> f64 {
    let (c, m0, s) = ([0.6, -0.4], [-0.5, 0.3], 0.8);
    let r2: f64 = (0..2)
        .map(|axis| (x[axis] - m0[axis] - c[axis] * t).powi(2))
        .sum();
    (-0.5 * r2 / (s * s)).exp() / (2.0 * std::f64::consts::PI * s * s)
}

fn translating_velocity(_x: &[f64], _t: f64, out: &mut [f64]) {
    out.copy_from_slice(&[0.6, -0.4]);
}

#[test]
fn local_and_integral_forms_agree() {
    let domain = Domain::new(vec![-4.0, -4.0], vec![4.0, 4.0]).unwrap();
    let t = 0.4;
    let mut imbalances = Vec::new();
    let resolutions = [16, 32, 64, 128];
    for cells in resolutions {
        let grid = Grid::uniform(&domain, cells).unwrap();
        let spacing = grid.spacing()[0];
        let time_step = spacing;
        // The box [-1, 2] x [-2, 1.5] is a union of cells on every grid here.
        let to_index = |coordinate: f64| ((coordinate + 4.0) / spacing).round() as usize;
        let region = CellRegion::new(
            &grid,
            &[to_index(-1.0), to_index(-2.0)],
            &[to_index(2.0), to_index(1.5)],
        )
        .unwrap();
        let flux = advective_flux(&grid, t, translating_density, translating_velocity).unwrap();
        let balance = mass_balance(&grid, &region, t, time_step, translating_density, &flux).unwrap();
        let residual =
            continuity_residual(&grid, t, time_step, translating_density, translating_velocity).unwrap();
        // Local form summed over the region == integral form, to rounding (the discrete divergence theorem).
        let summed_residual = region_integral(&grid, &region, residual.view()).unwrap();
        assert!(
            (summed_residual - balance.imbalance()).abs() < 1e-13,
            "summed residual {summed_residual} vs imbalance {}",
            balance.imbalance()
        );
        // Mass leaves the region at a rate of order 0.1, so the balance is not trivially zero.
        assert!(
            balance.outflow.abs() > 0.05,
            "outflow {} too small to test anything",
            balance.outflow
        );
        imbalances.push(balance.imbalance().abs());

        // The whole domain holds essentially all of the Gaussian's unit mass.
        let whole = CellRegion::whole(&grid);
        let total = mass_balance(&grid, &whole, t, time_step, translating_density, &flux).unwrap();
        assert!((total.mass - 1.0).abs() < 1e-3, "total mass {}", total.mass);
    }
    let orders: Vec<f64> = imbalances
        .windows(2)
        .map(|pair| (pair[0] / pair[1]).log2())
        .collect();
    println!(
        "integral imbalance |dM/dt + outflow| [{}], orders {orders:.3?}",
        scientific(&imbalances)
    );
    assert!(
        orders.iter().all(|order| (1.8..=2.2).contains(order)),
        "orders {orders:?}"
    );
}

/// For `x' = A x` with constant `A`, `div v = trace(A)`, so `ln rho` changes by exactly `-trace(A) (t1 - t0)`,
/// whatever the step count; the position follows `e^{A t} x0`, here `A = [[a, -w], [w, a]]`,
/// `e^{At} = e^{at} R(wt)`, with the global error of RK4 falling like `h^4`.
#[test]
fn linear_field_log_density_drops_by_trace_times_time() {
    let (a, w) = (-0.3, 1.7);
    let a_matrix: Matrix = vec![vec![a, -w], vec![w, a]];
    let velocity = |x: &[f64], _t: f64, out: &mut [f64]| out.copy_from_slice(&mat_vec(&a_matrix, x));
    let trace = 2.0 * a;
    let start = [1.0, -0.5];
    let duration = 2.0;
    let (sin, cos) = (w * duration).sin_cos();
    let growth = (a * duration).exp();
    let exact = [
        growth * (cos * start[0] - sin * start[1]),
        growth * (sin * start[0] + cos * start[1]),
    ];

    let mut errors = Vec::new();
    for n_steps in [10, 20, 40, 80] {
        let span = TimeSpan {
            start: 0.0,
            end: duration,
            n_steps,
        };
        let with_closure = integrate_log_density(velocity, |_x, _t| trace, &start, &span).unwrap();
        assert!((with_closure.log_density_change + trace * duration).abs() < 1e-12);
        assert_eq!(with_closure.divergence_evaluations, 4 * n_steps);
        assert_eq!(with_closure.velocity_evaluations, 4 * n_steps);
        let numeric = integrate_log_density_numeric(velocity, &start, &span, 1e-3).unwrap();
        assert!((numeric.log_density_change + trace * duration).abs() < 1e-10);
        // Each numeric divergence costs 2 * dims velocity calls on top of the stage's own call.
        assert_eq!(numeric.velocity_evaluations, 4 * n_steps * (1 + 2 * 2));
        assert_eq!(numeric.position, with_closure.position);
        let error = (0..2)
            .map(|axis| (with_closure.position[axis] - exact[axis]).abs())
            .fold(0.0, f64::max);
        errors.push(error);
    }
    let orders: Vec<f64> = errors.windows(2).map(|pair| (pair[0] / pair[1]).log2()).collect();
    println!(
        "RK4 position errors [{}], orders {orders:.3?}",
        scientific(&errors)
    );
    assert!(
        orders[1..].iter().all(|order| (3.7..=4.3).contains(order)),
        "orders {orders:?}"
    );

    // Integrating back from the end returns to the start and undoes the log-density change (the CNF direction).
    let forward = integrate_log_density(
        velocity,
        |_x, _t| trace,
        &start,
        &TimeSpan {
            start: 0.0,
            end: 2.0,
            n_steps: 400,
        },
    )
    .unwrap();
    let backward = integrate_log_density(
        velocity,
        |_x, _t| trace,
        &forward.position,
        &TimeSpan {
            start: 2.0,
            end: 0.0,
            n_steps: 400,
        },
    )
    .unwrap();
    assert!((backward.log_density_change + forward.log_density_change).abs() < 1e-12);
    assert!(
        backward
            .position
            .iter()
            .zip(&start)
            .all(|(got, want)| (got - want).abs() < 1e-9)
    );
}

/// A general 3-D linear field with the numeric divergence: the change is `-trace(A) T` to rounding, since central
/// differences are exact for linear fields.
#[test]
fn linear_field_in_3d_with_numeric_divergence() {
    let a_matrix: Matrix = vec![vec![0.2, -1.0, 0.3], vec![0.8, -0.5, 0.1], vec![-0.4, 0.6, 0.1]];
    let trace = 0.2 - 0.5 + 0.1;
    let velocity = |x: &[f64], _t: f64, out: &mut [f64]| out.copy_from_slice(&mat_vec(&a_matrix, x));
    let end = integrate_log_density_numeric(
        velocity,
        &[0.3, 1.0, -2.0],
        &TimeSpan {
            start: 0.5,
            end: 1.75,
            n_steps: 25,
        },
        0.01,
    )
    .unwrap();
    assert!(
        (end.log_density_change + trace * 1.25).abs() < 1e-12,
        "change {}",
        end.log_density_change
    );
}

/// The nonlinear flow `x' = sin x` has `x(t) = 2 atan(e^t tan(x0 / 2))` and `dx/dx0 = e^t sec^2(x0/2) /
/// (1 + e^{2t} tan^2(x0/2))`, so `ln rho(x(t), t) - ln rho0(x0) = -ln(dx/dx0)`, and the pushed-forward density is
/// `rho_t(x) = rho0(x0(x)) / (dx/dx0)` with `x0(x) = 2 atan(e^{-t} tan(x/2))`. All three forms must agree with it.
#[test]
fn nonlinear_sine_flow_agrees_in_all_forms() {
    let jacobian = |x0: f64, t: f64| {
        let tan = (0.5 * x0).tan();
        t.exp() / (0.5 * x0).cos().powi(2) / (1.0 + (2.0 * t).exp() * tan * tan)
    };
    let initial = |x0: f64| (-0.5 * ((x0 - 0.3) / 0.5).powi(2)).exp();
    let density = |x: &[f64], t: f64| {
        let x0 = 2.0 * ((-t).exp() * (0.5 * x[0]).tan()).atan();
        initial(x0) / jacobian(x0, t)
    };
    let velocity = |x: &[f64], _t: f64, out: &mut [f64]| out[0] = x[0].sin();

    // Lagrangian form, with the analytic divergence cos x and with the numeric one.
    let (x0, duration) = (0.7, 1.5);
    let span = TimeSpan {
        start: 0.0,
        end: duration,
        n_steps: 200,
    };
    let expected_change = -jacobian(x0, duration).ln();
    let analytic = integrate_log_density(velocity, |x, _t| x[0].cos(), &[x0], &span).unwrap();
    let numeric = integrate_log_density_numeric(velocity, &[x0], &span, 1e-4).unwrap();
    let expected_end = 2.0 * (duration.exp() * (0.5 * x0).tan()).atan();
    assert!((analytic.position[0] - expected_end).abs() < 1e-9);
    assert!(
        (analytic.log_density_change - expected_change).abs() < 1e-9,
        "{} vs {expected_change}",
        analytic.log_density_change
    );
    assert!((numeric.log_density_change - expected_change).abs() < 1e-7);
    // The same change read off the Eulerian density at the two ends of the trajectory.
    let eulerian_change = density(&analytic.position, duration).ln() - density(&[x0], 0.0).ln();
    assert!((eulerian_change - expected_change).abs() < 1e-9);

    // Local form: the pushed-forward density solves the continuity equation with v = sin x.
    let domain = Domain::new(vec![-2.5], vec![2.5]).unwrap();
    let report = continuity_convergence(&domain, &[20, 40, 80, 160], 0.8, density, velocity).unwrap();
    common::print_report("sine flow, 1-D", &report);
    assert!((1.8..=2.2).contains(&report.final_order()), "{report:?}");
}
