//! Couplings: how a source batch `x0` and a target batch `x1` are paired for flow-matching training.
//!
//! A [`Coupling`] returns index pairs ([`Pairing`]), so labels or any other per-sample data travel with
//! their points by indexing. The closed set of couplings read from configs is [`CouplingConfig`]:
//! - `independent`: `pi = p0 x p1` (I-CFM, Tong et al. 2023): identity pairing or a random permutation;
//! - `exact_ot` (the default): the optimal assignment for `|x0 - x1|^2`, a permutation: no point is
//!   duplicated or dropped (minibatch OT-CFM as users ask for it);
//! - `ot_plan_sampling`: torchcfm's behaviour, `n` pairs drawn with replacement from the exact OT plan
//!   (for comparison; for equal sizes the plan is a permutation, so this only adds duplicates and drops);
//! - `sinkhorn`: pairs drawn with replacement from the entropic plan (log-domain Sinkhorn);
//! - `schrodinger_bridge`: the same with `reg = 2 sigma^2` on the raw squared cost (SB-CFM in Tong et al.
//!   2023: the static Schrodinger bridge for a Brownian reference of variance `sigma^2` per unit time is the
//!   entropic OT plan for `|x0 - x1|^2` with regularisation `2 sigma^2`; torchcfm uses the same `reg`).
//!
//! Cost scaling: torchcfm's `OTPlanSampler` has `normalize_cost` (divide the cost by its maximum before the
//! solver), off by default with the remark that costs should not be normalised across minibatches. Here the
//! `sinkhorn` coupling has [`CostScaling`] with `max` as default, so that `reg` is relative to the batch's
//! largest squared distance and the same `reg` suits any data scale (at the price of a batch-dependent
//! effective regularisation); choose `raw` to match torchcfm's default. The Schrodinger bridge always uses
//! raw costs, since `2 sigma^2` has the units of a squared distance.

use ndarray::{Array2, ArrayView2, Axis};
use rand::{RngCore, seq::SliceRandom};

use crate::assignment::{AssignmentSolver, SolverKind};
use crate::cost::{GroundCost, cost_matrix};
use crate::error::{CouplingError, Result};
use crate::plan::{exact_plan, sample_plan};
use crate::sinkhorn::{SinkhornConfig, sinkhorn};

/// Index pairs: pair `k` joins `x0[source_idx[k]]` with `x1[target_idx[k]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pairing {
    /// Row indices into the source batch.
    pub source_idx: Vec<usize>,
    /// Row indices into the target batch.
    pub target_idx: Vec<usize>,
}

impl Pairing {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.source_idx.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.source_idx.is_empty()
    }

    /// The paired batches `(x0[source_idx], x1[target_idx])`.
    pub fn apply(&self, x0: ArrayView2<f64>, x1: ArrayView2<f64>) -> (Array2<f64>, Array2<f64>) {
        (
            x0.select(Axis(0), &self.source_idx),
            x1.select(Axis(0), &self.target_idx),
        )
    }
}

/// Pairs a source batch with a target batch (rows = samples).
pub trait Coupling: Send + Sync {
    /// The pairing of `x0` with `x1`.
    fn pair(&self, x0: ArrayView2<f64>, x1: ArrayView2<f64>, rng: &mut dyn RngCore) -> Result<Pairing>;

    /// The same pairing (same draws from `rng`) and, for the entropic couplings, how their Sinkhorn solve
    /// ended, so that a caller can tell its user when pairs came from a plan that stopped at its iteration
    /// cap. The other couplings are exact and report `None`.
    fn pair_reporting(
        &self,
        x0: ArrayView2<f64>,
        x1: ArrayView2<f64>,
        rng: &mut dyn RngCore,
    ) -> Result<(Pairing, Option<SinkhornReport>)> {
        Ok((self.pair(x0, x1, rng)?, None))
    }
}

/// How the Sinkhorn solve behind an entropic pairing ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinkhornReport {
    /// Iterations at the final regularisation.
    pub iterations: usize,
    /// The cap on them.
    pub max_iterations: usize,
    /// L1 error of the plan's column marginal at the last check.
    pub marginal_error: f64,
    /// The tolerance it was to reach.
    pub tolerance: f64,
    /// The regularisation, in the units of the (scaled) cost.
    pub reg: f64,
}

impl SinkhornReport {
    /// Whether the marginal error reached the tolerance.
    pub fn converged(&self) -> bool {
        self.marginal_error <= self.tolerance
    }
}

/// How the independent coupling orders its pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndependentOrder {
    /// `x0[k]` with `x1[k]` (the batches are already independent draws).
    #[default]
    Identity,
    /// `x0[k]` with `x1[perm[k]]` for a uniformly random permutation.
    Shuffle,
}

/// Scaling of the squared-Euclidean cost before Sinkhorn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostScaling {
    /// Divide by the batch's largest cost (torchcfm's `normalize_cost = True`).
    #[default]
    Max,
    /// Use `|x0 - x1|^2` as is (torchcfm's default).
    Raw,
}

fn default_sb_iterations() -> usize {
    1000
}
fn default_tolerance() -> f64 {
    1e-6
}

/// The closed set of couplings, as read from a config (`kind = "exact_ot"`, ...).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CouplingConfig {
    /// Independent pairs.
    Independent {
        /// Identity or shuffled order.
        #[serde(default)]
        order: IndependentOrder,
    },
    /// Exact OT as a permutation (no duplicated or dropped points).
    ExactOt {
        /// The assignment solver.
        #[serde(default)]
        solver: SolverKind,
    },
    /// `n` pairs sampled with replacement from the exact OT plan (torchcfm's exact OT-CFM).
    OtPlanSampling {
        /// Largest `lcm(n0, n1)` for unequal batch sizes.
        #[serde(default = "default_max_replicated")]
        max_replicated: usize,
    },
    /// Pairs sampled with replacement from the entropic plan.
    Sinkhorn {
        /// Sinkhorn settings (`reg` in the units of the scaled cost).
        #[serde(default)]
        sinkhorn: SinkhornConfig,
        /// Cost scaling before Sinkhorn.
        #[serde(default)]
        scaling: CostScaling,
    },
    /// Schrodinger-bridge coupling: Sinkhorn with `reg = 2 sigma^2` on the raw squared cost.
    SchrodingerBridge {
        /// Noise level `sigma > 0` of the bridge.
        sigma: f64,
        /// Sinkhorn iteration cap.
        #[serde(default = "default_sb_iterations")]
        max_iterations: usize,
        /// Sinkhorn tolerance on the marginals.
        #[serde(default = "default_tolerance")]
        tolerance: f64,
    },
}

fn default_max_replicated() -> usize {
    4096
}

impl Default for CouplingConfig {
    fn default() -> Self {
        CouplingConfig::ExactOt {
            solver: SolverKind::Jv,
        }
    }
}

impl CouplingConfig {
    /// Validates the settings and builds the coupling.
    pub fn build(&self) -> Result<Box<dyn Coupling>> {
        Ok(match *self {
            CouplingConfig::Independent { order } => Box::new(Independent { order }),
            CouplingConfig::ExactOt { solver } => Box::new(ExactOt {
                solver: solver.build(),
            }),
            CouplingConfig::OtPlanSampling { max_replicated } => Box::new(OtPlanSampling { max_replicated }),
            CouplingConfig::Sinkhorn { sinkhorn, scaling } => {
                sinkhorn.validate()?;
                Box::new(SinkhornCoupling {
                    config: sinkhorn,
                    scaling,
                })
            }
            CouplingConfig::SchrodingerBridge {
                sigma,
                max_iterations,
                tolerance,
            } => {
                if !(sigma > 0.0 && sigma.is_finite()) {
                    return Err(CouplingError::InvalidParameter {
                        name: "sigma",
                        value: sigma,
                        allowed: "finite and > 0",
                    });
                }
                let config = SinkhornConfig {
                    reg: 2.0 * sigma * sigma,
                    max_iterations,
                    tolerance,
                };
                config.validate()?;
                Box::new(SinkhornCoupling {
                    config,
                    scaling: CostScaling::Raw,
                })
            }
        })
    }
}

/// Independent pairs (identity or shuffled); pairs `min(n0, n1)` points.
#[derive(Debug, Clone, Copy, Default)]
pub struct Independent {
    /// Identity or shuffled order.
    pub order: IndependentOrder,
}

impl Coupling for Independent {
    fn pair(&self, x0: ArrayView2<f64>, x1: ArrayView2<f64>, rng: &mut dyn RngCore) -> Result<Pairing> {
        validate_batches(x0, x1)?;
        let n = x0.nrows().min(x1.nrows());
        let source_idx: Vec<usize> = (0..n).collect();
        let mut target_idx: Vec<usize> = (0..x1.nrows()).collect();
        if self.order == IndependentOrder::Shuffle {
            target_idx.shuffle(rng);
        }
        target_idx.truncate(n);
        Ok(Pairing {
            source_idx,
            target_idx,
        })
    }
}

/// Exact OT as a permutation of the squared-Euclidean cost. With unequal sizes every point of the smaller
/// batch is paired with a distinct point of the larger one (the optimal such injection).
pub struct ExactOt {
    /// The assignment solver.
    pub solver: Box<dyn AssignmentSolver>,
}

impl Coupling for ExactOt {
    fn pair(&self, x0: ArrayView2<f64>, x1: ArrayView2<f64>, _rng: &mut dyn RngCore) -> Result<Pairing> {
        let cost = cost_matrix(x0, x1, GroundCost::SquaredEuclidean {})?;
        if x0.nrows() <= x1.nrows() {
            let a = self.solver.solve(cost.view())?;
            Ok(Pairing {
                source_idx: (0..x0.nrows()).collect(),
                target_idx: a.row_to_col,
            })
        } else {
            let a = self.solver.solve(cost.t())?;
            Ok(Pairing {
                source_idx: a.row_to_col,
                target_idx: (0..x1.nrows()).collect(),
            })
        }
    }
}

/// Pairs sampled with replacement from the exact OT plan; `n0` pairs.
#[derive(Debug, Clone, Copy)]
pub struct OtPlanSampling {
    /// Largest `lcm(n0, n1)` for unequal sizes.
    pub max_replicated: usize,
}

impl Coupling for OtPlanSampling {
    fn pair(&self, x0: ArrayView2<f64>, x1: ArrayView2<f64>, rng: &mut dyn RngCore) -> Result<Pairing> {
        let cost = cost_matrix(x0, x1, GroundCost::SquaredEuclidean {})?;
        let plan = exact_plan(cost.view(), self.max_replicated)?;
        sample_plan(plan.view(), x0.nrows(), rng)
    }
}

/// Pairs sampled with replacement from an entropic plan; `n0` pairs.
#[derive(Debug, Clone, Copy)]
pub struct SinkhornCoupling {
    /// Sinkhorn settings.
    pub config: SinkhornConfig,
    /// Cost scaling.
    pub scaling: CostScaling,
}

impl Coupling for SinkhornCoupling {
    fn pair(&self, x0: ArrayView2<f64>, x1: ArrayView2<f64>, rng: &mut dyn RngCore) -> Result<Pairing> {
        Ok(self.pair_reporting(x0, x1, rng)?.0)
    }

    fn pair_reporting(
        &self,
        x0: ArrayView2<f64>,
        x1: ArrayView2<f64>,
        rng: &mut dyn RngCore,
    ) -> Result<(Pairing, Option<SinkhornReport>)> {
        let mut cost = cost_matrix(x0, x1, GroundCost::SquaredEuclidean {})?;
        if self.scaling == CostScaling::Max {
            let max = cost.fold(0.0f64, |m, &c| m.max(c));
            if max > 0.0 {
                cost /= max;
            }
        }
        let solution = sinkhorn(cost.view(), &self.config)?;
        let report = SinkhornReport {
            iterations: solution.iterations,
            max_iterations: self.config.max_iterations,
            marginal_error: solution.marginal_error,
            tolerance: self.config.tolerance,
            reg: self.config.reg,
        };
        Ok((sample_plan(solution.plan.view(), x0.nrows(), rng)?, Some(report)))
    }
}

fn validate_batches(x0: ArrayView2<f64>, x1: ArrayView2<f64>) -> Result<()> {
    crate::cost::validate_batch(x0, "source batch")?;
    crate::cost::validate_batch(x1, "target batch")?;
    if x0.ncols() != x1.ncols() {
        return Err(CouplingError::DimensionMismatch {
            source_dim: x0.ncols(),
            target_dim: x1.ncols(),
        });
    }
    Ok(())
}
