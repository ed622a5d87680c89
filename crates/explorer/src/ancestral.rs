//! DDPM's sampler in the explorer: ancestral steps (the paths crate's [`GaussianCoefficients::ancestral_step`],
//! the posterior `q(x_s | x_t, x1)`) with `x1` replaced by the field's estimate `E[x1 | x_t]`, which a
//! velocity gives through the path's conversion. It runs on any affine Gaussian path from a Gaussian source,
//! over the closed-form marginal velocity or a trained run's network (trained for the velocity, `x1` or
//! `epsilon`, DDPM's own parameterisation), next to the deterministic samplers of the probability-flow ODE.
//!
//! [`GaussianCoefficients::ancestral_step`]: ferroflow_paths::GaussianCoefficients::ancestral_step

use ferroflow_paths::{ConditionalPath, Prediction};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::Tensor;

use crate::error::ApiError;

/// The name the page gives the ancestral sampler.
pub const DDPM: &str = "ddpm";

/// Steps `x0` (at `t = 0`) to `t = 1` in `n_steps` equal ancestral steps and returns the positions after
/// every `every` steps, the start included (`n_steps / every + 1` tensors). `velocity(x, t)` is the field
/// at the step's start; `field_time` maps a grid time to the time it is evaluated at (closed forms are
/// singular at the ends of some paths). `field` names the request's key in errors.
///
/// With `noise_start` the chain starts as DDPM's does, from `x_T ~ N(0, I)` taken as the sample at the
/// first grid time `1 / n_steps` (the first step leaves `x0` as it is): a network predicting epsilon cannot
/// estimate `x1` where `alpha_t = 0` (its `x1 = (x_t - sigma_t epsilon) / alpha_t`), and DDPM's schedules
/// never reach `alpha = 0` either. Otherwise the chain starts at `t = 0`, where `E[x1 | x_0] = E[x1]` comes
/// from the velocity.
#[allow(clippy::too_many_arguments)]
pub fn ancestral_solve(
    path: &dyn ConditionalPath,
    source_std: f64,
    mut velocity: impl FnMut(&Tensor, f64) -> Tensor,
    field_time: impl Fn(f64) -> f64,
    x0: Tensor,
    n_steps: usize,
    every: usize,
    seed: u64,
    noise_start: bool,
    field: &str,
) -> Result<Vec<Tensor>, ApiError> {
    let refused = |e: ferroflow_paths::PathsError| {
        ApiError::invalid(
            field,
            format!("the {DDPM} sampler on path `{}`: {e}", path.name()),
        )
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00dd_0bb0);
    let mut x = x0;
    let mut out = vec![x.shallow_clone()];
    for step in 0..n_steps {
        if noise_start && step == 0 {
            if every == 1 {
                out.push(x.shallow_clone());
            }
            continue;
        }
        let t = step as f64 / n_steps as f64;
        let s = (step + 1) as f64 / n_steps as f64;
        let at = field_time(t);
        let here = path.gaussian_coefficients(at, source_std).map_err(refused)?;
        let to_target = here
            .conversion(Prediction::Velocity, Prediction::Target)
            .map_err(refused)?;
        let v = tch::no_grad(|| velocity(&x, at));
        let x1_hat = &x * to_target.x_t_coefficient + v * to_target.value_coefficient;
        let next = path.gaussian_coefficients(s, source_std).map_err(refused)?;
        let step_law = here.ancestral_step(&next).map_err(refused)?;
        let mut stepped = &x * step_law.x_t_coefficient + x1_hat * step_law.target_coefficient;
        if step_law.std > 0.0 {
            let noise: Vec<f64> = (0..x.numel()).map(|_| StandardNormal.sample(&mut rng)).collect();
            let noise = Tensor::from_slice(&noise)
                .view(x.size().as_slice())
                .to_kind(x.kind())
                .to_device(x.device());
            stepped += noise * step_law.std;
        }
        if stepped.isfinite().all().int64_value(&[]) == 0 {
            return Err(ApiError::Internal(format!(
                "the {DDPM} sampler left the finite numbers at t = {s}"
            )));
        }
        x = stepped.to_kind(out[0].kind());
        if (step + 1) % every == 0 {
            out.push(x.shallow_clone());
        }
    }
    Ok(out)
}
