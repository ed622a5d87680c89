//! Log-likelihood of a continuous normalizing flow by the instantaneous change of variables, and bits per
//! dimension.
//!
//! Along a trajectory of `dx/dt = v(t, x)`, `d/dt log p_t(x(t)) = -div v(t, x(t))` (Chen et al. 2018, "Neural
//! Ordinary Differential Equations", Theorem 1). Integrating the augmented state `(x, l)` with
//! `dl/dt = div v` from `t = 1` (data, `l = 0`) to `t = 0` (source) gives `x0 = x(0)` and
//! `l(0) = -int_0^1 div v dt`, so `log p1(x) = log p0(x0) - int_0^1 div v(t, x(t)) dt`.

use crate::error::SolverError;
use crate::field::{DivergenceField, Field};
use crate::ode::{OdeOptions, SolverStats, solve};
use crate::state::{Augmented, SampleBatch, State};

/// The result of [`log_likelihood`], one value per sample.
#[derive(Debug)]
pub struct LogLikelihood<S: SampleBatch> {
    /// `log p1(x)`: the model's log-density of each input sample.
    pub log_density: S::PerSample,
    /// `log p0(x0)`: the source log-density at the end of the backward solve.
    pub source_log_density: S::PerSample,
    /// `int_0^1 div v(t, x(t)) dt` along each trajectory.
    pub divergence_integral: S::PerSample,
    /// The samples mapped back to the source, `x(0)`.
    pub x0: S,
    /// Cost of the solve (steps over the augmented state).
    pub stats: SolverStats,
}

/// `log N(x; 0, I)` per sample: the usual source log-density.
pub fn standard_normal_log_density<S: SampleBatch>(x: &S) -> S::PerSample {
    x.standard_normal_log_density()
}

/// Turns a [`DivergenceField`] into a [`Field`] on the augmented state `(x, l)` with `dl/dt = div v`.
struct AugmentedField<'a, F: ?Sized>(&'a mut F);

impl<S: SampleBatch, F: DivergenceField<S> + ?Sized> Field<Augmented<S, S::PerSample>>
    for AugmentedField<'_, F>
{
    fn eval(
        &mut self,
        t: f64,
        state: &Augmented<S, S::PerSample>,
    ) -> Result<Augmented<S, S::PerSample>, SolverError> {
        let (velocity, divergence) = self.0.eval_with_divergence(t, &state.x)?;
        Ok(Augmented {
            x: velocity,
            integral: divergence,
        })
    }
}

/// `log p1(x)` of the samples `x1` under the flow of `field` from a source with log-density
/// `source_log_density` (e.g. [`standard_normal_log_density`]).
///
/// Integrates `(x, l)` from `t = 1` to `t = 0` with `options` (any method, fixed or adaptive; the adaptive error
/// norm is one RMS over `x` and `l`). The field's divergence may be exact or estimated; see the contract on
/// [`DivergenceField`].
pub fn log_likelihood<S, F, L>(
    field: &mut F,
    x1: &S,
    mut source_log_density: L,
    options: &OdeOptions,
) -> Result<LogLikelihood<S>, SolverError>
where
    S: SampleBatch,
    F: DivergenceField<S> + ?Sized,
    L: FnMut(&S) -> S::PerSample,
{
    let start = Augmented {
        x: x1.clone_state(),
        integral: x1.zeros_per_sample(),
    };
    let solution = solve(&mut AugmentedField(field), start, 1.0, 0.0, options)?;
    let Augmented { x: x0, integral } = solution.state;
    // integral = int_1^0 div v dt = -int_0^1 div v dt, so log p1 = log p0 + integral.
    let source = source_log_density(&x0);
    let mut log_density = source.clone_state();
    log_density.add_scaled(1.0, &integral);
    let mut divergence_integral = integral;
    divergence_integral.scale(-1.0);
    Ok(LogLikelihood {
        log_density,
        source_log_density: source,
        divergence_integral,
        x0,
        stats: solution.stats,
    })
}

/// How 8-bit data were dequantised and scaled before the model saw them; fixes the log-determinant that
/// [`bits_per_dim`] adds back.
///
/// Every variant starts from integer pixels `k in {0, ..., 255}` dequantised with uniform noise,
/// `u = k + U(0, 1)` in `[0, 256)`. A model density `p(y)` on the scaled data `y = s u + o` is a density on `u` of
/// `p(y) * s^D`, and the (Jensen) bound on the discrete log-likelihood is `log P(k) >= E_u[log p(y) + D ln s]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataScaling {
    /// The model sees `u` itself, in `[0, 256)`: `s = 1`.
    Dequantized,
    /// `y = u / 256`, in `[0, 1)`: `s = 1/256`, so `D ln 256` is subtracted.
    UnitInterval,
    /// `y = 2 u / 256 - 1`, in `[-1, 1)`: `s = 1/128`, so `D ln 128 = D (ln 256 - ln 2)` is subtracted.
    Symmetric,
}

impl DataScaling {
    /// `ln s` for one dimension.
    pub fn log_scale_per_dim(self) -> f64 {
        match self {
            DataScaling::Dequantized => 0.0,
            DataScaling::UnitInterval => -(256f64.ln()),
            DataScaling::Symmetric => -(128f64.ln()),
        }
    }
}

/// Bits per dimension of one sample: `bpd = -(log p(y) + D ln s) / (D ln 2)`, with `ln s` from `scaling`;
/// for data scaled to `[0, 1]` that is `-(log p(y) - D ln 256) / (D ln 2)`.
///
/// A density uniform over the data's range scores exactly 8 bits with every scaling.
pub fn bits_per_dim(log_density: f64, dim: usize, scaling: DataScaling) -> f64 {
    let dim = dim as f64;
    -(log_density + dim * scaling.log_scale_per_dim()) / (dim * std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_density_scores_eight_bits_under_every_scaling() {
        let dim = 3072;
        // Uniform on [0, 256)^D, [0, 1)^D and [-1, 1)^D.
        let cases = [
            (DataScaling::Dequantized, -(dim as f64) * 256f64.ln()),
            (DataScaling::UnitInterval, 0.0),
            (DataScaling::Symmetric, -(dim as f64) * 2f64.ln()),
        ];
        for (scaling, log_density) in cases {
            let bpd = bits_per_dim(log_density, dim, scaling);
            assert!((bpd - 8.0).abs() < 1e-12, "{scaling:?}: {bpd}");
        }
    }

    #[test]
    fn unit_interval_matches_the_documented_formula() {
        let (log_density, dim) = (1234.5, 784usize);
        let d = dim as f64;
        let expected = -(log_density - d * 256f64.ln()) / (d * 2f64.ln());
        assert!((bits_per_dim(log_density, dim, DataScaling::UnitInterval) - expected).abs() < 1e-12);
        // [-1, 1] has half the log-det per dimension less: exactly one bit fewer than [0, 1].
        let symmetric = bits_per_dim(log_density, dim, DataScaling::Symmetric);
        assert!((expected - symmetric - 1.0).abs() < 1e-12);
    }
}
