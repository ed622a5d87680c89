//! From a network's logits to posteriors: softmax and log-softmax with a temperature, and classifier-free
//! guidance in log space. Every function works on the last axis of an array of any rank (for example
//! `[n_samples, length, n_states]`).
//!
//! Logits may be `-inf` (a token the caller rules out, such as the mask in a masked model's output); NaN and
//! `+inf` are refused, and so is a row with no finite logit.

use ndarray::{Array, ArrayView, Axis, Dimension, IntoDimension, Zip};

use crate::{DiscreteError, Result, check};

fn temperature_check(temperature: f64) -> Result<f64> {
    check::parameter("temperature", temperature, "(0, inf)", |t| {
        t > 0.0 && t.is_finite()
    })
}

/// Log-softmax of `logits / temperature` along the last axis; `temperature` in `(0, inf)` (below 1 sharpens,
/// above 1 flattens).
pub fn log_softmax<D: Dimension>(logits: ArrayView<f64, D>, temperature: f64) -> Result<Array<f64, D>> {
    let temperature = temperature_check(temperature)?;
    check::finite("logits", logits.view(), true)?;
    let mut out = logits.mapv(|l| l / temperature);
    if out.ndim() == 0 {
        return Err(DiscreteError::ShapeMismatch {
            what: "logits",
            found: vec![],
            expected: "at least one axis (the states)".into(),
        });
    }
    let last = Axis(out.ndim() - 1);
    let shape = out.shape().to_vec();
    for (row_idx, mut row) in out.lanes_mut(last).into_iter().enumerate() {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return Err(DiscreteError::InvalidProbability {
                what: "logits",
                index: check::row_index(&shape, row_idx),
                value: max,
                reason: "a row with no finite logit",
            });
        }
        let log_sum = max + row.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        row.mapv_inplace(|l| l - log_sum);
    }
    Ok(out)
}

/// Softmax of `logits / temperature` along the last axis: each row a distribution.
pub fn softmax<D: Dimension>(logits: ArrayView<f64, D>, temperature: f64) -> Result<Array<f64, D>> {
    Ok(log_softmax(logits, temperature)?.mapv_into(f64::exp))
}

/// Classifier-free guidance in log space: the normalised log-probabilities of
/// `p_w(y) ∝ p_cond(y)^(1 + w) / p_uncond(y)^w`, that is `log_softmax((1 + w) log p_cond - w log p_uncond)`,
/// from conditional and unconditional logits of one shape (each row is normalised first, so logits and
/// log-probabilities give the same result). `w = 0` gives the conditional posterior, `w = -1` the
/// unconditional one.
///
/// A token with `p_cond = 0` keeps probability 0. A token with `p_uncond = 0` but `p_cond > 0` gets probability
/// 0 for `w < 0` and would get an infinite weight for `w > 0`, which is refused.
pub fn classifier_free_guidance<D: Dimension>(
    cond_logits: ArrayView<f64, D>,
    uncond_logits: ArrayView<f64, D>,
    weight: f64,
) -> Result<Array<f64, D>> {
    let weight = check::parameter("weight", weight, "a finite number", f64::is_finite)?;
    check::shape(
        "uncond_logits",
        uncond_logits.shape(),
        cond_logits.shape(),
        "the shape of cond_logits",
    )?;
    let log_cond = log_softmax(cond_logits, 1.0)?;
    let log_uncond = log_softmax(uncond_logits, 1.0)?;
    if weight > 0.0 {
        let refused = log_cond
            .indexed_iter()
            .zip(log_uncond.iter())
            .find(|((_, cond), uncond)| **cond > f64::NEG_INFINITY && **uncond == f64::NEG_INFINITY);
        if let Some(((index, _), _)) = refused {
            return Err(DiscreteError::InvalidProbability {
                what: "uncond_logits",
                index: index.into_dimension().slice().to_vec(),
                value: f64::NEG_INFINITY,
                reason: "the unconditional model rules out a token the conditional one allows",
            });
        }
    }
    let mut mixed = log_cond.clone();
    Zip::from(&mut mixed).and(&log_uncond).for_each(|out, uncond| {
        *out = if *out == f64::NEG_INFINITY || weight == 0.0 {
            // A token the conditional model rules out stays ruled out; w = 0 is the conditional model.
            *out
        } else if *uncond == f64::NEG_INFINITY {
            // Only reached for w < 0 (w > 0 was refused above): p_uncond^(-w) with -w > 0 is 0.
            f64::NEG_INFINITY
        } else {
            (1.0 + weight) * *out - weight * uncond
        };
    });
    log_softmax(mixed.view(), 1.0)
}
