//! A run's metrics, typed: what training, sampling, `eval` and the 2D benchmark measure, stored in the run
//! folder as `metrics.json` (one JSON object; keys absent until measured).
//!
//! Each stage merges its own fields into the file ([`RunMetrics::merge`]), so `eval` keeps what training
//! wrote and a benchmark keeps both. Keys this version does not know (written by a newer one, or by hand)
//! are kept in [`RunMetrics::other`] and written back unchanged.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;

/// The file name of a run's metrics.
pub const METRICS_FILE: &str = "metrics.json";

/// The largest metrics file read (16 MiB; a run writes a few hundred bytes).
pub const MAX_METRICS_BYTES: u64 = 16 << 20;

/// Everything measured about a run. `None` means not measured (yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Total optimizer steps of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_steps: Option<usize>,
    /// Training wall time of the whole run, in seconds, summed over resumed invocations (each counted up to
    /// the checkpoint the next one resumed from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
    /// Steps per second of the whole run (`train_steps / train_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_steps_per_second: Option<f64>,
    /// Mean negative log-likelihood (nats per sample) of fresh target samples, on manifolds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nll: Option<f64>,
    /// The target's entropy in nats (Monte Carlo over its closed-form density), on manifolds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_entropy: Option<f64>,
    /// `nll - target_entropy`: the estimate of KL(target || model) in nats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_estimate: Option<f64>,
    /// Standard error of `kl_estimate` (both Monte Carlo averages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_stderr: Option<f64>,
    /// The device the run trained on (`cpu`, `cuda:N`), which `run.device = "auto"` leaves to the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Ranks of the data-parallel job that trained the run last (1: one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<usize>,
    /// The collective backend of that job (`single`, `mpi`, `nccl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The last recorded window of the training loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_loss: Option<f64>,
    /// Seconds to draw `sample.n_samples` samples after training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_seconds: Option<f64>,
    /// Field evaluations of that solve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_field_evals: Option<usize>,
    /// Exact W2 between generated samples and fresh target samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w2: Option<f64>,
    /// Points on each side of [`RunMetrics::w2`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w2_samples: Option<usize>,
    /// The ODE method `eval` sampled with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_solver: Option<String>,
    /// Seconds `eval` took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_seconds: Option<f64>,
    /// Mean path energy E sum_k |v(x_k, t_k)|^2 dt along the Euler steps of sampling (bench2d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_energy: Option<f64>,
    /// W2^2 between the source points and the flow's own samples from them (bench2d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_samples_w2_sq: Option<f64>,
    /// (path energy - source_samples_w2_sq) / source_samples_w2_sq (bench2d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_excess: Option<f64>,
    /// Normalised path energy |energy - W2(source, target)^2| / W2(source, target)^2 (bench2d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npe: Option<f64>,
    /// The task's W2(source, target)^2 the NPE divides by (bench2d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_target_w2_sq: Option<f64>,
    /// Its standard error over independent draws (bench2d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_target_w2_sq_stderr: Option<f64>,
    /// W2 of a fresh discretised data sample against the same target points: the floor of a discrete 2D run's
    /// `w2` (what the grid alone costs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w2_floor: Option<f64>,
    /// Total variation between the bin histograms of a discrete 2D run's samples and of discretised fresh
    /// target points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_tv: Option<f64>,
    /// The same for a second fresh data sample: the floor of `bin_tv` at this sample size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_tv_floor: Option<f64>,
    /// The held-out ELBO of a discrete run, as an upper bound on the NLL in bits per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elbo_bits_per_token: Option<f64>,
    /// Its standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elbo_stderr: Option<f64>,
    /// Held-out sequences of the ELBO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elbo_sequences: Option<usize>,
    /// A words run's figures (real, novel and distinct shares; letter and length total variation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<crate::discrete::eval::WordFigures>,
    /// Samples behind `words`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_samples: Option<usize>,
    /// A conditional words run's figures at several guidance weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_guidance: Option<Vec<crate::discrete::eval::GuidanceFigures>>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl RunMetrics {
    /// Reads `run_dir/metrics.json` (empty metrics when there is none yet), refusing a file over
    /// [`MAX_METRICS_BYTES`] before reading it.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        let len = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len > MAX_METRICS_BYTES {
            bail!(
                "{}: {len} bytes, more than the limit of {MAX_METRICS_BYTES} for a metrics file",
                path.display()
            );
        }
        // `take` holds the bound even if the file grows while it is read.
        let mut text = String::new();
        file.take(MAX_METRICS_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
        if text.len() as u64 > MAX_METRICS_BYTES {
            bail!(
                "{}: more than the limit of {MAX_METRICS_BYTES} bytes for a metrics file",
                path.display()
            );
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a metrics object of this version", path.display()))
    }

    /// Writes these metrics over the fields they set: reads the file, overwrites every field that is `Some`
    /// here (and every key of `other`), and writes it back atomically. Returns the merged metrics.
    pub fn merge(&self, run_dir: &Path) -> Result<Self> {
        let mut merged = serde_json::to_value(Self::read(run_dir)?)?;
        let ours = serde_json::to_value(self)?;
        if let (Some(merged), Some(ours)) = (merged.as_object_mut(), ours.as_object()) {
            merged.extend(ours.clone());
        }
        let text = serde_json::to_string_pretty(&merged)?;
        write_atomic(&run_dir.join(METRICS_FILE), text.as_bytes())?;
        Ok(serde_json::from_value(merged)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_fields_and_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("ferroflow-metrics-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(METRICS_FILE), r#"{"train_steps": 7, "by_hand": [1, 2]}"#).unwrap();
        let eval = RunMetrics {
            w2: Some(0.25),
            w2_samples: Some(100),
            ..RunMetrics::default()
        };
        let merged = eval.merge(&dir).unwrap();
        assert_eq!(merged.train_steps, Some(7));
        assert_eq!(merged.w2, Some(0.25));
        assert_eq!(merged.other["by_hand"], serde_json::json!([1, 2]));
        assert_eq!(RunMetrics::read(&dir).unwrap(), merged);
        let again = RunMetrics {
            w2: Some(0.5),
            ..RunMetrics::default()
        }
        .merge(&dir)
        .unwrap();
        assert_eq!((again.w2, again.w2_samples), (Some(0.5), Some(100)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wrongly_typed_value_is_refused_with_the_file_name() {
        let dir = std::env::temp_dir().join(format!("ferroflow-metrics-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(METRICS_FILE), r#"{"w2": "small"}"#).unwrap();
        let err = format!("{:#}", RunMetrics::read(&dir).unwrap_err());
        assert!(err.contains("metrics.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
