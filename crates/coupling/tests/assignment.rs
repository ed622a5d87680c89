//! Exact assignment solvers agree with each other and with brute force, on random, degenerate and
//! rectangular inputs; bad input is refused with a typed error.

use ferroflow_coupling::{
    Assignment, AssignmentSolver, CouplingError, Hungarian, Jv, JvConfig, JvInit, JvWorkspace,
    squared_euclidean,
};
use ndarray::{Array2, array};
use proptest::prelude::*;
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

fn solvers() -> Vec<(&'static str, Box<dyn AssignmentSolver>)> {
    let classic = Jv::new(JvConfig {
        init: JvInit::Classic,
        ..JvConfig::default()
    })
    .unwrap();
    vec![
        ("jv-auction", Box::new(Jv::default())),
        ("jv-classic", Box::new(classic)),
        ("hungarian", Box::new(Hungarian)),
    ]
}

/// Minimum over all injections of rows into columns, by enumeration (small sizes only).
fn brute_force(cost: &Array2<f64>) -> f64 {
    fn go(cost: &Array2<f64>, row: usize, used: &mut Vec<bool>, acc: f64, best: &mut f64) {
        if row == cost.nrows() {
            *best = best.min(acc);
            return;
        }
        for col in 0..cost.ncols() {
            if !used[col] {
                used[col] = true;
                go(cost, row + 1, used, acc + cost[[row, col]], best);
                used[col] = false;
            }
        }
    }
    let mut best = f64::INFINITY;
    go(cost, 0, &mut vec![false; cost.ncols()], 0.0, &mut best);
    best
}

fn tolerance(cost: &Array2<f64>) -> f64 {
    let (lo, hi) = cost
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let n = cost.nrows() as f64;
    // Hungarian's proven rounding gap plus float summation error.
    Hungarian::gap_bound(cost.nrows(), cost.ncols(), hi - lo) + 1e-9 * n * (hi.abs() + lo.abs() + 1.0)
}

fn check_all_agree(cost: &Array2<f64>, seed: u64) -> Result<(), TestCaseError> {
    let results: Vec<(&str, Assignment)> = solvers()
        .into_iter()
        .map(|(name, s)| (name, s.solve(cost.view()).unwrap()))
        .collect();
    let tol = tolerance(cost);
    let reference = results[0].1.total_cost;
    for (name, a) in &results {
        prop_assert!(
            a.is_injective(cost.ncols()),
            "{name} returned a non-injective assignment {:?}",
            a.row_to_col
        );
        prop_assert_eq!(a.row_to_col.len(), cost.nrows());
        let summed: f64 = a.row_to_col.iter().enumerate().map(|(i, &j)| cost[[i, j]]).sum();
        prop_assert!((summed - a.total_cost).abs() <= tol);
        prop_assert!(
            (a.total_cost - reference).abs() <= tol,
            "{name}: {} vs {reference}",
            a.total_cost
        );
    }
    // No random injection beats the optimum.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cols: Vec<usize> = (0..cost.ncols()).collect();
    for _ in 0..50 {
        cols.shuffle(&mut rng);
        let c: f64 = (0..cost.nrows()).map(|i| cost[[i, cols[i]]]).sum();
        prop_assert!(c >= reference - tol, "random injection {c} beats {reference}");
    }
    Ok(())
}

fn matrix(rows: usize, cols: usize, values: Vec<f64>) -> Array2<f64> {
    Array2::from_shape_vec((rows, cols), values[..rows * cols].to_vec()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn agree_with_brute_force_small(rows in 1usize..=6, extra in 0usize..=2, values in prop::collection::vec(-5.0f64..5.0, 64), seed in any::<u64>()) {
        let cost = matrix(rows, rows + extra, values);
        let best = brute_force(&cost);
        for (name, s) in solvers() {
            let a = s.solve(cost.view()).unwrap();
            prop_assert!((a.total_cost - best).abs() <= tolerance(&cost), "{name}: {} vs brute force {best}", a.total_cost);
        }
        check_all_agree(&cost, seed)?;
    }

    #[test]
    fn agree_on_random_costs(n in 1usize..60, values in prop::collection::vec(0.0f64..100.0, 3600), seed in any::<u64>()) {
        check_all_agree(&matrix(n, n, values), seed)?;
    }

    #[test]
    fn agree_on_integer_costs_with_ties(n in 1usize..60, values in prop::collection::vec(0u8..4, 3600), seed in any::<u64>()) {
        let cost = matrix(n, n, values.into_iter().map(f64::from).collect());
        check_all_agree(&cost, seed)?;
    }

    #[test]
    fn agree_on_rectangular(rows in 1usize..40, extra in 1usize..30, values in prop::collection::vec(-10.0f64..10.0, 40 * 70), seed in any::<u64>()) {
        check_all_agree(&matrix(rows, rows + extra, values), seed)?;
    }

    #[test]
    fn agree_on_points_with_duplicates(n in 2usize..60, values in prop::collection::vec(-3i8..3, 240), seed in any::<u64>()) {
        // Coarse integer coordinates: many duplicate points and tied costs.
        let pts: Vec<f64> = values.into_iter().map(f64::from).collect();
        let x0 = Array2::from_shape_vec((n, 2), pts[..2 * n].to_vec()).unwrap();
        let x1 = Array2::from_shape_vec((n, 2), pts[120..120 + 2 * n].to_vec()).unwrap();
        check_all_agree(&squared_euclidean(x0.view(), x1.view()).unwrap(), seed)?;
    }
}

#[test]
fn all_equal_costs_give_a_permutation() {
    let cost = Array2::from_elem((50, 50), 3.5);
    for (name, s) in solvers() {
        let a = s.solve(cost.view()).unwrap();
        assert!(a.is_injective(50), "{name}");
        assert!((a.total_cost - 175.0).abs() < 1e-9, "{name}");
    }
}

#[test]
fn recovers_a_hidden_permutation() {
    // x1 is a permutation of distinct points x0: the unique zero-cost assignment undoes it.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 300;
    let x0 = Array2::from_shape_fn((n, 3), |(i, k)| {
        (i * 7 + k * 13) as f64 * 0.37 % 11.0 + i as f64 * 1e-3
    });
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut rng);
    let x1 = Array2::from_shape_fn((n, 3), |(j, k)| x0[[perm[j], k]]);
    let cost = squared_euclidean(x0.view(), x1.view()).unwrap();
    for (name, s) in solvers() {
        let a = s.solve(cost.view()).unwrap();
        assert!(a.total_cost.abs() < 1e-9, "{name}: {}", a.total_cost);
        for (i, &j) in a.row_to_col.iter().enumerate() {
            assert_eq!(perm[j], i, "{name}");
        }
    }
}

#[test]
fn refuses_bad_input() {
    let nan = array![[1.0, f64::NAN], [0.0, 1.0]];
    let inf = array![[1.0, 2.0], [f64::INFINITY, 1.0]];
    let tall = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let empty = Array2::<f64>::zeros((0, 3));
    let huge = array![[1e200, 0.0], [0.0, 1.0]];
    for (name, s) in solvers() {
        assert!(
            matches!(
                s.solve(nan.view()),
                Err(CouplingError::NonFinite { row: 0, col: 1, .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                s.solve(inf.view()),
                Err(CouplingError::NonFinite { row: 1, col: 0, .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                s.solve(tall.view()),
                Err(CouplingError::MoreRowsThanColumns { rows: 3, cols: 2 })
            ),
            "{name}"
        );
        assert!(
            matches!(s.solve(empty.view()), Err(CouplingError::Empty { .. })),
            "{name}"
        );
        assert!(
            matches!(s.solve(huge.view()), Err(CouplingError::CostTooLarge { .. })),
            "{name}"
        );
    }
    let err = Jv::new(JvConfig {
        eps_ratio: 1.0,
        ..JvConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("eps_ratio"), "{err}");
}

#[test]
fn works_on_non_contiguous_views() {
    let cost = Array2::from_shape_fn((40, 40), |(i, j)| ((i * 31 + j * 17) % 23) as f64);
    let t = cost.t();
    let a = Jv::default().solve(t).unwrap();
    let b = Hungarian.solve(t).unwrap();
    assert!((a.total_cost - b.total_cost).abs() < 1e-6);
}

#[test]
fn agree_on_the_benchmark_distribution() {
    // N(0, I) -> 8gaussians, the geometry where the auction initialisation matters most.
    use rand::Rng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 160;
    let x0 = Array2::from_shape_simple_fn((n, 2), || StandardNormal.sample(&mut rng));
    let mut x1 = Array2::<f64>::zeros((n, 2));
    for mut row in x1.rows_mut() {
        let angle = rng.random_range(0..8) as f64 * std::f64::consts::FRAC_PI_4;
        let noise: [f64; 2] = [StandardNormal.sample(&mut rng), StandardNormal.sample(&mut rng)];
        row[0] = 5.0 * angle.cos() + 0.1f64.powf(0.25) * noise[0];
        row[1] = 5.0 * angle.sin() + 0.1f64.powf(0.25) * noise[1];
    }
    let cost = squared_euclidean(x0.view(), x1.view()).unwrap();
    check_all_agree(&cost, 5).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// OT-CFM's case: batch 256 of 2D points on a coarse grid, so that many points coincide and many costs
    /// tie; the default Jv must reach Hungarian's optimum.
    #[test]
    fn agree_at_batch_256_on_gridded_points(values in prop::collection::vec(-4i8..4, 4 * 256), seed in any::<u64>()) {
        let n = 256;
        let x0 = Array2::from_shape_fn((n, 2), |(i, d)| f64::from(values[2 * i + d]));
        let x1 = Array2::from_shape_fn((n, 2), |(i, d)| f64::from(values[2 * n + 2 * i + d]) * 0.5 + 1.0);
        let cost = squared_euclidean(x0.view(), x1.view()).unwrap();
        let jv = Jv::default().solve(cost.view()).unwrap();
        let hungarian = Hungarian.solve(cost.view()).unwrap();
        prop_assert!(jv.is_injective(n));
        prop_assert!((jv.total_cost - hungarian.total_cost).abs() <= tolerance(&cost), "{} vs {}", jv.total_cost, hungarian.total_cost);
        // No random permutation beats it.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cols: Vec<usize> = (0..n).collect();
        for _ in 0..20 {
            cols.shuffle(&mut rng);
            let c: f64 = (0..n).map(|i| cost[[i, cols[i]]]).sum();
            prop_assert!(c >= jv.total_cost - tolerance(&cost));
        }
    }
}

#[test]
fn one_workspace_serves_problems_of_changing_shape() {
    // Reusing the buffers must not leak state between solves: square and rectangular problems of growing
    // and shrinking sizes, with both initialisations, give the same assignment as a fresh workspace.
    let classic = Jv::new(JvConfig {
        init: JvInit::Classic,
        ..JvConfig::default()
    })
    .unwrap();
    let auction = Jv::default();
    let mut workspace = JvWorkspace::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    use rand::Rng;
    for &(rows, cols) in &[
        (64, 64),
        (5, 9),
        (256, 256),
        (30, 30),
        (1, 1),
        (40, 70),
        (100, 100),
        (2, 2),
    ] {
        let cost = Array2::from_shape_simple_fn((rows, cols), || f64::from(rng.random_range(0u8..20)));
        for solver in [&classic, &auction] {
            let reused = solver.solve_with(cost.view(), &mut workspace).unwrap();
            let fresh = solver
                .solve_with(cost.view(), &mut JvWorkspace::default())
                .unwrap();
            assert_eq!(reused, fresh, "({rows}, {cols})");
            assert!(reused.is_injective(cols));
            let hungarian = Hungarian.solve(cost.view()).unwrap();
            assert!((reused.total_cost - hungarian.total_cost).abs() <= tolerance(&cost));
        }
    }
}
