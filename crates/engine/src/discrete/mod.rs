//! Discrete runs: token targets ([`crate::tokens`]) trained with discrete flow matching through the one
//! training loop ([`crate::train::observe`]) with the same observers (NaN guard, loss curve, checkpoints) and
//! the same checkpoint format as flow runs.
//!
//! The batch of step `k` is a pure function of `(seed, k)` drawn from [`Stream::Batch`]: `x1` from the data
//! set (2D points binned, or training words drawn with replacement), `x0` from the source of
//! `flow.discrete`, `t` from `flow.time_sampling`, and `x_t` from [`MixturePath::sample_x_t`] with
//! `kappa_t = alpha_t` of `flow.scheduler`. Batches are made on the training thread: they cost a few
//! microseconds per row, far below the network's step, so the flow trainer's producer thread would buy nothing.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use ferroflow_discrete::{Kappa, MixturePath, Token};
use ferroflow_models::discrete::{
    TokenMlp, TokenNet, TokenTransformer, carry_over, cross_entropy_loss, generalized_kl_loss,
};
use ferroflow_models::optim::{Ema, FlatAdam};
use ferroflow_models::params::ParamStore;
use ferroflow_paths::Scheduler;
use ndarray::{Array1, Array2};
use tch::{Kind, Tensor};

pub mod eval;
pub mod trained;

pub use trained::{ElboEstimate, TokenGuidance, TokenSampling, TrainedTokens};

use crate::config::{DiscreteLoss, ModelKind, RunConfig, TokenCondition};
use crate::data::Dataset;
use crate::error::TrainError;
use crate::stream::Stream;
use crate::tokens::{Grid, WordSplit};
use crate::train::observe::{Observer, Trainable, execute};
use crate::train::{Start, TrainState, TrainSummary};

/// The data of a token target, ready to draw `x1` from.
#[derive(Clone, Debug)]
pub enum TokenData {
    /// A 2D data set and its grid.
    Grid2d {
        /// The continuous data set.
        dataset: Dataset,
        /// The bins.
        grid: Grid,
    },
    /// Words split into training and held-out words.
    Words(WordSplit),
}

impl TokenData {
    /// Loads the token target of `config` (reads the word list with the run's seed).
    pub fn load(config: &RunConfig) -> Result<Self, TrainError> {
        let config_error = |e: crate::error::ConfigError| TrainError::Io {
            path: "config".into(),
            detail: e.to_string(),
        };
        match &config.data.target {
            Dataset::Tokens2d {
                dataset,
                bins,
                half_width,
            } => Ok(TokenData::Grid2d {
                dataset: dataset.dataset(),
                grid: Grid {
                    bins: *bins,
                    half_width: *half_width,
                },
            }),
            Dataset::Words {
                file,
                max_length,
                held_out,
            } => Ok(TokenData::Words(
                WordSplit::load("data.target", file, *max_length, *held_out, config.run.seed)
                    .map_err(config_error)?,
            )),
            other => Err(config_error(crate::error::ConfigError::value(
                "data.target",
                format!("{} is not a token data set", other.name()),
            ))),
        }
    }

    /// `n_samples` data sequences drawn with `rng`, `[n_samples, length]`.
    pub fn sample(&self, n_samples: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Array2<Token> {
        use rand::Rng;
        match self {
            TokenData::Grid2d { dataset, grid } => {
                let points = dataset.sample(n_samples, rng);
                Array2::from_shape_fn((n_samples, 2), |(row, col)| {
                    grid.encode(f64::from(points[row * 2 + col]))
                })
            }
            TokenData::Words(split) => {
                let length = split.max_length;
                let mut out = Array2::zeros((n_samples, length));
                for mut row in out.rows_mut() {
                    let word = &split.train[rng.random_range(0..split.train.len())];
                    let tokens = crate::tokens::encode_words(std::slice::from_ref(word), length);
                    row.assign(&Array1::from(tokens));
                }
                out
            }
        }
    }
}

/// `kappa_t = alpha_t` of a scheduler, the schedule of a discrete run's mixture path.
pub struct SchedulerKappa(pub Box<dyn Scheduler + Send + Sync>);

impl ferroflow_discrete::KappaSchedule for SchedulerKappa {
    fn at(&self, t: f64) -> Kappa {
        Kappa {
            value: self.0.alpha(t).clamp(0.0, 1.0),
            derivative: self.0.d_alpha(t).max(0.0),
        }
    }
}

/// A discrete training batch: `x_t`, `x1` (`[batch, length]`), `t` (`[batch]`) and, for a conditional run,
/// the labels (`[batch]`, the null class `num_classes` where dropped).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// Noisy states.
    pub x_t: Array2<Token>,
    /// Data tokens.
    pub x1: Array2<Token>,
    /// Times.
    pub t: Array1<f64>,
    /// Labels of a conditional run.
    pub labels: Option<Array1<i64>>,
}

/// The label of each row of `x1` under `condition` (`[n]`): for [`TokenCondition::Length`], the number of
/// letters minus one.
pub fn labels_of(condition: TokenCondition, x1: ndarray::ArrayView2<Token>) -> Array1<i64> {
    match condition {
        TokenCondition::Length => x1
            .rows()
            .into_iter()
            .map(|row| row.iter().filter(|&&token| token < crate::tokens::PAD).count() as i64 - 1)
            .collect(),
    }
}

/// Makes the batches of a discrete run.
pub struct TokenBatchMaker {
    data: TokenData,
    path: MixturePath,
    kappa: SchedulerKappa,
    seed: u64,
    batch_size: usize,
    length: usize,
    time_sampling: crate::config::TimeSampling,
    /// The condition, its number of classes and the label dropout of a conditional run.
    condition: Option<(TokenCondition, usize, f64)>,
}

impl TokenBatchMaker {
    /// The batch maker of `config`'s discrete run.
    pub fn new(config: &RunConfig, data: TokenData) -> Result<Self, TrainError> {
        let (path, kappa) = path_and_kappa(config)?;
        Ok(Self {
            data,
            path,
            kappa,
            seed: config.run.seed,
            batch_size: config.train.batch_size,
            length: config.data.target.dim(),
            time_sampling: config.flow.time_sampling,
            condition: discrete_condition(config),
        })
    }

    /// The batch of step `step`, a pure function of `(seed, step)`.
    pub fn make(&self, step: u64) -> Result<TokenBatch, TrainError> {
        let mut rng = Stream::Batch { step }.rng(self.seed);
        let x1 = self.data.sample(self.batch_size, &mut rng);
        let x0 = self.path.sample_source(self.batch_size, self.length, &mut rng);
        let t = Array1::from_shape_fn(self.batch_size, |_| {
            crate::batch::draw_time(self.time_sampling, &mut rng)
        });
        let x_t = self
            .path
            .sample_x_t(&self.kappa, x0.view(), x1.view(), t.view(), &mut rng)
            .map_err(|e| TrainError::Coupling {
                step: step as usize,
                detail: e.to_string(),
            })?;
        // Drawn last, so that an unconditional run's batches do not depend on the option.
        let labels = self.condition.map(|(condition, classes, dropout)| {
            use rand::Rng;
            let mut labels = labels_of(condition, x1.view());
            for label in &mut labels {
                if rng.random::<f64>() < dropout {
                    *label = classes as i64;
                }
            }
            labels
        });
        Ok(TokenBatch { x_t, x1, t, labels })
    }
}

/// The condition, number of classes and label dropout of a conditional discrete run.
pub fn discrete_condition(config: &RunConfig) -> Option<(TokenCondition, usize, f64)> {
    let discrete = config.flow.discrete?;
    Some((
        discrete.condition?,
        discrete.num_classes(&config.data.target)?,
        config.train.label_dropout,
    ))
}

/// The mixture path and schedule of `config`'s discrete run.
pub fn path_and_kappa(config: &RunConfig) -> Result<(MixturePath, SchedulerKappa), TrainError> {
    let invalid = |detail: String| TrainError::Io {
        path: "config".into(),
        detail,
    };
    let vocab_size = config
        .data
        .target
        .vocab_size()
        .ok_or_else(|| invalid("data.target is not a token data set".into()))?;
    let source = config.flow.discrete.unwrap_or_default().source;
    let path = MixturePath::new(vocab_size, source.into()).map_err(|e| invalid(e.to_string()))?;
    let scheduler = config
        .flow
        .scheduler
        .build()
        .map_err(|e| invalid(format!("flow.scheduler: {e}")))?;
    Ok((path, SchedulerKappa(scheduler)))
}

/// Builds the run's token network with its seeded initialisation.
pub fn build_token_net(config: &RunConfig) -> Result<Box<dyn TokenNet>, TrainError> {
    let device = crate::train::resolve_device(&config.run.device)?;
    let vocab_size = config.data.target.vocab_size().unwrap_or(0);
    let length = config.data.target.dim();
    let discrete = config.flow.discrete.unwrap_or_default();
    let (source, num_classes) = (discrete.source, discrete.num_classes(&config.data.target));
    let model = &config.model;
    ferroflow_models::with_torch_seed(config.run.seed, || -> Result<Box<dyn TokenNet>, TrainError> {
        Ok(match model.kind {
            ModelKind::TokenTransformer => Box::new(TokenTransformer::new(
                model.token_transformer_config(vocab_size, length, source, num_classes),
                device,
            )?),
            _ => Box::new(TokenMlp::new(
                model.token_mlp_config(vocab_size, length, source, num_classes),
                device,
            )?),
        })
    })
}

/// A token network being trained, with its optimizer and EMA.
pub struct DiscreteModel {
    /// The network.
    pub net: Box<dyn TokenNet>,
    /// Adam's state.
    pub adam: FlatAdam,
    /// The EMA of the weights, when `train.ema_decay > 0`.
    pub ema: Option<Ema>,
}

impl TrainState for DiscreteModel {
    fn state(&self) -> (&ParamStore, &FlatAdam, Option<&Ema>) {
        (self.net.params(), &self.adam, self.ema.as_ref())
    }

    fn state_mut(&mut self) -> (&ParamStore, &mut FlatAdam, Option<&mut Ema>) {
        (self.net.params(), &mut self.adam, self.ema.as_mut())
    }
}

struct DiscreteTrainer<'a> {
    model: DiscreteModel,
    maker: TokenBatchMaker,
    loss: DiscreteLoss,
    /// This rank's rows of each batch and the step's all-reduce.
    ranks: crate::train::RankSync<'a>,
}

fn tokens_tensor(tokens: &Array2<Token>, device: tch::Device) -> Tensor {
    let flat: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_slice(&flat)
        .view([tokens.nrows() as i64, tokens.ncols() as i64])
        .to_device(device)
}

impl Trainable for DiscreteTrainer<'_> {
    type Model = DiscreteModel;

    fn model(&self) -> &DiscreteModel {
        &self.model
    }

    fn step(&mut self, step: usize) -> Result<f64, TrainError> {
        use ferroflow_discrete::KappaSchedule;
        let mut batch = self.maker.make(step as u64)?;
        // This rank's rows of the global batch (all of it in one process).
        let (lo, hi) = self.ranks.rows;
        if (lo, hi) != (0, batch.t.len()) {
            batch = TokenBatch {
                x_t: batch.x_t.slice(ndarray::s![lo..hi, ..]).to_owned(),
                x1: batch.x1.slice(ndarray::s![lo..hi, ..]).to_owned(),
                t: batch.t.slice(ndarray::s![lo..hi]).to_owned(),
                labels: batch.labels.map(|l| l.slice(ndarray::s![lo..hi]).to_owned()),
            };
        }
        let net = &self.model.net;
        let device = net.params().device();
        let x_t = tokens_tensor(&batch.x_t, device);
        let x1 = tokens_tensor(&batch.x1, device);
        let t_values: Vec<f32> = batch.t.iter().map(|&t| t as f32).collect();
        let t = Tensor::from_slice(&t_values).to_device(device);
        let labels = batch.labels.as_ref().map(|labels| {
            Tensor::from_slice(labels.as_slice().expect("labels are contiguous")).to_device(device)
        });
        let logits = net.forward_with(&net.params().views(), &x_t, &t, labels.as_ref());
        let loss = match self.loss {
            DiscreteLoss::CrossEntropy => cross_entropy_loss(&logits, &x1)?,
            DiscreteLoss::GeneralizedKl => {
                let (kappa, d_kappa): (Vec<f32>, Vec<f32>) = batch
                    .t
                    .iter()
                    .map(|&t| {
                        let k = self.maker.kappa.at(t);
                        (k.value as f32, k.derivative as f32)
                    })
                    .unzip();
                generalized_kl_loss(
                    &logits,
                    &x_t,
                    &x1,
                    &Tensor::from_slice(&kappa).to_device(device),
                    &Tensor::from_slice(&d_kappa).to_device(device),
                )?
            }
        };
        let loss = loss.to_kind(Kind::Float);
        loss.backward();
        let loss_value = self
            .ranks
            .global_loss(self.model.net.params().flat(), loss.double_value(&[]))?;
        // As in the flow trainer: a non-finite loss never reaches the weights.
        if loss_value.is_finite() {
            let weights = self.model.net.params().flat();
            self.model.adam.step(weights);
            if let Some(ema) = self.model.ema.as_mut() {
                ema.update(weights);
            }
        }
        Ok(loss_value)
    }
}

/// Trains (or resumes) the discrete run of `config` in `run_dir`, like [`crate::train::train`] does for flows:
/// step-0 checkpoint before the config, checkpoints every `train.checkpoint_every` steps and at the end,
/// `model.safetensors` with the sampling weights (the EMA when enabled).
pub fn train(
    config: &RunConfig,
    run_dir: &Path,
    start: Start,
    stop: Option<&AtomicBool>,
    launch: &crate::distributed::Launch<'_>,
    observers: &mut [&mut dyn Observer<DiscreteModel>],
) -> Result<TrainSummary, TrainError> {
    crate::train::apply_threads(config);
    let net = crate::distributed::agree(launch.comm, build_token_net(config))?;
    let (adam, ema) = crate::train::optimizer_state(config, net.params().flat())?;
    let model = DiscreteModel { net, adam, ema };
    let maker = TokenBatchMaker::new(config, TokenData::load(config)?)?;
    let loss = config.flow.discrete.unwrap_or_default().loss;
    crate::train::drive(config, run_dir, start, stop, launch, model, observers, |run| {
        let mut trainer = DiscreteTrainer {
            model: run.model,
            maker,
            loss,
            ranks: run.ranks,
        };
        execute(
            &mut trainer,
            run.start_step,
            config.train.steps,
            run.journal,
            run.observers,
        )?;
        Ok(trainer.model)
    })
}

/// The posterior over the `n_states` states of a position from a token network's logits
/// (`[batch, length, vocab_size]`), in float64: a softmax at `temperature`, with a zero column for the mask
/// when the source is masked (the network never predicts the mask).
pub fn posterior_from_logits(logits: &Tensor, temperature: f64, n_states: usize) -> Tensor {
    let probs = (logits.to_kind(Kind::Double) / temperature).softmax(-1, Kind::Double);
    let vocab_size = probs.size()[2] as usize;
    if n_states > vocab_size {
        let mut size = probs.size();
        size[2] = (n_states - vocab_size) as i64;
        Tensor::cat(
            &[
                probs.shallow_clone(),
                probs.zeros_like().narrow(2, 0, 1).expand(size.as_slice(), false),
            ],
            2,
        )
    } else {
        probs
    }
}

/// [`ferroflow_discrete::jump_probabilities`] without corrector on tensors: from the posterior `probs`
/// (`[batch, length, n_states]`, float64) at states `x_t` (`[batch, length]`, int64), the distribution of
/// the next state after a step of `step_size` with jump coefficient `coefficient = kappa'_t / (1 - kappa_t)`.
/// The off-diagonal rates are `coefficient p(y)`; where `step_size` times their sum exceeds 1 the row is
/// capped to the rates normalised (the position surely jumps), as in the array version.
pub fn jump_probabilities_tensor(probs: &Tensor, x_t: &Tensor, coefficient: f64, step_size: f64) -> Tensor {
    let n_states = probs.size()[2];
    let stay = x_t.one_hot(n_states).to_kind(Kind::Double);
    let leave: Tensor = stay.ones_like() - &stay;
    let rates: Tensor = (probs * coefficient * leave).clamp_min(0.0);
    let total = rates.sum_dim_intlist([-1i64].as_slice(), true, Kind::Double);
    let remain: Tensor = total.ones_like() - &total * step_size;
    let stepped: Tensor = &rates * step_size + &stay * remain;
    let capped = &rates / total.clamp_min(f64::MIN_POSITIVE);
    stepped.where_self(&(&total * step_size).le(1.0), &capped)
}

/// One Euler step of the CTMC on tensors: the next state of each position drawn from `jumps`
/// (`[batch, length, n_states]`) with the uniforms `uniforms` (`[batch, length]`, float64; drawn row-major
/// from a seeded stream, they reproduce [`ferroflow_discrete::euler_step`]): the first state whose cumulative
/// probability exceeds the uniform, or the current state when round-off leaves none.
pub fn euler_step_tensor(jumps: &Tensor, x_t: &Tensor, uniforms: &Tensor) -> Tensor {
    let n_states = jumps.size()[2];
    let cumulative = jumps.cumsum(-1, Kind::Double);
    let below = cumulative.le_tensor(&uniforms.unsqueeze(-1)).to_kind(Kind::Int64);
    let first = below.sum_dim_intlist([-1i64].as_slice(), false, Kind::Int64);
    first.where_self(&first.lt(n_states), x_t)
}

/// The off-diagonal rates of the marginal rate plus the corrector's, `coefficient p(y) + beta kappa' / (kappa
/// (1 - kappa)) [kappa p(y) + (1 - kappa) p0(y)]` (`[batch, length, n_states]`), for
/// [`jump_probabilities_tensor`] with coefficient 1: the tensor form of [`ferroflow_discrete::marginal_rates`]
/// plus [`ferroflow_discrete::corrector_rates`] off the diagonal (the diagonal is ignored there). `kappa > 0`
/// where `beta > 0` (the corrector schedules of `sample.corrector` vanish at `t = 0`).
pub fn corrected_rate_target(
    probs: &Tensor,
    path: &MixturePath,
    kappa: f64,
    d_kappa: f64,
    beta: f64,
    coefficient: f64,
) -> Tensor {
    let source: Vec<f64> = path.source_distribution().to_vec();
    let source = Tensor::from_slice(&source).to_device(probs.device());
    let jump = d_kappa / (1.0 - kappa).max(f64::MIN_POSITIVE);
    let corrector = beta * jump / kappa.max(f64::MIN_POSITIVE);
    let target: Tensor = probs * kappa + source * (1.0 - kappa);
    probs * coefficient + target * corrector
}

/// The jump coefficient of one sampler step from `t` to `t + step_size`: `(kappa_{t+h} - kappa_t) / ((1 -
/// kappa_t) h)`, so that `h` times it is the probability that a position not yet at its data token jumps during
/// the step under the mixture path with the posterior held at `t`. Euler's `kappa'_t / (1 - kappa_t)` is its
/// limit for small `h`, but leaves positions unjumped at the end wherever `kappa` is convex near 1
/// (`kappa_t = t^2` keeps a share `h / 2` masked after the last step); this coefficient reaches 1 at the last
/// step, where every remaining position draws its token from the posterior, as `flow_matching`'s solver does.
pub fn exact_step_coefficient(kappa: &dyn ferroflow_discrete::KappaSchedule, t: f64, step_size: f64) -> f64 {
    let (now, next) = (kappa.at(t).value, kappa.at((t + step_size).min(1.0)).value);
    let leave = ((next - now) / (1.0 - now).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    leave / step_size
}

/// Classifier-free guidance of a token network's posterior: `log_softmax((1 + w) log p_cond - w log p_uncond)`
/// from conditional and unconditional logits (`[batch, length, vocab_size]`), in float64; the tensor version of
/// [`ferroflow_discrete::classifier_free_guidance`] (a network's softmax gives no zero probabilities, so the
/// array version's refusals do not arise).
pub fn guided_log_posterior(conditional: &Tensor, unconditional: &Tensor, weight: f64) -> Tensor {
    let log_cond = conditional.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    let log_uncond = unconditional.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    (log_cond * (1.0 + weight) - log_uncond * weight).log_softmax(-1, Kind::Double)
}

/// Samples `n_samples` sequences from a token network (weights `params`) with the Euler CTMC sampler over
/// `sampling.steps` uniform steps, posterior at `sampling.temperature` after classifier-free guidance (when
/// given; the class must be one the network knows, see [`TrainedTokens::check_guidance`]), every random number
/// from `rng`: the source draw first, then per step one uniform per position (row-major). Returns
/// `[n_samples, length]` token ids.
pub fn sample_tokens(
    net: &dyn TokenNet,
    params: &[Tensor],
    path: &MixturePath,
    kappa: &SchedulerKappa,
    n_samples: usize,
    sampling: &TokenSampling,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Array2<Token>, TrainError> {
    use rand::Rng;
    let length = net.length();
    let device = net.params().device();
    let grid = ferroflow_discrete::uniform_grid(sampling.steps).map_err(|e| TrainError::Io {
        path: "sample.steps".into(),
        detail: e.to_string(),
    })?;
    let labels = sampling
        .guidance
        .map(|g| Tensor::full([n_samples as i64], g.class as i64, (Kind::Int64, device)));
    let x0 = path.sample_source(n_samples, length, rng);
    let mut x_t = tokens_tensor(&x0, device);
    let _guard = tch::no_grad_guard();
    for window in grid.windows(2) {
        let (t, step_size) = (window[0], window[1] - window[0]);
        // The coefficient that makes the step's leave probability the exact (kappa_{t+h} - kappa_t) /
        // (1 - kappa_t) of the mixture path with the posterior held at t (see `exact_step_coefficient`).
        let coefficient = exact_step_coefficient(kappa, t, step_size);
        let times = Tensor::full([n_samples as i64], t, (Kind::Float, device));
        let logits = match (&labels, sampling.guidance) {
            (Some(labels), Some(guidance)) => {
                let conditional = net.forward_with(params, &x_t, &times, Some(labels));
                if guidance.weight == 0.0 {
                    conditional
                } else {
                    let unconditional = net.forward_with(params, &x_t, &times, None);
                    guided_log_posterior(&conditional, &unconditional, guidance.weight)
                }
            }
            _ => net.forward_with(params, &x_t, &times, None),
        };
        let logits = if sampling.carry_over {
            carry_over(&logits, &x_t, net.source())
        } else {
            logits
        };
        let probs = posterior_from_logits(&logits, sampling.temperature, path.n_states());
        // No corrector on the last step, which draws every position from the posterior (the corrector's rate
        // towards the source would put masks back at t = 1).
        let beta = if window[1] >= 1.0 {
            0.0
        } else {
            sampling.corrector.coefficient(t).map_err(|e| TrainError::Io {
                path: "sample.corrector".into(),
                detail: e.to_string(),
            })?
        };
        let jumps = if beta > 0.0 {
            let k = ferroflow_discrete::KappaSchedule::at(kappa, t);
            let rates = corrected_rate_target(&probs, path, k.value, k.derivative, beta, coefficient);
            jump_probabilities_tensor(&rates, &x_t, 1.0, step_size)
        } else {
            jump_probabilities_tensor(&probs, &x_t, coefficient, step_size)
        };
        let uniforms: Vec<f64> = (0..n_samples * length).map(|_| rng.random::<f64>()).collect();
        let uniforms = Tensor::from_slice(&uniforms)
            .view([n_samples as i64, length as i64])
            .to_device(device);
        x_t = euler_step_tensor(&jumps, &x_t, &uniforms);
    }
    let flat =
        Vec::<i64>::try_from(x_t.to_device(tch::Device::Cpu).reshape([-1])).map_err(|e| TrainError::Io {
            path: "samples".into(),
            detail: e.to_string(),
        })?;
    Ok(Array2::from_shape_vec(
        (n_samples, length),
        flat.into_iter().map(|t| t as Token).collect(),
    )
    .expect("the network's states are [n_samples, length]"))
}
