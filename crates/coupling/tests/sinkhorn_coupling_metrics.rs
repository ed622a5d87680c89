//! Sinkhorn against a plain log-domain reference, couplings' invariants, metrics against closed forms.

use approx::assert_abs_diff_eq;
use ferroflow_coupling::{
    AssignmentSolver, CostScaling, CouplingConfig, CouplingError, IndependentOrder, Jv, MmdConfig,
    MmdEstimator, SinkhornConfig, W2Config, W2Method, exact_plan, mmd_rbf, sample_plan, sinkhorn,
    sinkhorn_divergence, sinkhorn_weighted, squared_euclidean, w1, w2, w2_general,
};
use ndarray::{Array1, Array2, Axis, array, s};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn normal(n: usize, dim: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((n, dim), || StandardNormal.sample(&mut rng))
}

/// Textbook log-domain Sinkhorn (Peyre and Cuturi 2019, remark 4.23), many iterations, std `exp`.
fn reference_sinkhorn(cost: &Array2<f64>, reg: f64, iterations: usize) -> Array2<f64> {
    let (n, m) = cost.dim();
    let (la, lb) = (-(n as f64).ln(), -(m as f64).ln());
    let mut f = Array1::<f64>::zeros(n);
    let mut g = Array1::<f64>::zeros(m);
    let lse = |v: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = v.collect();
        let mx = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        mx + v.iter().map(|x| (x - mx).exp()).sum::<f64>().ln()
    };
    for _ in 0..iterations {
        for i in 0..n {
            f[i] = -reg * lse(&mut (0..m).map(|j| (g[j] - cost[[i, j]]) / reg + lb));
        }
        for j in 0..m {
            g[j] = -reg * lse(&mut (0..n).map(|i| (f[i] - cost[[i, j]]) / reg + la));
        }
    }
    Array2::from_shape_fn((n, m), |(i, j)| {
        ((f[i] + g[j] - cost[[i, j]]) / reg + la + lb).exp()
    })
}

#[test]
fn sinkhorn_matches_reference_and_marginals() {
    let x = normal(30, 2, 1);
    let y = normal(40, 2, 2) + 1.0;
    let cost = squared_euclidean(x.view(), y.view()).unwrap();
    let config = SinkhornConfig {
        reg: 0.5,
        max_iterations: 5000,
        tolerance: 1e-10,
    };
    let sol = sinkhorn(cost.view(), &config).unwrap();
    assert!(sol.converged, "error {}", sol.marginal_error);
    let reference = reference_sinkhorn(&cost, 0.5, 3000);
    let diff = (&sol.plan - &reference).mapv(f64::abs).sum();
    assert!(diff < 1e-5, "L1 plan difference {diff}");
    for r in sol.plan.sum_axis(Axis(1)).iter() {
        assert_abs_diff_eq!(*r, 1.0 / 30.0, epsilon = 1e-8);
    }
    for c in sol.plan.sum_axis(Axis(0)).iter() {
        assert_abs_diff_eq!(*c, 1.0 / 40.0, epsilon = 1e-8);
    }
    // Potentials reproduce the plan: P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps).
    for (i, j) in [(0, 0), (5, 17), (29, 39)] {
        let p = (1.0 / 1200.0) * ((sol.f[i] + sol.g[j] - cost[[i, j]]) / 0.5).exp();
        assert!(
            (p - sol.plan[[i, j]]).abs() < 1e-6 * p.max(1e-12),
            "{p} vs {}",
            sol.plan[[i, j]]
        );
    }
}

#[test]
fn sinkhorn_is_stable_for_small_reg_and_approaches_exact_ot() {
    let x = normal(200, 2, 3);
    let y = normal(200, 2, 4) * 0.5 + 3.0;
    let mut cost = squared_euclidean(x.view(), y.view()).unwrap();
    let max = cost.fold(0.0f64, |m, &c| m.max(c));
    cost /= max;
    let exact = Jv::default().solve(cost.view()).unwrap().total_cost / 200.0;
    let sol = sinkhorn(
        cost.view(),
        &SinkhornConfig {
            reg: 1e-3,
            max_iterations: 3000,
            tolerance: 1e-6,
        },
    )
    .unwrap();
    assert!(sol.plan.iter().all(|p| p.is_finite() && *p >= 0.0));
    assert!(sol.converged, "marginal error {}", sol.marginal_error);
    let entropic = sol.transport_cost(cost.view());
    // Bound: exact <= <P, C> <= exact + eps ln(n0 n1).
    assert!(entropic >= exact - 1e-6, "{entropic} < {exact}");
    assert!(
        entropic <= exact + 1e-3 * (200.0f64 * 200.0).ln(),
        "{entropic} vs {exact}"
    );
}

#[test]
fn sinkhorn_refuses_bad_input() {
    let cost = array![[0.0, 1.0], [1.0, f64::NAN]];
    assert!(matches!(
        sinkhorn(cost.view(), &SinkhornConfig::default()),
        Err(CouplingError::NonFinite { row: 1, col: 1, .. })
    ));
    let ok = array![[0.0, 1.0], [1.0, 0.0]];
    let bad = SinkhornConfig {
        reg: 0.0,
        ..SinkhornConfig::default()
    };
    assert!(sinkhorn(ok.view(), &bad).unwrap_err().to_string().contains("reg"));
    let a = array![0.7, 0.7];
    let b = array![0.5, 0.5];
    assert!(matches!(
        sinkhorn_weighted(ok.view(), a.view(), b.view(), &SinkhornConfig::default()),
        Err(CouplingError::InvalidWeights { .. })
    ));
}

fn is_permutation(idx: &[usize], n: usize) -> bool {
    let mut seen = vec![false; n];
    idx.len() == n
        && idx
            .iter()
            .all(|&i| i < n && !std::mem::replace(&mut seen[i], true))
}

#[test]
fn exact_ot_pairing_is_a_permutation_and_optimal() {
    let x0 = normal(64, 3, 5);
    let x1 = normal(64, 3, 6) + 2.0;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let pairing = CouplingConfig::default()
        .build()
        .unwrap()
        .pair(x0.view(), x1.view(), &mut rng)
        .unwrap();
    assert!(is_permutation(&pairing.source_idx, 64) && is_permutation(&pairing.target_idx, 64));
    let (p0, p1) = pairing.apply(x0.view(), x1.view());
    let paired: f64 = (&p0 - &p1).mapv(|d| d * d).sum() / 64.0;
    assert_abs_diff_eq!(paired, w2(x0.view(), x1.view()).unwrap().powi(2), epsilon = 1e-9);
    let independent: f64 = (&x0 - &x1).mapv(|d| d * d).sum() / 64.0;
    assert!(paired < independent);

    // Unequal sizes: the smaller batch is paired with distinct points of the larger.
    let short = x0.slice(s![..40, ..]);
    let p = CouplingConfig::default()
        .build()
        .unwrap()
        .pair(short, x1.view(), &mut rng)
        .unwrap();
    assert_eq!(p.len(), 40);
    let mut t = p.target_idx.clone();
    t.sort();
    t.dedup();
    assert_eq!(t.len(), 40);
    let p = CouplingConfig::default()
        .build()
        .unwrap()
        .pair(x1.view(), short, &mut rng)
        .unwrap();
    assert_eq!(p.len(), 40);
    assert!(p.source_idx.iter().all(|&i| i < 64));
}

#[test]
fn independent_and_sampled_couplings() {
    let x0 = normal(50, 2, 7);
    let x1 = normal(50, 2, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let id = CouplingConfig::Independent {
        order: IndependentOrder::Identity,
    }
    .build()
    .unwrap();
    let p = id.pair(x0.view(), x1.view(), &mut rng).unwrap();
    assert_eq!(p.target_idx, (0..50).collect::<Vec<_>>());
    let sh = CouplingConfig::Independent {
        order: IndependentOrder::Shuffle,
    }
    .build()
    .unwrap();
    let p = sh.pair(x0.view(), x1.view(), &mut rng).unwrap();
    assert!(is_permutation(&p.target_idx, 50) && p.target_idx != (0..50).collect::<Vec<_>>());

    // Sampling from the exact plan only ever returns optimal pairs (with repeats).
    let cost = squared_euclidean(x0.view(), x1.view()).unwrap();
    let optimal = Jv::default().solve(cost.view()).unwrap().row_to_col;
    let plan_sampling = CouplingConfig::OtPlanSampling { max_replicated: 4096 }
        .build()
        .unwrap();
    let p = plan_sampling.pair(x0.view(), x1.view(), &mut rng).unwrap();
    assert_eq!(p.len(), 50);
    assert!(
        p.source_idx
            .iter()
            .zip(&p.target_idx)
            .all(|(&i, &j)| optimal[i] == j)
    );

    for config in [
        CouplingConfig::Sinkhorn {
            sinkhorn: SinkhornConfig::default(),
            scaling: CostScaling::Max,
        },
        CouplingConfig::SchrodingerBridge {
            sigma: 0.5,
            max_iterations: 1000,
            tolerance: 1e-6,
        },
    ] {
        let p = config
            .build()
            .unwrap()
            .pair(x0.view(), x1.view(), &mut rng)
            .unwrap();
        assert_eq!(p.len(), 50);
        assert!(p.source_idx.iter().all(|&i| i < 50) && p.target_idx.iter().all(|&j| j < 50));
    }
    assert!(
        CouplingConfig::SchrodingerBridge {
            sigma: -1.0,
            max_iterations: 10,
            tolerance: 1e-6
        }
        .build()
        .is_err()
    );
    let mismatched = normal(50, 3, 9);
    assert!(matches!(
        CouplingConfig::default()
            .build()
            .unwrap()
            .pair(x0.view(), mismatched.view(), &mut rng),
        Err(CouplingError::DimensionMismatch {
            source_dim: 2,
            target_dim: 3
        })
    ));
    let empty = Array2::<f64>::zeros((0, 2));
    assert!(matches!(
        id.pair(empty.view(), x1.view(), &mut rng),
        Err(CouplingError::Empty { .. })
    ));
}

#[test]
fn coupling_config_reads_from_toml_like_json() {
    let c: CouplingConfig = serde_json::from_str(r#"{"kind": "schrodinger_bridge", "sigma": 0.1}"#).unwrap();
    assert!(matches!(c, CouplingConfig::SchrodingerBridge { sigma, .. } if sigma == 0.1));
    assert!(serde_json::from_str::<CouplingConfig>(r#"{"kind": "exact_ot", "solvr": "jv"}"#).is_err());
}

#[test]
fn plan_sampling_follows_the_plan() {
    let plan = array![[0.5, 0.0], [0.0, 0.5]] * 1.0;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let p = sample_plan(plan.view(), 1000, &mut rng).unwrap();
    assert!(p.source_idx.iter().zip(&p.target_idx).all(|(i, j)| i == j));
    let zeros = p.source_idx.iter().filter(|&&i| i == 0).count();
    assert!((400..600).contains(&zeros), "{zeros}");
}

#[test]
fn exact_plan_for_unequal_sizes_is_feasible_and_optimal() {
    // 2 sources, 4 targets on a line: each source must send 1/2 to its two nearest targets.
    let x = array![[0.0], [10.0]];
    let y = array![[-1.0], [1.0], [9.0], [11.0]];
    let cost = squared_euclidean(x.view(), y.view()).unwrap();
    let plan = exact_plan(cost.view(), 100).unwrap();
    let expected = array![[0.25, 0.25, 0.0, 0.0], [0.0, 0.0, 0.25, 0.25]];
    assert!((&plan - &expected).mapv(f64::abs).sum() < 1e-12, "{plan}");
    let est = w2_general(x.view(), y.view(), &W2Config::default()).unwrap();
    assert_eq!(est.method, W2Method::Exact { replicated: 4 });
    assert_abs_diff_eq!(est.value, 1.0, epsilon = 1e-12);
    // Coprime sizes beyond the limit fall back to Sinkhorn, and say so.
    let a = normal(61, 2, 10);
    let b = normal(67, 2, 11);
    let est = w2_general(
        a.view(),
        b.view(),
        &W2Config {
            max_replicated: 1000,
            relative_reg: 1e-3,
        },
    )
    .unwrap();
    assert!(matches!(est.method, W2Method::Entropic { .. }));
    let exact = w2_general(
        a.view(),
        b.view(),
        &W2Config {
            max_replicated: 5000,
            relative_reg: 1e-3,
        },
    )
    .unwrap();
    assert!(matches!(exact.method, W2Method::Exact { replicated: 4087 }));
    assert!(
        est.value >= exact.value - 1e-6 && est.value < exact.value + 0.1,
        "{} vs {}",
        est.value,
        exact.value
    );
}

#[test]
fn distances_between_empty_samples_are_errors_not_zero() {
    let empty = Array2::<f64>::zeros((0, 2));
    let points = normal(3, 2, 1);
    for (a, b) in [(&empty, &empty), (&points, &empty)] {
        let err = w2(a.view(), b.view()).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(w1(a.view(), b.view()).is_err());
    }
}

#[test]
fn wasserstein_closed_forms() {
    // Translation: W1 = W2 = |shift| for any point set shifted rigidly.
    let x = normal(100, 3, 12);
    let shift = array![1.0, -2.0, 2.0];
    let y = &x + &shift;
    assert_abs_diff_eq!(w2(x.view(), y.view()).unwrap(), 3.0, epsilon = 1e-9);
    assert_abs_diff_eq!(w1(x.view(), y.view()).unwrap(), 3.0, epsilon = 1e-9);
    // Permuted copy: zero.
    let rev = x.slice(s![..;-1, ..]).to_owned();
    assert_abs_diff_eq!(w2(x.view(), rev.view()).unwrap(), 0.0, epsilon = 1e-7);
    // 1D: W2 pairs sorted samples.
    let a = array![[3.0], [0.0], [1.0]];
    let b = array![[10.0], [2.0], [4.0]];
    let sorted = ((2.0f64 - 0.0).powi(2) + (4.0f64 - 1.0).powi(2) + (10.0f64 - 3.0).powi(2)) / 3.0;
    assert_abs_diff_eq!(w2(a.view(), b.view()).unwrap(), sorted.sqrt(), epsilon = 1e-12);
    assert!(matches!(
        w2(a.view(), x.view()),
        Err(CouplingError::SizeMismatch { .. }) | Err(CouplingError::DimensionMismatch { .. })
    ));
}

#[test]
fn mmd_closed_forms() {
    let x = array![[0.0, 0.0], [1.0, 0.0]];
    let y = array![[0.0, 1.0]];
    let config = MmdConfig {
        bandwidths: vec![1.0],
        estimator: MmdEstimator::Biased,
    };
    let k = |d2: f64| (-d2 / 2.0).exp();
    let expected = (2.0 + 2.0 * k(1.0)) / 4.0 + 1.0 - 2.0 * (k(1.0) + k(2.0)) / 2.0;
    assert_abs_diff_eq!(
        mmd_rbf(x.view(), y.view(), &config).unwrap(),
        expected,
        epsilon = 1e-12
    );
    // Unbiased: leaves out the diagonal.
    let y2 = array![[0.0, 1.0], [2.0, 2.0]];
    let unbiased = MmdConfig {
        estimator: MmdEstimator::Unbiased,
        ..config.clone()
    };
    let expected = k(1.0) + k(5.0) - 2.0 * (k(1.0) + k(8.0) + k(2.0) + k(5.0)) / 4.0;
    assert_abs_diff_eq!(
        mmd_rbf(x.view(), y2.view(), &unbiased).unwrap(),
        expected,
        epsilon = 1e-12
    );
    // Same sample: biased MMD is 0; far apart samples: close to the max.
    assert_abs_diff_eq!(
        mmd_rbf(x.view(), x.view(), &config).unwrap(),
        0.0,
        epsilon = 1e-12
    );
    assert!(
        mmd_rbf(
            x.view(),
            y.view(),
            &MmdConfig {
                bandwidths: vec![],
                ..config
            }
        )
        .is_err()
    );
}

#[test]
fn sinkhorn_divergence_is_near_w2_squared_and_zero_on_equal_samples() {
    let x = normal(150, 2, 13);
    let y = normal(150, 2, 14) + array![2.0, 0.0];
    let config = SinkhornConfig {
        reg: 0.01,
        max_iterations: 5000,
        tolerance: 1e-8,
    };
    let s = sinkhorn_divergence(x.view(), y.view(), &config).unwrap();
    let w = w2(x.view(), y.view()).unwrap().powi(2);
    assert!((s - w).abs() < 0.05 * w, "divergence {s} vs W2^2 {w}");
    assert_abs_diff_eq!(
        sinkhorn_divergence(x.view(), x.view(), &config).unwrap(),
        0.0,
        epsilon = 1e-8
    );
}
