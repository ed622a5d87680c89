//! A multilayer-perceptron velocity network for low-dimensional data.
//!
//! The layout matches torchcfm's `MLP` (`torch.nn.Sequential` under the attribute `net`): with time fed by
//! concatenation the parameters are `net.0.weight`, `net.0.bias`, `net.2.weight`, ... (activations sit at the
//! odd indices), so a checkpoint loads into `torchcfm.models.MLP(dim, w=width, time_varying=True)` when the
//! activation and depth match. With a Fourier time embedding the input of `net.0` is
//! `[x, sin(2 pi f_k t), cos(2 pi f_k t)]` for fixed frequencies f_k = 2^k, k = 0..n_freq. A class-conditional
//! MLP (`num_classes`) appends a learned label embedding to that input (`label_embed.weight`, after the layers).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::params::{Init, ParamBuilder, ParamId, ParamStore};
use crate::{ModelError, VelocityNet};

/// A pointwise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Scaled exponential linear unit (the 2D benchmark's choice).
    #[default]
    Selu,
    /// Rectified linear unit.
    Relu,
    /// x sigmoid(x).
    Silu,
    /// Gaussian error linear unit.
    Gelu,
    /// Hyperbolic tangent.
    Tanh,
    /// Exponential linear unit.
    Elu,
}

impl Activation {
    /// Applies the nonlinearity.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Selu => x.selu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Gelu => x.gelu("none"),
            Activation::Tanh => x.tanh(),
            Activation::Elu => x.elu(),
        }
    }

    /// The activation at `z` and its derivative there, elementwise (for forward-mode tangents).
    pub fn apply_with_derivative(self, z: &Tensor) -> (Tensor, Tensor) {
        const SELU_SCALE: f64 = 1.050_700_987_355_480_5;
        const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
        let negative = || z.le(0.0);
        match self {
            // selu'(z) = scale for z > 0, scale alpha e^z = selu(z) + scale alpha otherwise.
            Activation::Selu => {
                let h = z.selu();
                let slope = (&h + SELU_SCALE * SELU_ALPHA).where_scalarother(&negative(), SELU_SCALE);
                (h, slope)
            }
            Activation::Relu => (z.relu(), z.gt(0.0).to_kind(z.kind())),
            // silu'(z) = s (1 + z (1 - s)), s = sigmoid(z).
            Activation::Silu => {
                let s = z.sigmoid();
                let slope = &s * (z * (&s * -1.0 + 1.0) + 1.0);
                (z.silu(), slope)
            }
            // gelu'(z) = Phi(z) + z phi(z) (the exact, erf-based gelu).
            Activation::Gelu => {
                let cdf = ((z * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5;
                let pdf = (z.square() * -0.5).exp()
                    * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
                (z.gelu("none"), cdf + z * pdf)
            }
            Activation::Tanh => {
                let h = z.tanh();
                let slope = h.square() * -1.0 + 1.0;
                (h, slope)
            }
            // elu'(z) = 1 for z > 0, e^z = elu(z) + 1 otherwise.
            Activation::Elu => {
                let h = z.elu();
                let slope = (&h + 1.0).where_scalarother(&negative(), 1.0);
                (h, slope)
            }
        }
    }
}

/// How time enters the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum TimeEmbedding {
    /// t appended to the input as one more coordinate (torchcfm's `time_varying=True`). (Written `Concat {}`:
    /// serde ignores unknown keys beside the tag of a unit variant, and unknown keys must be refused.)
    Concat {},
    /// sin and cos of 2 pi 2^k t for k in 0..n_freq, appended to the input.
    Fourier {
        /// Number of frequencies.
        n_freq: usize,
    },
}

impl Default for TimeEmbedding {
    fn default() -> Self {
        TimeEmbedding::Concat {}
    }
}

impl TimeEmbedding {
    pub(crate) fn width(self) -> i64 {
        match self {
            TimeEmbedding::Concat {} => 1,
            TimeEmbedding::Fourier { n_freq } => 2 * n_freq as i64,
        }
    }

    /// Embeds times of shape `[batch]` into `[batch, width]`.
    pub fn embed(self, t: &Tensor) -> Tensor {
        let t = t.reshape([-1, 1]);
        match self {
            TimeEmbedding::Concat {} => t,
            TimeEmbedding::Fourier { n_freq } => {
                let freqs: Vec<f32> = (0..n_freq)
                    .map(|k| 2.0 * std::f32::consts::PI * 2f32.powi(k as i32))
                    .collect();
                let angles = &t * Tensor::from_slice(&freqs).to_device(t.device()).reshape([1, -1]);
                Tensor::cat(&[angles.sin(), angles.cos()], 1)
            }
        }
    }
}

/// Settings of an [`Mlp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Dimension of the data.
    pub dim: usize,
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
    #[serde(default)]
    pub time_embedding: TimeEmbedding,
    /// Columns of the data that are angles (a torus's coordinates, in radians), in increasing order: the
    /// network sees (cos, sin) of each instead of the raw angle, so its input, and the field it learns, are
    /// continuous across the seam where -pi meets pi.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub angle_columns: Vec<usize>,
    /// Classes of a class-conditional network (`None`: unconditional): a learned embedding of the label
    /// ([`LABEL_EMBEDDING_DIM`] columns, table `label_embed.weight` of `num_classes + 1` rows) joins the
    /// input; the label `num_classes` is classifier-free guidance's null class, and `labels = None` means it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
}

/// Columns of a class-conditional MLP's label embedding.
pub const LABEL_EMBEDDING_DIM: i64 = 8;

fn default_width() -> usize {
    64
}

fn default_depth() -> usize {
    3
}

impl MlpConfig {
    /// The torchcfm 2D benchmark network: 3 hidden layers of 64, SELU, time concatenated.
    pub fn benchmark(dim: usize) -> Self {
        Self {
            dim,
            width: default_width(),
            depth: default_depth(),
            activation: Activation::Selu,
            time_embedding: TimeEmbedding::Concat {},
            angle_columns: Vec::new(),
            num_classes: None,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key, detail: String| Err(ModelError::InvalidConfig { key, detail });
        if self.dim == 0 {
            return bad("dim", "must be at least 1".into());
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
        if let Some(&column) = self.angle_columns.iter().find(|&&c| c >= self.dim) {
            return bad(
                "angle_columns",
                format!("column {column} is outside the {} columns of the data", self.dim),
            );
        }
        if let Some(classes) = self.num_classes
            && !(1..=65_536).contains(&classes)
        {
            return bad("num_classes", format!("{classes} is outside 1..=65536"));
        }
        if self.angle_columns.windows(2).any(|w| w[0] >= w[1]) {
            return bad(
                "angle_columns",
                format!("{:?} is not strictly increasing", self.angle_columns),
            );
        }
        Ok(())
    }
}

/// A velocity MLP: `depth` hidden layers of `width`, then a linear map back to `dim`.
#[derive(Debug)]
pub struct Mlp {
    config: MlpConfig,
    layers: Vec<(ParamId, ParamId)>,
    label_embed: Option<ParamId>,
    params: ParamStore,
}

impl Mlp {
    /// Builds the network with PyTorch's default `nn.Linear` initialisation.
    pub fn new(config: MlpConfig, device: tch::Device) -> Result<Self, ModelError> {
        config.validate()?;
        let mut builder = ParamBuilder::default();
        let width = config.width as i64;
        let labels = if config.num_classes.is_some() {
            LABEL_EMBEDDING_DIM
        } else {
            0
        };
        let input =
            config.dim as i64 + config.angle_columns.len() as i64 + config.time_embedding.width() + labels;
        let mut dims = vec![input];
        dims.extend(std::iter::repeat_n(width, config.depth));
        dims.push(config.dim as i64);
        let layers = add_linear_layers(&mut builder, &dims);
        // After the layers, so an unconditional network's parameters keep their names and order.
        let label_embed = config.num_classes.map(|classes| {
            builder.add(
                "label_embed.weight",
                &[classes as i64 + 1, LABEL_EMBEDDING_DIM],
                Init::Normal { std: 1.0 },
            )
        });
        Ok(Self {
            config,
            layers,
            label_embed,
            params: builder.build(device),
        })
    }

    /// The (weight, bias) of every linear layer, input first.
    pub(crate) fn layer_ids(&self) -> &[(ParamId, ParamId)] {
        &self.layers
    }

    /// The settings it was built with.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// What the first layer sees of a batch `x`: the plain columns, then (cos, sin) of the angle columns.
    /// The first layer's input: the features of `x` beside the embedded time (one time for the whole batch is
    /// broadcast, as samplers pass a scalar t).
    fn input(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let batch = x.size()[0];
        let t = t.to_kind(Kind::Float).reshape([-1]);
        let t = if t.size()[0] == 1 && batch != 1 {
            t.expand([batch], false)
        } else {
            t
        };
        Tensor::cat(&[self.features(x), self.config.time_embedding.embed(&t)], 1)
    }

    /// The first layer's input of a class-conditional network: [`Self::input`], then the labels' embedding
    /// (`labels` `[batch]` or one label for all; `None` is the null class).
    fn labelled_input(&self, params: &[Tensor], x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        let input = self.input(x, t);
        let (Some(table), Some(classes)) = (self.label_embed, self.config.num_classes) else {
            return input;
        };
        let batch = x.size()[0];
        let labels = match labels {
            Some(labels) => {
                let labels = labels.to_kind(Kind::Int64).reshape([-1]);
                if labels.size()[0] == 1 && batch != 1 {
                    labels.expand([batch], false)
                } else {
                    labels
                }
            }
            None => Tensor::full([batch], classes as i64, (Kind::Int64, x.device())),
        };
        let embedded = Tensor::embedding(&params[table.0], &labels, -1, false, false);
        Tensor::cat(&[input, embedded], 1)
    }

    fn features(&self, x: &Tensor) -> Tensor {
        if self.config.angle_columns.is_empty() {
            return x.shallow_clone();
        }
        let angles: Vec<i64> = self.config.angle_columns.iter().map(|&c| c as i64).collect();
        let plain: Vec<i64> = (0..self.config.dim as i64)
            .filter(|c| !angles.contains(c))
            .collect();
        let pick = |columns: &[i64]| x.index_select(1, &Tensor::from_slice(columns).to_device(x.device()));
        let theta = pick(&angles);
        Tensor::cat(&[pick(&plain), theta.cos(), theta.sin()], 1)
    }
}

impl VelocityNet for Mlp {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn forward_with(&self, params: &[Tensor], x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        apply_linear_layers(
            self.labelled_input(params, x, t, labels),
            params,
            &self.layers,
            self.config.activation,
        )
    }

    fn num_classes(&self) -> Option<usize> {
        self.config.num_classes
    }

    fn cpu_kernel(&self, params: &[Tensor]) -> Option<crate::mlp_kernel::MlpKernel> {
        if self.config.num_classes.is_some() {
            return None;
        }
        crate::mlp_kernel::MlpKernel::new(self, params)
    }

    /// Forward mode: every tangent (a coordinate direction, or a probe) goes through the layers beside the
    /// activations, `dz_{l+1} = (act'(z_l) * dz_l) W_{l+1}^T`, all tangents of all samples in one matrix
    /// product per layer; the first layer's tangent is `W_1` restricted to the columns of `x`. Declines with
    /// angle columns (their features are not linear in `x`).
    fn divergence_forward(
        &self,
        params: &[Tensor],
        x: &Tensor,
        t: &Tensor,
        probes: Option<&Tensor>,
        max_elements: i64,
    ) -> Option<(Tensor, Tensor)> {
        let size = x.size();
        if !self.config.angle_columns.is_empty() || self.config.num_classes.is_some() || size.len() != 2 {
            return None;
        }
        let (batch, dim) = (size[0], size[1]);
        let n_tangents = probes.map_or(dim, |p| p.size()[0]);
        let widest = (self.config.width as i64).max(dim);
        if n_tangents.saturating_mul(batch).saturating_mul(widest) > max_elements {
            return None;
        }
        Some(tch::no_grad(|| {
            let kind = x.kind();
            let (w, b) = self.layers[0];
            let w_x = params[w.0].narrow(1, 0, dim).transpose(0, 1);
            // [D, 1, width] (the same for every sample) or [K, batch, width].
            let mut tangent = match probes {
                None => w_x.unsqueeze(1),
                Some(probes) => probes.to_kind(kind).matmul(&w_x),
            };
            let mut z = self.input(x, t).linear(&params[w.0], Some(&params[b.0]));
            for &(w, b) in &self.layers[1..] {
                let (h, slope) = self.config.activation.apply_with_derivative(&z);
                tangent = (tangent * slope).matmul(&params[w.0].transpose(0, 1));
                z = h.linear(&params[w.0], Some(&params[b.0]));
            }
            let divergence = match probes {
                // tangent[i, b, :] is column i of sample b's Jacobian: its diagonal entries are [b, i, i].
                None => tangent
                    .diagonal(0, 0, 2)
                    .sum_dim_intlist([1i64].as_slice(), false, kind),
                Some(probes) => {
                    (tangent * probes.to_kind(kind)).sum_dim_intlist([0i64, 2].as_slice(), false, kind)
                        / n_tangents as f64
                }
            };
            (z, divergence)
        }))
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![self.config.dim as i64]
    }
}

/// The linear layers `net.{2k}.weight` / `net.{2k}.bias` between consecutive widths of `dims`, with PyTorch's
/// default `nn.Linear` initialisation (uniform in +-1/sqrt(fan_in)); shared by [`Mlp`] and the token MLP.
pub(crate) fn add_linear_layers(builder: &mut ParamBuilder, dims: &[i64]) -> Vec<(ParamId, ParamId)> {
    dims.windows(2)
        .enumerate()
        .map(|(layer_idx, pair)| {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let index = 2 * layer_idx;
            let w = builder.add(
                format!("net.{index}.weight"),
                &[fan_out, fan_in],
                Init::Uniform { bound },
            );
            let b = builder.add(format!("net.{index}.bias"), &[fan_out], Init::Uniform { bound });
            (w, b)
        })
        .collect()
}

/// Applies `layers` to `h` with `activation` after every layer but the last.
pub(crate) fn apply_linear_layers(
    mut h: Tensor,
    params: &[Tensor],
    layers: &[(ParamId, ParamId)],
    activation: Activation,
) -> Tensor {
    let last = layers.len() - 1;
    for (layer_idx, (w, b)) in layers.iter().enumerate() {
        h = h.linear(&params[w.0], Some(&params[b.0]));
        if layer_idx < last {
            h = activation.apply(&h);
        }
    }
    h
}
