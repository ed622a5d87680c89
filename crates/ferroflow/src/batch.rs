//! Training batches: source and target samples, their coupling, times, and the regression target.
//!
//! A batch is a pure function of `(seed, step)`: its random numbers come from a ChaCha stream numbered by
//! the step. That is what makes a resumed run reproduce the uninterrupted one exactly, and what lets a
//! producer thread build batches ahead of the model step (the minibatch OT solve then overlaps with the
//! network's forward and backward passes).
//!
//! All the path arithmetic runs here in plain `f32` loops over the coefficients of the paths crate
//! (`x_t = a_t x0 + b_t x1 + c_t eps`, `u_t = a'_t x0 + b'_t x1 + c'_t eps`); for small data this is far
//! cheaper than a chain of tensor operations.

use ferroflow_coupling::{AssignmentSolver, CouplingError, Jv};
use ferroflow_paths::ConditionalPath;
use ndarray::ArrayView2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::{CouplingKind, Prediction, RunConfig, TimeSampling};
use crate::data::Dataset;

/// The stream offsets of the run's independent random sequences (batches use the step number itself).
pub mod stream {
    /// Sampling after training and in `eval`.
    pub const SAMPLING: u64 = 1 << 62;
    /// Fresh target samples for metrics.
    pub const EVAL_TARGET: u64 = (1 << 62) + 1;
}

/// A random generator for stream `stream` of the run seeded with `seed`.
pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// One batch, row-major, ready to hand to libtorch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// Points on the path, `[batch, dim]`.
    pub x_t: Vec<f32>,
    /// Times, `[batch]`.
    pub t: Vec<f32>,
    /// What the network regresses onto, `[batch, dim]`.
    pub target: Vec<f32>,
}

/// Builds batches for a config.
pub struct BatchMaker {
    source: Dataset,
    target: Dataset,
    path: Box<dyn ConditionalPath + Send + Sync>,
    coupling: CouplingKind,
    prediction: Prediction,
    time_sampling: TimeSampling,
    batch_size: usize,
    dim: usize,
    seed: u64,
    solver: Jv,
    // Buffers reused from batch to batch.
    x0: Vec<f32>,
    x1: Vec<f32>,
    cost: Vec<f64>,
}

impl BatchMaker {
    /// A batch maker for a validated config.
    pub fn new(config: &RunConfig) -> Result<Self, crate::error::ConfigError> {
        Ok(Self {
            source: config.data.source.clone(),
            target: config.data.target.clone(),
            path: config.flow.build_path()?,
            coupling: config.flow.coupling,
            prediction: config.flow.prediction,
            time_sampling: config.flow.time_sampling,
            batch_size: config.train.batch_size,
            dim: config.data.target.dim(),
            seed: config.run.seed,
            solver: Jv::default(),
            x0: Vec::new(),
            x1: Vec::new(),
            cost: Vec::new(),
        })
    }

    /// Dimension of a sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Fills `batch` with the batch of step `step` (a pure function of the seed and the step).
    pub fn make(&mut self, step: u64, batch: &mut Batch) -> Result<(), CouplingError> {
        let (n, dim) = (self.batch_size, self.dim);
        let mut rng = rng_for(self.seed, step);
        self.x0.clear();
        self.x1.clear();
        self.source.sample_into(n, &mut rng, &mut self.x0);
        self.target.sample_into(n, &mut rng, &mut self.x1);
        self.couple()?;
        batch.x_t.clear();
        batch.t.clear();
        batch.target.clear();
        for row in 0..n {
            let t = self.draw_time(&mut rng);
            let c = self.path.coefficients(t);
            batch.t.push(t as f32);
            let (a, b, s) = (c.source as f32, c.target as f32, c.noise as f32);
            let (da, db, ds) = (c.d_source as f32, c.d_target as f32, c.d_noise as f32);
            for col in 0..dim {
                let x0 = self.x0[row * dim + col];
                let x1 = self.x1[row * dim + col];
                let eps = if s != 0.0 {
                    rng.sample::<f32, _>(StandardNormal)
                } else {
                    0.0
                };
                batch.x_t.push(a * x0 + b * x1 + s * eps);
                batch.target.push(match self.prediction {
                    Prediction::Velocity => da * x0 + db * x1 + if s != 0.0 { ds * eps } else { 0.0 },
                    Prediction::X1 => x1,
                    Prediction::Epsilon => x0,
                });
            }
        }
        Ok(())
    }

    fn draw_time(&self, rng: &mut ChaCha8Rng) -> f64 {
        // Open interval: the Schrödinger-bridge path's noise derivative is singular at both ends.
        let t = match self.time_sampling {
            TimeSampling::Uniform => rng.random::<f64>(),
            TimeSampling::LogitNormal { mean, std } => {
                let z: f64 = rng.sample(StandardNormal);
                1.0 / (1.0 + (-(mean + std * z)).exp())
            }
        };
        t.clamp(1e-6, 1.0 - 1e-6)
    }

    /// Reorders `x1` so that row i of `x0` is paired with row i of `x1`.
    fn couple(&mut self) -> Result<(), CouplingError> {
        match self.coupling {
            CouplingKind::Independent => Ok(()),
            CouplingKind::ExactOt => {
                let (n, dim) = (self.batch_size, self.dim);
                self.cost.clear();
                self.cost.resize(n * n, 0.0);
                for (i, a) in self.x0.chunks_exact(dim).enumerate() {
                    for (j, b) in self.x1.chunks_exact(dim).enumerate() {
                        self.cost[i * n + j] = a
                            .iter()
                            .zip(b)
                            .map(|(p, q)| ((p - q) as f64).powi(2))
                            .sum::<f64>();
                    }
                }
                let cost = ArrayView2::from_shape((n, n), &self.cost).expect("n x n buffer");
                let assignment = self.solver.solve(cost)?;
                let paired: Vec<f32> = assignment
                    .row_to_col
                    .iter()
                    .flat_map(|&col| self.x1[col * dim..(col + 1) * dim].iter().copied())
                    .collect();
                self.x1 = paired;
                Ok(())
            }
            _ => Err(CouplingError::InvalidParameter {
                name: "flow.coupling",
                value: f64::NAN,
                allowed: "independent or exact_ot",
            }),
        }
    }
}
