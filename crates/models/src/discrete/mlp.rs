//! A multilayer perceptron over whole token sequences, for short sequences and small vocabularies.
//!
//! Forward pass, with `E = embedding_dim`, `L = length`, `V = vocab_size`: each position's state is embedded
//! (`token_embed.weight[x_t^i]`, `E` numbers), the `L` embeddings are concatenated (`L E`), then the time
//! features of [`TimeEmbedding`] and, for a class-conditional network, the label's embedding
//! (`label_embed.weight[label]`, `E` numbers; the row `num_classes` is the null class) are appended. `depth`
//! hidden layers of `width` with the chosen [`Activation`] and a linear output layer give `L V` numbers, read as
//! logits `[L, V]`. Every position sees every other, so the posterior can use the whole sequence.
//!
//! # Parameter names
//! In registration order (PyTorch module naming: `nn.Embedding` tables and an `nn.Sequential` under `net` with
//! activations at the odd indices):
//!
//! | name | shape |
//! |---|---|
//! | `token_embed.weight` | `[n_states, E]` |
//! | `label_embed.weight` (conditional only) | `[num_classes + 1, E]` |
//! | `net.0.weight`, `net.0.bias` | `[width, L E + time width (+ E)]`, `[width]` |
//! | `net.{2k}.weight`, `.bias`, `k = 1..depth` | `[width, width]`, `[width]` |
//! | `net.{2 depth}.weight`, `.bias` | `[L V, width]`, `[L V]` |
//!
//! Embeddings start as N(0, 1) (`nn.Embedding`'s default), linear layers as PyTorch's `nn.Linear`.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{TokenNet, TokenSource, labels_or_null, validate_num_classes, validate_tokens};
use crate::mlp::{add_linear_layers, apply_linear_layers};
use crate::params::{Init, ParamBuilder, ParamId, ParamStore};
use crate::{Activation, ModelError, TimeEmbedding};

/// Settings of a [`TokenMlp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenMlpConfig {
    /// Number of data tokens `V` (the size of the output's last axis).
    pub vocab_size: usize,
    /// Sequence length `L`.
    pub length: usize,
    /// The source of the path: `masked` (the mask is the extra state `V`) or `uniform`.
    #[serde(default)]
    pub source: TokenSource,
    /// Width `E` of each token's (and the label's) embedding.
    #[serde(default = "default_embedding_dim")]
    pub embedding_dim: usize,
    /// Width of each hidden layer.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Number of hidden layers.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Nonlinearity after each hidden layer.
    #[serde(default)]
    pub activation: Activation,
    /// How time is fed in.
    #[serde(default = "default_time_embedding")]
    pub time_embedding: TimeEmbedding,
    /// Number of classes of a class-conditional network (`None`: unconditional). The label embedding has one
    /// more row, the null class, for classifier-free guidance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
}

fn default_embedding_dim() -> usize {
    16
}

fn default_width() -> usize {
    128
}

fn default_depth() -> usize {
    3
}

fn default_time_embedding() -> TimeEmbedding {
    TimeEmbedding::Fourier { n_freq: 4 }
}

/// The largest input of the first layer (`L E` plus time and label features) accepted.
const MAX_INPUT_WIDTH: usize = 1 << 20;

impl TokenMlpConfig {
    /// An unconditional network over `length` tokens from `vocab_size`, with the default sizes (embeddings of
    /// 16, 3 hidden layers of 128, SELU, 4 Fourier frequencies of time) and a masked source.
    pub fn new(vocab_size: usize, length: usize) -> Self {
        Self {
            vocab_size,
            length,
            source: TokenSource::Masked,
            embedding_dim: default_embedding_dim(),
            width: default_width(),
            depth: default_depth(),
            activation: Activation::default(),
            time_embedding: default_time_embedding(),
            num_classes: None,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key, detail: String| Err(ModelError::InvalidConfig { key, detail });
        validate_tokens(self.vocab_size, self.length, 65_536)?;
        if !(1..=4096).contains(&self.embedding_dim) {
            return bad(
                "embedding_dim",
                format!("{} is outside 1..=4096", self.embedding_dim),
            );
        }
        if self.length * self.embedding_dim > MAX_INPUT_WIDTH {
            return bad(
                "embedding_dim",
                format!(
                    "length {} times embedding_dim {} exceeds {MAX_INPUT_WIDTH} inputs",
                    self.length, self.embedding_dim
                ),
            );
        }
        if !(1..=65_536).contains(&self.width) {
            return bad("width", format!("{} is outside 1..=65536", self.width));
        }
        if !(1..=64).contains(&self.depth) {
            return bad("depth", format!("{} is outside 1..=64", self.depth));
        }
        if let TimeEmbedding::Fourier { n_freq } = self.time_embedding
            && !(1..=32).contains(&n_freq)
        {
            return bad("time_embedding.n_freq", format!("{n_freq} is outside 1..=32"));
        }
        if (self.length * self.vocab_size) as u64 * self.width as u64 > 1 << 31 {
            return bad(
                "vocab_size",
                format!(
                    "the output layer of length {} times vocab_size {} by width {} exceeds 2^31 weights",
                    self.length, self.vocab_size, self.width
                ),
            );
        }
        validate_num_classes(self.num_classes)
    }
}

/// The token MLP (see the module documentation).
#[derive(Debug)]
pub struct TokenMlp {
    config: TokenMlpConfig,
    token_embed: ParamId,
    label_embed: Option<ParamId>,
    layers: Vec<(ParamId, ParamId)>,
    params: ParamStore,
}

impl TokenMlp {
    /// Builds the network from libtorch's global generator: build it inside
    /// [`crate::with_torch_seed`] for reproducible weights.
    pub fn new(config: TokenMlpConfig, device: Device) -> Result<Self, ModelError> {
        config.validate()?;
        let mut builder = ParamBuilder::default();
        let embedding_dim = config.embedding_dim as i64;
        let n_states = config.source.n_states(config.vocab_size) as i64;
        let token_embed = builder.add(
            "token_embed.weight",
            &[n_states, embedding_dim],
            Init::Normal { std: 1.0 },
        );
        let label_embed = config.num_classes.map(|classes| {
            builder.add(
                "label_embed.weight",
                &[classes as i64 + 1, embedding_dim],
                Init::Normal { std: 1.0 },
            )
        });
        let label_width = if label_embed.is_some() { embedding_dim } else { 0 };
        let input = config.length as i64 * embedding_dim + config.time_embedding.width() + label_width;
        let mut dims = vec![input];
        dims.extend(std::iter::repeat_n(config.width as i64, config.depth));
        dims.push((config.length * config.vocab_size) as i64);
        let layers = add_linear_layers(&mut builder, &dims);
        Ok(Self {
            config,
            token_embed,
            label_embed,
            layers,
            params: builder.build(device),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &TokenMlpConfig {
        &self.config
    }
}

impl TokenNet for TokenMlp {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn forward_with(&self, params: &[Tensor], x_t: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        let batch = x_t.size()[0];
        let tokens = Tensor::embedding(
            &params[self.token_embed.0],
            &x_t.to_kind(Kind::Int64),
            -1,
            false,
            false,
        )
        .reshape([batch, -1]);
        let t = crate::unet::broadcast_to_batch(&t.to_kind(Kind::Float), batch);
        let mut features = vec![tokens, self.config.time_embedding.embed(&t)];
        if let (Some(table), Some(classes)) = (self.label_embed, self.config.num_classes) {
            let labels = labels_or_null(labels, classes, batch, x_t.device());
            features.push(Tensor::embedding(&params[table.0], &labels, -1, false, false));
        }
        let mut h = Tensor::cat(&features, 1);
        h = apply_linear_layers(h, params, &self.layers, self.config.activation);
        h.reshape([batch, self.config.length as i64, self.config.vocab_size as i64])
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn source(&self) -> TokenSource {
        self.config.source
    }

    fn length(&self) -> usize {
        self.config.length
    }

    fn num_classes(&self) -> Option<usize> {
        self.config.num_classes
    }
}
