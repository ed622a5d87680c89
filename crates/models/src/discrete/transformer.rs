//! A small bidirectional transformer encoder over token sequences (the posterior network of discrete flow
//! matching for text-like data), written with plain tensor operations on views of the flat parameters.
//!
//! # Forward pass
//! With `d = d_model`, `H = n_heads`, `L = length`, `V = vocab_size`:
//! 1. `h = token_embed.weight[x_t] + pos_embed[position]` (`[batch, L, d]`).
//! 2. Time: `t` in `[0, 1]` is embedded as `[cos(1000 t f_k), sin(1000 t f_k)]`, `f_k = 10000^(-k / (d/2))`
//!    (the U-Net's sinusoids, width `d`), then `time_embed.0` (linear), SiLU, `time_embed.2` (linear); the
//!    result is added to every position. A conditional network adds `label_embed.weight[label]` likewise (the
//!    row `num_classes` is the null class of classifier-free guidance; `labels = None` means the null class).
//! 3. `n_layers` pre-LayerNorm blocks: `h = h + attn(norm1(h))`, then `h = h + mlp(norm2(h))`. The attention
//!    is multi-head self-attention without a mask (every position attends to every position):
//!    `(q, k, v) = split(qkv(x))` into `H` heads of width `d / H`, `a = softmax(q k^T / sqrt(d / H))` over the
//!    keys, output `proj(concat_heads(a v))`. It is written with `matmul` and `softmax` rather than a fused
//!    kernel, so that double backward works. The MLP is `mlp.2(GELU(mlp.0(x)))` with hidden width
//!    `mlp_ratio d`.
//! 4. `head(out_norm(h))` gives the logits `[batch, L, V]`.
//!
//! # Parameter names
//! In registration order (PyTorch module naming for a module with these attributes; the norms are
//! `nn.LayerNorm(d)`, `time_embed` and each `mlp` an `nn.Sequential`, `blocks` an `nn.ModuleList`):
//!
//! | name | shape |
//! |---|---|
//! | `token_embed.weight` | `[n_states, d]` |
//! | `pos_embed` | `[L, d]` |
//! | `time_embed.0.weight`, `.bias` | `[d, d]`, `[d]` |
//! | `time_embed.2.weight`, `.bias` | `[d, d]`, `[d]` |
//! | `label_embed.weight` (conditional only) | `[num_classes + 1, d]` |
//! | `blocks.{k}.norm1.weight`, `.bias` | `[d]` |
//! | `blocks.{k}.attn.qkv.weight`, `.bias` | `[3 d, d]`, `[3 d]` (q, then k, then v; heads contiguous) |
//! | `blocks.{k}.attn.proj.weight`, `.bias` | `[d, d]`, `[d]` |
//! | `blocks.{k}.norm2.weight`, `.bias` | `[d]` |
//! | `blocks.{k}.mlp.0.weight`, `.bias` | `[mlp_ratio d, d]`, `[mlp_ratio d]` |
//! | `blocks.{k}.mlp.2.weight`, `.bias` | `[d, mlp_ratio d]`, `[d]` |
//! | `out_norm.weight`, `.bias` | `[d]` |
//! | `head.weight`, `.bias` | `[V, d]`, `[V]` |
//!
//! Initialisation: token and label embeddings N(0, 1) (`nn.Embedding`), position embeddings N(0, 0.02^2) (as in
//! GPT-2 and ViT), LayerNorm scales 1 and shifts 0, linear layers as PyTorch's `nn.Linear`.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{TokenNet, TokenSource, labels_or_null, validate_num_classes, validate_tokens};
use crate::ModelError;
use crate::params::{Init, ParamBuilder, ParamId, ParamStore};

/// Epsilon of every LayerNorm (PyTorch's default).
const NORM_EPS: f64 = 1e-5;

/// Settings of a [`TokenTransformer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTransformerConfig {
    /// Number of data tokens `V` (the size of the output's last axis).
    pub vocab_size: usize,
    /// Sequence length `L` (the rows of the position embedding).
    pub length: usize,
    /// The source of the path: `masked` (the mask is the extra state `V`) or `uniform`.
    #[serde(default)]
    pub source: TokenSource,
    /// Model width `d`, divisible by `n_heads` and even (the sinusoidal time features come in pairs).
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    /// Number of attention heads.
    #[serde(default = "default_n_heads")]
    pub n_heads: usize,
    /// Number of transformer blocks.
    #[serde(default = "default_n_layers")]
    pub n_layers: usize,
    /// Hidden width of each block's MLP, in multiples of `d_model`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    /// Number of classes of a class-conditional network (`None`: unconditional). The label embedding has one
    /// more row, the null class, for classifier-free guidance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
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

impl TokenTransformerConfig {
    /// An unconditional encoder over `length` tokens from `vocab_size` with the default sizes (`d = 64`, 4
    /// heads, 2 blocks, MLP ratio 4) and a masked source.
    pub fn new(vocab_size: usize, length: usize) -> Self {
        Self {
            vocab_size,
            length,
            source: TokenSource::Masked,
            d_model: default_d_model(),
            n_heads: default_n_heads(),
            n_layers: default_n_layers(),
            mlp_ratio: default_mlp_ratio(),
            num_classes: None,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key, detail: String| Err(ModelError::InvalidConfig { key, detail });
        validate_tokens(self.vocab_size, self.length, 65_536)?;
        if !(2..=8192).contains(&self.d_model) || !self.d_model.is_multiple_of(2) {
            return bad(
                "d_model",
                format!("{} must be even and in 2..=8192", self.d_model),
            );
        }
        if !(1..=256).contains(&self.n_heads) {
            return bad("n_heads", format!("{} is outside 1..=256", self.n_heads));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(
                "n_heads",
                format!(
                    "d_model {} is not divisible by {} heads",
                    self.d_model, self.n_heads
                ),
            );
        }
        if !(1..=128).contains(&self.n_layers) {
            return bad("n_layers", format!("{} is outside 1..=128", self.n_layers));
        }
        if !(1..=16).contains(&self.mlp_ratio) {
            return bad("mlp_ratio", format!("{} is outside 1..=16", self.mlp_ratio));
        }
        validate_num_classes(self.num_classes)
    }
}

/// A weight and a bias (linear layer or LayerNorm).
#[derive(Clone, Copy, Debug)]
struct Affine {
    weight: ParamId,
    bias: ParamId,
}

impl Affine {
    fn linear(builder: &mut ParamBuilder, name: &str, fan_out: i64, fan_in: i64) -> Self {
        let bound = 1.0 / (fan_in as f64).sqrt();
        Self {
            weight: builder.add(
                format!("{name}.weight"),
                &[fan_out, fan_in],
                Init::Uniform { bound },
            ),
            bias: builder.add(format!("{name}.bias"), &[fan_out], Init::Uniform { bound }),
        }
    }

    fn norm(builder: &mut ParamBuilder, name: &str, width: i64) -> Self {
        Self {
            weight: builder.add(format!("{name}.weight"), &[width], Init::Constant { value: 1.0 }),
            bias: builder.add(format!("{name}.bias"), &[width], Init::Constant { value: 0.0 }),
        }
    }

    fn apply_linear(self, params: &[Tensor], x: &Tensor) -> Tensor {
        x.linear(&params[self.weight.0], Some(&params[self.bias.0]))
    }

    fn apply_norm(self, params: &[Tensor], x: &Tensor, width: i64) -> Tensor {
        x.layer_norm(
            [width],
            Some(&params[self.weight.0]),
            Some(&params[self.bias.0]),
            NORM_EPS,
            false,
        )
    }
}

/// One pre-LayerNorm block.
#[derive(Debug)]
struct Block {
    norm1: Affine,
    qkv: Affine,
    proj: Affine,
    norm2: Affine,
    mlp_in: Affine,
    mlp_out: Affine,
}

impl Block {
    fn new(builder: &mut ParamBuilder, name: &str, d_model: i64, mlp_width: i64) -> Self {
        Self {
            norm1: Affine::norm(builder, &format!("{name}.norm1"), d_model),
            qkv: Affine::linear(builder, &format!("{name}.attn.qkv"), 3 * d_model, d_model),
            proj: Affine::linear(builder, &format!("{name}.attn.proj"), d_model, d_model),
            norm2: Affine::norm(builder, &format!("{name}.norm2"), d_model),
            mlp_in: Affine::linear(builder, &format!("{name}.mlp.0"), mlp_width, d_model),
            mlp_out: Affine::linear(builder, &format!("{name}.mlp.2"), d_model, mlp_width),
        }
    }

    fn forward(&self, params: &[Tensor], h: &Tensor, n_heads: i64) -> Tensor {
        let (batch, length, d_model) = h.size3().expect("the residual stream is [batch, length, d]");
        let head_dim = d_model / n_heads;
        // [batch, length, 3, heads, head_dim] -> [3, batch, heads, length, head_dim].
        let qkv = self
            .qkv
            .apply_linear(params, &self.norm1.apply_norm(params, h, d_model))
            .reshape([batch, length, 3, n_heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));
        // weights[b, head, i, j] = <q_i, k_j> / sqrt(head_dim), normalised over the keys j.
        let weights =
            (q.matmul(&k.transpose(-2, -1)) * (1.0 / (head_dim as f64).sqrt())).softmax(-1, Kind::Float);
        let attended = weights
            .matmul(&v)
            .permute([0, 2, 1, 3])
            .reshape([batch, length, d_model]);
        let h = h + self.proj.apply_linear(params, &attended);
        let hidden = self
            .mlp_in
            .apply_linear(params, &self.norm2.apply_norm(params, &h, d_model))
            .gelu("none");
        &h + self.mlp_out.apply_linear(params, &hidden)
    }
}

/// The token transformer (see the module documentation).
#[derive(Debug)]
pub struct TokenTransformer {
    config: TokenTransformerConfig,
    token_embed: ParamId,
    pos_embed: ParamId,
    time_embed: [Affine; 2],
    label_embed: Option<ParamId>,
    blocks: Vec<Block>,
    out_norm: Affine,
    head: Affine,
    params: ParamStore,
}

impl TokenTransformer {
    /// Builds the network from libtorch's global generator: build it inside
    /// [`crate::with_torch_seed`] for reproducible weights.
    pub fn new(config: TokenTransformerConfig, device: Device) -> Result<Self, ModelError> {
        config.validate()?;
        let mut builder = ParamBuilder::default();
        let d_model = config.d_model as i64;
        let n_states = config.source.n_states(config.vocab_size) as i64;
        let token_embed = builder.add(
            "token_embed.weight",
            &[n_states, d_model],
            Init::Normal { std: 1.0 },
        );
        let pos_embed = builder.add(
            "pos_embed",
            &[config.length as i64, d_model],
            Init::Normal { std: 0.02 },
        );
        let time_embed = [
            Affine::linear(&mut builder, "time_embed.0", d_model, d_model),
            Affine::linear(&mut builder, "time_embed.2", d_model, d_model),
        ];
        let label_embed = config.num_classes.map(|classes| {
            builder.add(
                "label_embed.weight",
                &[classes as i64 + 1, d_model],
                Init::Normal { std: 1.0 },
            )
        });
        let mlp_width = (config.mlp_ratio * config.d_model) as i64;
        let blocks = (0..config.n_layers)
            .map(|block_idx| Block::new(&mut builder, &format!("blocks.{block_idx}"), d_model, mlp_width))
            .collect();
        let out_norm = Affine::norm(&mut builder, "out_norm", d_model);
        let head = Affine::linear(&mut builder, "head", config.vocab_size as i64, d_model);
        Ok(Self {
            config,
            token_embed,
            pos_embed,
            time_embed,
            label_embed,
            blocks,
            out_norm,
            head,
            params: builder.build(device),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &TokenTransformerConfig {
        &self.config
    }
}

impl TokenNet for TokenTransformer {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn forward_with(&self, params: &[Tensor], x_t: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        let batch = x_t.size()[0];
        let d_model = self.config.d_model as i64;
        let tokens = Tensor::embedding(
            &params[self.token_embed.0],
            &x_t.to_kind(Kind::Int64),
            -1,
            false,
            false,
        );
        let t = crate::unet::broadcast_to_batch(&t.to_kind(Kind::Float), batch);
        let [first, second] = self.time_embed;
        let features = crate::unet::sinusoidal_embedding(&t, d_model);
        let time = second.apply_linear(params, &first.apply_linear(params, &features).silu());
        let conditioning = match (self.label_embed, self.config.num_classes) {
            (Some(table), Some(classes)) => {
                let labels = labels_or_null(labels, classes, batch, x_t.device());
                time + Tensor::embedding(&params[table.0], &labels, -1, false, false)
            }
            _ => time,
        };
        let mut h = tokens + &params[self.pos_embed.0] + conditioning.unsqueeze(1);
        let n_heads = self.config.n_heads as i64;
        for block in &self.blocks {
            h = block.forward(params, &h, n_heads);
        }
        let h = self.out_norm.apply_norm(params, &h, d_model);
        self.head.apply_linear(params, &h)
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
