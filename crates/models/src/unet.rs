//! A small U-Net velocity network for 1x28x28 images (Fashion-MNIST), optionally class-conditional.
//!
//! The layout follows the DDPM / ADM U-Net (Ho et al. 2020; Dhariwal & Nichol 2021) at a small scale:
//! residual blocks with group norm, SiLU and a scale-shift injection of the time (and class) embedding,
//! single-head self-attention at chosen resolutions, strided-convolution downsampling, nearest-neighbour
//! upsampling followed by a convolution, and skip connections from every block of the way down to the
//! way up. All parameters live in one flat tensor ([`ParamStore`]); the forward pass is a plain function of
//! parameter views, so it runs with the trained weights or an EMA copy alike.
//!
//! # Forward pass
//! With `C = channels`, `L = channel_mult.len()` levels at resolutions 28, 14, 7 (level `l` has
//! `C * channel_mult[l]` channels) and `R = num_res_blocks`:
//! 1. Time: `t` (in [0, 1]) is multiplied by 1000 (the DDPM step scale, so the sinusoids of
//!    frequencies `10000^(-k / (C/2))` see a useful range) and embedded as `[cos(1000 t f_k), sin(1000 t f_k)]`,
//!    width `C`; then `time_embed.0` (linear), SiLU, `time_embed.2` (linear) give `emb` of width
//!    `time_embedding_dim`. A conditional net adds `label_embed.weight[label]` to `emb`; the label
//!    `num_classes` is the null class of classifier-free guidance, and `labels = None` means the null class
//!    for the whole batch.
//! 2. `h = input_conv(x)` (3x3); it is the first skip.
//! 3. Down, for each level `l`: `R` residual blocks `down.l.blocks.k`, each followed by the attention
//!    block `down.l.attns.k` when the level's resolution is listed in `attention_at`; every block's output is
//!    a skip. Except at the last level, `down.l.downsample` (3x3, stride 2, padding 1) halves the resolution;
//!    its output is a skip too.
//! 4. Middle: `mid.block1`, `mid.attn` (only when the lowest resolution is in `attention_at`), `mid.block2`.
//! 5. Up, for each level from the last to the first: `R + 1` residual blocks `up.l.blocks.k`, each taking
//!    `cat([h, skip], dim = 1)` with the most recent unused skip, each followed by `up.l.attns.k` when
//!    the resolution has attention; except at level 0, `up.l.upsample` (nearest x2, then a 3x3 convolution).
//! 6. Output: `out_conv(SiLU(out_norm(h)))` (3x3, to one channel). `out_conv` starts at zero (weight and
//!    bias), as in ADM, so the untrained net predicts zero velocity; every other parameter receives a
//!    gradient from the second optimizer step on.
//!
//! A residual block with input `x` (channels `c_in`), output channels `c_out`:
//! `h = conv1(SiLU(norm1(x)))`; `(scale, shift) = chunk(emb_proj(SiLU(emb)), 2)`;
//! `h = conv2(SiLU(norm2(h) * (1 + scale) + shift))`; output `skip(x) + h`, where `skip` is a 1x1
//! convolution when `c_in != c_out` and the identity otherwise. The attention block over `x` with `c`
//! channels and `n = H W` positions: `(q, k, v) = chunk(qkv(norm(x)), 3)` (each `[c, n]`),
//! `a = softmax(q^T k / sqrt(c))` over the keys, output `x + proj(v a^T)`. It is written with plain matrix
//! products (not a fused attention kernel) so that double backward works, as mode-seeking guidance needs.
//!
//! # Parameter names
//! Names follow PyTorch module naming for a module with these attributes (convolutions are `nn.Conv2d`,
//! norms `nn.GroupNorm(groups, c)`, `time_embed` an `nn.Sequential(Linear, SiLU, Linear)`, the rest
//! `nn.ModuleList`s), so a checkpoint loads into it with `load_state_dict`:
//!
//! | name | shape |
//! |---|---|
//! | `time_embed.0.weight`, `.bias` | `[E, C]`, `[E]` |
//! | `time_embed.2.weight`, `.bias` | `[E, E]`, `[E]` |
//! | `label_embed.weight` (conditional only) | `[num_classes + 1, E]` |
//! | `input_conv.weight`, `.bias` | `[C, 1, 3, 3]`, `[C]` |
//! | `{block}.norm1.weight`, `.bias` | `[c_in]` |
//! | `{block}.conv1.weight`, `.bias` | `[c_out, c_in, 3, 3]`, `[c_out]` |
//! | `{block}.emb_proj.weight`, `.bias` | `[2 c_out, E]`, `[2 c_out]` (scale first, then shift) |
//! | `{block}.norm2.weight`, `.bias` | `[c_out]` |
//! | `{block}.conv2.weight`, `.bias` | `[c_out, c_out, 3, 3]`, `[c_out]` |
//! | `{block}.skip.weight`, `.bias` (when `c_in != c_out`) | `[c_out, c_in, 1, 1]`, `[c_out]` |
//! | `{attn}.norm.weight`, `.bias` | `[c]` |
//! | `{attn}.qkv.weight`, `.bias` | `[3 c, c, 1, 1]`, `[3 c]` (q, then k, then v) |
//! | `{attn}.proj.weight`, `.bias` | `[c, c, 1, 1]`, `[c]` |
//! | `down.{l}.downsample.weight`, `.bias` | `[c, c, 3, 3]`, `[c]` |
//! | `up.{l}.upsample.weight`, `.bias` | `[c, c, 3, 3]`, `[c]` |
//! | `out_norm.weight`, `.bias` | `[c]` |
//! | `out_conv.weight`, `.bias` | `[1, c, 3, 3]`, `[1]` |
//!
//! with `E = time_embedding_dim`, `{block}` one of `down.{l}.blocks.{k}`, `mid.block1`, `mid.block2`,
//! `up.{l}.blocks.{k}` and `{attn}` one of `down.{l}.attns.{k}`, `mid.attn`, `up.{l}.attns.{k}`.
//!
//! Initialisation follows PyTorch's defaults: uniform on `±1/sqrt(fan_in)` for convolution and linear
//! weights and biases, ones and zeros for group-norm scales and shifts, N(0, 1) for the label embedding;
//! the one exception is `out_conv`, which starts at zero.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::params::{Init, ParamBuilder, ParamId, ParamStore};
use crate::{ModelError, VelocityNet};

/// Side length of the images, in pixels.
pub const IMAGE_SIZE: i64 = 28;

/// Number of image channels (grey).
pub const IMAGE_CHANNELS: i64 = 1;

/// Times in [0, 1] are multiplied by this before the sinusoidal embedding (DDPM's number of steps).
pub const TIME_SCALE: f64 = 1000.0;

/// The longest period of the sinusoidal time embedding.
const MAX_PERIOD: f64 = 10_000.0;

/// Epsilon of every group norm (PyTorch's default).
const NORM_EPS: f64 = 1e-5;

/// Resolutions of the levels, from the input down.
const RESOLUTIONS: [usize; 3] = [28, 14, 7];

/// Settings of a [`Unet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetConfig {
    /// Base number of channels (also the width of the sinusoidal time features); even, a multiple of
    /// `groups`.
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Channel multiplier per level; level `l` runs at resolution `28 / 2^l` with `channels * mult` channels.
    /// One to three levels (28, 14, 7).
    #[serde(default = "default_channel_mult")]
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level on the way down (the way up has one more).
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: usize,
    /// Resolutions (28, 14 or 7) whose blocks are followed by self-attention.
    #[serde(default = "default_attention_at")]
    pub attention_at: Vec<usize>,
    /// Number of groups of every group norm.
    #[serde(default = "default_groups")]
    pub groups: usize,
    /// Width of the time (and class) embedding after its MLP.
    #[serde(default = "default_time_embedding_dim")]
    pub time_embedding_dim: usize,
    /// Number of classes of a class-conditional net (`None`: unconditional). The label embedding has one
    /// more row, the null class, for classifier-free guidance.
    #[serde(default)]
    pub num_classes: Option<usize>,
}

fn default_channels() -> usize {
    32
}
fn default_channel_mult() -> Vec<usize> {
    vec![1, 2, 2]
}
fn default_num_res_blocks() -> usize {
    1
}
fn default_attention_at() -> Vec<usize> {
    vec![7]
}
fn default_groups() -> usize {
    8
}
fn default_time_embedding_dim() -> usize {
    128
}

impl Default for UnetConfig {
    fn default() -> Self {
        Self {
            channels: default_channels(),
            channel_mult: default_channel_mult(),
            num_res_blocks: default_num_res_blocks(),
            attention_at: default_attention_at(),
            groups: default_groups(),
            time_embedding_dim: default_time_embedding_dim(),
            num_classes: None,
        }
    }
}

impl UnetConfig {
    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key, detail: String| Err(ModelError::InvalidConfig { key, detail });
        if self.groups == 0 || self.groups > 1024 {
            return bad("groups", format!("{} is outside 1..=1024", self.groups));
        }
        if !(2..=1024).contains(&self.channels) || !self.channels.is_multiple_of(2) {
            return bad(
                "channels",
                format!("{} must be even and in 2..=1024", self.channels),
            );
        }
        if !self.channels.is_multiple_of(self.groups) {
            return bad(
                "channels",
                format!("{} is not a multiple of groups = {}", self.channels, self.groups),
            );
        }
        if self.channel_mult.is_empty() || self.channel_mult.len() > RESOLUTIONS.len() {
            return bad(
                "channel_mult",
                format!(
                    "has {} levels; 1 to 3 are allowed (resolutions 28, 14, 7)",
                    self.channel_mult.len()
                ),
            );
        }
        for &mult in &self.channel_mult {
            if !(1..=16).contains(&mult) {
                return bad("channel_mult", format!("multiplier {mult} is outside 1..=16"));
            }
            if !(self.channels * mult).is_multiple_of(self.groups) {
                return bad(
                    "channel_mult",
                    format!(
                        "channels * {mult} = {} is not a multiple of groups = {}",
                        self.channels * mult,
                        self.groups
                    ),
                );
            }
        }
        if !(1..=8).contains(&self.num_res_blocks) {
            return bad(
                "num_res_blocks",
                format!("{} is outside 1..=8", self.num_res_blocks),
            );
        }
        let resolutions = &RESOLUTIONS[..self.channel_mult.len()];
        for &resolution in &self.attention_at {
            if !resolutions.contains(&resolution) {
                return bad(
                    "attention_at",
                    format!("resolution {resolution} is not one of this net's levels {resolutions:?}"),
                );
            }
        }
        if !(1..=8192).contains(&self.time_embedding_dim) {
            return bad(
                "time_embedding_dim",
                format!("{} is outside 1..=8192", self.time_embedding_dim),
            );
        }
        if let Some(classes) = self.num_classes
            && !(1..=1_000_000).contains(&classes)
        {
            return bad("num_classes", format!("{classes} is outside 1..=1000000"));
        }
        Ok(())
    }

    fn has_attention(&self, level: usize) -> bool {
        self.attention_at.contains(&RESOLUTIONS[level])
    }
}

/// A convolution or linear layer: weight and bias.
#[derive(Clone, Copy, Debug)]
struct Affine {
    weight: ParamId,
    bias: ParamId,
}

impl Affine {
    /// A `k x k` convolution from `c_in` to `c_out` channels with PyTorch's default initialisation.
    fn conv(builder: &mut ParamBuilder, name: &str, c_out: i64, c_in: i64, kernel: i64) -> Self {
        let bound = 1.0 / ((c_in * kernel * kernel) as f64).sqrt();
        Self::with_init(
            builder,
            name,
            &[c_out, c_in, kernel, kernel],
            Init::Uniform { bound },
        )
    }

    /// A linear layer from `fan_in` to `fan_out` with PyTorch's default initialisation.
    fn linear(builder: &mut ParamBuilder, name: &str, fan_out: i64, fan_in: i64) -> Self {
        let bound = 1.0 / (fan_in as f64).sqrt();
        Self::with_init(builder, name, &[fan_out, fan_in], Init::Uniform { bound })
    }

    /// A group norm's scale (ones) and shift (zeros) over `channels`.
    fn norm(builder: &mut ParamBuilder, name: &str, channels: i64) -> Self {
        Self {
            weight: builder.add(
                format!("{name}.weight"),
                &[channels],
                Init::Constant { value: 1.0 },
            ),
            bias: builder.add(format!("{name}.bias"), &[channels], Init::Constant { value: 0.0 }),
        }
    }

    fn with_init(builder: &mut ParamBuilder, name: &str, weight_shape: &[i64], init: Init) -> Self {
        Self {
            weight: builder.add(format!("{name}.weight"), weight_shape, init),
            bias: builder.add(format!("{name}.bias"), &[weight_shape[0]], init),
        }
    }

    /// Convolution with stride `stride` and padding `padding` (both sides).
    fn apply_conv(self, params: &[Tensor], x: &Tensor, stride: i64, padding: i64) -> Tensor {
        x.conv2d(
            &params[self.weight.0],
            Some(&params[self.bias.0]),
            [stride, stride],
            [padding, padding],
            [1, 1],
            1,
        )
    }

    fn apply_linear(self, params: &[Tensor], x: &Tensor) -> Tensor {
        x.linear(&params[self.weight.0], Some(&params[self.bias.0]))
    }

    fn apply_norm(self, params: &[Tensor], x: &Tensor, groups: i64) -> Tensor {
        x.group_norm(
            groups,
            Some(&params[self.weight.0]),
            Some(&params[self.bias.0]),
            NORM_EPS,
            false,
        )
    }
}

/// A residual block with scale-shift embedding injection.
#[derive(Debug)]
struct ResBlock {
    norm1: Affine,
    conv1: Affine,
    emb_proj: Affine,
    norm2: Affine,
    conv2: Affine,
    skip: Option<Affine>,
    c_out: i64,
}

impl ResBlock {
    fn new(builder: &mut ParamBuilder, name: &str, c_in: i64, c_out: i64, emb_dim: i64) -> Self {
        Self {
            norm1: Affine::norm(builder, &format!("{name}.norm1"), c_in),
            conv1: Affine::conv(builder, &format!("{name}.conv1"), c_out, c_in, 3),
            emb_proj: Affine::linear(builder, &format!("{name}.emb_proj"), 2 * c_out, emb_dim),
            norm2: Affine::norm(builder, &format!("{name}.norm2"), c_out),
            conv2: Affine::conv(builder, &format!("{name}.conv2"), c_out, c_out, 3),
            skip: (c_in != c_out).then(|| Affine::conv(builder, &format!("{name}.skip"), c_out, c_in, 1)),
            c_out,
        }
    }

    /// `emb_act` is `SiLU(emb)`, computed once per forward pass for all blocks.
    fn forward(&self, params: &[Tensor], x: &Tensor, emb_act: &Tensor, groups: i64) -> Tensor {
        let h = self.norm1.apply_norm(params, x, groups).silu();
        let h = self.conv1.apply_conv(params, &h, 1, 1);
        let scale_shift = self
            .emb_proj
            .apply_linear(params, emb_act)
            .reshape([-1, 2 * self.c_out, 1, 1]);
        let scale = scale_shift.narrow(1, 0, self.c_out);
        let shift = scale_shift.narrow(1, self.c_out, self.c_out);
        let h = self.norm2.apply_norm(params, &h, groups) * (scale + 1.0) + shift;
        let h = self.conv2.apply_conv(params, &h.silu(), 1, 1);
        match self.skip {
            Some(skip) => skip.apply_conv(params, x, 1, 0) + h,
            None => x + h,
        }
    }
}

/// Single-head self-attention over all positions, with a residual connection.
#[derive(Debug)]
struct AttnBlock {
    norm: Affine,
    qkv: Affine,
    proj: Affine,
}

impl AttnBlock {
    fn new(builder: &mut ParamBuilder, name: &str, channels: i64) -> Self {
        Self {
            norm: Affine::norm(builder, &format!("{name}.norm"), channels),
            qkv: Affine::conv(builder, &format!("{name}.qkv"), 3 * channels, channels, 1),
            proj: Affine::conv(builder, &format!("{name}.proj"), channels, channels, 1),
        }
    }

    fn forward(&self, params: &[Tensor], x: &Tensor, groups: i64) -> Tensor {
        let (batch, channels, height, width) = x.size4().expect("attention input is [batch, c, h, w]");
        let positions = height * width;
        let h = self.norm.apply_norm(params, x, groups);
        let qkv = self
            .qkv
            .apply_conv(params, &h, 1, 0)
            .reshape([batch, 3, channels, positions]);
        let (q, k, v) = (qkv.select(1, 0), qkv.select(1, 1), qkv.select(1, 2));
        // weights[b, i, j] = <q_i, k_j> / sqrt(c), normalised over the keys j.
        let weights =
            (q.transpose(1, 2).matmul(&k) * (1.0 / (channels as f64).sqrt())).softmax(-1, Kind::Float);
        // out[b, c, i] = sum_j v[b, c, j] weights[b, i, j].
        let out = v
            .matmul(&weights.transpose(1, 2))
            .reshape([batch, channels, height, width]);
        x + self.proj.apply_conv(params, &out, 1, 0)
    }
}

/// The blocks of one level on one side of the U.
#[derive(Debug)]
struct Level {
    blocks: Vec<ResBlock>,
    /// Empty, or one attention block after each residual block.
    attns: Vec<AttnBlock>,
    /// Downsampling (way down) or upsampling (way up) convolution; absent at the bottom / top level.
    resample: Option<Affine>,
}

impl Level {
    fn block_with_attention(
        &self,
        params: &[Tensor],
        block_idx: usize,
        h: &Tensor,
        emb_act: &Tensor,
        groups: i64,
    ) -> Tensor {
        let h = self.blocks[block_idx].forward(params, h, emb_act, groups);
        match self.attns.get(block_idx) {
            Some(attn) => attn.forward(params, &h, groups),
            None => h,
        }
    }
}

/// A U-Net velocity network for 1x28x28 images; see the module documentation for the architecture and
/// the parameter names.
#[derive(Debug)]
pub struct Unet {
    config: UnetConfig,
    time_embed: [Affine; 2],
    label_embed: Option<ParamId>,
    input_conv: Affine,
    down: Vec<Level>,
    mid: (ResBlock, Option<AttnBlock>, ResBlock),
    /// Indexed by level, like `down`; run from the last level to the first.
    up: Vec<Level>,
    out_norm: Affine,
    out_conv: Affine,
    params: ParamStore,
}

impl Unet {
    /// Builds the network from libtorch's global generator: build it inside
    /// [`crate::with_torch_seed`] for reproducible weights.
    pub fn new(config: UnetConfig, device: Device) -> Result<Self, ModelError> {
        config.validate()?;
        let mut builder = ParamBuilder::default();
        let base = config.channels as i64;
        let emb_dim = config.time_embedding_dim as i64;
        let time_embed = [
            Affine::linear(&mut builder, "time_embed.0", emb_dim, base),
            Affine::linear(&mut builder, "time_embed.2", emb_dim, emb_dim),
        ];
        let label_embed = config.num_classes.map(|classes| {
            builder.add(
                "label_embed.weight",
                &[classes as i64 + 1, emb_dim],
                Init::Normal { std: 1.0 },
            )
        });
        let input_conv = Affine::conv(&mut builder, "input_conv", base, IMAGE_CHANNELS, 3);

        // The way down; `skip_channels` mirrors the skips the forward pass stores.
        let last_level = config.channel_mult.len() - 1;
        let mut channels = base;
        let mut skip_channels = vec![channels];
        let mut down = Vec::with_capacity(config.channel_mult.len());
        for (level_idx, &mult) in config.channel_mult.iter().enumerate() {
            let c_out = base * mult as i64;
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for block_idx in 0..config.num_res_blocks {
                let name = format!("down.{level_idx}.blocks.{block_idx}");
                blocks.push(ResBlock::new(&mut builder, &name, channels, c_out, emb_dim));
                channels = c_out;
                if config.has_attention(level_idx) {
                    let name = format!("down.{level_idx}.attns.{block_idx}");
                    attns.push(AttnBlock::new(&mut builder, &name, channels));
                }
                skip_channels.push(channels);
            }
            let resample = (level_idx != last_level).then(|| {
                let name = format!("down.{level_idx}.downsample");
                Affine::conv(&mut builder, &name, channels, channels, 3)
            });
            if resample.is_some() {
                skip_channels.push(channels);
            }
            down.push(Level {
                blocks,
                attns,
                resample,
            });
        }

        let mid = (
            ResBlock::new(&mut builder, "mid.block1", channels, channels, emb_dim),
            config
                .has_attention(last_level)
                .then(|| AttnBlock::new(&mut builder, "mid.attn", channels)),
            ResBlock::new(&mut builder, "mid.block2", channels, channels, emb_dim),
        );

        // The way up, registered from the last level to the first (the order it runs in).
        let mut up_reversed = Vec::with_capacity(config.channel_mult.len());
        for (level_idx, &mult) in config.channel_mult.iter().enumerate().rev() {
            let c_out = base * mult as i64;
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for block_idx in 0..=config.num_res_blocks {
                let skip = skip_channels.pop().expect("one skip per block on the way up");
                let name = format!("up.{level_idx}.blocks.{block_idx}");
                blocks.push(ResBlock::new(
                    &mut builder,
                    &name,
                    channels + skip,
                    c_out,
                    emb_dim,
                ));
                channels = c_out;
                if config.has_attention(level_idx) {
                    let name = format!("up.{level_idx}.attns.{block_idx}");
                    attns.push(AttnBlock::new(&mut builder, &name, channels));
                }
            }
            let resample = (level_idx != 0).then(|| {
                let name = format!("up.{level_idx}.upsample");
                Affine::conv(&mut builder, &name, channels, channels, 3)
            });
            up_reversed.push(Level {
                blocks,
                attns,
                resample,
            });
        }
        debug_assert!(skip_channels.is_empty());
        let up = up_reversed.into_iter().rev().collect();

        let out_norm = Affine::norm(&mut builder, "out_norm", channels);
        let out_conv = Affine::with_init(
            &mut builder,
            "out_conv",
            &[IMAGE_CHANNELS, channels, 3, 3],
            Init::Constant { value: 0.0 },
        );
        Ok(Self {
            config,
            time_embed,
            label_embed,
            input_conv,
            down,
            mid,
            up,
            out_norm,
            out_conv,
            params: builder.build(device),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// Checks the shapes (and label range) of a forward pass's inputs, for callers that want an error
    /// instead of libtorch's panic: `x` is `[batch, 1, 28, 28]`, `t` has one or `batch` elements, labels
    /// (if any) one or `batch` integers in `0..=num_classes`.
    pub fn check_inputs(&self, x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<(), ModelError> {
        let size = x.size();
        if size.len() != 4 || size[1..] != [IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE] {
            return Err(ModelError::Shape {
                name: "x",
                actual: size,
                expected: "[batch, 1, 28, 28]".into(),
            });
        }
        let batch = size[0];
        let per_sample = |name, tensor: &Tensor| {
            let numel = tensor.numel() as i64;
            if numel == 1 || numel == batch {
                Ok(())
            } else {
                Err(ModelError::Shape {
                    name,
                    actual: tensor.size(),
                    expected: format!("one element or {batch} (the batch size)"),
                })
            }
        };
        per_sample("t", t)?;
        if let Some(labels) = labels {
            per_sample("labels", labels)?;
            let Some(classes) = self.config.num_classes else {
                return Ok(());
            };
            let (min, max) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
            if min < 0 || max > classes as i64 {
                return Err(ModelError::Shape {
                    name: "labels",
                    actual: labels.size(),
                    expected: format!(
                        "labels in 0..={classes} ({classes} is the null class); found {min}..={max}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The embedding `emb` (time MLP plus label embedding) for a batch of `batch` samples.
    fn embedding(
        &self,
        params: &[Tensor],
        t: &Tensor,
        labels: Option<&Tensor>,
        batch: i64,
        device: Device,
    ) -> Tensor {
        let t = broadcast_to_batch(&t.to_kind(Kind::Float), batch);
        let features = sinusoidal_embedding(&t, self.config.channels as i64);
        let [first, second] = self.time_embed;
        let emb = second.apply_linear(params, &first.apply_linear(params, &features).silu());
        match (self.label_embed, self.config.num_classes) {
            (Some(table), Some(classes)) => {
                let labels = match labels {
                    Some(labels) => broadcast_to_batch(&labels.to_kind(Kind::Int64), batch),
                    None => Tensor::full([batch], classes as i64, (Kind::Int64, device)),
                };
                emb + Tensor::embedding(&params[table.0], &labels, -1, false, false)
            }
            _ => emb,
        }
    }
}

/// `[cos(T t f_k), sin(T t f_k)]` for `f_k = MAX_PERIOD^(-k / half)`, `k < half = width / 2`, `T = TIME_SCALE`.
pub(crate) fn sinusoidal_embedding(t: &Tensor, width: i64) -> Tensor {
    let half = width / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(MAX_PERIOD.ln()) * k as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_slice(&freqs)
        .to_device(t.device())
        .reshape([1, half]);
    let angles = t.reshape([-1, 1]) * TIME_SCALE * freqs;
    Tensor::cat(&[angles.cos(), angles.sin()], 1)
}

/// Flattens `values` and expands a single value over the batch (samplers pass one time for all samples).
pub(crate) fn broadcast_to_batch(values: &Tensor, batch: i64) -> Tensor {
    let values = values.reshape([-1]);
    if values.size()[0] == 1 && batch != 1 {
        values.expand([batch], false)
    } else {
        values
    }
}

impl VelocityNet for Unet {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn forward_with(&self, params: &[Tensor], x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        let batch = x.size()[0];
        let groups = self.config.groups as i64;
        let emb_act = self.embedding(params, t, labels, batch, x.device()).silu();

        let mut h = self.input_conv.apply_conv(params, x, 1, 1);
        let mut skips = vec![h.shallow_clone()];
        for level in &self.down {
            for block_idx in 0..level.blocks.len() {
                h = level.block_with_attention(params, block_idx, &h, &emb_act, groups);
                skips.push(h.shallow_clone());
            }
            if let Some(downsample) = level.resample {
                h = downsample.apply_conv(params, &h, 2, 1);
                skips.push(h.shallow_clone());
            }
        }

        let (block1, attn, block2) = &self.mid;
        h = block1.forward(params, &h, &emb_act, groups);
        if let Some(attn) = attn {
            h = attn.forward(params, &h, groups);
        }
        h = block2.forward(params, &h, &emb_act, groups);

        for level in self.up.iter().rev() {
            for block_idx in 0..level.blocks.len() {
                let skip = skips.pop().expect("one skip per block on the way up");
                h = Tensor::cat(&[h, skip], 1);
                h = level.block_with_attention(params, block_idx, &h, &emb_act, groups);
            }
            if let Some(upsample) = level.resample {
                let (_, _, height, width) = h.size4().expect("feature maps are [batch, c, h, w]");
                let doubled = h.upsample_nearest2d([2 * height, 2 * width], None, None);
                h = upsample.apply_conv(params, &doubled, 1, 1);
            }
        }

        let h = self.out_norm.apply_norm(params, &h, groups).silu();
        self.out_conv.apply_conv(params, &h, 1, 1)
    }

    fn num_classes(&self) -> Option<usize> {
        self.config.num_classes
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE]
    }

    /// A lower bound: every weight takes at least one multiply-add at every pixel of the coarsest level.
    fn flops_per_sample(&self) -> f64 {
        let levels = self.config.channel_mult.len().max(1) as u32;
        let side = (IMAGE_SIZE >> (levels - 1)).max(1) as f64;
        2.0 * self.params().numel() as f64 * side * side
    }
}
