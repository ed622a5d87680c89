//! The training losses of discrete flow matching on tensors: the formulas of `ferroflow_discrete::loss`, applied
//! to a [`super::TokenNet`]'s logits (`[batch, length, vocab_size]`) through `log_softmax` over the last axis.
//! The tests check them against the math crate's arrays.
//!
//! - [`cross_entropy_per_position`]: `-log p_{1|t}(x1^i | x_t)`, `[batch, length]`. Its mean over every
//!   position ([`cross_entropy_loss`]) is the convention of `flow_matching`'s discrete examples
//!   (`CrossEntropyLoss` over all positions; Gat et al. 2024 sum over positions, which differs by the factor
//!   `length`). A position that already shows its data token then teaches the network to copy it, which is
//!   easy and harmless. [`cross_entropy_loss_at`] averages over the positions a boolean `[batch, length]`
//!   tensor selects instead, for example the masked ones (`x_t.eq(vocab_size)`), the convention of masked
//!   diffusion models, whose other positions carry no information.
//! - [`generalized_kl_per_position`]: the generalized KL divergence between the conditional and the model's
//!   rate (Shaul et al. 2024; `flow_matching`'s `MixturePathGeneralizedKL`), with `c = kappa'_t / (1 - kappa_t)`
//!   and `delta = [x_t^i = x1^i]`:
//!   `c (1 - p_{1|t}(x_t^i))` where `delta = 1`, and `-c [p_{1|t}(x_t^i) + log p_{1|t}(x1^i)]` elsewhere. A token
//!   network never predicts the mask, so `p_{1|t}(mask) = 0`. [`generalized_kl_loss`] is its mean over every
//!   position of the batch, as `flow_matching`'s `reduction = "mean"`: a position holding its data token still
//!   counts, through the rate at which the model would move it away.
//!
//! Shapes are checked (a [`ModelError::Shape`] names the input); token values are not, as that would cost a
//! host round trip per call: `x1` must hold data tokens `< vocab_size` and `x_t` states `<= vocab_size` (see
//! [`super::TokenNet::check_inputs`]). Logits in double precision are kept in double; any other kind is
//! computed in single precision.

use tch::{Kind, Tensor};

use crate::ModelError;

fn shape_error(name: &'static str, tensor: &Tensor, expected: String) -> ModelError {
    ModelError::Shape {
        name,
        actual: tensor.size(),
        expected,
    }
}

/// `log_softmax` of `[batch, length, vocab]` logits, and that shape.
fn log_posterior(logits: &Tensor) -> Result<(Tensor, [i64; 3]), ModelError> {
    let [batch, length, vocab] = logits.size()[..] else {
        return Err(shape_error(
            "logits",
            logits,
            "[batch, length, vocab_size]".into(),
        ));
    };
    let kind = if logits.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
    Ok((logits.log_softmax(-1, kind), [batch, length, vocab]))
}

/// Checks that `tokens` is `[batch, length]` with integer entries.
fn check_tokens(name: &'static str, tokens: &Tensor, batch: i64, length: i64) -> Result<(), ModelError> {
    let integer = matches!(
        tokens.kind(),
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    );
    if tokens.size() != [batch, length] || !integer {
        return Err(shape_error(
            name,
            tokens,
            format!(
                "[{batch}, {length}] integer tokens (the logits' first two axes), found kind {:?}",
                tokens.kind()
            ),
        ));
    }
    Ok(())
}

/// `values[b, i, tokens[b, i]]`: `[batch, length]`.
fn pick(values: &Tensor, tokens: &Tensor) -> Tensor {
    values
        .gather(-1, &tokens.to_kind(Kind::Int64).unsqueeze(-1), false)
        .squeeze_dim(-1)
}

/// `-log p_{1|t}(x1^i | x_t)` per position, `[batch, length]`, from `logits` `[batch, length, vocab_size]` and
/// data tokens `x1` `[batch, length]`.
pub fn cross_entropy_per_position(logits: &Tensor, x1: &Tensor) -> Result<Tensor, ModelError> {
    let (log_probs, [batch, length, _]) = log_posterior(logits)?;
    check_tokens("x1", x1, batch, length)?;
    Ok(-pick(&log_probs, x1))
}

/// The cross-entropy averaged over every position of the batch (a scalar).
pub fn cross_entropy_loss(logits: &Tensor, x1: &Tensor) -> Result<Tensor, ModelError> {
    let per_position = cross_entropy_per_position(logits, x1)?;
    Ok(per_position.mean(per_position.kind()))
}

/// The cross-entropy averaged over the positions `counted` (boolean, or 0/1, `[batch, length]`) selects, for
/// example the masked positions `x_t.eq(vocab_size)`; 0 when it selects none.
pub fn cross_entropy_loss_at(logits: &Tensor, x1: &Tensor, counted: &Tensor) -> Result<Tensor, ModelError> {
    let per_position = cross_entropy_per_position(logits, x1)?;
    if counted.size() != per_position.size() {
        return Err(shape_error(
            "counted",
            counted,
            format!("{:?} (the shape of x1)", per_position.size()),
        ));
    }
    let kind = per_position.kind();
    let counted = counted.to_kind(Kind::Bool).to_device(per_position.device());
    // Selecting with `where` rather than multiplying keeps an infinite loss at an uncounted position out.
    let selected = per_position.where_self(&counted, &per_position.zeros_like());
    Ok(selected.sum(kind) / counted.sum(kind).clamp_min(1.0))
}

/// The generalized KL loss per position, `[batch, length]` (formula in the module documentation): `logits`
/// `[batch, length, vocab_size]`, states `x_t` and data tokens `x1` `[batch, length]`, and `kappa_t`,
/// `d kappa_t / dt` with one or `batch` elements each, on any device (`kappa_t < 1`: the rates divide by
/// `1 - kappa_t`).
pub fn generalized_kl_per_position(
    logits: &Tensor,
    x_t: &Tensor,
    x1: &Tensor,
    kappa: &Tensor,
    d_kappa: &Tensor,
) -> Result<Tensor, ModelError> {
    let (log_probs, [batch, length, vocab]) = log_posterior(logits)?;
    check_tokens("x1", x1, batch, length)?;
    check_tokens("x_t", x_t, batch, length)?;
    for (name, values) in [("kappa", kappa), ("d_kappa", d_kappa)] {
        let numel = values.numel() as i64;
        if numel != 1 && numel != batch {
            return Err(shape_error(
                name,
                values,
                format!("one element or {batch} (the batch size)"),
            ));
        }
    }
    let (kind, device) = (log_probs.kind(), log_probs.device());
    let remaining: Tensor = 1.0 - kappa.to_kind(kind).to_device(device);
    let coefficient = (d_kappa.to_kind(kind).to_device(device) / remaining).reshape([-1, 1]);
    let x_t = x_t.to_kind(Kind::Int64);
    // p_{1|t}(x_t^i): the mask (state `vocab`) has posterior 0, the network never predicts it.
    let is_data = x_t.lt(vocab);
    let stay = pick(&log_probs.exp(), &x_t.clamp_max(vocab - 1)) * is_data.to_kind(kind);
    let at_data = x_t.eq_tensor(&x1.to_kind(Kind::Int64));
    // `where` rather than `delta`-weighted sums, so that log p = -inf at a position holding its data token
    // (where the log is not used) gives no NaN.
    let holding = stay.neg().g_add_scalar(1.0).clamp_min(0.0);
    let moving = -(&stay + pick(&log_probs, x1));
    let loss = &coefficient * holding.where_self(&at_data, &moving);
    // With c = 0 neither rate moves anything: the divergence is 0, not 0 * inf.
    Ok(loss.where_self(&coefficient.ne(0.0), &loss.zeros_like()))
}

/// The generalized KL loss averaged over every position of the batch (a scalar).
pub fn generalized_kl_loss(
    logits: &Tensor,
    x_t: &Tensor,
    x1: &Tensor,
    kappa: &Tensor,
    d_kappa: &Tensor,
) -> Result<Tensor, ModelError> {
    let per_position = generalized_kl_per_position(logits, x_t, x1, kappa, d_kappa)?;
    Ok(per_position.mean(per_position.kind()))
}
