//! Bad input is refused with the right typed error, never a panic: every `ContinuityError` variant is reached.

use ferroflow_continuity::{
    CellRegion, ContinuityError, ConvergenceConfig, Diffusion, Domain, FaceField, Grid, TimeSpan,
    advective_flux, boundary_outflow, central_divergence, central_gradient, continuity_convergence,
    continuity_convergence_with, continuity_residual, diffusion_from_noise, eulerian_residual,
    faces_from_cells, fokker_planck_convergence, fv_divergence, integrate_log_density,
    integrate_log_density_numeric, mass_balance, numeric_divergence, region_integral, residual_norms,
};
use ndarray::{ArrayD, IxDyn};

fn unit_square() -> Domain {
    Domain::new(vec![0.0, 0.0], vec![1.0, 1.0]).unwrap()
}

fn one(_x: &[f64], _t: f64) -> f64 {
    1.0
}

fn still(_x: &[f64], _t: f64, out: &mut [f64]) {
    out.fill(0.0);
}

#[test]
fn dimensions_outside_one_to_three_are_refused() {
    for dims in [0, 4] {
        let error = Domain::new(vec![0.0; dims], vec![1.0; dims]).unwrap_err();
        assert_eq!(
            error,
            ContinuityError::DimensionOutOfRange { what: "domain", dims }
        );
    }
    // A domain literal bypasses `Domain::new`; the grid and the verifier validate it again.
    let literal = Domain {
        lower: vec![0.0; 4],
        upper: vec![1.0; 4],
    };
    assert!(matches!(
        Grid::uniform(&literal, 4),
        Err(ContinuityError::DimensionOutOfRange { dims: 4, .. })
    ));
    assert!(matches!(
        continuity_convergence(&literal, &[4, 8], 0.0, one, still),
        Err(ContinuityError::DimensionOutOfRange { dims: 4, .. })
    ));
}

#[test]
fn empty_points_are_refused() {
    assert_eq!(
        numeric_divergence(still, &[], 0.0, 1e-3).unwrap_err(),
        ContinuityError::EmptyPoint {
            what: "divergence location x"
        }
    );
    let span = TimeSpan {
        start: 0.0,
        end: 1.0,
        n_steps: 4,
    };
    assert_eq!(
        integrate_log_density_numeric(still, &[], &span, 1e-3).unwrap_err(),
        ContinuityError::EmptyPoint {
            what: "trajectory start"
        }
    );
}

#[test]
fn shape_mismatches_are_refused() {
    let error = Domain::new(vec![0.0], vec![1.0, 2.0]).unwrap_err();
    assert_eq!(
        error,
        ContinuityError::ShapeMismatch {
            what: "domain upper corner".into(),
            expected: vec![1],
            actual: vec![2]
        }
    );
    let grid = Grid::uniform(&unit_square(), 4).unwrap();
    assert!(matches!(
        Grid::new(&unit_square(), &[4]),
        Err(ContinuityError::ShapeMismatch { .. })
    ));

    // A face field with a wrong shape along axis 1, and one with too few axes.
    let mut flux = grid.sample_faces("zero", |_x, out| out.fill(0.0)).unwrap();
    flux.normal_components[1] = ArrayD::zeros(IxDyn(&[4, 4]));
    let error = fv_divergence(&grid, &flux).unwrap_err();
    assert_eq!(
        error,
        ContinuityError::ShapeMismatch {
            what: "face field along axis 1".into(),
            expected: vec![4, 5],
            actual: vec![4, 4]
        }
    );
    let short = FaceField {
        normal_components: vec![ArrayD::zeros(IxDyn(&[5, 4]))],
    };
    assert!(matches!(
        boundary_outflow(&grid, &CellRegion::whole(&grid), &short),
        Err(ContinuityError::ShapeMismatch { .. })
    ));

    let wrong_cells = ArrayD::zeros(IxDyn(&[4, 5]));
    assert!(matches!(
        central_gradient(&grid, wrong_cells.view()),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        central_divergence(&grid, wrong_cells.view()),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        faces_from_cells(&grid, wrong_cells.view()),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        residual_norms(&grid, wrong_cells.view()),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    let good_flux = grid.sample_faces("zero", |_x, out| out.fill(0.0)).unwrap();
    assert!(matches!(
        eulerian_residual(&grid, wrong_cells.view(), &good_flux),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        region_integral(&grid, &CellRegion::whole(&grid), wrong_cells.view()),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        CellRegion::new(&grid, &[0], &[1]),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        diffusion_from_noise(&[1.0; 5], 2, 3, &mut [0.0; 4]),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        diffusion_from_noise(&[1.0; 6], 2, 3, &mut [0.0; 3]),
        Err(ContinuityError::ShapeMismatch { .. })
    ));
}

#[test]
fn non_finite_inputs_are_refused() {
    assert_eq!(
        Domain::new(vec![0.0, f64::NAN], vec![1.0, 1.0])
            .unwrap_err()
            .to_string(),
        "domain lower corner[1] is NaN, expected a finite number"
    );
    assert!(matches!(
        Domain::new(vec![0.0], vec![f64::INFINITY]),
        Err(ContinuityError::NonFiniteInput {
            what: "domain upper corner",
            index: 0,
            ..
        })
    ));
    let grid = Grid::uniform(&unit_square(), 4).unwrap();
    let mut values = ArrayD::zeros(IxDyn(&[4, 4]));
    values[[2, 3]] = f64::NEG_INFINITY;
    assert!(matches!(
        central_gradient(&grid, values.view()),
        Err(ContinuityError::NonFiniteInput { index: 11, .. })
    ));
    assert!(matches!(
        residual_norms(&grid, values.view()),
        Err(ContinuityError::NonFiniteInput { .. })
    ));
    let mut flux = grid.sample_faces("zero", |_x, out| out.fill(0.0)).unwrap();
    flux.normal_components[0][[0, 0]] = f64::NAN;
    assert!(matches!(
        fv_divergence(&grid, &flux),
        Err(ContinuityError::NonFiniteInput {
            what: "face flux",
            ..
        })
    ));
    assert!(matches!(
        continuity_residual(&grid, f64::NAN, 0.1, one, still),
        Err(ContinuityError::NonFiniteInput { .. })
    ));
    let span = TimeSpan {
        start: 0.0,
        end: f64::INFINITY,
        n_steps: 4,
    };
    assert!(matches!(
        integrate_log_density(still, |_x, _t| 0.0, &[0.0], &span),
        Err(ContinuityError::NonFiniteInput { .. })
    ));
    let span = TimeSpan {
        start: 0.0,
        end: 1.0,
        n_steps: 4,
    };
    assert!(matches!(
        integrate_log_density(still, |_x, _t| 0.0, &[0.0, f64::NAN], &span),
        Err(ContinuityError::NonFiniteInput {
            what: "trajectory start",
            index: 1,
            ..
        })
    ));
}

#[test]
fn non_finite_closure_values_are_refused() {
    let domain = unit_square();
    // A density that blows up on the line x = 0.5 (a face of the 4-cell grid).
    let singular = |x: &[f64], _t: f64| 1.0 / (x[0] - 0.5);
    let error = continuity_convergence(&domain, &[4, 8], 0.0, singular, still).unwrap_err();
    assert!(
        matches!(
            error,
            ContinuityError::NonFiniteEvaluation { what: "density", .. }
        ),
        "{error:?}"
    );
    let runaway = |_x: &[f64], _t: f64, out: &mut [f64]| out.fill(f64::INFINITY);
    let error = continuity_convergence(&domain, &[4, 8], 0.3, one, runaway).unwrap_err();
    assert_eq!(
        error.to_string(),
        "velocity at x = [0.0, 0.125], t = 0.3 evaluated to inf, expected a finite number"
    );
    let error = fokker_planck_convergence(&domain, &[4, 8], 0.0, one, runaway, Diffusion::Diagonal(still))
        .unwrap_err();
    assert!(matches!(
        error,
        ContinuityError::NonFiniteEvaluation { what: "drift", .. }
    ));
    let error =
        fokker_planck_convergence(&domain, &[4, 8], 0.0, one, still, Diffusion::Full(runaway)).unwrap_err();
    assert!(matches!(
        error,
        ContinuityError::NonFiniteEvaluation {
            what: "diffusion matrix",
            ..
        }
    ));
    let error = fokker_planck_convergence(&domain, &[4, 8], 0.0, one, still, Diffusion::Diagonal(runaway))
        .unwrap_err();
    assert!(matches!(
        error,
        ContinuityError::NonFiniteEvaluation {
            what: "diffusion diagonal",
            ..
        }
    ));
    let grid = Grid::uniform(&domain, 4).unwrap();
    assert!(matches!(
        grid.sample_cells("f", |x| x[0].ln() - 1.0 / x[1].min(0.0)),
        Err(ContinuityError::NonFiniteEvaluation { what: "f", .. })
    ));
    let span = TimeSpan {
        start: 0.0,
        end: 1.0,
        n_steps: 4,
    };
    assert!(matches!(
        integrate_log_density(still, |_x, _t| f64::NAN, &[0.0], &span),
        Err(ContinuityError::NonFiniteEvaluation {
            what: "divergence",
            ..
        })
    ));
    assert!(matches!(
        integrate_log_density_numeric(runaway, &[0.0], &span, 1e-3),
        Err(ContinuityError::NonFiniteEvaluation { what: "velocity", .. })
    ));
    let region = CellRegion::whole(&grid);
    let flux = advective_flux(&grid, 0.0, one, still).unwrap();
    // The density is infinite at t = 0 itself, and in a second case only at t + dt.
    assert!(matches!(
        mass_balance(&grid, &region, 0.0, 0.1, |_x, t| 1.0 / t, &flux),
        Err(ContinuityError::NonFiniteEvaluation { what: "density", .. })
    ));
    assert!(matches!(
        mass_balance(&grid, &region, 0.0, 0.1, |_x, t| 1.0 / (t - 0.1), &flux),
        Err(ContinuityError::NonFiniteEvaluation { what: "density", .. })
    ));
}

#[test]
fn degenerate_domains_are_refused() {
    assert_eq!(
        Domain::new(vec![0.0, 2.0], vec![1.0, 2.0]).unwrap_err(),
        ContinuityError::DegenerateDomain {
            axis: 1,
            lower: 2.0,
            upper: 2.0
        }
    );
    assert!(matches!(
        Domain::new(vec![1.0], vec![0.0]),
        Err(ContinuityError::DegenerateDomain { axis: 0, .. })
    ));
}

#[test]
fn too_few_cells_are_refused() {
    assert_eq!(
        Grid::new(&unit_square(), &[4, 0]).unwrap_err(),
        ContinuityError::TooFewCells {
            what: "grid",
            axis: 1,
            cells: 0,
            min: 1
        }
    );
    assert!(matches!(
        continuity_convergence(&unit_square(), &[0, 4], 0.0, one, still),
        Err(ContinuityError::TooFewCells { cells: 0, .. })
    ));
    let grid = Grid::new(&unit_square(), &[5, 2]).unwrap();
    let values = ArrayD::zeros(IxDyn(&[5, 2]));
    assert_eq!(
        central_gradient(&grid, values.view()).unwrap_err(),
        ContinuityError::TooFewCells {
            what: "central-difference stencil",
            axis: 1,
            cells: 2,
            min: 3
        }
    );
    let grid = Grid::new(&unit_square(), &[1, 3]).unwrap();
    assert!(matches!(
        faces_from_cells(&grid, ArrayD::zeros(IxDyn(&[1, 3, 2])).view()),
        Err(ContinuityError::TooFewCells {
            what: "face interpolation",
            axis: 0,
            ..
        })
    ));
}

#[test]
fn invalid_regions_are_refused() {
    let grid = Grid::uniform(&unit_square(), 4).unwrap();
    assert_eq!(
        CellRegion::new(&grid, &[0, 2], &[4, 2]).unwrap_err(),
        ContinuityError::InvalidRegion {
            axis: 1,
            lower: 2,
            upper: 2,
            cells: 4
        }
    );
    assert!(matches!(
        CellRegion::new(&grid, &[0, 0], &[5, 1]),
        Err(ContinuityError::InvalidRegion { axis: 0, .. })
    ));
    // A region built for a larger grid is refused by a smaller one.
    let large = Grid::uniform(&unit_square(), 8).unwrap();
    let region = CellRegion::new(&large, &[2, 2], &[8, 8]).unwrap();
    let values = ArrayD::zeros(IxDyn(&[4, 4]));
    assert!(matches!(
        region_integral(&grid, &region, values.view()),
        Err(ContinuityError::InvalidRegion { .. })
    ));
}

#[test]
fn invalid_parameters_are_refused() {
    let grid = Grid::uniform(&unit_square(), 4).unwrap();
    for time_step in [0.0, -1.0, f64::NAN] {
        assert!(matches!(
            continuity_residual(&grid, 0.0, time_step, one, still),
            Err(ContinuityError::InvalidParameter {
                name: "time_step",
                ..
            })
        ));
    }
    let span = TimeSpan {
        start: 0.0,
        end: 1.0,
        n_steps: 0,
    };
    assert_eq!(
        integrate_log_density(still, |_x, _t| 0.0, &[0.0], &span).unwrap_err(),
        ContinuityError::InvalidParameter {
            name: "n_steps",
            value: 0.0,
            expected: "an integer >= 1"
        }
    );
    assert!(matches!(
        numeric_divergence(still, &[0.0], 0.0, -1e-3),
        Err(ContinuityError::InvalidParameter {
            name: "divergence step",
            ..
        })
    ));
    let config = ConvergenceConfig {
        time_step_per_spacing: 0.0,
    };
    assert!(matches!(
        continuity_convergence_with(&unit_square(), &[4, 8], 0.0, &config, one, still),
        Err(ContinuityError::InvalidParameter {
            name: "time_step_per_spacing",
            ..
        })
    ));
}

#[test]
fn bad_resolution_lists_are_refused() {
    assert_eq!(
        continuity_convergence(&unit_square(), &[8], 0.0, one, still).unwrap_err(),
        ContinuityError::TooFewResolutions { given: 1, min: 2 }
    );
    assert_eq!(
        continuity_convergence(&unit_square(), &[4, 8, 8], 0.0, one, still).unwrap_err(),
        ContinuityError::ResolutionsNotIncreasing {
            position: 2,
            previous: 8,
            next: 8
        }
    );
    assert!(matches!(
        fokker_planck_convergence(
            &unit_square(),
            &[8, 4],
            0.0,
            one,
            still,
            Diffusion::Diagonal(still)
        ),
        Err(ContinuityError::ResolutionsNotIncreasing { position: 1, .. })
    ));
}
