//! A small convolutional classifier for 1x28x28 images, whose penultimate features serve as the feature
//! space of a Frechet distance (the project's stand-in for FID, as no Inception network is available here).
//!
//! Architecture (parameters in one flat tensor, as every model of this crate):
//! `conv1` (3x3, padding 1, 1 -> c1) -> ReLU -> max-pool 2 (28 -> 14) -> `conv2` (3x3, padding 1, c1 -> c2)
//! -> ReLU -> max-pool 2 (14 -> 7) -> `conv3` (3x3, padding 1, c2 -> c2) -> ReLU -> flatten (c2 * 49)
//! -> `fc` (linear to `feature_dim`) -> ReLU = the features -> `head` (linear to `num_classes`) = the logits.
//!
//! # Parameter names
//! | name | shape |
//! |---|---|
//! | `conv1.weight`, `.bias` | `[c1, 1, 3, 3]`, `[c1]` |
//! | `conv2.weight`, `.bias` | `[c2, c1, 3, 3]`, `[c2]` |
//! | `conv3.weight`, `.bias` | `[c2, c2, 3, 3]`, `[c2]` |
//! | `fc.weight`, `.bias` | `[feature_dim, c2 * 7 * 7]`, `[feature_dim]` |
//! | `head.weight`, `.bias` | `[num_classes, feature_dim]`, `[num_classes]` |
//!
//! with `c1, c2 = channels`. The names are those of a PyTorch module with attributes `conv1`, `conv2`,
//! `conv3` (`nn.Conv2d`), `fc` and `head` (`nn.Linear`), flattening in PyTorch's (channel, row, column)
//! order. Initialisation is PyTorch's default (uniform on `±1/sqrt(fan_in)`).

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::ModelError;
use crate::params::{Init, ParamBuilder, ParamId, ParamStore};

/// Settings of a [`Classifier`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Channels of the first convolution and of the second and third.
    #[serde(default = "default_channels")]
    pub channels: [usize; 2],
    /// Width of the penultimate (feature) layer.
    #[serde(default = "default_feature_dim")]
    pub feature_dim: usize,
    /// Number of classes.
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
}

fn default_channels() -> [usize; 2] {
    [32, 64]
}
fn default_feature_dim() -> usize {
    128
}
fn default_num_classes() -> usize {
    10
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            channels: default_channels(),
            feature_dim: default_feature_dim(),
            num_classes: default_num_classes(),
        }
    }
}

impl ClassifierConfig {
    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key, detail: String| Err(ModelError::InvalidConfig { key, detail });
        for channels in self.channels {
            if !(1..=1024).contains(&channels) {
                return bad("channels", format!("{channels} is outside 1..=1024"));
            }
        }
        if !(1..=65_536).contains(&self.feature_dim) {
            return bad(
                "feature_dim",
                format!("{} is outside 1..=65536", self.feature_dim),
            );
        }
        if !(2..=100_000).contains(&self.num_classes) {
            return bad(
                "num_classes",
                format!("{} is outside 2..=100000", self.num_classes),
            );
        }
        Ok(())
    }
}

/// A layer's weight and bias.
#[derive(Clone, Copy, Debug)]
struct Layer {
    weight: ParamId,
    bias: ParamId,
}

impl Layer {
    /// PyTorch's default initialisation: both uniform on `±1/sqrt(fan_in)`.
    fn new(builder: &mut ParamBuilder, name: &str, weight_shape: &[i64]) -> Self {
        let fan_in: i64 = weight_shape[1..].iter().product();
        let init = Init::Uniform {
            bound: 1.0 / (fan_in as f64).sqrt(),
        };
        Self {
            weight: builder.add(format!("{name}.weight"), weight_shape, init),
            bias: builder.add(format!("{name}.bias"), &[weight_shape[0]], init),
        }
    }

    fn conv(self, params: &[Tensor], x: &Tensor) -> Tensor {
        x.conv2d(
            &params[self.weight.0],
            Some(&params[self.bias.0]),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        )
    }

    fn linear(self, params: &[Tensor], x: &Tensor) -> Tensor {
        x.linear(&params[self.weight.0], Some(&params[self.bias.0]))
    }
}

/// A small CNN classifier for 1x28x28 images; see the module documentation.
#[derive(Debug)]
pub struct Classifier {
    config: ClassifierConfig,
    conv1: Layer,
    conv2: Layer,
    conv3: Layer,
    fc: Layer,
    head: Layer,
    params: ParamStore,
}

impl Classifier {
    /// Builds the classifier from libtorch's global generator: build it inside
    /// [`crate::with_torch_seed`] for reproducible weights.
    pub fn new(config: ClassifierConfig, device: Device) -> Result<Self, ModelError> {
        config.validate()?;
        let [c1, c2] = config.channels.map(|c| c as i64);
        let features = config.feature_dim as i64;
        let mut builder = ParamBuilder::default();
        let conv1 = Layer::new(&mut builder, "conv1", &[c1, 1, 3, 3]);
        let conv2 = Layer::new(&mut builder, "conv2", &[c2, c1, 3, 3]);
        let conv3 = Layer::new(&mut builder, "conv3", &[c2, c2, 3, 3]);
        let fc = Layer::new(&mut builder, "fc", &[features, c2 * 7 * 7]);
        let head = Layer::new(&mut builder, "head", &[config.num_classes as i64, features]);
        Ok(Self {
            config,
            conv1,
            conv2,
            conv3,
            fc,
            head,
            params: builder.build(device),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// The parameters.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Penultimate features `[batch, feature_dim]` (after the ReLU) of images `[batch, 1, 28, 28]`, with
    /// explicit parameter views.
    pub fn features_with(&self, params: &[Tensor], x: &Tensor) -> Tensor {
        let h = self
            .conv1
            .conv(params, x)
            .relu()
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let h = self
            .conv2
            .conv(params, &h)
            .relu()
            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let h = self.conv3.conv(params, &h).relu().flatten(1, -1);
        self.fc.linear(params, &h).relu()
    }

    /// Logits `[batch, num_classes]` of images `[batch, 1, 28, 28]`, with explicit parameter views.
    pub fn logits_with(&self, params: &[Tensor], x: &Tensor) -> Tensor {
        self.head.linear(params, &self.features_with(params, x))
    }

    /// Penultimate features with the classifier's own parameters.
    pub fn features(&self, x: &Tensor) -> Tensor {
        self.features_with(&self.params.views(), x)
    }

    /// Logits with the classifier's own parameters.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        self.logits_with(&self.params.views(), x)
    }
}
