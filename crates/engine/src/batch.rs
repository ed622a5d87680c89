//! Training batches: source and target samples, their coupling, times, and the regression target.
//!
//! A batch is a pure function of `(seed, step)`: its random numbers come from the run's
//! [`Stream::Batch`] of that step. That is what makes a resumed run reproduce the uninterrupted one exactly, and what lets a
//! producer thread build batches ahead of the model step (the minibatch OT solve then overlaps with the
//! network's forward and backward passes).
//!
//! All the path arithmetic runs here in plain `f32` loops over the coefficients of the paths crate
//! (`x_t = a_t x0 + b_t x1 + c_t eps`, `u_t = a'_t x0 + b'_t x1 + c'_t eps`); for small data this is far
//! cheaper than a chain of tensor operations.

use ferroflow_coupling::{Coupling, CouplingConfig, CouplingError, IndependentOrder, SinkhornReport};
use ferroflow_manifolds::ManifoldError;
use ferroflow_manifolds::product::BoxedManifold;
use ferroflow_paths::{ConditionalPath, Prediction};
use ndarray::Array2;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::{RunConfig, TimeSampling};
use crate::data::Dataset;
use crate::stream::Stream;

/// `Some((num_classes, label_dropout))` when the config's network is class-conditional.
pub fn conditional_of(config: &RunConfig) -> Option<(usize, f64)> {
    match config.model.kind {
        crate::config::ModelKind::Unet => config
            .model
            .unet
            .num_classes
            .map(|c| (c, config.train.label_dropout)),
        crate::config::ModelKind::Mlp => config.model.num_classes.map(|c| (c, config.train.label_dropout)),
        crate::config::ModelKind::TokenMlp | crate::config::ModelKind::TokenTransformer => None,
    }
}

/// A training time drawn as `time_sampling` says, in the open interval `[1e-6, 1 - 1e-6]`.
pub fn draw_time(time_sampling: TimeSampling, rng: &mut ChaCha8Rng) -> f64 {
    // Open interval: the Schrödinger-bridge path's noise derivative is singular at both ends, and the
    // discrete losses divide by 1 - kappa_t.
    let t = match time_sampling {
        TimeSampling::Uniform {} => rng.random::<f64>(),
        TimeSampling::LogitNormal { mean, std } => {
            let z: f64 = rng.sample(StandardNormal);
            1.0 / (1.0 + (-(mean + std * z)).exp())
        }
    };
    t.clamp(1e-6, 1.0 - 1e-6)
}

/// Why a batch could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The coupling failed (non-finite points, ...).
    #[error(transparent)]
    Coupling(#[from] CouplingError),
    /// A geodesic path could not be built (antipodal endpoints on a sphere, ...).
    #[error(transparent)]
    Manifold(#[from] ManifoldError),
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
    /// Class labels of the target points for a class-conditional network (`[batch]`, the null label
    /// `num_classes` where dropped); empty otherwise.
    pub labels: Vec<i64>,
}

/// Builds batches for a config.
pub struct BatchMaker {
    source: Dataset,
    target: Dataset,
    path: Box<dyn ConditionalPath + Send + Sync>,
    coupling_config: CouplingConfig,
    coupling: Box<dyn Coupling>,
    prediction: Prediction,
    time_sampling: TimeSampling,
    batch_size: usize,
    dim: usize,
    seed: u64,
    // Buffers reused from batch to batch.
    x0: Vec<f32>,
    x1: Vec<f32>,
    labels: Vec<i64>,
    /// `Some((num_classes, label_dropout))` for a class-conditional network.
    conditional: Option<(usize, f64)>,
    /// The manifold of a Riemannian flow: geodesic paths instead of the affine interpolation.
    manifold: Option<BoxedManifold>,
    /// How the last batch's Sinkhorn solve ended (entropic couplings only).
    sinkhorn_report: Option<SinkhornReport>,
}

impl BatchMaker {
    /// A batch maker for a validated config.
    pub fn new(config: &RunConfig) -> Result<Self, crate::error::ConfigError> {
        config.flow.check_training_target()?;
        Ok(Self {
            source: config.data.source.clone(),
            target: config.data.target.clone(),
            path: config.flow.build_path()?,
            coupling_config: config.flow.coupling.clone(),
            coupling: config
                .flow
                .coupling
                .build()
                .map_err(|e| crate::error::ConfigError::value("flow.coupling", e.to_string()))?,
            prediction: config.flow.prediction,
            time_sampling: config.flow.time_sampling,
            batch_size: config.train.batch_size,
            dim: config.data.target.dim(),
            seed: config.run.seed,
            x0: Vec::new(),
            x1: Vec::new(),
            labels: Vec::new(),
            conditional: conditional_of(config),
            manifold: config.data.manifold.as_ref().map(|m| m.build()).transpose()?,
            sinkhorn_report: None,
        })
    }

    /// How the Sinkhorn solve of the last batch made ended: `Some` for the entropic couplings (`sinkhorn`,
    /// `schrodinger_bridge`), `None` for the exact ones.
    pub fn sinkhorn_report(&self) -> Option<SinkhornReport> {
        self.sinkhorn_report
    }

    /// A note for the user when batch 1's Sinkhorn solve stopped at its iteration cap before reaching its
    /// tolerance, naming the config keys that fix it; `None` when it converged, for exact couplings, and
    /// when the batch cannot be made (training reports that error itself at that step). Batches are a pure
    /// function of the seed and the step, so this changes nothing that training will draw.
    pub fn sinkhorn_note(&mut self) -> Option<String> {
        let (kind, keys) = match self.coupling_config {
            CouplingConfig::Sinkhorn { .. } => (
                "sinkhorn",
                (
                    "flow.coupling.sinkhorn.max_iterations",
                    "flow.coupling.sinkhorn.reg",
                ),
            ),
            CouplingConfig::SchrodingerBridge { .. } => (
                "schrodinger_bridge",
                ("flow.coupling.max_iterations", "flow.coupling.sigma"),
            ),
            _ => return None,
        };
        let mut batch = Batch::default();
        self.make(1, &mut batch).ok()?;
        let report = self.sinkhorn_report.filter(|r| !r.converged())?;
        Some(format!(
            "flow.coupling ({}): Sinkhorn stopped at its {} iterations on the first batch with an L1 marginal \
             error of {:.1e}, above its tolerance {:.1e}, so training pairs are drawn from an approximate plan \
             (reg {:.3e} against these costs converges slowly); raise {} or {} to converge",
            kind, report.max_iterations, report.marginal_error, report.tolerance, report.reg, keys.0, keys.1
        ))
    }

    /// Dimension of a sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Fills `batch` with the batch of step `step` (a pure function of the seed and the step).
    pub fn make(&mut self, step: u64, batch: &mut Batch) -> Result<(), BatchError> {
        let (n, dim) = (self.batch_size, self.dim);
        let mut rng = Stream::Batch { step }.rng(self.seed);
        self.x0.clear();
        self.x1.clear();
        self.labels.clear();
        self.source.sample_into(n, &mut rng, &mut self.x0);
        self.target
            .sample_labelled_into(n, &mut rng, &mut self.x1, Some(&mut self.labels));
        if self.manifold.is_some() {
            return self.make_geodesic(&mut rng, batch);
        }
        self.couple(&mut rng)?;
        batch.x_t.clear();
        batch.t.clear();
        batch.target.clear();
        batch.labels.clear();
        if let Some((num_classes, dropout)) = self.conditional {
            for &label in &self.labels {
                let dropped = dropout > 0.0 && rng.random::<f64>() < dropout;
                batch
                    .labels
                    .push(if dropped { num_classes as i64 } else { label });
            }
        }
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
                    Prediction::Target => x1,
                    Prediction::Epsilon => x0,
                    Prediction::Score => unreachable!("BatchMaker::new refuses score prediction"),
                });
            }
        }
        Ok(())
    }

    /// The batch of a flow on a manifold: points projected onto it (the f32 buffers round), coupled by the
    /// squared geodesic distance when the coupling is exact OT, then `x_t` and `u_t` on the geodesic path with
    /// `kappa_t` the path's data coefficient.
    fn make_geodesic(&mut self, rng: &mut ChaCha8Rng, batch: &mut Batch) -> Result<(), BatchError> {
        let manifold = self.manifold.as_ref().expect("make_geodesic runs on manifolds");
        let (n, dim) = (self.batch_size, self.dim);
        let on_manifold = |v: &[f32]| -> Result<Array2<f64>, ManifoldError> {
            manifold.project_batch(Array2::from_shape_fn((n, dim), |(r, c)| f64::from(v[r * dim + c])).view())
        };
        let x0 = on_manifold(&self.x0)?;
        let mut x1 = on_manifold(&self.x1)?;
        match &self.coupling_config {
            CouplingConfig::ExactOt { solver } => {
                let cost = ferroflow_manifolds::cost_matrix(manifold.as_ref(), x0.view(), x1.view())?;
                let assignment = solver.build().solve(cost.view())?;
                x1 = x1.select(ndarray::Axis(0), &assignment.row_to_col);
            }
            CouplingConfig::Independent {
                order: IndependentOrder::Shuffle,
            } => {
                let pairing = self.coupling.pair(x0.view(), x1.view(), rng)?;
                x1 = x1.select(ndarray::Axis(0), &pairing.target_idx);
            }
            _ => {}
        }
        let times: Vec<f64> = (0..n).map(|_| self.draw_time(rng)).collect();
        let coefficients: Vec<_> = times.iter().map(|&t| self.path.coefficients(t)).collect();
        let kappa = ndarray::Array1::from_iter(coefficients.iter().map(|c| c.target));
        let d_kappa = ndarray::Array1::from_iter(coefficients.iter().map(|c| c.d_target));
        let path = ferroflow_manifolds::conditional_batch(
            manifold.as_ref(),
            x0.view(),
            x1.view(),
            kappa.view(),
            d_kappa.view(),
        )?;
        batch.x_t.clear();
        batch.t.clear();
        batch.target.clear();
        batch.labels.clear();
        batch.t.extend(times.iter().map(|&t| t as f32));
        batch.x_t.extend(path.x_t.iter().map(|&v| v as f32));
        batch.target.extend(path.u_t.iter().map(|&v| v as f32));
        Ok(())
    }

    fn draw_time(&self, rng: &mut ChaCha8Rng) -> f64 {
        draw_time(self.time_sampling, rng)
    }

    /// Reorders the batch so that row i of `x0` is paired with row i of `x1` (pairs drawn with replacement
    /// by plan-sampling couplings may repeat rows).
    fn couple(&mut self, rng: &mut ChaCha8Rng) -> Result<(), CouplingError> {
        if matches!(
            self.coupling_config,
            CouplingConfig::Independent {
                order: IndependentOrder::Identity
            }
        ) {
            return Ok(());
        }
        let (n, dim) = (self.batch_size, self.dim);
        let to_f64 = |v: &[f32]| Array2::from_shape_fn((n, dim), |(r, c)| f64::from(v[r * dim + c]));
        let (x0, x1) = (to_f64(&self.x0), to_f64(&self.x1));
        let (pairing, report) = self.coupling.pair_reporting(x0.view(), x1.view(), rng)?;
        self.sinkhorn_report = report;
        let gather = |v: &[f32], idx: &[usize]| -> Vec<f32> {
            idx.iter()
                .flat_map(|&row| v[row * dim..(row + 1) * dim].iter().copied())
                .collect()
        };
        self.x0 = gather(&self.x0, &pairing.source_idx);
        self.x1 = gather(&self.x1, &pairing.target_idx);
        self.labels = pairing.target_idx.iter().map(|&row| self.labels[row]).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use std::path::Path;

    fn maker(coupling: &str) -> BatchMaker {
        let text = format!(
            "[run]\nname = \"t\"\n[data]\nsource = {{ kind = \"8gaussians\" }}\ntarget = {{ kind = \"moons\" }}\n\
             [flow]\ncoupling = {coupling}\n[train]\nbatch_size = 128\n"
        );
        BatchMaker::new(&RunConfig::parse(&text, Path::new("t.toml")).unwrap()).unwrap()
    }

    #[test]
    fn an_entropic_coupling_stopped_at_its_cap_is_reported_with_the_keys_that_fix_it() {
        // SB-CFM at sigma 0.1 (reg 0.02) on 8gaussians -> moons does not converge in 5 iterations.
        let mut capped =
            maker("{ kind = \"schrodinger_bridge\", sigma = 0.1, max_iterations = 5, tolerance = 1e-3 }");
        let note = capped.sinkhorn_note().expect("a note");
        assert!(
            note.contains("schrodinger_bridge") && note.contains("5 iterations"),
            "{note}"
        );
        assert!(
            note.contains("flow.coupling.max_iterations") && note.contains("flow.coupling.sigma"),
            "{note}"
        );
        let report = capped.sinkhorn_report().expect("a report");
        assert!(!report.converged() && report.iterations == 5 && report.marginal_error > 1e-3);
        // The same batch, with room to converge at a larger reg: no note, and the report says converged.
        let mut loose =
            maker("{ kind = \"schrodinger_bridge\", sigma = 2.0, max_iterations = 1000, tolerance = 1e-3 }");
        assert_eq!(loose.sinkhorn_note(), None);
        assert!(loose.sinkhorn_report().expect("a report").converged());
        let mut relative = maker("{ kind = \"sinkhorn\", sinkhorn = { reg = 0.05, max_iterations = 2 } }");
        let note = relative.sinkhorn_note().expect("a note");
        assert!(note.contains("flow.coupling.sinkhorn.max_iterations"), "{note}");
        // Exact couplings have nothing to report.
        let mut exact = maker("{ kind = \"exact_ot\" }");
        assert_eq!(exact.sinkhorn_note(), None);
        assert_eq!(exact.sinkhorn_report(), None);
    }

    #[test]
    fn the_note_draws_nothing_that_training_would_not() {
        // Batch 1 after the note equals batch 1 of a fresh maker.
        let coupling = "{ kind = \"schrodinger_bridge\", sigma = 0.1, max_iterations = 5 }";
        let (mut probed, mut fresh) = (maker(coupling), maker(coupling));
        assert!(probed.sinkhorn_note().is_some());
        let (mut a, mut b) = (Batch::default(), Batch::default());
        probed.make(1, &mut a).unwrap();
        fresh.make(1, &mut b).unwrap();
        assert_eq!(a, b);
    }
}
