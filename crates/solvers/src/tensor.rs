//! The solver traits for `tch::Tensor` (feature `tch`).
//!
//! Solver arithmetic runs under `tch::no_grad` and copies are detached: the integrators do not build autograd
//! graphs through their steps (a field may still use autograd inside `eval`, e.g. for divergences). The
//! adaptive error norm is computed on the tensor's device and comes back as one `f64` (one synchronisation per
//! step attempt); [`State::all_finite`] is another, checked once per accepted step. `SampleBatch` treats
//! dimension 0 as the batch and flattens the rest into the sample.
//!
//! ```no_run
//! use ferroflow_solvers::{Method, OdeOptions, SolverError, solve, solve_with_trajectory};
//! use tch::{Device, Kind, Tensor};
//!
//! // Any closure (or type implementing `Field<Tensor>`) is a velocity field; a network goes in its body.
//! let mut field = |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(x * (-t)) };
//! let x0 = Tensor::randn([128, 2], (Kind::Float, Device::Cpu));
//! // 100 Euler steps from noise (t = 0) to data (t = 1).
//! let samples = solve(&mut field, x0.copy(), 0.0, 1.0, &OdeOptions::fixed(Method::Euler, 100))?.state;
//! // Adaptive dopri5 with the states at 11 times (trajectory[0] is x0).
//! let times: Vec<f64> = (0..=10).map(|step| step as f64 / 10.0).collect();
//! let options = OdeOptions::adaptive(Method::Dopri5, 1e-5, 1e-5);
//! let solution = solve_with_trajectory(&mut field, x0, &times, &options)?;
//! println!("{} states, {:?}", solution.trajectory.len(), solution.stats);
//! # Ok::<(), SolverError>(())
//! ```

use rand::Rng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

use crate::sde::NoiseSource;
use crate::state::{SampleBatch, State};

impl State for Tensor {
    fn clone_state(&self) -> Self {
        tch::no_grad(|| self.detach().copy())
    }

    fn copy_from(&mut self, other: &Self) {
        tch::no_grad(|| self.copy_(other));
    }

    fn add_scaled(&mut self, a: f64, other: &Self) {
        tch::no_grad(|| {
            let _ = self.g_add_(&(other * a));
        });
    }

    fn scale(&mut self, a: f64) {
        tch::no_grad(|| {
            let _ = self.g_mul_scalar_(a);
        });
    }

    fn mul_elementwise(&mut self, other: &Self) {
        tch::no_grad(|| {
            let _ = self.g_mul_(other);
        });
    }

    fn n_elements(&self) -> usize {
        self.numel()
    }

    fn all_finite(&self) -> bool {
        tch::no_grad(|| self.isfinite().all().int64_value(&[]) != 0)
    }

    fn error_sum_squares(err: &Self, y0: &Self, y1: &Self, atol: f64, rtol: f64) -> f64 {
        tch::no_grad(|| {
            let weight = y0.abs().maximum(&y1.abs()) * rtol + atol;
            let ratio = err / weight;
            (&ratio * &ratio).sum(Kind::Double).double_value(&[])
        })
    }
}

impl SampleBatch for Tensor {
    type PerSample = Tensor;

    fn n_samples(&self) -> usize {
        self.size().first().map_or(0, |&n_samples| n_samples as usize)
    }

    fn sample_dim(&self) -> usize {
        self.numel().checked_div(self.n_samples()).unwrap_or(0)
    }

    fn zeros_per_sample(&self) -> Tensor {
        Tensor::zeros([self.n_samples() as i64], (self.kind(), self.device()))
    }

    fn standard_normal_log_density(&self) -> Tensor {
        tch::no_grad(|| {
            let n_samples = self.n_samples() as i64;
            let log_normaliser = 0.5 * self.sample_dim() as f64 * (2.0 * std::f64::consts::PI).ln();
            let flat = self.reshape([n_samples, -1]);
            (&flat * &flat).sum_dim_intlist([1i64].as_slice(), false, self.kind()) * -0.5 - log_normaliser
        })
    }
}

/// Standard normal draws from a `rand::Rng`: made in f64 on the CPU, then moved to the tensor's kind and device,
/// so a seeded generator reproduces the same noise on every device.
impl<R: Rng + ?Sized> NoiseSource<Tensor> for R {
    fn standard_normal_like(&mut self, like: &Tensor) -> Tensor {
        let draws: Vec<f64> = (0..like.numel()).map(|_| self.sample(StandardNormal)).collect();
        Tensor::from_slice(&draws)
            .reshape(like.size())
            .to_kind(like.kind())
            .to_device(like.device())
    }
}

/// Standard normal draws from libtorch's own generator (seed it with `tch::manual_seed`), made on the tensor's
/// device: faster for large GPU batches than drawing on the CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct TorchNoise;

impl NoiseSource<Tensor> for TorchNoise {
    fn standard_normal_like(&mut self, like: &Tensor) -> Tensor {
        tch::no_grad(|| like.randn_like())
    }
}
