//! The Runge-Kutta driver against closed forms: convergence orders, tolerances, statistics, dense output,
//! backward integration and errors.

mod common;

use common::*;
use ferroflow_solvers::{
    AdaptiveOptions, FnField, Method, OdeOptions, SolverError, StepControl, solve, solve_with_trajectory,
};
use ndarray::{Array1, array};

/// Expected order of the propagated solution of each method.
fn order(method: Method) -> f64 {
    match method {
        Method::Euler => 1.0,
        Method::Midpoint | Method::Heun => 2.0,
        Method::Bosh3 => 3.0,
        Method::Rk4 => 4.0,
        Method::Dopri5 => 5.0,
    }
}

/// A step count where each method's error is asymptotic but well above round-off.
fn base_steps(method: Method) -> usize {
    match method {
        Method::Euler => 200,
        Method::Midpoint | Method::Heun => 40,
        Method::Bosh3 => 20,
        Method::Rk4 | Method::Dopri5 => 10,
    }
}

/// Step counts for the nonlinear problem (on `[0, 2]`): asymptotic yet above round-off. Riccati's
/// `y' = y^2` is not used here because dopri5's leading error term nearly cancels on it, which hides the order.
fn base_steps_nonlinear(method: Method) -> usize {
    match method {
        Method::Euler => 80,
        Method::Midpoint | Method::Heun => 40,
        Method::Rk4 => 10,
        Method::Bosh3 => 20,
        Method::Dopri5 => 40,
    }
}

#[test]
fn fixed_step_orders_on_rotation_and_a_nonlinear_problem() {
    for method in Method::ALL {
        let mut rotation_errors = Vec::new();
        let mut nonlinear_errors = Vec::new();
        for doubling in 0..3 {
            let options = OdeOptions::fixed(method, base_steps(method) << doubling);
            let y0 = array![1.0, 0.5];
            let solution = solve(&mut rotation(), y0.clone(), 0.0, 1.0, &options).unwrap();
            rotation_errors.push(max_error(&solution.state, &rotation_exact(&y0, 1.0)));
            let options = OdeOptions::fixed(method, base_steps_nonlinear(method) << doubling);
            let y0 = array![1.0];
            let solution = solve(&mut quadratic_decay(), y0.clone(), 0.0, 2.0, &options).unwrap();
            nonlinear_errors.push(max_error(&solution.state, &quadratic_decay_exact(&y0, 2.0)));
        }
        for (problem, errors) in [("rotation", &rotation_errors), ("y' = -2ty^2", &nonlinear_errors)] {
            let orders = observed_orders(errors);
            let fitted = fitted_order(errors);
            eprintln!(
                "{method:?} {problem}: errors {} orders {orders:.3?} fitted {fitted:.3}",
                scientific(errors)
            );
            assert!(
                (fitted - order(method)).abs() < 0.3,
                "{method:?} on {problem}: order {fitted}"
            );
        }
    }
}

#[test]
fn fixed_step_statistics_are_exact() {
    let n_steps = 17;
    for method in Method::ALL {
        let tableau = method.tableau();
        let solution = solve(
            &mut rotation(),
            array![1.0, 0.0],
            0.0,
            1.0,
            &OdeOptions::fixed(method, n_steps),
        )
        .unwrap();
        let n_stages = tableau.n_stages();
        // FSAL saves one evaluation on every step after the first.
        let expected = if tableau.fsal {
            n_stages + (n_stages - 1) * (n_steps - 1)
        } else {
            n_stages * n_steps
        };
        assert_eq!(solution.stats.field_evals, expected, "{method:?}");
        assert_eq!(solution.stats.steps, n_steps);
        assert_eq!(solution.stats.rejected_steps, 0);
    }
    // Pin the numbers themselves, so that a change of the FSAL bookkeeping fails too.
    let evals = |method| {
        solve(
            &mut rotation(),
            array![1.0, 0.0],
            0.0,
            1.0,
            &OdeOptions::fixed(method, 10),
        )
        .unwrap()
        .stats
        .field_evals
    };
    assert_eq!(
        [
            Method::Euler,
            Method::Midpoint,
            Method::Heun,
            Method::Rk4,
            Method::Bosh3,
            Method::Dopri5
        ]
        .map(evals),
        [10, 20, 20, 40, 31, 61]
    );
}

#[test]
fn adaptive_methods_meet_their_tolerance_forwards_and_backwards() {
    for method in [Method::Bosh3, Method::Dopri5] {
        for tol in [1e-5, 1e-8] {
            let options = OdeOptions::adaptive(method, tol, tol);
            // Rotation over two full turns.
            let y0 = array![1.0, 0.5];
            let t_end = 2.0 * std::f64::consts::PI;
            let forward = solve(&mut rotation(), y0.clone(), 0.0, t_end, &options).unwrap();
            let error = max_error(&forward.state, &rotation_exact(&y0, t_end));
            assert!(
                error < 100.0 * tol,
                "{method:?} tol {tol}: rotation error {error:e}"
            );
            let back = solve(&mut rotation(), forward.state.clone(), t_end, 0.0, &options).unwrap();
            let error = max_error(&back.state, &y0);
            assert!(
                error < 100.0 * tol,
                "{method:?} tol {tol}: round trip error {error:e}"
            );
            // Riccati up to y = 4 (t = 1.5 from y0 = 0.5) and back from there.
            let y0 = array![0.5];
            let forward = solve(&mut riccati(), y0.clone(), 0.0, 1.5, &options).unwrap();
            let exact = riccati_exact(&y0, 1.5);
            let error = max_error(&forward.state, &exact) / exact[0];
            assert!(
                error < 100.0 * tol,
                "{method:?} tol {tol}: riccati relative error {error:e}"
            );
            let back = solve(&mut riccati(), exact, 1.5, 0.0, &options).unwrap();
            let error = max_error(&back.state, &y0);
            assert!(
                error < 100.0 * tol,
                "{method:?} tol {tol}: riccati backward error {error:e}"
            );
            eprintln!("{method:?} tol {tol:e}: riccati stats {:?}", forward.stats);
        }
    }
}

#[test]
fn adaptive_statistics_are_bounded_and_consistent() {
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-8, 1e-8);
    let solution = solve(
        &mut rotation(),
        array![1.0, 0.5],
        0.0,
        2.0 * std::f64::consts::PI,
        &options,
    )
    .unwrap();
    let stats = solution.stats;
    eprintln!("dopri5 rotation stats: {stats:?}");
    // One evaluation at t0, one probe for the initial step, six per attempt (FSAL).
    assert_eq!(stats.field_evals, 2 + 6 * (stats.steps + stats.rejected_steps));
    assert!(stats.steps <= STEPS_BOUND_DOPRI5, "cost regression: {stats:?}");
    assert!(stats.rejected_steps <= 3, "cost regression: {stats:?}");
    let options = OdeOptions::adaptive(Method::Bosh3, 1e-6, 1e-6);
    let solution = solve(
        &mut rotation(),
        array![1.0, 0.5],
        0.0,
        2.0 * std::f64::consts::PI,
        &options,
    )
    .unwrap();
    let stats = solution.stats;
    eprintln!("bosh3 rotation stats: {stats:?}");
    assert_eq!(stats.field_evals, 2 + 3 * (stats.steps + stats.rejected_steps));
    assert!(stats.steps <= STEPS_BOUND_BOSH3, "cost regression: {stats:?}");
    assert!(stats.rejected_steps <= 3, "cost regression: {stats:?}");
    // A given initial step skips the probe.
    let control = StepControl::Adaptive(AdaptiveOptions {
        initial_step: Some(0.01),
        ..AdaptiveOptions::with_tolerances(1e-8, 1e-8)
    });
    let options = OdeOptions {
        method: Method::Dopri5,
        control,
    };
    let stats = solve(&mut rotation(), array![1.0, 0.5], 0.0, 1.0, &options)
        .unwrap()
        .stats;
    assert_eq!(stats.field_evals, 1 + 6 * (stats.steps + stats.rejected_steps));
}

/// Measured: 119 accepted steps, none rejected; about 10% slack.
const STEPS_BOUND_DOPRI5: usize = 130;
/// Measured: 315 accepted steps, none rejected; about 10% slack.
const STEPS_BOUND_BOSH3: usize = 345;

#[test]
fn dense_output_converges_at_the_interpolant_order() {
    // Output times that never fall on a step boundary of the grids used.
    let times = [0.0, 0.13, 0.41, 0.77, 1.0];
    for method in Method::ALL {
        // Cubic Hermite interpolation errs by O(h^4) and dopri5's continuous extension (order 4) by O(h^5)
        // per step, so the interpolant keeps every method's global order.
        let expected = order(method);
        let mut errors = Vec::new();
        for doubling in 0..3 {
            let options = OdeOptions::fixed(method, base_steps(method) << doubling);
            let y0 = array![1.0, 0.5];
            let solution = solve_with_trajectory(&mut rotation(), y0.clone(), &times, &options).unwrap();
            assert_eq!(solution.trajectory.len(), times.len());
            assert_eq!(solution.trajectory[0], y0);
            let error = times
                .iter()
                .zip(&solution.trajectory)
                .map(|(&t, state)| max_error(state, &rotation_exact(&y0, t)))
                .fold(0.0, f64::max);
            errors.push(error);
        }
        let orders = observed_orders(&errors);
        let fitted = fitted_order(&errors);
        eprintln!(
            "{method:?} dense: errors {} orders {orders:.3?} fitted {fitted:.3}",
            scientific(&errors)
        );
        assert!((fitted - expected).abs() < 0.3, "{method:?} dense order {fitted}");
    }
}

#[test]
fn adaptive_dense_output_meets_tolerance_and_leaves_the_solve_unchanged() {
    let times: Vec<f64> = (0..=20).map(|idx| -0.35 * idx as f64).collect();
    for method in [Method::Bosh3, Method::Dopri5] {
        let tol = 1e-8;
        let options = OdeOptions::adaptive(method, tol, tol);
        let y0 = array![1.0, 0.5];
        let solution = solve_with_trajectory(&mut rotation(), y0.clone(), &times, &options).unwrap();
        for (&t, state) in times.iter().zip(&solution.trajectory) {
            let error = max_error(state, &rotation_exact(&y0, t));
            assert!(error < 100.0 * tol, "{method:?} at t = {t}: {error:e}");
        }
        let plain = solve(&mut rotation(), y0.clone(), 0.0, times[20], &options).unwrap();
        assert_eq!(plain.state, solution.state);
        assert_eq!(plain.stats, solution.stats);
        assert_eq!(solution.trajectory[20], solution.state);
    }
}

#[test]
fn hermite_dense_output_costs_at_most_one_extra_evaluation() {
    let options = OdeOptions::fixed(Method::Rk4, 10);
    let mid_step =
        solve_with_trajectory(&mut rotation(), array![1.0, 0.0], &[0.0, 0.55, 1.0], &options).unwrap();
    // The evaluation at the end of the interpolated step is reused as the next step's first stage.
    assert_eq!(mid_step.stats.field_evals, 40);
    let last_step =
        solve_with_trajectory(&mut rotation(), array![1.0, 0.0], &[0.0, 0.95, 1.0], &options).unwrap();
    assert_eq!(last_step.stats.field_evals, 41);
    let on_grid =
        solve_with_trajectory(&mut rotation(), array![1.0, 0.0], &[0.0, 0.5, 1.0], &options).unwrap();
    assert_eq!(on_grid.stats.field_evals, 40);
}

#[test]
fn non_finite_state_names_the_time() {
    let mut field =
        FnField(|t: f64, y: &Array1<f64>| if t >= 0.5 { y.mapv(|_| f64::NAN) } else { y.clone() });
    let error = solve(
        &mut field,
        array![1.0],
        0.0,
        1.0,
        &OdeOptions::fixed(Method::Euler, 10),
    )
    .unwrap_err();
    match &error {
        SolverError::NonFiniteState {
            t_reached,
            t_attempted,
        } => {
            assert_eq!(*t_reached, 0.5);
            assert!((t_attempted - 0.6).abs() < 1e-12);
        }
        other => panic!("expected a non-finite state error, got {other:?}"),
    }
    assert!(error.to_string().contains("t = 0.5"), "{error}");
    // Adaptive: the slope at the accepted state is NaN past t = 0.5, no smaller step can help.
    let error = solve(
        &mut field,
        array![1.0],
        0.0,
        1.0,
        &OdeOptions::adaptive(Method::Dopri5, 1e-6, 1e-6),
    )
    .unwrap_err();
    match error {
        SolverError::NonFiniteState { t_reached, .. } => {
            assert!((0.4..0.5).contains(&t_reached), "{t_reached}")
        }
        other => panic!("expected a non-finite state error, got {other:?}"),
    }
}

#[test]
fn blow_up_is_a_step_size_underflow_not_a_hang() {
    // y' = y^2 from y0 = 1 blows up at t = 1.
    let error = solve(
        &mut riccati(),
        array![1.0],
        0.0,
        2.0,
        &OdeOptions::adaptive(Method::Dopri5, 1e-6, 1e-6),
    )
    .unwrap_err();
    match error {
        SolverError::StepSizeUnderflow { t, step, min_step } => {
            assert!((t - 1.0).abs() < 1e-3, "{t}");
            assert!(step < min_step);
        }
        other => panic!("expected step size underflow, got {other:?}"),
    }
}

#[test]
fn max_steps_is_enforced() {
    let control = StepControl::Adaptive(AdaptiveOptions {
        max_steps: 5,
        ..AdaptiveOptions::with_tolerances(1e-10, 1e-10)
    });
    let options = OdeOptions {
        method: Method::Dopri5,
        control,
    };
    let error = solve(&mut rotation(), array![1.0, 0.0], 0.0, 10.0, &options).unwrap_err();
    assert!(
        matches!(
            error,
            SolverError::MaxStepsExceeded {
                max_steps: 5,
                t_end: 10.0,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn bad_options_are_refused_with_the_key() {
    let y0 = array![1.0, 0.0];
    let refused_key = |options: &OdeOptions| match solve(&mut rotation(), y0.clone(), 0.0, 1.0, options) {
        Err(SolverError::InvalidOption { key, .. }) => key,
        other => panic!("expected an invalid option, got {other:?}"),
    };
    assert_eq!(
        refused_key(&OdeOptions::adaptive(Method::Dopri5, 0.0, 1e-3)),
        "atol"
    );
    assert_eq!(
        refused_key(&OdeOptions::adaptive(Method::Dopri5, -1.0, 1e-3)),
        "atol"
    );
    assert_eq!(
        refused_key(&OdeOptions::adaptive(Method::Dopri5, 1e-6, -1.0)),
        "rtol"
    );
    assert_eq!(
        refused_key(&OdeOptions::adaptive(Method::Rk4, 1e-6, 1e-6)),
        "method"
    );
    assert_eq!(refused_key(&OdeOptions::fixed(Method::Rk4, 0)), "n_steps");
    let options = OdeOptions::fixed(Method::Rk4, 4);
    for times in [&[][..], &[0.0], &[0.0, 0.5, 0.4], &[0.0, 0.0], &[0.0, f64::NAN]] {
        let result = solve_with_trajectory(&mut rotation(), y0.clone(), times, &options);
        assert!(
            matches!(result, Err(SolverError::InvalidTimeGrid { .. })),
            "{times:?}: {result:?}"
        );
    }
    assert!(matches!(
        solve(&mut rotation(), y0.clone(), 1.0, 1.0, &options),
        Err(SolverError::InvalidTimeGrid { .. })
    ));
}

#[test]
fn field_errors_carry_the_time() {
    let result = solve(
        &mut failing,
        array![1.0],
        0.25,
        1.0,
        &OdeOptions::fixed(Method::Euler, 3),
    );
    match result {
        Err(SolverError::Field { t, .. }) => assert_eq!(t, 0.25),
        other => panic!("expected a field error, got {other:?}"),
    }
}
