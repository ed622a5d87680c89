//! Explicit Runge-Kutta methods as data: Butcher tableaux, with optional embedded weights (adaptive error
//! estimate) and optional continuous-extension coefficients (dense output).
//!
//! Sources: Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I* (2nd ed., 1993), II.1 (Euler,
//! midpoint, Heun, classical RK4), II.4-II.6 (embedded pairs, step control, dense output); Bogacki & Shampine,
//! "A 3(2) pair of Runge-Kutta formulas", Appl. Math. Lett. 2 (1989); Dormand & Prince, "A family of embedded
//! Runge-Kutta formulae", J. Comput. Appl. Math. 6 (1980), with the dense output of Hairer's DOPRI5 code
//! (Shampine's 4th-order continuous extension, the same coefficients as SciPy's `RK45`).

/// An explicit Runge-Kutta method `(c, A, b)` with an optional embedded `b_hat` and continuous extension.
///
/// Stage `i` is `k_i = f(t + c_i h, y + h sum_{j<i} a_ij k_j)` and the step is `y + h sum_i b_i k_i`.
#[derive(Clone, Copy, Debug)]
pub struct ButcherTableau {
    /// Short name, used in messages.
    pub name: &'static str,
    /// Nodes `c_i`, one per stage.
    pub c: &'static [f64],
    /// Strictly lower-triangular `a_ij`: row `i` has `i` entries.
    pub a: &'static [&'static [f64]],
    /// Weights of the propagated solution.
    pub b: &'static [f64],
    /// Weights of the embedded solution; the error estimate is `h sum_i (b_i - b_hat_i) k_i`.
    pub b_embedded: Option<&'static [f64]>,
    /// Order of the propagated solution.
    pub order: usize,
    /// Order of the embedded solution (0 when there is none).
    pub embedded_order: usize,
    /// First-same-as-last: the last stage is evaluated at `(t + h, y_new)`, so it is the next step's first.
    pub fsal: bool,
    /// Continuous extension `y(t + theta h) = y + h sum_i b_i(theta) k_i` with
    /// `b_i(theta) = sum_j dense[i][j] theta^(j+1)`. Without it, dense output is cubic Hermite interpolation.
    pub dense: Option<&'static [&'static [f64]]>,
}

impl ButcherTableau {
    /// Number of stages.
    pub fn n_stages(&self) -> usize {
        self.c.len()
    }

    /// Whether the tableau carries an embedded error estimate (can run adaptively).
    pub fn is_adaptive(&self) -> bool {
        self.b_embedded.is_some()
    }

    /// Field evaluations per step once running: the number of stages, less one with FSAL.
    pub fn evals_per_step(&self) -> usize {
        self.n_stages() - usize::from(self.fsal)
    }
}

/// Forward Euler, order 1.
pub const EULER: ButcherTableau = ButcherTableau {
    name: "euler",
    c: &[0.0],
    a: &[&[]],
    b: &[1.0],
    b_embedded: None,
    order: 1,
    embedded_order: 0,
    fsal: false,
    dense: None,
};

/// Explicit midpoint rule, order 2.
pub const MIDPOINT: ButcherTableau = ButcherTableau {
    name: "midpoint",
    c: &[0.0, 0.5],
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
    b_embedded: None,
    order: 2,
    embedded_order: 0,
    fsal: false,
    dense: None,
};

/// Heun's method (explicit trapezoidal rule), order 2.
pub const HEUN: ButcherTableau = ButcherTableau {
    name: "heun",
    c: &[0.0, 1.0],
    a: &[&[], &[1.0]],
    b: &[0.5, 0.5],
    b_embedded: None,
    order: 2,
    embedded_order: 0,
    fsal: false,
    dense: None,
};

/// The classical fourth-order Runge-Kutta method.
pub const RK4: ButcherTableau = ButcherTableau {
    name: "rk4",
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    b_embedded: None,
    order: 4,
    embedded_order: 0,
    fsal: false,
    dense: None,
};

/// Bogacki-Shampine 3(2), FSAL; its dense output is cubic Hermite on the FSAL stage.
pub const BOGACKI_SHAMPINE: ButcherTableau = ButcherTableau {
    name: "bosh3",
    c: &[0.0, 0.5, 0.75, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.75], &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0]],
    b: &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0],
    b_embedded: Some(&[7.0 / 24.0, 0.25, 1.0 / 3.0, 0.125]),
    order: 3,
    embedded_order: 2,
    fsal: true,
    dense: Some(&[
        &[1.0, -4.0 / 3.0, 5.0 / 9.0],
        &[0.0, 1.0, -2.0 / 3.0],
        &[0.0, 4.0 / 3.0, -8.0 / 9.0],
        &[0.0, -1.0, 1.0],
    ]),
};

/// Dormand-Prince 5(4), FSAL, with a 4th-order continuous extension.
pub const DORMAND_PRINCE: ButcherTableau = ButcherTableau {
    name: "dopri5",
    c: &[0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[],
        &[0.2],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ],
    b: &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
        0.0,
    ],
    b_embedded: Some(&[
        5179.0 / 57600.0,
        0.0,
        7571.0 / 16695.0,
        393.0 / 640.0,
        -92097.0 / 339200.0,
        187.0 / 2100.0,
        1.0 / 40.0,
    ]),
    order: 5,
    embedded_order: 4,
    fsal: true,
    dense: Some(&[
        &[
            1.0,
            -8048581381.0 / 2820520608.0,
            8663915743.0 / 2820520608.0,
            -12715105075.0 / 11282082432.0,
        ],
        &[0.0, 0.0, 0.0, 0.0],
        &[
            0.0,
            131558114200.0 / 32700410799.0,
            -68118460800.0 / 10900136933.0,
            87487479700.0 / 32700410799.0,
        ],
        &[
            0.0,
            -1754552775.0 / 470086768.0,
            14199869525.0 / 1410260304.0,
            -10690763975.0 / 1880347072.0,
        ],
        &[
            0.0,
            127303824393.0 / 49829197408.0,
            -318862633887.0 / 49829197408.0,
            701980252875.0 / 199316789632.0,
        ],
        &[
            0.0,
            -282668133.0 / 205662961.0,
            2019193451.0 / 616988883.0,
            -1453857185.0 / 822651844.0,
        ],
        &[
            0.0,
            40617522.0 / 29380423.0,
            -110615467.0 / 29380423.0,
            69997945.0 / 29380423.0,
        ],
    ]),
};

/// The built-in methods, for configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// [`EULER`]
    Euler,
    /// [`MIDPOINT`]
    Midpoint,
    /// [`HEUN`]
    Heun,
    /// [`RK4`]
    Rk4,
    /// [`BOGACKI_SHAMPINE`]
    Bosh3,
    /// [`DORMAND_PRINCE`]
    Dopri5,
}

impl Method {
    /// Every built-in method.
    pub const ALL: [Method; 6] = [
        Method::Euler,
        Method::Midpoint,
        Method::Heun,
        Method::Rk4,
        Method::Bosh3,
        Method::Dopri5,
    ];

    /// The method's tableau.
    pub fn tableau(self) -> &'static ButcherTableau {
        match self {
            Method::Euler => &EULER,
            Method::Midpoint => &MIDPOINT,
            Method::Heun => &HEUN,
            Method::Rk4 => &RK4,
            Method::Bosh3 => &BOGACKI_SHAMPINE,
            Method::Dopri5 => &DORMAND_PRINCE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the order conditions up to order 4 (Hairer-Nørsett-Wanner II.2, Table 2.2) on `weights`.
    fn order_defects(tableau: &ButcherTableau, weights: &[f64]) -> [f64; 8] {
        let n_stages = tableau.n_stages();
        let a = |i: usize, j: usize| if j < i { tableau.a[i][j] } else { 0.0 };
        let c = tableau.c;
        let sum = |f: &dyn Fn(usize) -> f64| (0..n_stages).map(f).sum::<f64>();
        let ac = |i: usize| sum(&|j| a(i, j) * c[j]);
        [
            sum(&|i| weights[i]) - 1.0,
            sum(&|i| weights[i] * c[i]) - 0.5,
            sum(&|i| weights[i] * c[i] * c[i]) - 1.0 / 3.0,
            sum(&|i| weights[i] * ac(i)) - 1.0 / 6.0,
            sum(&|i| weights[i] * c[i].powi(3)) - 0.25,
            sum(&|i| weights[i] * c[i] * ac(i)) - 0.125,
            sum(&|i| weights[i] * sum(&|j| a(i, j) * c[j] * c[j])) - 1.0 / 12.0,
            sum(&|i| weights[i] * sum(&|j| a(i, j) * ac(j))) - 1.0 / 24.0,
        ]
    }

    fn conditions_for(order: usize) -> usize {
        [0, 1, 2, 4, 8][order.min(4)]
    }

    #[test]
    fn tableaux_are_consistent_and_meet_order_conditions() {
        for method in Method::ALL {
            let tableau = method.tableau();
            let n_stages = tableau.n_stages();
            assert_eq!(tableau.a.len(), n_stages, "{}", tableau.name);
            assert_eq!(tableau.b.len(), n_stages, "{}", tableau.name);
            for (stage_idx, row) in tableau.a.iter().enumerate() {
                assert_eq!(row.len(), stage_idx, "{} row {stage_idx}", tableau.name);
                let row_sum: f64 = row.iter().sum();
                assert!(
                    (row_sum - tableau.c[stage_idx]).abs() < 1e-14,
                    "{} row sum {stage_idx}",
                    tableau.name
                );
            }
            let defects = order_defects(tableau, tableau.b);
            for (idx, defect) in defects.iter().take(conditions_for(tableau.order)).enumerate() {
                assert!(defect.abs() < 1e-14, "{} condition {idx}: {defect}", tableau.name);
            }
            if let Some(embedded) = tableau.b_embedded {
                let defects = order_defects(tableau, embedded);
                for (idx, defect) in defects
                    .iter()
                    .take(conditions_for(tableau.embedded_order))
                    .enumerate()
                {
                    assert!(
                        defect.abs() < 1e-14,
                        "{} embedded condition {idx}: {defect}",
                        tableau.name
                    );
                }
                assert!(tableau.embedded_order > 0);
            }
            if tableau.fsal {
                assert_eq!(tableau.c[n_stages - 1], 1.0);
                assert_eq!(tableau.a[n_stages - 1], &tableau.b[..n_stages - 1]);
                assert_eq!(tableau.b[n_stages - 1], 0.0);
            }
            if let Some(dense) = tableau.dense {
                // At theta = 1 the continuous extension must reproduce the step.
                for (stage_idx, row) in dense.iter().enumerate() {
                    let at_one: f64 = row.iter().sum();
                    assert!(
                        (at_one - tableau.b[stage_idx]).abs() < 1e-12,
                        "{} dense {stage_idx}",
                        tableau.name
                    );
                }
            }
        }
    }
}
