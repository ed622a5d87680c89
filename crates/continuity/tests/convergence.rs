//! Convergence studies against closed-form solutions of the continuity and Fokker-Planck equations: exact pairs
//! must show an observed order near 2, perturbed pairs a residual that does not fall.
//!
//! Run with `--nocapture` to see the measured norms and orders.

mod common;

use common::{
    Matrix, add_scaled, diag, flatten, gaussian_density, mat_mul, mat_vec, print_report, scientific,
    transpose,
};
use ferroflow_continuity::{
    ConvergenceConfig, ConvergenceReport, Diffusion, Domain, Grid, continuity_convergence,
    continuity_convergence_with, fokker_planck_convergence, fokker_planck_flux,
};

/// Asserts the residual falls at second order: the final observed order lies in [1.8, 2.2] and every order is
/// at least 1.5 (the coarsest pair may still be outside the asymptotic range).
fn assert_second_order(report: &ConvergenceReport) {
    let last = report.final_order();
    assert!(
        (1.8..=2.2).contains(&last),
        "final observed order {last} not near 2: {report:?}"
    );
    for &order in &report.observed_orders {
        assert!(order > 1.5, "observed order {order} too low: {report:?}");
    }
}

/// Asserts a wrong pair's residual stalls at a nonzero defect: on coarse grids the discretisation error may still
/// dominate, but between the two finest grids the residual falls at less than first order, and it ends at least
/// ten times above the residual of the exact pair `exact` on the same grids.
fn assert_stalls(wrong: &ConvergenceReport, exact: &ConvergenceReport) {
    assert_eq!(wrong.resolutions, exact.resolutions);
    assert!(
        wrong.final_order() < 1.0,
        "wrong pair still converges, order {}: {wrong:?}",
        wrong.final_order()
    );
    let (wrong_last, exact_last) = (
        *wrong.residual_norms.last().unwrap(),
        *exact.residual_norms.last().unwrap(),
    );
    assert!(
        wrong_last > 10.0 * exact_last,
        "wrong residual {wrong_last} close to exact {exact_last}"
    );
}

/// The density pushed by `v_a = rate_a x_a + shift_a` from independent Gaussians `N(mean0_a, std0_a^2)`:
/// each coordinate follows `x(t) = e^{rate t} x0 + shift (e^{rate t} - 1) / rate`, so the mean follows the same
/// map and the standard deviation scales by `e^{rate t}`.
struct AffineGaussianFlow {
    rate: Vec<f64>,
    shift: Vec<f64>,
    mean0: Vec<f64>,
    std0: Vec<f64>,
}

impl AffineGaussianFlow {
    fn new(dims: usize) -> Self {
        let take = |values: [f64; 3]| values[..dims].to_vec();
        Self {
            rate: take([0.3, -0.2, 0.15]),
            shift: take([0.5, -0.4, 0.2]),
            mean0: take([0.2, -0.1, 0.3]),
            std0: take([0.8, 1.0, 0.9]),
        }
    }

    fn density(&self, x: &[f64], t: f64) -> f64 {
        let mut value = 1.0;
        for (axis, &coordinate) in x.iter().enumerate() {
            let growth = (self.rate[axis] * t).exp();
            let mean = growth * self.mean0[axis] + self.shift[axis] * (growth - 1.0) / self.rate[axis];
            let std = growth * self.std0[axis];
            let z = (coordinate - mean) / std;
            value *= (-0.5 * z * z).exp() / (std * (2.0 * std::f64::consts::PI).sqrt());
        }
        value
    }

    fn velocity(&self, x: &[f64], _t: f64, out: &mut [f64]) {
        for (axis, (out, &coordinate)) in out.iter_mut().zip(x).enumerate() {
            *out = self.rate[axis] * coordinate + self.shift[axis];
        }
    }
}

fn cube(dims: usize, half_width: f64) -> Domain {
    Domain::new(vec![-half_width; dims], vec![half_width; dims]).unwrap()
}

#[test]
fn affine_gaussian_flow_converges_at_second_order_in_1_2_3_dims() {
    for (dims, resolutions) in [
        (1, vec![20, 40, 80, 160]),
        (2, vec![12, 24, 48, 96]),
        (3, vec![8, 16, 32]),
    ] {
        let flow = AffineGaussianFlow::new(dims);
        let report = continuity_convergence(
            &cube(dims, 4.5),
            &resolutions,
            0.5,
            |x, t| flow.density(x, t),
            |x, t, out| flow.velocity(x, t, out),
        )
        .unwrap();
        print_report(&format!("affine Gaussian flow, {dims}-D"), &report);
        assert_second_order(&report);
    }
}

#[test]
fn velocity_scaled_by_1_1_leaves_a_residual_that_does_not_vanish() {
    for (dims, resolutions) in [(1, vec![20, 40, 80, 160]), (2, vec![12, 24, 48, 96])] {
        let flow = AffineGaussianFlow::new(dims);
        let exact = continuity_convergence(
            &cube(dims, 4.5),
            &resolutions,
            0.5,
            |x, t| flow.density(x, t),
            |x, t, out| flow.velocity(x, t, out),
        )
        .unwrap();
        let report = continuity_convergence(
            &cube(dims, 4.5),
            &resolutions,
            0.5,
            |x, t| flow.density(x, t),
            |x, t, out| {
                flow.velocity(x, t, out);
                out.iter_mut().for_each(|v| *v *= 1.1);
            },
        )
        .unwrap();
        print_report(&format!("velocity x 1.1, {dims}-D"), &report);
        assert_stalls(&report, &exact);
    }
}

/// `v = A x + b` with `A = [[a, -w], [w, a]]` (rotation and dilation) moves `N(m0, S0)` to `N(m(t), S(t))` with
/// `S(t) = E S0 E^T`, `m(t) = E (m0 + A^{-1} b) - A^{-1} b`, `E = e^{At} = e^{at} R(wt)`.
#[test]
fn rotating_dilating_gaussian_converges_at_second_order() {
    let (a, w) = (0.2, 0.9);
    let shift = [0.3, -0.2];
    let mean0 = [0.4, 0.1];
    let cov0: Matrix = vec![vec![0.9, 0.3], vec![0.3, 0.6]];
    let norm = a * a + w * w;
    let a_inv_b = [
        (a * shift[0] + w * shift[1]) / norm,
        (-w * shift[0] + a * shift[1]) / norm,
    ];
    let moments = |t: f64| {
        let (sin, cos) = (w * t).sin_cos();
        let growth = (a * t).exp();
        let flow_map: Matrix = vec![
            vec![growth * cos, -growth * sin],
            vec![growth * sin, growth * cos],
        ];
        let cov = mat_mul(&mat_mul(&flow_map, &cov0), &transpose(&flow_map));
        let moved = mat_vec(&flow_map, &[mean0[0] + a_inv_b[0], mean0[1] + a_inv_b[1]]);
        (vec![moved[0] - a_inv_b[0], moved[1] - a_inv_b[1]], cov)
    };
    let density = |x: &[f64], t: f64| {
        let (mean, cov) = moments(t);
        gaussian_density(x, &mean, &cov)
    };
    let velocity = |x: &[f64], _t: f64, out: &mut [f64]| {
        out[0] = a * x[0] - w * x[1] + shift[0];
        out[1] = w * x[0] + a * x[1] + shift[1];
    };
    let report = continuity_convergence(&cube(2, 4.5), &[12, 24, 48, 96], 0.7, density, velocity).unwrap();
    print_report("rotating, dilating Gaussian, 2-D", &report);
    assert_second_order(&report);

    // Swapping the sense of rotation is a wrong field of the same size: it must be detected.
    let wrong_velocity = |x: &[f64], _t: f64, out: &mut [f64]| {
        out[0] = a * x[0] + w * x[1] + shift[0];
        out[1] = -w * x[0] + a * x[1] + shift[1];
    };
    let wrong =
        continuity_convergence(&cube(2, 4.5), &[12, 24, 48, 96], 0.7, density, wrong_velocity).unwrap();
    print_report("reversed rotation, 2-D", &wrong);
    assert_stalls(&wrong, &report);
}

#[test]
fn ornstein_uhlenbeck_stationary_density_has_vanishing_flux_and_residual() {
    // Diagonal case: dX_a = -theta_a X_a dt + sigma_a dW_a has stationary N(0, diag(D_a / theta_a)),
    // with D_a = sigma_a^2 / 2, and zero probability flux (detailed balance).
    let theta = [0.7, 1.3];
    let diffusion = [0.4, 0.25];
    let variance: Vec<f64> = (0..2).map(|axis| diffusion[axis] / theta[axis]).collect();
    let stationary_cov = diag(&variance);
    let density = |x: &[f64], _t: f64| gaussian_density(x, &[0.0, 0.0], &stationary_cov);
    let drift = |x: &[f64], _t: f64, out: &mut [f64]| {
        out[0] = -theta[0] * x[0];
        out[1] = -theta[1] * x[1];
    };
    let diagonal = |_x: &[f64], _t: f64, out: &mut [f64]| out.copy_from_slice(&diffusion);
    let domain = cube(2, 3.0);
    let resolutions = [16, 32, 64, 128];
    let report = fokker_planck_convergence(
        &domain,
        &resolutions,
        0.0,
        density,
        drift,
        Diffusion::Diagonal(diagonal),
    )
    .unwrap();
    print_report("OU stationary, diagonal D, 2-D", &report);
    assert_second_order(&report);

    // The flux itself is zero up to the O(h^2) error of the difference in `div(D rho)`.
    let mut max_fluxes = Vec::new();
    for cells in resolutions {
        let grid = Grid::uniform(&domain, cells).unwrap();
        let flux = fokker_planck_flux(&grid, 0.0, density, drift, &Diffusion::Diagonal(diagonal)).unwrap();
        let max = flux
            .normal_components
            .iter()
            .flat_map(|faces| faces.iter())
            .fold(0.0_f64, |m, v| m.max(v.abs()));
        max_fluxes.push(max);
    }
    let flux_orders: Vec<f64> = max_fluxes
        .windows(2)
        .map(|pair| (pair[0] / pair[1]).log2())
        .collect();
    println!(
        "OU stationary flux: max |J| [{}], orders {flux_orders:.3?}",
        scientific(&max_fluxes)
    );
    assert!(
        flux_orders.iter().all(|order| (1.8..=2.2).contains(order)),
        "flux orders {flux_orders:?}"
    );

    // Full, correlated D with a scalar theta: the stationary covariance is D / theta.
    let theta = 0.8;
    let full: Matrix = vec![vec![0.5, 0.2], vec![0.2, 0.3]];
    let stationary_cov = add_scaled(&diag(&[0.0, 0.0]), 1.0 / theta, &full);
    let full_flat = flatten(&full);
    let exact = fokker_planck_convergence(
        &domain,
        &[12, 24, 48, 96],
        0.0,
        |x, _t| gaussian_density(x, &[0.0, 0.0], &stationary_cov),
        |x, _t, out| {
            out[0] = -theta * x[0];
            out[1] = -theta * x[1];
        },
        Diffusion::Full(|_x: &[f64], _t: f64, out: &mut [f64]| out.copy_from_slice(&full_flat)),
    )
    .unwrap();
    print_report("OU stationary, full D, 2-D", &exact);
    assert_second_order(&exact);

    // The same density with the cross-diffusion dropped is no longer stationary.
    let report = fokker_planck_convergence(
        &domain,
        &[12, 24, 48, 96],
        0.0,
        |x, _t| gaussian_density(x, &[0.0, 0.0], &stationary_cov),
        |x, _t, out| {
            out[0] = -theta * x[0];
            out[1] = -theta * x[1];
        },
        Diffusion::Diagonal(|_x: &[f64], _t: f64, out: &mut [f64]| out.copy_from_slice(&[0.5, 0.3])),
    )
    .unwrap();
    print_report("OU stationary density, cross-diffusion dropped", &report);
    assert_stalls(&report, &exact);
}

/// A transient OU process with a full D: `m(t) = m0 e^{-theta t}`, `S(t) = S_inf + (S0 - S_inf) e^{-2 theta t}`,
/// `S_inf = D / theta` (from `dS/dt = -2 theta S + 2D`).
#[test]
fn ornstein_uhlenbeck_transient_with_full_diffusion_converges_at_second_order() {
    let theta = 0.9;
    let full: Matrix = vec![vec![0.5, 0.2], vec![0.2, 0.3]];
    let stationary = add_scaled(&diag(&[0.0, 0.0]), 1.0 / theta, &full);
    let cov0 = diag(&[1.4, 0.5]);
    let mean0 = [0.6, -0.3];
    let full_flat = flatten(&full);
    let density = |x: &[f64], t: f64| {
        let decay = (-theta * t).exp();
        let cov = add_scaled(&stationary, decay * decay, &add_scaled(&cov0, -1.0, &stationary));
        gaussian_density(x, &[mean0[0] * decay, mean0[1] * decay], &cov)
    };
    let report = fokker_planck_convergence(
        &cube(2, 4.0),
        &[12, 24, 48, 96],
        0.6,
        density,
        |x, _t, out| {
            out[0] = -theta * x[0];
            out[1] = -theta * x[1];
        },
        Diffusion::Full(|_x: &[f64], _t: f64, out: &mut [f64]| out.copy_from_slice(&full_flat)),
    )
    .unwrap();
    print_report("OU transient, full D, 2-D", &report);
    assert_second_order(&report);
}

/// Heat equation with a constant drift c and constant full D: `N(m0 + c t, S0 + 2 D t)`. A spread that grows 10%
/// too fast is not a solution.
#[test]
fn heat_equation_gaussian_converges_and_a_wrong_spread_does_not() {
    let drift = [0.3, -0.2, 0.1];
    let full: Matrix = vec![
        vec![0.30, 0.05, 0.02],
        vec![0.05, 0.20, -0.04],
        vec![0.02, -0.04, 0.25],
    ];
    let cov0 = diag(&[0.5, 0.6, 0.4]);
    // The leading `dims x dims` block of the 3-D problem, so the same data serve 2-D and 3-D.
    let block = |matrix: &Matrix, dims: usize| -> Matrix {
        matrix[..dims].iter().map(|row| row[..dims].to_vec()).collect()
    };
    let run = |dims: usize, resolutions: &[usize], spread_factor: f64| {
        let (full, cov0) = (block(&full, dims), block(&cov0, dims));
        let full_flat = flatten(&full);
        fokker_planck_convergence(
            &cube(dims, 3.5),
            resolutions,
            0.8,
            |x, t| {
                let mean: Vec<f64> = drift[..dims].iter().map(|c| c * t).collect();
                gaussian_density(x, &mean, &add_scaled(&cov0, 2.0 * t * spread_factor, &full))
            },
            |_x, _t, out| out.copy_from_slice(&drift[..dims]),
            Diffusion::Full(|_x: &[f64], _t: f64, out: &mut [f64]| out.copy_from_slice(&full_flat)),
        )
        .unwrap()
    };
    let exact = run(3, &[8, 16, 32], 1.0);
    print_report("heat Gaussian with drift, full D, 3-D", &exact);
    assert_second_order(&exact);
    let exact = run(2, &[12, 24, 48, 96], 1.0);
    print_report("heat Gaussian with drift, full D, 2-D", &exact);
    assert_second_order(&exact);
    let wrong = run(2, &[12, 24, 48, 96], 1.1);
    print_report("heat Gaussian, spread 10% too fast, 2-D", &wrong);
    assert_stalls(&wrong, &exact);

    // 1-D with a diagonal D and no drift, at a coarser time step ratio.
    let diffusion = 0.35;
    let variance0 = 0.4;
    let density =
        |x: &[f64], t: f64| gaussian_density(x, &[0.1], &vec![vec![variance0 + 2.0 * diffusion * t]]);
    let config = ConvergenceConfig {
        time_step_per_spacing: 0.5,
    };
    let report = ferroflow_continuity::fokker_planck_convergence_with(
        &cube(1, 4.0),
        &[20, 40, 80, 160],
        0.5,
        &config,
        density,
        |_x, _t, out| out[0] = 0.0,
        Diffusion::Diagonal(|_x: &[f64], _t: f64, out: &mut [f64]| out[0] = diffusion),
    )
    .unwrap();
    print_report("heat Gaussian, 1-D", &report);
    assert_second_order(&report);
}

/// A space-dependent diffusion `D(x) = d0 (1 + x^2)` with drift `-theta x`: the Ito stationary density makes
/// `mu rho - d/dx(D rho)` vanish, so `D rho ~ (1 + x^2)^(-theta / (2 d0))`. The density that would cancel
/// `mu rho - D d rho/dx` instead (another SDE convention) must be refused.
#[test]
fn space_dependent_diffusion_uses_the_ito_flux() {
    let (theta, d0) = (1.2, 0.4);
    let exponent = -theta / (2.0 * d0);
    let drift = |x: &[f64], _t: f64, out: &mut [f64]| out[0] = -theta * x[0];
    let diffusion = |x: &[f64], _t: f64, out: &mut [f64]| out[0] = d0 * (1.0 + x[0] * x[0]);
    let domain = cube(1, 3.0);
    let ito = fokker_planck_convergence(
        &domain,
        &[20, 40, 80, 160],
        0.0,
        |x, _t| (1.0 + x[0] * x[0]).powf(exponent - 1.0),
        drift,
        Diffusion::Diagonal(diffusion),
    )
    .unwrap();
    print_report("Ito stationary density, D(x) = d0 (1 + x^2)", &ito);
    assert_second_order(&ito);
    let anti_ito = fokker_planck_convergence(
        &domain,
        &[20, 40, 80, 160],
        0.0,
        |x, _t| (1.0 + x[0] * x[0]).powf(exponent),
        drift,
        Diffusion::Diagonal(diffusion),
    )
    .unwrap();
    print_report("anti-Ito density under the Ito flux", &anti_ito);
    assert_stalls(&anti_ito, &ito);
}

#[test]
fn time_step_ratio_is_reported_and_used() {
    let flow = AffineGaussianFlow::new(1);
    let config = ConvergenceConfig {
        time_step_per_spacing: 0.25,
    };
    let report = continuity_convergence_with(
        &cube(1, 4.5),
        &[20, 40],
        0.5,
        &config,
        |x, t| flow.density(x, t),
        |x, t, out| flow.velocity(x, t, out),
    )
    .unwrap();
    assert_eq!(report.time_steps, vec![0.25 * 9.0 / 20.0, 0.25 * 9.0 / 40.0]);
    assert_eq!(report.max_residuals.len(), 2);
    assert!(
        report
            .max_residuals
            .iter()
            .zip(&report.residual_norms)
            .all(|(max, l2)| *max > 0.0 && *l2 > 0.0)
    );
}
