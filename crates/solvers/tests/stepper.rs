//! The public stepper and the per-step observer hook: stepping by hand reproduces the solve functions bit for
//! bit, observers see every accepted step once and in order at no field evaluation, path energies match closed
//! forms, and an observer's error stops the solve.

mod common;

use common::*;
use ferroflow_solvers::ode::solve_tableau_with_trajectory;
use ferroflow_solvers::{
    AdaptiveOptions, ButcherTableau, FnField, FnObserver, Method, OdeOptions, OdeStepper, SolverError,
    StepControl, StepView, solve, solve_observed, solve_observed_with_trajectory, solve_with_trajectory,
};
use ndarray::{Array1, array};

/// Heun's method with Euler embedded: adaptive, neither FSAL nor with a continuous extension, so its dense
/// output is Hermite with an extra evaluation that the next step reuses.
const HEUN_EULER: ButcherTableau = ButcherTableau {
    name: "heun_euler",
    c: &[0.0, 1.0],
    a: &[&[], &[1.0]],
    b: &[0.5, 0.5],
    b_embedded: Some(&[1.0, 0.0]),
    order: 2,
    embedded_order: 1,
    fsal: false,
    dense: None,
};

/// Fixed and adaptive options over every method that supports them, with a given first step among them.
fn all_options() -> Vec<OdeOptions> {
    let mut options: Vec<OdeOptions> = Method::ALL
        .into_iter()
        .map(|method| OdeOptions::fixed(method, 13))
        .collect();
    for method in [Method::Bosh3, Method::Dopri5] {
        options.push(OdeOptions::adaptive(method, 1e-7, 1e-7));
        options.push(OdeOptions {
            method,
            control: StepControl::Adaptive(AdaptiveOptions {
                initial_step: Some(0.3),
                ..AdaptiveOptions::with_tolerances(1e-5, 1e-5)
            }),
        });
    }
    options
}

/// Squared Euclidean norm.
fn norm_squared(x: &Array1<f64>) -> f64 {
    x.dot(x)
}

#[test]
fn stepping_by_hand_reproduces_solve_bit_for_bit() {
    let y0 = array![1.0, 0.5];
    for options in all_options() {
        for (t0, t1) in [(0.0, 2.5), (2.5, -1.0)] {
            let expected = solve(&mut rotation(), y0.clone(), t0, t1, &options).unwrap();
            let mut field = rotation();
            let mut stepper = OdeStepper::new(y0.clone(), t0, t1, &options).unwrap();
            assert_eq!(stepper.t(), t0);
            assert_eq!(stepper.end_time(), t1);
            while stepper.step(&mut field).unwrap().is_some() {}
            assert!(stepper.is_finished());
            assert_eq!(stepper.t(), t1);
            // A finished stepper takes no further step and evaluates nothing.
            assert!(stepper.step(&mut field).unwrap().is_none());
            assert_eq!(stepper.stats(), expected.stats, "{options:?} from {t0} to {t1}");
            let solution = stepper.into_solution();
            assert_eq!(solution.state, expected.state, "{options:?} from {t0} to {t1}");
            assert!(solution.trajectory.is_empty());
        }
    }
}

#[test]
fn interpolating_by_hand_reproduces_the_trajectory_bit_for_bit() {
    let times = [0.0, 0.13, 0.41, 0.55, 0.77, 0.95, 1.0];
    let y0 = array![1.0, 0.5];
    let controls = [
        StepControl::Fixed { n_steps: 10 },
        StepControl::Adaptive(AdaptiveOptions::with_tolerances(1e-6, 1e-6)),
    ];
    let tableaux = [
        Method::Rk4.tableau(),
        Method::Bosh3.tableau(),
        Method::Dopri5.tableau(),
        &HEUN_EULER,
    ];
    for tableau in tableaux {
        for control in controls
            .iter()
            .filter(|control| tableau.is_adaptive() || matches!(control, StepControl::Fixed { .. }))
        {
            let expected =
                solve_tableau_with_trajectory(&mut rotation(), y0.clone(), &times, tableau, control).unwrap();
            let mut field = rotation();
            let mut stepper = OdeStepper::with_tableau(y0.clone(), times[0], 1.0, tableau, control).unwrap();
            // Before the first step only the start time can be interpolated.
            let mut trajectory = vec![stepper.interpolate(&mut field, times[0]).unwrap()];
            let mut next_idx = 1;
            while let Some(step) = stepper.step(&mut field).unwrap() {
                let t_step = step.t;
                while next_idx < times.len() && times[next_idx] <= t_step {
                    trajectory.push(stepper.interpolate(&mut field, times[next_idx]).unwrap());
                    next_idx += 1;
                }
            }
            let label = format!("{} {control:?}", tableau.name);
            assert_eq!(trajectory, expected.trajectory, "{label}");
            assert_eq!(stepper.stats(), expected.stats, "{label}");
            assert_eq!(stepper.into_state(), expected.state, "{label}");
        }
    }
}

#[test]
fn interpolation_outside_the_last_step_is_refused() {
    let mut field = rotation();
    let options = OdeOptions::fixed(Method::Rk4, 4);
    let mut stepper = OdeStepper::new(array![1.0, 0.0], 0.0, 1.0, &options).unwrap();
    assert!(matches!(
        stepper.interpolate(&mut field, 0.1),
        Err(SolverError::InvalidTimeGrid { .. })
    ));
    stepper.step(&mut field).unwrap();
    for t_out in [-0.01, 0.26, f64::NAN] {
        assert!(
            matches!(
                stepper.interpolate(&mut field, t_out),
                Err(SolverError::InvalidTimeGrid { .. })
            ),
            "{t_out}"
        );
    }
    assert_eq!(stepper.stats().field_evals, 4, "refusals evaluate nothing");
    // Inside the step, RK4's Hermite dense output evaluates the field once at the step's end.
    assert!(stepper.interpolate(&mut field, 0.1).is_ok());
    assert_eq!(stepper.stats().field_evals, 5);
}

#[test]
fn euler_path_energy_of_a_constant_field_is_exact() {
    // Steps of 1/8 and |c|^2 = 25: every product and partial sum is exact in binary floating point.
    let velocity = array![3.0, -4.0];
    let mut field = FnField(|_t: f64, x: &Array1<f64>| x.mapv(|_| 0.0) + &velocity);
    let mut energy = 0.0;
    let mut observer = FnObserver(|step: &StepView<'_, Array1<f64>>| {
        energy += norm_squared(step.velocity_prev) * step.h;
    });
    let options = OdeOptions::fixed(Method::Euler, 16);
    solve_observed(&mut field, array![1.0, 1.0], 0.0, 2.0, &options, &mut observer).unwrap();
    assert_eq!(energy, 25.0 * 2.0);
}

#[test]
fn euler_path_energy_of_a_linear_field_matches_the_closed_form() {
    // Euler on dx/dt = a x gives x_k = (1 + a dt)^k x0, so the energy is dt sum_k a^2 (1 + a dt)^(2k) |x0|^2.
    let rate = 0.7;
    let (t0, t1, n_steps) = (0.0, 1.5, 30);
    let x0 = array![1.0, -2.0, 0.5];
    let mut field = FnField(|_t: f64, x: &Array1<f64>| x * rate);
    let mut energy = 0.0;
    let mut observer = FnObserver(|step: &StepView<'_, Array1<f64>>| {
        energy += norm_squared(step.velocity_prev) * step.h;
    });
    let options = OdeOptions::fixed(Method::Euler, n_steps);
    solve_observed(&mut field, x0.clone(), t0, t1, &options, &mut observer).unwrap();
    let dt = (t1 - t0) / n_steps as f64;
    let growth = 1.0 + rate * dt;
    let expected = dt
        * (0..n_steps)
            .map(|step_idx| rate * rate * growth.powi(2 * step_idx as i32) * norm_squared(&x0))
            .sum::<f64>();
    assert!(
        (energy - expected).abs() < 1e-13 * expected,
        "{energy} vs {expected}"
    );
}

#[test]
fn observers_see_every_accepted_step_once_and_in_order() {
    for options in all_options() {
        for (t0, t1) in [(0.0, 2.5), (2.5, -1.0)] {
            let mut views: Vec<(usize, f64, f64, f64)> = Vec::new();
            let mut last_state: Option<Array1<f64>> = None;
            let mut state_prev_matches = true;
            let mut observer = FnObserver(|step: &StepView<'_, Array1<f64>>| {
                views.push((step.step_idx, step.t_prev, step.t, step.h));
                if let Some(last) = &last_state {
                    state_prev_matches &= last == step.state_prev;
                }
                last_state = Some(step.state.clone());
            });
            let solution =
                solve_observed(&mut rotation(), array![1.0, 0.5], t0, t1, &options, &mut observer).unwrap();
            let label = format!("{options:?} from {t0} to {t1}");
            assert_eq!(views.len(), solution.stats.steps, "{label}");
            assert_eq!(views[0].1, t0, "{label}");
            assert_eq!(
                views[views.len() - 1].2,
                t1,
                "the last step ends exactly at t1: {label}"
            );
            let direction = (t1 - t0).signum();
            for (position, &(step_idx, t_prev, t, h)) in views.iter().enumerate() {
                assert_eq!(step_idx, position, "{label}");
                assert!(direction * (t - t_prev) > 0.0, "{label}: {t_prev} -> {t}");
                assert_eq!(h, t - t_prev, "{label}");
                if position > 0 {
                    assert_eq!(t_prev, views[position - 1].2, "{label}");
                }
            }
            assert!(
                state_prev_matches,
                "each step starts where the last one ended: {label}"
            );
            assert_eq!(last_state.as_ref(), Some(&solution.state), "{label}");
        }
    }
}

#[test]
fn velocity_prev_is_the_field_at_the_start_of_the_step() {
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-6, 1e-6);
    let mut observer = |step: &StepView<'_, Array1<f64>>| -> Result<(), SolverError> {
        let expected = rotation().0(step.t_prev, step.state_prev);
        assert_eq!(step.velocity_prev, &expected, "step {}", step.step_idx);
        Ok(())
    };
    solve_observed(
        &mut rotation(),
        array![1.0, 0.5],
        0.0,
        3.0,
        &options,
        &mut observer,
    )
    .unwrap();
}

#[test]
fn observing_adds_no_field_evaluation_and_changes_nothing() {
    let times: Vec<f64> = (0..=10).map(|idx| 0.23 * idx as f64).collect();
    for options in all_options() {
        let y0 = array![1.0, 0.5];
        let mut energy = 0.0;
        let mut observer = FnObserver(|step: &StepView<'_, Array1<f64>>| {
            energy += norm_squared(step.velocity_prev) * step.h;
        });
        let observed = solve_observed(
            &mut rotation(),
            y0.clone(),
            times[0],
            times[10],
            &options,
            &mut observer,
        )
        .unwrap();
        let plain = solve(&mut rotation(), y0.clone(), times[0], times[10], &options).unwrap();
        assert_eq!(observed.stats, plain.stats, "{options:?}");
        assert_eq!(observed.state, plain.state, "{options:?}");
        assert!(energy > 0.0, "{options:?}");

        let mut observer = FnObserver(|_step: &StepView<'_, Array1<f64>>| {});
        let observed =
            solve_observed_with_trajectory(&mut rotation(), y0.clone(), &times, &options, &mut observer)
                .unwrap();
        let plain = solve_with_trajectory(&mut rotation(), y0.clone(), &times, &options).unwrap();
        assert_eq!(observed.stats, plain.stats, "{options:?}");
        assert_eq!(observed.state, plain.state, "{options:?}");
        assert_eq!(observed.trajectory, plain.trajectory, "{options:?}");
    }
}

#[test]
fn an_observer_error_stops_the_solve_and_is_returned() {
    let options = OdeOptions::fixed(Method::Rk4, 10);
    let mut n_calls = 0;
    let mut observer = |step: &StepView<'_, Array1<f64>>| {
        n_calls += 1;
        if step.step_idx == 2 {
            return Err(SolverError::observer(step.t, "enough"));
        }
        Ok(())
    };
    let mut n_evals = 0;
    let mut field = |t: f64, x: &Array1<f64>| -> Result<Array1<f64>, SolverError> {
        n_evals += 1;
        Ok(rotation().0(t, x))
    };
    let error = solve_observed(&mut field, array![1.0, 0.0], 0.0, 1.0, &options, &mut observer).unwrap_err();
    match &error {
        SolverError::Observer { t, source } => {
            assert!((t - 0.3).abs() < 1e-15, "{t}");
            assert_eq!(source.to_string(), "enough");
        }
        other => panic!("expected the observer's error, got {other:?}"),
    }
    assert!(error.to_string().contains("enough"), "{error}");
    assert_eq!(n_calls, 3);
    // Three RK4 steps were taken and no more.
    assert_eq!(n_evals, 12);
}
