//! The run configuration, read from TOML with unknown keys refused and every value checked once.
//!
//! A run folder keeps the resolved config as `config.toml` (every default written out), so a run can be
//! reproduced or resumed from its folder alone.

use std::path::Path;

use ferroflow_coupling::{CouplingConfig, IndependentOrder};
use ferroflow_models::discrete::TokenSource;
use ferroflow_models::optim::OptimizerConfig;
use ferroflow_models::unet::UnetConfig;
use ferroflow_models::{Activation, TimeEmbedding};
use ferroflow_paths::{
    AffinePath, ConditionalPath, OneSidedGaussianPath, Prediction, SchedulerKind, SchrodingerBridgePath,
    VariancePreservingPath,
};
use ferroflow_solvers::{Method, OdeOptions};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{ConfigError, ensure_finite};

/// Everything a run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name, output folder, seed, device.
    pub run: RunSection,
    /// Source and target distributions.
    pub data: DataSection,
    /// The velocity network.
    #[serde(default)]
    pub model: ModelSection,
    /// Path, coupling, prediction target and time sampling.
    #[serde(default)]
    pub flow: FlowSection,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainSection,
    /// Sampling after training and in `eval`.
    #[serde(default)]
    pub sample: SampleSection,
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Folder name under `out_dir`.
    pub name: String,
    /// Where run folders go (default `runs`).
    #[serde(default = "default_out_dir")]
    pub out_dir: String,
    /// Seed of every random draw (model initialisation, batches, sampling).
    #[serde(default)]
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` (an error when that GPU is not there) or `auto` (CUDA when present, else the
    /// CPU, said when training starts).
    #[serde(default = "default_device")]
    pub device: String,
    /// libtorch intra-op threads (0 = libtorch's choice). One thread is fastest for small MLPs.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Recorded by the engine, not chosen here: the number of ranks the run last trained on (`mpirun -np N`).
    #[serde(default = "default_world_size", skip_serializing_if = "is_one_rank")]
    pub world_size: usize,
    /// Recorded by the engine: the collective backend of that launch (`single`, `mpi`, `nccl`).
    #[serde(default = "default_backend", skip_serializing_if = "is_single")]
    pub backend: String,
}

impl RunSection {
    /// A run named `name` under `out_dir` with the defaults of every other key (seed 0, CPU, one thread).
    pub fn named(name: impl Into<String>, out_dir: &Path) -> Self {
        Self {
            name: name.into(),
            out_dir: out_dir.display().to_string(),
            seed: 0,
            device: default_device(),
            threads: default_threads(),
            world_size: default_world_size(),
            backend: default_backend(),
        }
    }
}

fn default_world_size() -> usize {
    1
}
fn is_one_rank(n: &usize) -> bool {
    *n == 1
}
fn default_backend() -> String {
    "single".into()
}
fn is_single(name: &str) -> bool {
    name == "single"
}

fn default_out_dir() -> String {
    "runs".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_threads() -> usize {
    1
}

/// `[data]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Where flows start (t = 0); default N(0, I) in 2 dimensions, or the uniform distribution on
    /// `manifold` when that is set.
    #[serde(default)]
    pub source: Dataset,
    /// Where flows end (t = 1).
    pub target: Dataset,
    /// The manifold of a Riemannian flow (`{ kind = "sphere", dim = 3 }`, `{ kind = "torus", dim = 2 }`,
    /// `{ kind = "product", factors = [...] }`); both data sets must live on it. Absent: R^d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifold: Option<crate::manifold::ManifoldSpec>,
}

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A multilayer perceptron (`width`, `depth`, `activation`, `time_embedding`), for vector data.
    #[default]
    Mlp,
    /// The U-Net of `[model.unet]`, for 1 x 28 x 28 images.
    Unet,
    /// The token MLP of `[model.token_mlp]`, for token data sets (discrete runs).
    TokenMlp,
    /// The token transformer of `[model.token_transformer]`, for token data sets (discrete runs).
    TokenTransformer,
}

impl ModelKind {
    /// Whether this is a token network (a discrete run's model).
    pub fn is_token(self) -> bool {
        matches!(self, ModelKind::TokenMlp | ModelKind::TokenTransformer)
    }
}

/// `[model.token_mlp]`: the token MLP's sizes (the vocabulary, length and source come from `[data]` and
/// `[flow.discrete]`). Written to the resolved config only when it differs from the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenMlpSection {
    /// Width of each token's embedding (default 16).
    #[serde(default = "default_embedding_dim")]
    pub embedding_dim: usize,
    /// Width of each hidden layer (default 128).
    #[serde(default = "default_token_width")]
    pub width: usize,
    /// Number of hidden layers (default 3).
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Nonlinearity (default selu).
    #[serde(default)]
    pub activation: Activation,
    /// How time enters (default 4 Fourier frequencies).
    #[serde(default = "default_token_time_embedding")]
    pub time_embedding: TimeEmbedding,
}

fn default_embedding_dim() -> usize {
    16
}
fn default_token_width() -> usize {
    128
}
fn default_token_time_embedding() -> TimeEmbedding {
    TimeEmbedding::Fourier { n_freq: 4 }
}

impl Default for TokenMlpSection {
    fn default() -> Self {
        Self {
            embedding_dim: default_embedding_dim(),
            width: default_token_width(),
            depth: default_depth(),
            activation: Activation::default(),
            time_embedding: default_token_time_embedding(),
        }
    }
}

/// `[model.token_transformer]`: the token transformer's sizes. Written to the resolved config only when it
/// differs from the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTransformerSection {
    /// Model width, even and divisible by `n_heads` (default 64).
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    /// Attention heads (default 4).
    #[serde(default = "default_n_heads")]
    pub n_heads: usize,
    /// Transformer blocks (default 2).
    #[serde(default = "default_n_layers")]
    pub n_layers: usize,
    /// Hidden width of each block's MLP in multiples of `d_model` (default 4).
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
}

fn default_d_model() -> usize {
    64
}
fn default_n_heads() -> usize {
    4
}
fn default_n_layers() -> usize {
    2
}
fn default_mlp_ratio() -> usize {
    4
}

impl Default for TokenTransformerSection {
    fn default() -> Self {
        Self {
            d_model: default_d_model(),
            n_heads: default_n_heads(),
            n_layers: default_n_layers(),
            mlp_ratio: default_mlp_ratio(),
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `[model]`: an MLP for vector data or a U-Net for images.
///
/// The MLP keys (`width`, `depth`, `activation`, `time_embedding`) sit directly in `[model]`, so they cannot be
/// the models crate's [`ferroflow_models::MlpConfig`] embedded with `#[serde(flatten)]`: serde does not
/// support `deny_unknown_fields` together with flattening, and unknown keys must stay refused.
/// [`ModelSection::mlp_config`] is the one place that turns them into that config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Which network.
    #[serde(default)]
    pub kind: ModelKind,
    /// Hidden width.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Number of hidden layers.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Nonlinearity.
    #[serde(default)]
    pub activation: Activation,
    /// How time enters.
    #[serde(default)]
    pub time_embedding: TimeEmbedding,
    /// Classes of a class-conditional MLP (`kind = "mlp"`; the target's label count, for classifier-free
    /// guidance); labels are dropped to the null class with probability `train.label_dropout` while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// The U-Net's settings (`kind = "unet"`); `num_classes` set makes it class-conditional.
    #[serde(default)]
    pub unet: UnetConfig,
    /// On a manifold with torus factors: feed the MLP (cos, sin) of each angle instead of the raw angle, so
    /// the learned field is continuous across the seam at -pi = pi (default `true`; `false` is the raw-angle
    /// input of flow_matching's examples).
    #[serde(default = "default_angle_features")]
    pub angle_features: bool,
    /// The token MLP's sizes (`kind = "token_mlp"`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub token_mlp: TokenMlpSection,
    /// The token transformer's sizes (`kind = "token_transformer"`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub token_transformer: TokenTransformerSection,
}

fn default_angle_features() -> bool {
    true
}

fn default_width() -> usize {
    64
}
fn default_depth() -> usize {
    3
}

impl ModelSection {
    /// The models crate's token MLP config for `vocab_size` tokens, sequences of `length` and `source`.
    pub fn token_mlp_config(
        &self,
        vocab_size: usize,
        length: usize,
        source: TokenSource,
        num_classes: Option<usize>,
    ) -> ferroflow_models::discrete::TokenMlpConfig {
        let section = &self.token_mlp;
        ferroflow_models::discrete::TokenMlpConfig {
            vocab_size,
            length,
            source,
            embedding_dim: section.embedding_dim,
            width: section.width,
            depth: section.depth,
            activation: section.activation,
            time_embedding: section.time_embedding,
            num_classes,
        }
    }

    /// The models crate's token transformer config for `vocab_size` tokens, sequences of `length` and
    /// `source`.
    pub fn token_transformer_config(
        &self,
        vocab_size: usize,
        length: usize,
        source: TokenSource,
        num_classes: Option<usize>,
    ) -> ferroflow_models::discrete::TokenTransformerConfig {
        let section = &self.token_transformer;
        ferroflow_models::discrete::TokenTransformerConfig {
            vocab_size,
            length,
            source,
            d_model: section.d_model,
            n_heads: section.n_heads,
            n_layers: section.n_layers,
            mlp_ratio: section.mlp_ratio,
            num_classes,
        }
    }

    /// The models crate's MLP config of this section for points of dimension `dim` on `manifold` (`None`:
    /// Euclidean); the angle columns are the manifold's torus coordinates when `angle_features` is on.
    pub fn mlp_config(
        &self,
        dim: usize,
        manifold: Option<&crate::manifold::ManifoldSpec>,
    ) -> ferroflow_models::MlpConfig {
        ferroflow_models::MlpConfig {
            dim,
            width: self.width,
            depth: self.depth,
            activation: self.activation,
            time_embedding: self.time_embedding,
            angle_columns: match manifold {
                Some(manifold) if self.angle_features => manifold.angle_columns(),
                _ => Vec::new(),
            },
            num_classes: self.num_classes,
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            kind: ModelKind::Mlp,
            width: default_width(),
            depth: default_depth(),
            activation: Activation::Selu,
            time_embedding: TimeEmbedding::Concat {},
            num_classes: None,
            unet: UnetConfig::default(),
            angle_features: default_angle_features(),
            token_mlp: TokenMlpSection::default(),
            token_transformer: TokenTransformerSection::default(),
        }
    }
}

/// Which conditional probability path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// x_t = alpha_t x1 + sigma_t x0 (+ `sigma` eps): CFM / I-CFM / OT-CFM with the CondOT scheduler.
    #[default]
    Affine,
    /// Lipman et al.'s one-sided Gaussian path with sigma_min = `sigma` (FM; Gaussian source only).
    OneSided,
    /// The Brownian-bridge path sigma_t = `sigma` sqrt(t (1 - t)) (SB-CFM).
    SchrodingerBridge,
    /// x_t = cos(pi t/2) x0 + sin(pi t/2) x1 (+ `sigma` eps) (VP-CFM).
    VariancePreserving,
}

/// How training times are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum TimeSampling {
    /// t ~ U(0, 1). (Kinds without fields are written `Kind {}`: serde ignores unknown keys beside the tag
    /// of a unit variant, and unknown keys must be refused.)
    Uniform {},
    /// t = sigmoid(m + s z), z ~ N(0, 1) (Esser et al. 2024).
    LogitNormal {
        /// m.
        mean: f64,
        /// s > 0.
        std: f64,
    },
}

impl Default for TimeSampling {
    fn default() -> Self {
        TimeSampling::Uniform {}
    }
}

/// `[flow]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSection {
    /// The conditional path.
    #[serde(default)]
    pub path: PathKind,
    /// Scheduler of the affine path.
    #[serde(default = "default_scheduler")]
    pub scheduler: SchedulerKind,
    /// Noise level: extra noise std (affine, VP), sigma_min (one-sided) or the bridge's sigma.
    #[serde(default)]
    pub sigma: f64,
    /// The coupling of source and target samples in a batch: `{ kind = "independent" }` (I-CFM),
    /// `{ kind = "exact_ot" }` (OT-CFM as a permutation), `{ kind = "ot_plan_sampling" }` (torchcfm's OT-CFM),
    /// `{ kind = "sinkhorn", ... }`, `{ kind = "schrodinger_bridge", sigma = ... }` (SB-CFM).
    #[serde(default = "default_coupling")]
    pub coupling: CouplingConfig,
    /// What the network predicts: `velocity`, `target` (the data point x1; `x1` is accepted too) or
    /// `epsilon` (the source point x0, the noise for a Gaussian source). The paths crate's `score` is refused:
    /// its regression target is singular where the path has no noise.
    #[serde(default = "default_prediction")]
    pub prediction: Prediction,
    /// How training times are drawn.
    #[serde(default)]
    pub time_sampling: TimeSampling,
    /// The discrete flow of a token target: `{ source = "masked" | "uniform", loss = "cross_entropy" |
    /// "generalized_kl" }` (default masked, cross-entropy; filled in for token targets). Refused for
    /// continuous targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discrete: Option<DiscreteSection>,
}

/// `[flow.discrete]`: the mixture path and loss of a discrete run; `kappa_t` is `alpha_t` of
/// `flow.scheduler`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiscreteSection {
    /// Where tokens start: `masked` (every token the mask) or `uniform` (uniform over the vocabulary).
    #[serde(default)]
    pub source: TokenSource,
    /// The training loss.
    #[serde(default)]
    pub loss: DiscreteLoss,
    /// What the network is conditioned on, for classifier-free guidance (default: nothing). Labels are dropped
    /// to the null class with probability `train.label_dropout` while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<TokenCondition>,
}

/// The label of a class-conditional discrete run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCondition {
    /// A word's length in letters (words targets): class `n - 1` for a word of `n` letters, `max_length`
    /// classes.
    Length,
}

impl DiscreteSection {
    /// The number of classes the network of this run is conditioned on, for `target` (`None`: unconditional).
    pub fn num_classes(&self, target: &Dataset) -> Option<usize> {
        match (self.condition?, target) {
            (TokenCondition::Length, Dataset::Words { max_length, .. }) => Some(*max_length),
            (TokenCondition::Length, _) => None,
        }
    }
}

/// The loss of a discrete run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiscreteLoss {
    /// The cross-entropy of the posterior at x1 over every position.
    #[default]
    CrossEntropy,
    /// The generalized KL of the mixture path (an ELBO term weighted by kappa'_t / (1 - kappa_t)).
    GeneralizedKl,
}

fn default_prediction() -> Prediction {
    Prediction::Velocity
}
fn default_scheduler() -> SchedulerKind {
    SchedulerKind::CondOt
}
fn default_coupling() -> CouplingConfig {
    CouplingConfig::Independent {
        order: IndependentOrder::Identity,
    }
}

impl Default for FlowSection {
    fn default() -> Self {
        Self {
            path: PathKind::Affine,
            scheduler: default_scheduler(),
            sigma: 0.0,
            coupling: default_coupling(),
            prediction: Prediction::Velocity,
            time_sampling: TimeSampling::Uniform {},
            discrete: None,
        }
    }
}

impl FlowSection {
    /// Refuses a prediction the trainer has no regression target for (the paths crate's `score`).
    pub fn check_training_target(&self) -> Result<(), ConfigError> {
        if self.prediction == Prediction::Score {
            return Err(ConfigError::value(
                "flow.prediction",
                "score is not a training target here; allowed: velocity, target (x1), epsilon",
            ));
        }
        Ok(())
    }

    /// Builds the conditional path this section describes.
    pub fn build_path(&self) -> Result<Box<dyn ConditionalPath + Send + Sync>, ConfigError> {
        let err = |e: ferroflow_paths::PathsError| ConfigError::value("flow.sigma", e.to_string());
        Ok(match self.path {
            PathKind::Affine => {
                let scheduler = self
                    .scheduler
                    .build()
                    .map_err(|e| ConfigError::value("flow.scheduler", e.to_string()))?;
                Box::new(AffinePath::new(scheduler, self.sigma).map_err(err)?)
            }
            PathKind::OneSided => Box::new(OneSidedGaussianPath::new(self.sigma).map_err(err)?),
            PathKind::SchrodingerBridge => Box::new(SchrodingerBridgePath::new(self.sigma).map_err(err)?),
            PathKind::VariancePreserving => Box::new(VariancePreservingPath::new(self.sigma).map_err(err)?),
        })
    }
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Number of optimizer steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Samples per batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Optimizer settings.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// EMA decay of the weights (0 = no EMA; sampling then uses the raw weights).
    #[serde(default)]
    pub ema_decay: f64,
    /// Write a checkpoint every this many steps (0 = only at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Record the mean loss every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Probability of replacing a label by the null label while training a class-conditional network (the
    /// unconditional model that classifier-free guidance needs).
    #[serde(default = "default_label_dropout")]
    pub label_dropout: f64,
}

fn default_label_dropout() -> f64 {
    0.1
}

fn default_steps() -> usize {
    5_000
}
fn default_batch() -> usize {
    256
}
fn default_checkpoint_every() -> usize {
    1_000
}
fn default_log_every() -> usize {
    100
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            batch_size: default_batch(),
            optimizer: OptimizerConfig::default(),
            ema_decay: 0.0,
            checkpoint_every: default_checkpoint_every(),
            log_every: default_log_every(),
            label_dropout: default_label_dropout(),
        }
    }
}

/// `[sample]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSection {
    /// Samples written after training and compared in `eval`.
    #[serde(default = "default_n_samples")]
    pub n_samples: usize,
    /// ODE method: euler, midpoint, heun, rk4 (fixed steps), bosh3, dopri5 (adaptive).
    #[serde(default = "default_method")]
    pub solver: Method,
    /// Steps of a fixed-step method.
    #[serde(default = "default_sample_steps")]
    pub steps: usize,
    /// Absolute tolerance of an adaptive method.
    #[serde(default = "default_tol")]
    pub atol: f64,
    /// Relative tolerance of an adaptive method.
    #[serde(default = "default_tol")]
    pub rtol: f64,
    /// Samples used for the exact 2-Wasserstein distance in `eval`.
    #[serde(default = "default_w2_samples")]
    pub w2_samples: usize,
    /// Softmax temperature of a discrete run's posterior when sampling (default 1; below 1 sharpens).
    /// Written only when not 1; refused for continuous runs.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub temperature: f64,
    /// Whether a discrete run's sampler keeps revealed tokens of a masked source (`true`: the carry-over of
    /// masked diffusion models, the model whose ELBO `eval` reports) or follows the network's own rates, which
    /// can also move a revealed token (`false`, the default, as `flow_matching`'s solver: on the checkerboard
    /// after 2,000 steps it measured W2 0.104 against 0.118 and bin TV 0.279 against 0.289 on the same
    /// weights). Written only when true; refused for continuous runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carry_over: bool,
    /// The divergence-free corrector of a discrete run's sampler (Gat et al. 2024, section 2.3): its rate
    /// `beta_t kappa'_t / (kappa_t (1 - kappa_t)) [kappa_t p_{1|t} + (1 - kappa_t) p_0 - delta]` with
    /// `beta_t = scale t^t_exponent (1 - t)^one_minus_t_exponent` is added to the marginal rate; it leaves the
    /// path's marginals unchanged and lets tokens be re-drawn. Absent: no corrector. Refused for continuous runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrector: Option<CorrectorSection>,
}

/// `[sample] corrector = { scale, t_exponent, one_minus_t_exponent }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectorSection {
    /// `scale >= 0`.
    pub scale: f64,
    /// The exponent of `t`, `> 0` (the corrector's rate divides by `kappa_t`, which is 0 at `t = 0`).
    pub t_exponent: f64,
    /// The exponent of `1 - t`, `>= 0`.
    pub one_minus_t_exponent: f64,
}

impl CorrectorSection {
    /// The math crate's corrector schedule.
    pub fn corrector(&self) -> ferroflow_discrete::Corrector {
        ferroflow_discrete::Corrector::Power {
            scale: self.scale,
            t_exponent: self.t_exponent,
            one_minus_t_exponent: self.one_minus_t_exponent,
        }
    }
}

fn one() -> f64 {
    1.0
}
fn is_one(value: &f64) -> bool {
    *value == 1.0
}

fn default_method() -> Method {
    Method::Euler
}
fn default_n_samples() -> usize {
    10_000
}
fn default_sample_steps() -> usize {
    100
}
fn default_tol() -> f64 {
    1e-5
}
fn default_w2_samples() -> usize {
    10_000
}

impl Default for SampleSection {
    fn default() -> Self {
        Self {
            n_samples: default_n_samples(),
            solver: Method::Euler,
            steps: default_sample_steps(),
            atol: default_tol(),
            rtol: default_tol(),
            w2_samples: default_w2_samples(),
            temperature: 1.0,
            carry_over: false,
            corrector: None,
        }
    }
}

impl SampleSection {
    /// The solver options: fixed steps for explicit methods, error control for embedded pairs.
    pub fn ode_options(&self) -> OdeOptions {
        if self.solver.tableau().is_adaptive() {
            OdeOptions::adaptive(self.solver, self.atol, self.rtol)
        } else {
            OdeOptions::fixed(self.solver, self.steps)
        }
    }
}

/// Overrides of the solver keys of `[sample]` (from the command line); `None` keeps the run's value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SolverOverrides {
    /// `sample.solver`.
    pub solver: Option<Method>,
    /// `sample.steps`.
    pub steps: Option<usize>,
    /// `sample.atol`.
    pub atol: Option<f64>,
    /// `sample.rtol`.
    pub rtol: Option<f64>,
}

impl SolverOverrides {
    /// Applies the overrides to `config`, validates it and returns its solver options (a bad value is refused
    /// with the key it overrides).
    pub fn apply(&self, config: &mut RunConfig) -> Result<OdeOptions, ConfigError> {
        let sample = &mut config.sample;
        sample.solver = self.solver.unwrap_or(sample.solver);
        sample.steps = self.steps.unwrap_or(sample.steps);
        sample.atol = self.atol.unwrap_or(sample.atol);
        sample.rtol = self.rtol.unwrap_or(sample.rtol);
        config.validate()?;
        Ok(config.sample.ode_options())
    }
}

impl RunConfig {
    /// Reads and validates a config file (at most [`MAX_CONFIG_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |detail: String| ConfigError::Read {
            path: path.to_path_buf(),
            detail,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| {
                use std::io::Read;
                file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)
            })
            .map_err(|e| read_error(e.to_string()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(read_error(format!(
                "larger than {MAX_CONFIG_BYTES} bytes; a config is a short TOML file"
            )));
        }
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in messages. With `data.manifold` and no
    /// `data.source`, the source is the uniform distribution on the manifold.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: origin.to_path_buf(),
            detail: e.to_string().trim_end().replace('\n', " "),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        if let Some(toml::Value::Table(data)) = table.get_mut("data")
            && !data.contains_key("source")
            && let Some(manifold) = data.get("manifold").cloned()
        {
            let mut source = toml::Table::new();
            source.insert("kind".into(), toml::Value::String("uniform".into()));
            source.insert("manifold".into(), manifold);
            data.insert("source".into(), toml::Value::Table(source));
        }
        let mut config: RunConfig = table.try_into().map_err(parse_error)?;
        if config.data.target.is_tokens() && config.flow.discrete.is_none() {
            config.flow.discrete = Some(DiscreteSection::default());
        }
        config.validate()?;
        Ok(config)
    }

    /// The resolved config as TOML, defaults included. Fails only for values TOML cannot hold (integers
    /// beyond 2^63 - 1, which [`RunConfig::validate`] refuses).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::value("config", e.to_string()))
    }

    /// Checks every value once; the message names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let run = &self.run;
        if run.name.is_empty()
            || run.name.contains(['/', '\\'])
            || run.name.starts_with('.')
            || run.name.chars().any(char::is_control)
        {
            return Err(ConfigError::value(
                "run.name",
                format!("{:?} must be a plain folder name", run.name),
            ));
        }
        let cuda_index = run.device.strip_prefix("cuda:");
        if !(matches!(run.device.as_str(), "cpu" | "auto" | "cuda")
            || cuda_index
                .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit())))
        {
            return Err(ConfigError::value(
                "run.device",
                format!(
                    "{:?}: allowed are cpu, auto (CUDA when present), cuda, cuda:N",
                    run.device
                ),
            ));
        }
        if run.threads > 1024 {
            return Err(ConfigError::value(
                "run.threads",
                format!("{} is outside 0..=1024", run.threads),
            ));
        }
        if !(1..=1 << 16).contains(&run.world_size) {
            return Err(ConfigError::value(
                "run.world_size",
                format!("{} is outside 1..=65536", run.world_size),
            ));
        }
        if !matches!(run.backend.as_str(), "single" | "mpi" | "nccl") {
            return Err(ConfigError::value(
                "run.backend",
                format!("{:?}: allowed are single, mpi, nccl", run.backend),
            ));
        }
        self.data.source.validate("data.source")?;
        self.data.target.validate("data.target")?;
        if self.data.target.is_tokens() {
            return self.check_discrete();
        }
        self.check_continuous_only()?;
        self.check_manifold()?;
        if self.data.source.dim() != self.data.target.dim() {
            return Err(ConfigError::value(
                "data.source",
                format!(
                    "has dimension {} but data.target has {}",
                    self.data.source.dim(),
                    self.data.target.dim()
                ),
            ));
        }
        let model = &self.model;
        if !(1..=65_536).contains(&model.width) {
            return Err(ConfigError::value(
                "model.width",
                format!("{} is outside 1..=65536", model.width),
            ));
        }
        if !(1..=64).contains(&model.depth) {
            return Err(ConfigError::value(
                "model.depth",
                format!("{} is outside 1..=64", model.depth),
            ));
        }
        if let Some(classes) = model.num_classes
            && (model.kind != ModelKind::Mlp || classes < 2 || classes != self.data.target.num_classes())
        {
            return Err(ConfigError::value(
                "model.num_classes",
                if model.kind != ModelKind::Mlp {
                    "is the MLP's setting (a U-Net takes model.unet.num_classes)".to_string()
                } else {
                    format!(
                        "{classes}, but data.target ({}) has {} classes (labelled targets: 8gaussians 8, moons 2, \
                         a mixture one per component)",
                        self.data.target.name(),
                        self.data.target.num_classes()
                    )
                },
            ));
        }
        if model.kind == ModelKind::Unet {
            if self.data.target.sample_shape() != [1, 28, 28] {
                return Err(ConfigError::value(
                    "model.kind",
                    "unet needs 1 x 28 x 28 images (data.target = { kind = \"fashion_mnist\" })",
                ));
            }
            model
                .unet
                .validate()
                .map_err(|e| model_config_error("model.unet", "model.unet", e))?;
            if let Some(classes) = model.unet.num_classes
                && classes != self.data.target.num_classes()
            {
                return Err(ConfigError::value(
                    "model.unet.num_classes",
                    format!(
                        "{classes}, but data.target has {} classes",
                        self.data.target.num_classes()
                    ),
                ));
            }
        } else if self.data.target.dim() > 4096 {
            return Err(ConfigError::value(
                "model.kind",
                "an MLP on more than 4096 dimensions; use kind = \"unet\" for images",
            ));
        }
        if !(0.0..=1.0).contains(&self.train.label_dropout) {
            return Err(ConfigError::value(
                "train.label_dropout",
                format!("{} is outside [0, 1]", self.train.label_dropout),
            ));
        }
        let flow = &self.flow;
        ensure_finite("flow.sigma", flow.sigma)?;
        self.flow.build_path()?;
        if flow.path == PathKind::OneSided
            && !matches!(self.data.source, Dataset::Gaussian { std, .. } if std == 1.0)
        {
            return Err(ConfigError::value(
                "flow.path",
                "one_sided needs the standard Gaussian source (data.source = { kind = \"gaussian\" })",
            ));
        }
        let noisy = match flow.path {
            PathKind::Affine | PathKind::VariancePreserving => flow.sigma > 0.0,
            PathKind::SchrodingerBridge => true,
            PathKind::OneSided => false,
        };
        flow.check_training_target()?;
        if flow.prediction != Prediction::Velocity && noisy {
            return Err(ConfigError::value(
                "flow.prediction",
                "x1 and epsilon predictions need a path without extra noise (sigma = 0, not schrodinger_bridge)",
            ));
        }
        flow.coupling
            .build()
            .map_err(|e| ConfigError::value("flow.coupling", e.to_string()))?;
        check_time_sampling(flow.time_sampling)?;
        let train = &self.train;
        check_count("train.steps", train.steps, 1, MAX_STEPS)?;
        check_count("train.checkpoint_every", train.checkpoint_every, 0, MAX_STEPS)?;
        check_count("train.log_every", train.log_every, 1, MAX_STEPS)?;
        if !(1..=1 << 20).contains(&train.batch_size) {
            return Err(ConfigError::value(
                "train.batch_size",
                format!("{} is outside 1..=1048576", train.batch_size),
            ));
        }
        train
            .optimizer
            .validate()
            .map_err(|e| model_config_error("train", "train.optimizer", e))?;
        if !(0.0..1.0).contains(&train.ema_decay) {
            return Err(ConfigError::value(
                "train.ema_decay",
                format!("{} is outside [0, 1)", train.ema_decay),
            ));
        }
        let sample = &self.sample;
        check_sample_count("sample.n_samples", sample.n_samples, self.data.target.dim())?;
        if !(1..=100_000).contains(&sample.steps) {
            return Err(ConfigError::value(
                "sample.steps",
                format!("{} is outside 1..=100000", sample.steps),
            ));
        }
        for (key, tol) in [("sample.atol", sample.atol), ("sample.rtol", sample.rtol)] {
            if !(MIN_TOLERANCE..=1.0).contains(&tol) {
                return Err(ConfigError::value(
                    key,
                    format!(
                        "{tol} is outside [{MIN_TOLERANCE:e}, 1]: sampling runs in float32, where a smaller \
                         tolerance cannot be met"
                    ),
                ));
            }
        }
        if !(2..=MAX_W2_SAMPLES).contains(&sample.w2_samples) {
            return Err(ConfigError::value(
                "sample.w2_samples",
                format!(
                    "{} is outside 2..={MAX_W2_SAMPLES}: the exact W2 holds an n x n float64 cost matrix \
                     (3.2 GB at the bound)",
                    sample.w2_samples
                ),
            ));
        }
        Ok(())
    }
}

/// The largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The most optimizer steps a run may ask for (also the bound of the step counts of `[train]`).
pub const MAX_STEPS: usize = 1_000_000_000;
/// The most coordinates (points x dimension) one array of samples may hold: 512 MiB of float32. Sampling
/// integrates in chunks of [`crate::sample::CHUNK_ROWS`] points, so the network's activations stay bounded too.
pub const MAX_SAMPLE_ELEMENTS: usize = 1 << 27;
/// The most samples of the exact 2-Wasserstein distance (its cost matrix is n x n float64).
pub const MAX_W2_SAMPLES: usize = 20_000;
/// The smallest ODE tolerance: sampling runs in float32 (relative precision about 6e-8).
pub const MIN_TOLERANCE: f64 = 1e-10;

/// Refuses a count outside `min..=max`, naming `key`.
pub fn check_count(key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::value(
            key,
            format!("{value} is outside {min}..={max}"),
        ))
    }
}

/// Refuses a number of samples of dimension `dim` that is zero or holds more than [`MAX_SAMPLE_ELEMENTS`]
/// coordinates, naming `key` and the bound.
pub fn check_sample_count(key: &str, n: usize, dim: usize) -> Result<(), ConfigError> {
    let max = MAX_SAMPLE_ELEMENTS / dim.max(1);
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        Err(ConfigError::value(
            key,
            format!(
                "{n} is outside 1..={max} (at most {MAX_SAMPLE_ELEMENTS} coordinates, 512 MiB of float32, of \
                 dimension {dim})"
            ),
        ))
    }
}

impl RunConfig {
    /// Refuses a manifold mixed with a Euclidean data set (or another manifold), and the settings a flow on a
    /// manifold does not have: only the affine path without noise (its scheduler gives kappa_t), velocity
    /// prediction, independent or exact OT couplings (geodesic cost), an MLP, and Euler, midpoint or RK4.
    fn check_manifold(&self) -> Result<(), ConfigError> {
        use crate::manifold::manifold_of;
        let data = &self.data;
        let Some(manifold) = &data.manifold else {
            for (key, dataset) in [("data.source", &data.source), ("data.target", &data.target)] {
                if let Some(on) = manifold_of(dataset) {
                    return Err(ConfigError::value(
                        key,
                        format!(
                            "{} lives on {}: set data.manifold = {} (or choose a Euclidean data set)",
                            dataset.name(),
                            on.name(),
                            toml::to_string(&on).map_or_else(
                                |_| on.name(),
                                |t| format!("{{ {} }}", t.trim().replace('\n', ", "))
                            )
                        ),
                    ));
                }
            }
            return Ok(());
        };
        manifold.validate("data.manifold")?;
        for (key, dataset) in [("data.source", &data.source), ("data.target", &data.target)] {
            match manifold_of(dataset) {
                Some(on) if &on == manifold => {}
                Some(on) => {
                    return Err(ConfigError::value(
                        key,
                        format!(
                            "{} lives on {}, but data.manifold is {}",
                            dataset.name(),
                            on.name(),
                            manifold.name()
                        ),
                    ));
                }
                None => {
                    return Err(ConfigError::value(
                        key,
                        format!(
                            "{} is a Euclidean data set, but data.manifold is {}: use uniform, vmf_mixture, \
                             wrapped_gaussian_mixture, torus_checkerboard or product",
                            dataset.name(),
                            manifold.name()
                        ),
                    ));
                }
            }
        }
        let flow = &self.flow;
        if flow.path != PathKind::Affine || flow.sigma != 0.0 {
            return Err(ConfigError::value(
                "flow.path",
                "a flow on a manifold follows geodesics: path = \"affine\" with sigma = 0 (the scheduler gives kappa_t)",
            ));
        }
        if flow.prediction != Prediction::Velocity {
            return Err(ConfigError::value(
                "flow.prediction",
                "a flow on a manifold predicts the velocity",
            ));
        }
        if !matches!(
            flow.coupling,
            CouplingConfig::Independent { .. } | CouplingConfig::ExactOt { .. }
        ) {
            return Err(ConfigError::value(
                "flow.coupling",
                "on a manifold: independent or exact_ot (with the squared geodesic distance as cost)",
            ));
        }
        if self.model.kind != ModelKind::Mlp {
            return Err(ConfigError::value(
                "model.kind",
                "a flow on a manifold uses the MLP",
            ));
        }
        if crate::manifold::ManifoldMethod::of(self.sample.solver).is_none() {
            return Err(ConfigError::value(
                "sample.solver",
                format!(
                    "{:?} on a manifold: allowed are euler, midpoint, rk4 (steps through the exp map)",
                    self.sample.solver
                )
                .to_lowercase(),
            ));
        }
        Ok(())
    }
}

impl RunConfig {
    /// Refuses the discrete settings in a continuous run: a token data set as the source, `flow.discrete`, a
    /// token network, a sampling temperature.
    fn check_continuous_only(&self) -> Result<(), ConfigError> {
        if self.data.source.is_tokens() {
            return Err(ConfigError::value(
                "data.source",
                format!(
                    "{} is a token data set: it can only be the target of a discrete run (whose source is \
                     flow.discrete.source)",
                    self.data.source.name()
                ),
            ));
        }
        if self.flow.discrete.is_some() {
            return Err(ConfigError::value(
                "flow.discrete",
                format!(
                    "is for token targets (tokens_2d, words), but data.target is {}",
                    self.data.target.name()
                ),
            ));
        }
        if self.model.kind.is_token() {
            return Err(ConfigError::value(
                "model.kind",
                format!(
                    "a token network needs a token target (tokens_2d, words), but data.target is {}",
                    self.data.target.name()
                ),
            ));
        }
        if self.sample.temperature != 1.0 {
            return Err(ConfigError::value(
                "sample.temperature",
                "is for discrete runs; a continuous flow has no posterior to sharpen",
            ));
        }
        if self.sample.carry_over {
            return Err(ConfigError::value(
                "sample.carry_over",
                "is for discrete runs with a masked source; a continuous flow reveals no tokens",
            ));
        }
        if self.sample.corrector.is_some() {
            return Err(ConfigError::value(
                "sample.corrector",
                "is for discrete runs; a continuous flow has no jump rates to correct",
            ));
        }
        Ok(())
    }

    /// Checks a discrete run (a token target): the continuous keys it has no use for keep their defaults,
    /// the model is a token network, `kappa_t = alpha_t` of `flow.scheduler` starts at 0 and increases to 1,
    /// and the counts fit.
    fn check_discrete(&self) -> Result<(), ConfigError> {
        let target = &self.data.target;
        let vocab_size = target.vocab_size().expect("a token target has a vocabulary");
        let length = target.dim();
        if self.data.manifold.is_some() {
            return Err(ConfigError::value(
                "data.manifold",
                "token data sets live on no manifold; remove data.manifold",
            ));
        }
        if self.data.source != Dataset::default() {
            return Err(ConfigError::value(
                "data.source",
                "a discrete run's source is flow.discrete.source (masked or uniform); remove data.source",
            ));
        }
        let model = &self.model;
        if !model.kind.is_token() {
            return Err(ConfigError::value(
                "model.kind",
                format!(
                    "{} is a token data set: use kind = \"token_mlp\" or \"token_transformer\"",
                    target.name()
                ),
            ));
        }
        let flow = &self.flow;
        let discrete = flow.discrete.unwrap_or_default();
        let source = discrete.source;
        let num_classes = discrete.num_classes(target);
        if let Some(condition) = discrete.condition {
            if num_classes.is_none() {
                return Err(ConfigError::value(
                    "flow.discrete.condition",
                    format!(
                        "{condition:?} is a condition of words targets, not of {}",
                        target.name()
                    )
                    .to_lowercase(),
                ));
            }
            if !(self.train.label_dropout > 0.0 && self.train.label_dropout < 1.0) {
                return Err(ConfigError::value(
                    "train.label_dropout",
                    format!(
                        "{} must be in (0, 1) for a conditional run: classifier-free guidance needs the \
                         unconditional model that dropped labels train",
                        self.train.label_dropout
                    ),
                ));
            }
        }
        match model.kind {
            ModelKind::TokenMlp => model
                .token_mlp_config(vocab_size, length, source, num_classes)
                .validate()
                .map_err(|e| model_config_error("model.token_mlp", "model.token_mlp", e))?,
            _ => model
                .token_transformer_config(vocab_size, length, source, num_classes)
                .validate()
                .map_err(|e| model_config_error("model.token_transformer", "model.token_transformer", e))?,
        }
        if flow.path != PathKind::Affine {
            return Err(ConfigError::value(
                "flow.path",
                "a discrete run follows the mixture path of flow.discrete; leave flow.path at affine",
            ));
        }
        if flow.sigma != 0.0 {
            return Err(ConfigError::value(
                "flow.sigma",
                "a discrete run adds no Gaussian noise; leave flow.sigma at 0",
            ));
        }
        if flow.prediction != Prediction::Velocity {
            return Err(ConfigError::value(
                "flow.prediction",
                "a discrete run's network predicts the posterior of x1; leave flow.prediction out",
            ));
        }
        if flow.coupling != default_coupling() {
            return Err(ConfigError::value(
                "flow.coupling",
                "a discrete run pairs source and data tokens independently; leave flow.coupling out",
            ));
        }
        check_kappa_scheduler(&flow.scheduler)?;
        check_time_sampling(flow.time_sampling)?;
        let train = &self.train;
        check_count("train.steps", train.steps, 1, MAX_STEPS)?;
        check_count("train.checkpoint_every", train.checkpoint_every, 0, MAX_STEPS)?;
        check_count("train.log_every", train.log_every, 1, MAX_STEPS)?;
        check_count("train.batch_size", train.batch_size, 1, 1 << 20)?;
        train
            .optimizer
            .validate()
            .map_err(|e| model_config_error("train", "train.optimizer", e))?;
        if !(0.0..1.0).contains(&train.ema_decay) {
            return Err(ConfigError::value(
                "train.ema_decay",
                format!("{} is outside [0, 1)", train.ema_decay),
            ));
        }
        let sample = &self.sample;
        if sample.solver != Method::Euler {
            return Err(ConfigError::value(
                "sample.solver",
                "a discrete run samples with the Euler CTMC sampler; leave sample.solver at euler",
            ));
        }
        check_sample_count("sample.n_samples", sample.n_samples, length * vocab_size)?;
        check_count("sample.steps", sample.steps, 1, 100_000)?;
        check_count("sample.w2_samples", sample.w2_samples, 2, MAX_W2_SAMPLES)?;
        if !(sample.temperature.is_finite() && sample.temperature > 0.0 && sample.temperature <= 100.0) {
            return Err(ConfigError::value(
                "sample.temperature",
                format!("{} is outside (0, 100]", sample.temperature),
            ));
        }
        if let Some(corrector) = sample.corrector {
            let bounded = |v: f64| v.is_finite() && (0.0..=1e3).contains(&v);
            for (key, value, ok) in [
                (
                    "sample.corrector.scale",
                    corrector.scale,
                    bounded(corrector.scale),
                ),
                (
                    "sample.corrector.t_exponent",
                    corrector.t_exponent,
                    bounded(corrector.t_exponent) && corrector.t_exponent > 0.0,
                ),
                (
                    "sample.corrector.one_minus_t_exponent",
                    corrector.one_minus_t_exponent,
                    bounded(corrector.one_minus_t_exponent),
                ),
            ] {
                if !ok {
                    return Err(ConfigError::value(
                        key,
                        format!(
                            "{value} is outside {}",
                            if key.ends_with("t_exponent") && !key.contains("one_minus") {
                                "(0, 1000] (the corrector divides by kappa_t, 0 at t = 0)"
                            } else {
                                "[0, 1000]"
                            }
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks `flow.time_sampling` (a logit-normal's mean finite, its std > 0), for flow and discrete runs alike.
fn check_time_sampling(time_sampling: TimeSampling) -> Result<(), ConfigError> {
    if let TimeSampling::LogitNormal { mean, std } = time_sampling {
        ensure_finite("flow.time_sampling.mean", mean)?;
        if !(std.is_finite() && std > 0.0) {
            return Err(ConfigError::value(
                "flow.time_sampling.std",
                format!("{std} must be > 0"),
            ));
        }
    }
    Ok(())
}

/// Refuses a scheduler that cannot serve as `kappa_t = alpha_t`: it must start at 0, end at 1 and never
/// decrease (checked on a grid of 1001 times).
fn check_kappa_scheduler(kind: &SchedulerKind) -> Result<(), ConfigError> {
    let scheduler = kind
        .build()
        .map_err(|e| ConfigError::value("flow.scheduler", e.to_string()))?;
    let (start, end) = (scheduler.alpha(0.0), scheduler.alpha(1.0));
    if start.abs() > 1e-9 || (end - 1.0).abs() > 1e-9 {
        return Err(ConfigError::value(
            "flow.scheduler",
            format!(
                "{}: a discrete run uses kappa_t = alpha_t, which must go from 0 to 1; this one has \
                 alpha_0 = {start}, alpha_1 = {end} (allowed: cond_ot, polynomial, cosine, linear_vp)",
                scheduler.name()
            ),
        ));
    }
    for step in 0..=1000 {
        let t = step as f64 / 1000.0;
        let d_alpha = scheduler.d_alpha(t);
        if d_alpha.is_nan() || d_alpha < 0.0 || !(0.0..=1.0 + 1e-12).contains(&scheduler.alpha(t)) {
            return Err(ConfigError::value(
                "flow.scheduler",
                format!(
                    "{}: kappa_t = alpha_t must increase within [0, 1]; at t = {t} alpha = {}, d alpha = {d_alpha}",
                    scheduler.name(),
                    scheduler.alpha(t)
                ),
            ));
        }
    }
    Ok(())
}

/// A models-crate setting error under this config's key: `section.key` for a named key, `fallback` otherwise.
fn model_config_error(section: &str, fallback: &str, err: ferroflow_models::ModelError) -> ConfigError {
    match err {
        ferroflow_models::ModelError::InvalidConfig { key, detail } => {
            ConfigError::value(format!("{section}.{key}"), detail)
        }
        other => ConfigError::value(fallback, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[run]\nname = \"t\"\n[data]\ntarget = { kind = \"moons\" }\n";

    #[test]
    fn minimal_config_fills_defaults_and_round_trips() {
        let cfg = RunConfig::parse(MINIMAL, Path::new("x.toml")).unwrap();
        assert_eq!(cfg.data.source, Dataset::Gaussian { dim: 2, std: 1.0 });
        assert_eq!(cfg.train.batch_size, 256);
        let again = RunConfig::parse(&cfg.to_toml().unwrap(), Path::new("resolved.toml")).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = RunConfig::parse(&format!("{MINIMAL}[train]\nstepz = 3\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("stepz"), "{err}");
        let err = RunConfig::parse(
            &format!("{MINIMAL}[train]\nsteps = \"many\"\n"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("steps"), "{err}");
        let err = RunConfig::parse(
            &format!("{MINIMAL}[train]\nema_decay = 1.5\n"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("train.ema_decay"), "{err}");
        let err = RunConfig::parse(
            &format!("{MINIMAL}[train.optimizer]\nlr = -1.0\n"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("train.optimizer.lr"), "{err}");
        let err = RunConfig::parse(
            &format!("{MINIMAL}[flow]\nscheduler = {{ kind = \"cosine\", exponent = 2.0 }}\n"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exponent"), "{err}");
        let err = RunConfig::parse(
            &MINIMAL.replace("name = \"t\"", "name = \"../x\""),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("run.name"), "{err}");
    }

    #[test]
    fn the_prediction_is_the_paths_crate_enum_and_x1_still_reads() {
        let read = |value: &str| {
            RunConfig::parse(
                &format!("{MINIMAL}[flow]\nprediction = \"{value}\"\n"),
                Path::new("c.toml"),
            )
        };
        assert_eq!(read("x1").unwrap().flow.prediction, Prediction::Target);
        assert_eq!(read("target").unwrap().flow.prediction, Prediction::Target);
        assert_eq!(read("epsilon").unwrap().flow.prediction, Prediction::Epsilon);
        let err = read("score").unwrap_err().to_string();
        assert!(err.contains("flow.prediction"), "{err}");
        // The resolved config names it the paths crate's way, and reads back.
        let cfg = read("x1").unwrap();
        assert_eq!(
            RunConfig::parse(&cfg.to_toml().unwrap(), Path::new("resolved.toml")).unwrap(),
            cfg
        );
    }

    #[test]
    fn a_class_conditional_mlp_takes_the_targets_label_count() {
        let read = |classes: usize| {
            RunConfig::parse(
                &format!("{MINIMAL}[model]\nnum_classes = {classes}\n"),
                Path::new("c.toml"),
            )
        };
        // moons has two labels (the upper and the lower moon).
        let cfg = read(2).unwrap();
        assert_eq!(
            crate::batch::conditional_of(&cfg),
            Some((2, cfg.train.label_dropout))
        );
        assert_eq!(
            RunConfig::parse(&cfg.to_toml().unwrap(), Path::new("resolved.toml")).unwrap(),
            cfg
        );
        let err = read(3).unwrap_err().to_string();
        assert!(
            err.contains("model.num_classes") && err.contains("2 classes"),
            "{err}"
        );
        let unet = RunConfig::parse(
            "[run]\nname = \"t\"\n[data]\ntarget = { kind = \"8gaussians\" }\n[model]\nkind = \"token_mlp\"\n\
             num_classes = 8\n",
            Path::new("c.toml"),
        );
        assert!(unet.is_err());
    }

    #[test]
    fn one_sided_path_needs_a_gaussian_source() {
        let text = MINIMAL.replace("[data]\n", "[data]\nsource = { kind = \"8gaussians\" }\n")
            + "[flow]\npath = \"one_sided\"\nsigma = 0.1\n";
        let err = RunConfig::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("flow.path"), "{err}");
    }

    fn refusal(extra: &str) -> String {
        RunConfig::parse(&format!("{MINIMAL}{extra}"), Path::new("c.toml"))
            .map(|_| format!("accepted: {extra}"))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn every_kind_refuses_unknown_keys_also_kinds_without_fields() {
        // Issue 15, cause 1: serde ignores keys beside the tag of a unit variant.
        for target in [
            "moons",
            "8gaussians",
            "scurve",
            "checkerboard",
            "ring",
            "gaussian",
        ] {
            let text = MINIMAL.replace(
                "target = { kind = \"moons\" }",
                &format!("target = {{ kind = \"{target}\", bogus = \"x\" }}"),
            );
            let err = RunConfig::parse(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("bogus") && err.contains("c.toml"), "{target}: {err}");
        }
        for extra in [
            "[flow]\ntime_sampling = { kind = \"uniform\", mean = 0.5 }\n",
            "[model]\ntime_embedding = { kind = \"concat\", dim = 64 }\n",
            "[flow]\ncoupling = { kind = \"exact_ot\", epsilon = 1.0 }\n",
            "[flow]\ncoupling = { kind = \"independent\", cost = 1 }\n",
            "[flow]\nscheduler = { kind = \"cond_ot\", exponent = 1.0 }\n",
        ] {
            let err = refusal(extra);
            assert!(!err.starts_with("accepted"), "{err}");
        }
        // The kinds still read and write back the same.
        let text = format!(
            "{MINIMAL}[flow]\ntime_sampling = {{ kind = \"uniform\" }}\n[model]\ntime_embedding = {{ kind = \"concat\" }}\n"
        );
        let cfg = RunConfig::parse(&text, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.flow.time_sampling, TimeSampling::Uniform {});
        assert_eq!(
            RunConfig::parse(&cfg.to_toml().unwrap(), Path::new("r.toml")).unwrap(),
            cfg
        );
    }

    #[test]
    fn device_names_are_checked_and_auto_is_allowed() {
        // Issue 15, cause 2 (the part that needs no GPU: the syntax).
        for bad in ["cuda:abc", "cuda:", "gpu", "cuda:-1", "cuda:99999"] {
            let text = MINIMAL.replace("name = \"t\"", &format!("name = \"t\"\ndevice = \"{bad}\""));
            let err = RunConfig::parse(&text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("run.device") && err.contains(bad), "{bad}: {err}");
        }
        for good in ["cpu", "auto", "cuda", "cuda:0", "cuda:7"] {
            let text = MINIMAL.replace("name = \"t\"", &format!("name = \"t\"\ndevice = \"{good}\""));
            RunConfig::parse(&text, Path::new("c.toml")).unwrap();
        }
    }

    #[test]
    fn mixture_parameters_are_bounded_and_finite() {
        // Issue 15, cause 3.
        let mixture = |weights: &str, mean: &str| {
            MINIMAL.replace(
                "target = { kind = \"moons\" }",
                &format!(
                    "target = {{ kind = \"mixture\", weights = {weights}, means = [[{mean}, 0.0], [1.0, 1.0]], \
                     covariances = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]] }}"
                ),
            )
        };
        let parse = |text: String| RunConfig::parse(&text, Path::new("c.toml"));
        parse(mixture("[1.0, 2.0]", "0.0")).unwrap();
        let err = parse(mixture("[1.0, 2.0]", "nan")).unwrap_err().to_string();
        assert!(
            err.contains("data.target.means[0][0]") && err.contains("NaN"),
            "{err}"
        );
        let err = parse(mixture("[1.0, 2.0]", "1e300")).unwrap_err().to_string();
        assert!(
            err.contains("data.target.means[0][0]") && err.contains("1e6"),
            "{err}"
        );
        let err = parse(mixture("[1e308, 1e308]", "0.0")).unwrap_err().to_string();
        assert!(
            err.contains("data.target.weights") && err.contains("overflow"),
            "{err}"
        );
        let text = MINIMAL.replace(
            "[data]\n",
            "[data]\nsource = { kind = \"gaussian\", std = 1e300 }\n",
        );
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("data.source.std"), "{err}");
    }

    #[test]
    fn counts_that_size_work_or_memory_are_bounded_and_say_their_bound() {
        // Issue 15, causes 5, 11 and 16: each refused by key, with the bound, before anything runs.
        for (extra, key, bound) in [
            (
                "[train]\nsteps = 9223372036854775807\n",
                "train.steps",
                "1000000000",
            ),
            (
                "[train]\ncheckpoint_every = 9223372036854775807\n",
                "train.checkpoint_every",
                "1000000000",
            ),
            (
                "[sample]\nn_samples = 300000000\n",
                "sample.n_samples",
                "67108864",
            ),
            ("[sample]\nw2_samples = 1000000\n", "sample.w2_samples", "20000"),
            (
                "[sample]\nsolver = \"dopri5\"\natol = 1e-300\n",
                "sample.atol",
                "1e-10",
            ),
            ("[sample]\nrtol = 0.0\n", "sample.rtol", "1e-10"),
        ] {
            let err = refusal(extra);
            assert!(err.contains(key) && err.contains(bound), "{extra}: {err}");
        }
        // A value beyond what TOML holds (from a command-line override) is refused, never a panic.
        let mut cfg = RunConfig::parse(MINIMAL, Path::new("c.toml")).unwrap();
        cfg.train.steps = usize::MAX;
        assert!(cfg.validate().unwrap_err().to_string().contains("train.steps"));
        assert!(cfg.to_toml().is_err());
    }

    const TOKENS: &str = "[run]\nname = \"d\"\n[data]\ntarget = { kind = \"tokens_2d\", dataset = \"checkerboard\", bins = 16 }\n[model]\nkind = \"token_mlp\"\n";

    fn token_refusal(text: &str) -> String {
        RunConfig::parse(text, Path::new("d.toml"))
            .map(|_| format!("accepted: {text}"))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn a_token_target_makes_a_discrete_run_with_defaults_that_round_trip() {
        let cfg = RunConfig::parse(TOKENS, Path::new("d.toml")).unwrap();
        assert_eq!(cfg.flow.discrete, Some(DiscreteSection::default()));
        assert_eq!(cfg.data.target.vocab_size(), Some(16));
        assert_eq!(cfg.data.target.dim(), 2);
        let text = cfg.to_toml().unwrap();
        assert!(
            text.contains("[flow.discrete]") && text.contains("masked"),
            "{text}"
        );
        assert_eq!(RunConfig::parse(&text, Path::new("r.toml")).unwrap(), cfg);
        let words = TOKENS.replace(
            "{ kind = \"tokens_2d\", dataset = \"checkerboard\", bins = 16 }",
            "{ kind = \"words\", file = \"w.txt\", max_length = 5 }",
        ) + "[flow]\ndiscrete = { source = \"uniform\", loss = \"generalized_kl\" }\n[sample]\ntemperature = 0.5\n";
        let cfg = RunConfig::parse(&words, Path::new("d.toml")).unwrap();
        assert_eq!(cfg.data.target.vocab_size(), Some(27));
        assert_eq!(cfg.data.target.dim(), 5);
        assert_eq!(
            cfg.flow.discrete,
            Some(DiscreteSection {
                source: TokenSource::Uniform,
                loss: DiscreteLoss::GeneralizedKl,
                condition: None,
            })
        );
        assert_eq!(cfg.flow.discrete.unwrap().num_classes(&cfg.data.target), None);
        // Conditioned on the word length: one class per length, and the key round-trips.
        let conditional = words.replace("loss = \"generalized_kl\"", "condition = \"length\"");
        let cfg = RunConfig::parse(&conditional, Path::new("d.toml")).unwrap();
        assert_eq!(cfg.flow.discrete.unwrap().num_classes(&cfg.data.target), Some(5));
        assert_eq!(
            RunConfig::parse(&cfg.to_toml().unwrap(), Path::new("r.toml")).unwrap(),
            cfg
        );
        let no_dropout = conditional.replace("[sample]", "[train]\nlabel_dropout = 0.0\n[sample]");
        let err = RunConfig::parse(&no_dropout, Path::new("d.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.label_dropout"), "{err}");
        assert_eq!(
            RunConfig::parse(&cfg.to_toml().unwrap(), Path::new("r.toml")).unwrap(),
            cfg
        );
        // A continuous config's resolved text does not grow the discrete keys.
        let text = RunConfig::parse(MINIMAL, Path::new("c.toml"))
            .unwrap()
            .to_toml()
            .unwrap();
        assert!(
            !text.contains("discrete") && !text.contains("token") && !text.contains("temperature"),
            "{text}"
        );
    }

    #[test]
    fn discrete_mixes_are_refused_by_key() {
        let with = |old: &str, new: &str| TOKENS.replace(old, new);
        for (text, key) in [
            (with("kind = \"token_mlp\"", "kind = \"mlp\""), "model.kind"),
            (with("kind = \"token_mlp\"", "kind = \"unet\""), "model.kind"),
            (
                with("[data]\n", "[data]\nsource = { kind = \"moons\" }\n"),
                "data.source",
            ),
            (
                with("[data]\n", "[data]\nmanifold = { kind = \"torus\", dim = 2 }\n"),
                "data.manifold",
            ),
            (
                format!("{TOKENS}[flow]\nscheduler = {{ kind = \"vp\" }}\n"),
                "flow.scheduler",
            ),
            (
                format!("{TOKENS}[flow]\npath = \"schrodinger_bridge\"\nsigma = 0.1\n"),
                "flow.path",
            ),
            (format!("{TOKENS}[flow]\nsigma = 0.1\n"), "flow.sigma"),
            (
                format!("{TOKENS}[flow]\nprediction = \"x1\"\n"),
                "flow.prediction",
            ),
            (
                format!("{TOKENS}[flow]\ncoupling = {{ kind = \"exact_ot\" }}\n"),
                "flow.coupling",
            ),
            (
                format!("{TOKENS}[flow]\ndiscrete = {{ source = \"gaussian\" }}\n"),
                "source",
            ),
            (
                format!("{TOKENS}[flow]\ndiscrete = {{ loss = \"mse\" }}\n"),
                "loss",
            ),
            (format!("{TOKENS}[flow]\ndiscrete = {{ bogus = 1 }}\n"), "bogus"),
            (format!("{TOKENS}[sample]\nsolver = \"rk4\"\n"), "sample.solver"),
            (
                format!("{TOKENS}[sample]\ntemperature = 0.0\n"),
                "sample.temperature",
            ),
            (
                format!(
                    "{TOKENS}[sample]\ncorrector = {{ scale = 1.0, t_exponent = 0.0, one_minus_t_exponent = 1.0 }}\n"
                ),
                "sample.corrector.t_exponent",
            ),
            (
                format!(
                    "{TOKENS}[sample]\ncorrector = {{ scale = -1.0, t_exponent = 1.0, one_minus_t_exponent = 1.0 }}\n"
                ),
                "sample.corrector.scale",
            ),
            (
                format!("{TOKENS}[model.token_mlp]\nwidth = 0\n"),
                "model.token_mlp.width",
            ),
            (format!("{TOKENS}[model.token_mlp]\nwidht = 3\n"), "widht"),
            (with("bins = 16", "bins = 1"), "data.target.bins"),
            (
                with("bins = 16", "bins = 16, half_width = -1.0"),
                "data.target.half_width",
            ),
            (
                with("kind = \"token_mlp\"", "kind = \"token_transformer\"")
                    + "[model.token_transformer]\nd_model = 30\nn_heads = 4\n",
                "model.token_transformer",
            ),
            (
                with(
                    "{ kind = \"tokens_2d\", dataset = \"checkerboard\", bins = 16 }",
                    "{ kind = \"words\", max_length = 0 }",
                ),
                "data.target.max_length",
            ),
            (
                with(
                    "{ kind = \"tokens_2d\", dataset = \"checkerboard\", bins = 16 }",
                    "{ kind = \"words\", held_out = 1.0 }",
                ),
                "data.target.held_out",
            ),
            (
                with(
                    "{ kind = \"tokens_2d\", dataset = \"checkerboard\", bins = 16 }",
                    "{ kind = \"tokens_2d\", dataset = \"mnist\", bins = 16 }",
                ),
                "data.target",
            ),
        ] {
            let err = token_refusal(&text);
            assert!(err.contains(key) && !err.starts_with("accepted"), "{key}: {err}");
        }
        // And the other way round: discrete keys in a continuous run.
        for (extra, key) in [
            ("[flow]\ndiscrete = { source = \"masked\" }\n", "flow.discrete"),
            ("[model]\nkind = \"token_transformer\"\n", "model.kind"),
            ("[sample]\ntemperature = 0.7\n", "sample.temperature"),
            ("[sample]\ncarry_over = true\n", "sample.carry_over"),
            (
                "[sample]\ncorrector = { scale = 1.0, t_exponent = 1.0, one_minus_t_exponent = 1.0 }\n",
                "sample.corrector",
            ),
        ] {
            let err = refusal(extra);
            assert!(err.contains(key) && !err.starts_with("accepted"), "{key}: {err}");
        }
        let err = token_refusal(&MINIMAL.replace(
            "target = { kind = \"moons\" }",
            "target = { kind = \"moons\" }\nsource = { kind = \"words\" }",
        ));
        assert!(err.contains("data.source"), "{err}");
        // Schedulers with alpha_0 = 0 that increase serve as kappa.
        for scheduler in [
            "{ kind = \"cond_ot\" }",
            "{ kind = \"polynomial\", exponent = 2.0 }",
            "{ kind = \"cosine\" }",
        ] {
            RunConfig::parse(
                &format!("{TOKENS}[flow]\nscheduler = {scheduler}\n"),
                Path::new("d.toml"),
            )
            .unwrap();
        }
    }
}
