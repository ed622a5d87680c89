//! Token networks for discrete flow matching: the torch side of `ferroflow-discrete`.
//!
//! A token network reads a batch of noisy sequences `x_t` (`[batch, length]` int64 states), times `t` and,
//! when class-conditional, labels, and returns logits of the posterior `p_{1|t}(x1^i | x_t)` for every position,
//! `[batch, length, vocab_size]`. The output covers the data vocabulary only: with a masked source the mask (the
//! state `vocab_size`) is an input state but never a prediction, so `n_states = vocab_size + 1` inputs map to
//! `vocab_size` outputs; with a uniform source both are `vocab_size`. The math crate's arrays carry `n_states`
//! columns; pad the logits with a `-inf` column for the mask to compare with them.
//!
//! - [`TokenNet`]: the trait (after [`crate::VelocityNet`]), with [`TokenSource`] saying which states exist;
//! - [`TokenMlp`] ([`mlp`]): embeddings of every position concatenated, with the time (and class), through an
//!   MLP;
//! - [`TokenTransformer`] ([`transformer`]): a bidirectional pre-LayerNorm transformer encoder;
//! - [`loss`]: the cross-entropy and generalized-KL losses on tensors, checked against the math crate.
//!
//! Both networks keep their parameters in one flat [`ParamStore`], so Adam, the EMA and checkpoints work on them
//! unchanged; class-conditional networks have one extra label row, the null class of classifier-free guidance.

pub mod loss;
pub mod mlp;
pub mod transformer;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::ModelError;
use crate::params::ParamStore;

pub use loss::{
    cross_entropy_loss, cross_entropy_loss_at, cross_entropy_per_position, generalized_kl_loss,
    generalized_kl_per_position,
};
pub use mlp::{TokenMlp, TokenMlpConfig};
pub use transformer::{TokenTransformer, TokenTransformerConfig};

/// The source of the mixture path a token network serves; it decides which states a position can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// Every source token is the mask, the extra state `vocab_size` (`n_states = vocab_size + 1`).
    #[default]
    Masked,
    /// Source tokens are uniform over the data vocabulary (`n_states = vocab_size`).
    Uniform,
}

impl TokenSource {
    /// The number of states a position can hold, for a data vocabulary of `vocab_size` tokens.
    pub fn n_states(self, vocab_size: usize) -> usize {
        match self {
            TokenSource::Masked => vocab_size + 1,
            TokenSource::Uniform => vocab_size,
        }
    }
}

impl From<TokenSource> for ferroflow_discrete::Source {
    fn from(source: TokenSource) -> Self {
        match source {
            TokenSource::Masked => ferroflow_discrete::Source::Masked,
            TokenSource::Uniform => ferroflow_discrete::Source::Uniform,
        }
    }
}

/// A network for the posterior `p_{1|t}(x1^i | x_t)` of discrete flow matching: maps states `x_t`
/// (`[batch, length]`, int64 in `0..n_states`), times `t` (`[batch]`, or one time for the whole batch, float in
/// `[0, 1]`) and, for class-conditional networks, labels (`[batch]` or one, int64; the value `num_classes` is
/// the null label of classifier-free guidance) to logits `[batch, length, vocab_size]`.
pub trait TokenNet {
    /// The network's parameters.
    fn params(&self) -> &ParamStore;

    /// The forward pass with explicit parameter views (from [`ParamStore::views_of`]), so the same network runs
    /// with its trained weights or with an EMA copy. `labels` is ignored by unconditional networks; `None`
    /// means the null class for conditional ones. Inputs are not checked here (see
    /// [`TokenNet::check_inputs`]): a wrong shape panics inside libtorch.
    fn forward_with(&self, params: &[Tensor], x_t: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor;

    /// The size `V` of the data vocabulary, and of the last axis of the logits.
    fn vocab_size(&self) -> usize;

    /// The source of the path, which decides whether the mask is a state.
    fn source(&self) -> TokenSource;

    /// The sequence length the network reads.
    fn length(&self) -> usize;

    /// The number of states an input position can hold.
    fn n_states(&self) -> usize {
        self.source().n_states(self.vocab_size())
    }

    /// The number of classes of a class-conditional network (`None` when unconditional).
    fn num_classes(&self) -> Option<usize> {
        None
    }

    /// The forward pass with the trainable parameters, unconditional (or with the null label).
    fn forward(&self, x_t: &Tensor, t: &Tensor) -> Tensor {
        self.forward_with(&self.params().views(), x_t, t, None)
    }

    /// Checks a forward pass's inputs, for callers that want an error instead of libtorch's panic: `x_t` is
    /// `[batch, length]` with integer states in `0..n_states`, `t` has one or `batch` elements, labels (if any)
    /// one or `batch` integers in `0..=num_classes`. The value checks cost a host round trip each.
    fn check_inputs(&self, x_t: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<(), ModelError> {
        check_token_inputs(
            x_t,
            t,
            labels,
            self.length() as i64,
            self.n_states() as i64,
            self.num_classes(),
        )
    }
}

impl<N: TokenNet + ?Sized> TokenNet for Box<N> {
    fn params(&self) -> &ParamStore {
        (**self).params()
    }

    fn forward_with(&self, params: &[Tensor], x_t: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        (**self).forward_with(params, x_t, t, labels)
    }

    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }

    fn source(&self) -> TokenSource {
        (**self).source()
    }

    fn length(&self) -> usize {
        (**self).length()
    }

    fn num_classes(&self) -> Option<usize> {
        (**self).num_classes()
    }
}

/// Carry-over of a masked source: at every position of `x_t` (`[batch, length]`) that is not the mask, the
/// logits (`[batch, length, vocab_size]`) become those of the point mass on the token it holds (0 there,
/// `-inf` elsewhere). Under a masked path an unmasked token is its data token, so the exact posterior is that
/// point mass; imposing it keeps the sampler from moving revealed tokens and the ELBO from charging the
/// network for copying them (the "carry-over unmasking" of masked diffusion models, Sahoo et al. 2024). A
/// uniform source has no such positions: the logits come back unchanged.
pub fn carry_over(logits: &Tensor, x_t: &Tensor, source: TokenSource) -> Tensor {
    if source != TokenSource::Masked {
        return logits.shallow_clone();
    }
    let vocab = *logits.size().last().expect("logits have a vocabulary axis");
    let x_t = x_t.to_kind(Kind::Int64).to_device(logits.device());
    let revealed = x_t.lt(vocab).unsqueeze(-1);
    let point_mass = x_t
        .clamp_max(vocab - 1)
        .one_hot(vocab)
        .to_kind(logits.kind())
        .log();
    point_mass.where_self(&revealed, logits)
}

fn is_integer(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    )
}

/// Checks that an integer tensor's values lie in `0..=max`.
fn check_range(name: &'static str, values: &Tensor, max: i64, what: &str) -> Result<(), ModelError> {
    if values.numel() == 0 {
        return Ok(());
    }
    let (min, found_max) = (values.min().int64_value(&[]), values.max().int64_value(&[]));
    if min < 0 || found_max > max {
        return Err(ModelError::Shape {
            name,
            actual: values.size(),
            expected: format!("{what} in 0..={max}; found {min}..={found_max}"),
        });
    }
    Ok(())
}

fn check_token_inputs(
    x_t: &Tensor,
    t: &Tensor,
    labels: Option<&Tensor>,
    length: i64,
    n_states: i64,
    num_classes: Option<usize>,
) -> Result<(), ModelError> {
    let size = x_t.size();
    if size.len() != 2 || size[1] != length || !is_integer(x_t.kind()) {
        return Err(ModelError::Shape {
            name: "x_t",
            actual: size,
            expected: format!("[batch, {length}] integer states, found kind {:?}", x_t.kind()),
        });
    }
    check_range("x_t", x_t, n_states - 1, "states")?;
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
    if let (Some(labels), Some(classes)) = (labels, num_classes) {
        per_sample("labels", labels)?;
        if !is_integer(labels.kind()) {
            return Err(ModelError::Shape {
                name: "labels",
                actual: labels.size(),
                expected: format!("integer class ids, found kind {:?}", labels.kind()),
            });
        }
        check_range(
            "labels",
            labels,
            classes as i64,
            &format!("labels ({classes} is the null class)"),
        )?;
    }
    Ok(())
}

/// The labels of a conditional network as `[batch]` int64: `None` is the null class `num_classes`.
fn labels_or_null(labels: Option<&Tensor>, num_classes: usize, batch: i64, device: Device) -> Tensor {
    match labels {
        Some(labels) => crate::unet::broadcast_to_batch(&labels.to_kind(Kind::Int64), batch),
        None => Tensor::full([batch], num_classes as i64, (Kind::Int64, device)),
    }
}

/// Refuses a class count outside `1..=1_000_000`, under the config key `num_classes`.
fn validate_num_classes(num_classes: Option<usize>) -> Result<(), ModelError> {
    match num_classes {
        Some(classes) if !(1..=1_000_000).contains(&classes) => Err(ModelError::InvalidConfig {
            key: "num_classes",
            detail: format!("{classes} is outside 1..=1000000"),
        }),
        _ => Ok(()),
    }
}

/// Refuses a vocabulary outside `1..=1_000_000` and a length outside `1..=max_length`.
fn validate_tokens(vocab_size: usize, length: usize, max_length: usize) -> Result<(), ModelError> {
    if !(1..=1_000_000).contains(&vocab_size) {
        return Err(ModelError::InvalidConfig {
            key: "vocab_size",
            detail: format!("{vocab_size} is outside 1..=1000000"),
        });
    }
    if !(1..=max_length).contains(&length) {
        return Err(ModelError::InvalidConfig {
            key: "length",
            detail: format!("{length} is outside 1..={max_length}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carry_over_pins_revealed_tokens_and_leaves_masked_positions_and_uniform_sources_alone() {
        let logits = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.1, 0.2, 0.3]).view([1, 2, 3]);
        // Position 0 shows token 2, position 1 is the mask (state 3).
        let x_t = Tensor::from_slice(&[2i64, 3]).view([1, 2]);
        let pinned = carry_over(&logits, &x_t, TokenSource::Masked);
        let probs = Vec::<f32>::try_from(pinned.softmax(-1, Kind::Float).reshape([-1])).unwrap();
        assert_eq!(&probs[..3], &[0.0, 0.0, 1.0]);
        let expected =
            Vec::<f32>::try_from(logits.narrow(1, 1, 1).softmax(-1, Kind::Float).reshape([-1])).unwrap();
        for (a, b) in probs[3..].iter().zip(&expected) {
            assert!((a - b).abs() < 1e-7);
        }
        let unchanged = carry_over(&logits, &x_t.clamp_max(2), TokenSource::Uniform);
        assert_eq!(
            Vec::<f32>::try_from(unchanged.reshape([-1])).unwrap(),
            Vec::<f32>::try_from(logits.reshape([-1])).unwrap()
        );
    }
}
