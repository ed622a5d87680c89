//! Classifier-free guidance (Ho and Salimans 2022) for class-conditional velocity networks:
//! `v_w(x, t | c) = (1 + w) v(x, t | c) - w v(x, t | null)`, with the null label `num_classes`.
//!
//! [`classifier_free_velocity`] returns a closure `(x, t) -> v_w(x, t | c)` that records the autograd graph,
//! so it composes with mode seeking: wrap it in a [`crate::ModeSeekingField`] and `g` is the divergence
//! gradient of the guided field. For `w > 0` the conditional and unconditional passes run as one forward pass
//! over the batch stacked twice (each output still depends on its own sample only, so divergences stay
//! per-sample); for `w = 0` only the conditional pass runs.

use ferroflow_models::VelocityNet;
use tch::{Kind, Tensor};

use crate::GuidanceError;
use crate::config::ClassifierFree;

/// `(1 + w) conditional - w unconditional`, written as `conditional + w (conditional - unconditional)`;
/// `w = 0` returns `conditional` itself.
pub fn combine_classifier_free(conditional: &Tensor, unconditional: &Tensor, weight: f64) -> Tensor {
    if weight == 0.0 {
        return conditional.shallow_clone();
    }
    conditional + (conditional - unconditional) * weight
}

/// The classifier-free guided velocity of `net` (with the parameter views `params`) for `config.class`,
/// as a closure `(x, t)`. The net's output is taken as the velocity. Refuses an unconditional net
/// ([`GuidanceError::Unconditional`]), a class outside `0..num_classes`, and a bad weight.
pub fn classifier_free_velocity<'a, N>(
    net: &'a N,
    params: &'a [Tensor],
    config: ClassifierFree,
) -> Result<impl Fn(&Tensor, f64) -> Tensor + 'a, GuidanceError>
where
    N: VelocityNet + ?Sized,
{
    config.validate()?;
    let num_classes = net
        .num_classes()
        .ok_or(GuidanceError::Unconditional { class: config.class })?;
    if config.class >= num_classes {
        return Err(GuidanceError::ClassOutOfRange {
            class: config.class,
            num_classes,
        });
    }
    let (class, null) = (config.class as i64, num_classes as i64);
    Ok(move |x: &Tensor, t: f64| {
        let batch = x.size()[0];
        let device = x.device();
        let times = Tensor::from_slice(&[t as f32]).to_device(device);
        let labels = |label: i64| Tensor::full([batch], label, (Kind::Int64, device));
        // Solvers hold flat states `[n, D]`; the net takes its own sample shape (`[n, 1, 28, 28]` for the
        // U-Net), and the result goes back to the caller's shape.
        let net_shape: Vec<i64> = std::iter::once(batch).chain(net.sample_shape()).collect();
        let x_net = x.reshape(net_shape.as_slice());
        let out_shape = x.size();
        if config.weight == 0.0 {
            return net
                .forward_with(params, &x_net, &times, Some(&labels(class)))
                .reshape(out_shape.as_slice());
        }
        let stacked = Tensor::cat(&[&x_net, &x_net], 0);
        let both_labels = Tensor::cat(&[labels(class), labels(null)], 0);
        let out = net.forward_with(params, &stacked, &times, Some(&both_labels));
        let halves = out.split(batch, 0);
        combine_classifier_free(&halves[0], &halves[1], config.weight).reshape(out_shape.as_slice())
    })
}
