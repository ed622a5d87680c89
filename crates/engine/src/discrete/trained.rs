//! A finished discrete run loaded for sampling and evaluation: its config, its token network with the sampling
//! weights (the EMA when the run kept one), the mixture path, and the two things done with them — the Euler
//! CTMC sampler with optional classifier-free guidance ([`TrainedTokens::sample`]) and a Monte Carlo estimate of
//! the ELBO of held-out sequences in bits per token ([`TrainedTokens::elbo`]).
//!
//! Guidance mixes the conditional and unconditional posteriors in log space, `(1 + w) log p_cond - w log
//! p_uncond` renormalised (as [`ferroflow_discrete::classifier_free_guidance`], which the tests compare with),
//! then applies the temperature; `w = 0` samples the conditional model, and a conditional run sampled without a
//! class samples its unconditional (null-class) model.
//!
//! The ELBO is that of the carry-over parameterisation of a masked source
//! ([`ferroflow_models::discrete::carry_over`]: a revealed token keeps its value, as under the exact posterior of
//! the masked path), the model the sampler draws from with `sample.carry_over = true`. By default the sampler
//! follows the network's own rates, which may also move a revealed token (as `flow_matching`'s solver does); on
//! an undertrained checkerboard model that measured closer to the data (see `sample.carry_over`).
//!
//! The ELBO estimate integrates the generalized KL term over `t` with the math crate's quadrature nodes
//! ([`ferroflow_discrete::quadrature_nodes`]) and replaces the exact expectation over `x_t ~ p_t(. | x1)` of
//! [`ferroflow_discrete::elbo()`] (which enumerates `2^L` states) by one draw per node and sequence: an unbiased
//! estimate of the same quadrature sum, whose standard error over sequences is reported with it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ferroflow_discrete::{KappaSchedule, MixturePath, Source, Token};
use ferroflow_models::discrete::{TokenNet, carry_over, generalized_kl_per_position};
use ndarray::{Array1, Array2, ArrayView2};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::{SchedulerKappa, build_token_net, path_and_kappa, tokens_tensor};
use crate::config::RunConfig;
use crate::train::MODEL_FILE;

/// Classifier-free guidance of a conditional discrete run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenGuidance {
    /// The class sampled, `0..num_classes`.
    pub class: usize,
    /// The guidance weight `w` (0: the conditional model).
    pub weight: f64,
}

/// How to sample a discrete run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenSampling {
    /// Uniform Euler steps from 0 to 1.
    pub steps: usize,
    /// Softmax temperature of the posterior (1: the model's).
    pub temperature: f64,
    /// Classifier-free guidance, for conditional runs.
    pub guidance: Option<TokenGuidance>,
    /// Keep revealed tokens of a masked source (see `sample.carry_over`).
    pub carry_over: bool,
    /// The divergence-free corrector (see `sample.corrector`).
    pub corrector: ferroflow_discrete::Corrector,
}

impl TokenSampling {
    /// The sampling settings of `config` (no guidance).
    pub fn of(config: &RunConfig) -> Self {
        Self {
            steps: config.sample.steps,
            temperature: config.sample.temperature,
            guidance: None,
            carry_over: config.sample.carry_over,
            corrector: config
                .sample
                .corrector
                .map_or(ferroflow_discrete::Corrector::Off, |c| c.corrector()),
        }
    }
}

/// An ELBO estimate over held-out sequences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElboEstimate {
    /// The upper bound on the negative log-likelihood, in bits per token (padding positions count as tokens).
    pub bits_per_token: f64,
    /// Its standard error over the sequences (the draws of `x_t` included).
    pub stderr: f64,
    /// The number of sequences.
    pub sequences: usize,
}

/// A trained discrete run.
pub struct TrainedTokens {
    /// The run's config.
    pub config: RunConfig,
    /// The network, holding the sampling weights.
    pub net: Box<dyn TokenNet>,
    /// The mixture path.
    pub path: MixturePath,
    /// `kappa_t` of the path.
    pub kappa: SchedulerKappa,
}

/// Time intervals of the held-out ELBO's quadrature (three nodes each).
pub const ELBO_INTERVALS: usize = 32;

/// Rows per forward pass of the ELBO and the sampler's chunks.
const CHUNK_ROWS: usize = 4096;

impl TrainedTokens {
    /// Loads the discrete run in `run_dir` (its `config.toml` and `model.safetensors`).
    pub fn load(run_dir: &Path) -> Result<Self> {
        let config_path = run_dir.join(crate::run::CONFIG_FILE);
        let config = RunConfig::load(&config_path)?;
        if !config.data.target.is_tokens() {
            bail!(
                "{}: data.target = {} is not a token data set (a continuous run)",
                config_path.display(),
                config.data.target.name()
            );
        }
        Self::from_config(config, run_dir)
    }

    /// Builds the network of `config` with the weights in `run_dir/model.safetensors`.
    pub fn from_config(config: RunConfig, run_dir: &Path) -> Result<Self> {
        crate::train::apply_threads(&config);
        let net = build_token_net(&config)?;
        let model_path = run_dir.join(MODEL_FILE);
        net.params()
            .load(&model_path)
            .map_err(crate::error::TrainError::from)
            .with_context(|| format!("cannot load the weights of {}", run_dir.display()))?;
        let (path, kappa) = path_and_kappa(&config)?;
        Ok(Self {
            config,
            net,
            path,
            kappa,
        })
    }

    /// Sequence length.
    pub fn length(&self) -> usize {
        self.net.length()
    }

    /// Checks guidance against the network: a class it knows, a finite weight, and a conditional network.
    pub fn check_guidance(&self, guidance: Option<TokenGuidance>) -> Result<()> {
        let Some(guidance) = guidance else {
            return Ok(());
        };
        let Some(classes) = self.net.num_classes() else {
            bail!(
                "class {}: this run's network is unconditional (set flow.discrete.condition to train a \
                 conditional one)",
                guidance.class
            );
        };
        if guidance.class >= classes {
            bail!(
                "class {} is not one of this run's {classes} classes (0..={}{})",
                guidance.class,
                classes - 1,
                if matches!(self.config.data.target, crate::data::Dataset::Words { .. }) {
                    "; class n - 1 is a word of n letters"
                } else {
                    ""
                }
            );
        }
        if !guidance.weight.is_finite() || guidance.weight.abs() > 1e3 {
            bail!("guidance weight {} is outside [-1000, 1000]", guidance.weight);
        }
        Ok(())
    }

    /// Draws `n_samples` sequences (`[n_samples, length]`), every random number from `rng`: the source draw,
    /// then per step one uniform per position (row-major).
    pub fn sample(
        &self,
        n_samples: usize,
        sampling: &TokenSampling,
        rng: &mut ChaCha8Rng,
    ) -> Result<Array2<Token>> {
        self.check_guidance(sampling.guidance)?;
        Ok(super::sample_tokens(
            &*self.net,
            &self.net.params().views(),
            &self.path,
            &self.kappa,
            n_samples,
            sampling,
            rng,
        )?)
    }

    /// The ELBO of the held-out sequences `x1` (`[n, length]` data tokens) under the unconditional (null-class)
    /// model, with [`ELBO_INTERVALS`] quadrature intervals (crowded towards `t = 1` for a uniform source, whose
    /// integrand has a logarithmic singularity there) and the draws of `x_t` from `rng`.
    pub fn elbo(&self, x1: ArrayView2<Token>, rng: &mut ChaCha8Rng) -> Result<ElboEstimate> {
        let n = x1.nrows();
        if n < 2 {
            bail!("the ELBO needs at least 2 held-out sequences, got {n}");
        }
        let per_sequence = self.elbo_per_sequence(x1, rng)?;
        let scale = -1.0 / (x1.ncols() as f64 * std::f64::consts::LN_2);
        let mean = per_sequence.mean().expect("n >= 2");
        let stderr = (per_sequence.var(1.0) / n as f64).sqrt();
        Ok(ElboEstimate {
            bits_per_token: mean * scale,
            stderr: stderr * scale.abs(),
            sequences: n,
        })
    }

    /// Checks sequences against the network: `[n >= 1, length]` data tokens, naming the first bad one.
    pub fn check_sequences(&self, x1: ArrayView2<Token>) -> Result<()> {
        let (n, length) = x1.dim();
        if n == 0 {
            bail!("no sequences");
        }
        if length != self.length() {
            bail!(
                "sequences of {length} tokens; this run's network reads {}",
                self.length()
            );
        }
        if let Some(((row, column), bad)) = x1
            .indexed_iter()
            .find(|(_, token)| **token as usize >= self.path.vocab_size())
        {
            bail!(
                "token {bad} (sequence {row}, position {column}) is outside the vocabulary of {} tokens (0..={})",
                self.path.vocab_size(),
                self.path.vocab_size() - 1
            );
        }
        Ok(())
    }

    /// The ELBO of each sequence of `x1` (a lower bound on `ln p(x1)` in nats, `[n]`), as [`Self::elbo`]
    /// estimates it: one draw of `x_t` per quadrature node and sequence.
    pub fn elbo_per_sequence(&self, x1: ArrayView2<Token>, rng: &mut ChaCha8Rng) -> Result<Array1<f64>> {
        self.check_sequences(x1)?;
        let (n, length) = x1.dim();
        let grid = match self.path.source() {
            Source::Masked => ferroflow_discrete::uniform_grid(ELBO_INTERVALS)?,
            Source::Uniform => ferroflow_discrete::graded_grid(ELBO_INTERVALS, 2.0)?,
        };
        let nodes = ferroflow_discrete::quadrature_nodes(&self.kappa, &grid)?;
        let device = self.net.params().device();
        let params = self.net.params().views();
        let _guard = tch::no_grad_guard();
        let mut per_sequence = Array1::<f64>::zeros(n);
        for start in (0..n).step_by(CHUNK_ROWS) {
            let rows = CHUNK_ROWS.min(n - start);
            let x1_chunk = x1.slice(ndarray::s![start..start + rows, ..]);
            let x1_tensor = tokens_tensor(&x1_chunk.to_owned(), device);
            let mut integral = Tensor::zeros([rows as i64], (Kind::Double, device));
            for &(time, weight) in &nodes {
                let times = Array1::from_elem(rows, time);
                let x0 = self.path.sample_source(rows, length, rng);
                let x_t = self
                    .path
                    .sample_x_t(&self.kappa, x0.view(), x1_chunk, times.view(), rng)?;
                let x_t = tokens_tensor(&x_t, device);
                let t = Tensor::full([rows as i64], time, (Kind::Float, device));
                let logits = carry_over(
                    &self
                        .net
                        .forward_with(&params, &x_t, &t, None)
                        .to_kind(Kind::Double),
                    &x_t,
                    self.net.source(),
                );
                let kappa = self.kappa.at(time);
                let loss = generalized_kl_per_position(
                    &logits,
                    &x_t,
                    &x1_tensor,
                    &Tensor::from(kappa.value),
                    &Tensor::from(kappa.derivative),
                )?;
                integral += loss.sum_dim_intlist([1i64].as_slice(), false, Kind::Double) * weight;
            }
            let values = Vec::<f64>::try_from(integral.to_device(tch::Device::Cpu))
                .context("cannot read the ELBO terms back")?;
            per_sequence
                .slice_mut(ndarray::s![start..start + rows])
                .assign(&Array1::from(values));
        }
        if let Some(bad) = per_sequence.iter().find(|value| !value.is_finite()) {
            bail!("the ELBO came out {bad}: the model gives a token of the sequences probability 0");
        }
        Ok(per_sequence.mapv(|integral| -integral))
    }
}

/// Reads sequences for a discrete run from `path`: a `.txt` file of words for a words run (one a line,
/// lowercased like the word list; each 1 to `max_length` letters a-z), or a `.npy` array `[n, length]` of token
/// ids (whole numbers stored as float32 or float64, the format of `samples.npy`). Errors name the file and
/// the line, or the row and column, of the first bad entry; the vocabulary and the length are checked by
/// [`TrainedTokens::check_sequences`].
pub fn read_sequences(path: &Path, tokens: &TrainedTokens) -> Result<Array2<Token>> {
    let is_text = path.extension().is_some_and(|e| e == "txt");
    if is_text {
        let crate::data::Dataset::Words { max_length, .. } = tokens.config.data.target else {
            bail!(
                "{}: a words file, but this run's target is {} (give a .npy of token ids)",
                path.display(),
                tokens.config.data.target.name()
            );
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut words = Vec::new();
        for (line, word) in text.lines().enumerate() {
            let word = word.trim().to_lowercase();
            if !(1..=max_length).contains(&word.len()) || !word.bytes().all(|b| b.is_ascii_lowercase()) {
                bail!(
                    "{} line {}: {word:?} is not a word of 1 to {max_length} letters a-z",
                    path.display(),
                    line + 1
                );
            }
            words.push(word);
        }
        let n = words.len();
        return Ok(Array2::from_shape_vec(
            (n, max_length),
            crate::tokens::encode_words(&words, max_length),
        )?);
    }
    let values = crate::files::read_points(path)?;
    let mut out = Array2::<Token>::zeros(values.dim());
    for ((row, column), &value) in values.indexed_iter() {
        if !(value.is_finite() && value.fract() == 0.0 && (0.0..1e9).contains(&value)) {
            bail!(
                "{} row {row}, column {column}: {value} is not a token id (a whole number >= 0)",
                path.display()
            );
        }
        out[[row, column]] = value as Token;
    }
    tokens
        .check_sequences(out.view())
        .with_context(|| format!("{}", path.display()))?;
    Ok(out)
}
