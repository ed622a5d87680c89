//! Adam and AdamW over a flat parameter tensor, with warm-up, gradient clipping and an EMA of the weights.
//!
//! The moment estimates are tensors this crate owns (not libtorch's optimizer objects), so they are saved
//! in checkpoints and a resumed run continues exactly where it stopped. Formulas: Kingma & Ba 2015 (Adam,
//! with bias correction), Loshchilov & Hutter 2019 (AdamW: decoupled weight decay p <- p - lr wd p).

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::ModelError;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam; weight decay, if any, is added to the gradient (L2 penalty), as in `torch.optim.Adam`.
    #[default]
    Adam,
    /// AdamW; weight decay is decoupled from the gradient, as in `torch.optim.AdamW`.
    AdamW,
}

/// Optimizer settings, with PyTorch's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Adam or AdamW.
    #[serde(default)]
    pub kind: OptimizerKind,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Exponential decay of the first moment.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Exponential decay of the second moment.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Added to the root of the second moment.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Weight decay (L2 for Adam, decoupled for AdamW; PyTorch's AdamW default is 0.01).
    #[serde(default)]
    pub weight_decay: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Clip the global gradient norm to this value (0 = no clipping).
    #[serde(default)]
    pub grad_clip: f64,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: default_lr(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: 0.0,
            warmup_steps: 0,
            grad_clip: 0.0,
        }
    }
}

impl OptimizerConfig {
    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |key, detail: String| Err(ModelError::InvalidConfig { key, detail });
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("optimizer.lr", format!("{} must be finite and > 0", self.lr));
        }
        for (key, beta) in [("optimizer.beta1", self.beta1), ("optimizer.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(key, format!("{beta} is outside [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("optimizer.eps", format!("{} must be finite and > 0", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "optimizer.weight_decay",
                format!("{} must be finite and >= 0", self.weight_decay),
            );
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(
                "optimizer.grad_clip",
                format!("{} must be finite and >= 0", self.grad_clip),
            );
        }
        Ok(())
    }

    /// The learning rate at (1-based) step `step`, after warm-up.
    pub fn lr_at(&self, step: usize) -> f64 {
        if self.warmup_steps == 0 || step >= self.warmup_steps {
            self.lr
        } else {
            self.lr * step as f64 / self.warmup_steps as f64
        }
    }
}

/// Adam or AdamW state over one flat parameter tensor.
#[derive(Debug)]
pub struct FlatAdam {
    config: OptimizerConfig,
    /// First-moment estimate.
    pub exp_avg: Tensor,
    /// Second-moment estimate.
    pub exp_avg_sq: Tensor,
    /// Number of steps taken.
    pub step: usize,
}

impl FlatAdam {
    /// Fresh state for parameters shaped like `flat`.
    pub fn new(config: OptimizerConfig, flat: &Tensor) -> Result<Self, ModelError> {
        config.validate()?;
        Ok(Self {
            config,
            exp_avg: flat.zeros_like().detach(),
            exp_avg_sq: flat.zeros_like().detach(),
            step: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// One update of `flat` from its accumulated gradient; clears the gradient afterwards.
    pub fn step(&mut self, flat: &Tensor) {
        let _guard = tch::no_grad_guard();
        let cfg = &self.config;
        self.step += 1;
        let lr = cfg.lr_at(self.step);
        let mut grad = flat.grad();
        if cfg.grad_clip > 0.0 {
            // Scale by min(1, clip / (norm + 1e-6)) without a host round trip, as torch's clip_grad_norm_.
            let coef = (grad.norm().g_add_scalar(1e-6).reciprocal() * cfg.grad_clip).clamp_max(1.0);
            let _ = grad.g_mul_(&coef);
        }
        let mut param = flat.shallow_clone();
        let grad = match cfg.kind {
            OptimizerKind::Adam if cfg.weight_decay > 0.0 => &grad + &param * cfg.weight_decay,
            OptimizerKind::AdamW if cfg.weight_decay > 0.0 => {
                let _ = param.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
                grad
            }
            _ => grad,
        };
        let _ = self.exp_avg.lerp_(&grad, 1.0 - cfg.beta1);
        let _ = self.exp_avg_sq.g_mul_scalar_(cfg.beta2);
        let _ = self.exp_avg_sq.addcmul_(&(&grad * (1.0 - cfg.beta2)), &grad);
        let bias1 = 1.0 - cfg.beta1.powi(self.step as i32);
        let bias2 = 1.0 - cfg.beta2.powi(self.step as i32);
        let denom = (self.exp_avg_sq.sqrt() * (1.0 / bias2.sqrt())).g_add_scalar(cfg.eps);
        let _ = param.g_sub_(&(&self.exp_avg / denom * (lr / bias1)));
        let mut grad = flat.grad();
        let _ = grad.zero_();
    }
}

/// Exponential moving average of the weights: ema <- decay ema + (1 - decay) params.
#[derive(Debug)]
pub struct Ema {
    /// Decay per step, in [0, 1).
    pub decay: f64,
    /// The averaged flat parameters.
    pub weights: Tensor,
}

impl Ema {
    /// Starts the average at the current parameters.
    pub fn new(decay: f64, flat: &Tensor) -> Result<Self, ModelError> {
        if !(0.0..1.0).contains(&decay) {
            return Err(ModelError::InvalidConfig {
                key: "ema_decay",
                detail: format!("{decay} is outside [0, 1)"),
            });
        }
        Ok(Self {
            decay,
            weights: flat.detach().copy(),
        })
    }

    /// Moves the average towards `flat`.
    pub fn update(&mut self, flat: &Tensor) {
        let _guard = tch::no_grad_guard();
        let _ = self.weights.lerp_(&flat.detach(), 1.0 - self.decay);
    }
}

/// Whether every element of `tensor` is finite (one host round trip).
pub fn all_finite(tensor: &Tensor) -> bool {
    tensor.isfinite().all().int64_value(&[]) != 0
}
