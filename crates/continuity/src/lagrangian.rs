//! The Lagrangian form of the continuity equation: how the log-density changes along a trajectory.
//!
//! Along a solution of `dx/dt = v(x, t)`, the continuity equation `d rho/dt + div(rho v) = 0` becomes
//! `d/dt ln rho(x(t), t) = -div v(x(t), t)` (expand `div(rho v) = v . grad rho + rho div v` and use the chain
//! rule; Chen et al., *Neural Ordinary Differential Equations*, 2018, Theorem 1, the "instantaneous change of
//! variables"). So `ln rho(x(t1), t1) - ln rho(x(t0), t0) = -int_{t0}^{t1} div v(x(t), t) dt`, and a CNF's
//! log-likelihood is `log p1(x) = log p0(z) - int_0^1 div v dt` with the state integrated backwards from `x`.
//!
//! [`integrate_log_density`] integrates the augmented system `(dx/dt, dl/dt) = (v, -div v)` with the classical
//! fixed-step fourth-order Runge-Kutta method (Hairer, Norsett and Wanner, *Solving ODEs I*, sec. II.1); the
//! steps may go backwards in time (`end < start`). [`integrate_log_density_numeric`] does the same with the
//! divergence taken by [`numeric_divergence`]: central differences `sum_a [v_a(x + h e_a) - v_a(x - h e_a)] / (2h)`,
//! error `h^2 / 6` times third derivatives, exact for fields quadratic in `x`. These work in any number of
//! dimensions, not only the grids' 1 to 3.

use crate::error::{
    ContinuityError, Result, check_evaluation, check_evaluations, check_inputs, check_positive,
};

/// A fixed-step time interval: `n_steps` equal steps from `start` to `end` (which may lie before `start`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeSpan {
    /// The initial time.
    pub start: f64,
    /// The final time.
    pub end: f64,
    /// The number of Runge-Kutta steps, at least 1.
    pub n_steps: usize,
}

impl TimeSpan {
    /// Refuses non-finite times and zero steps.
    pub fn validate(&self) -> Result<()> {
        check_inputs("time span [start, end]", &[self.start, self.end])?;
        if self.n_steps == 0 {
            return Err(ContinuityError::InvalidParameter {
                name: "n_steps",
                value: 0.0,
                expected: "an integer >= 1",
            });
        }
        Ok(())
    }
}

/// Where a trajectory ends, how much its log-density changed, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LagrangianEnd {
    /// `x(end)`.
    pub position: Vec<f64>,
    /// `ln rho(x(end), end) - ln rho(x(start), start) = -int div v dt`.
    pub log_density_change: f64,
    /// Every call made to the velocity closure, including those inside a numeric divergence.
    pub velocity_evaluations: usize,
    /// Every divergence evaluated (closure calls or numeric divergences): four per step.
    pub divergence_evaluations: usize,
}

/// The divergence of `velocity` at `(x, t)` by central differences with step `step` along each axis.
/// `velocity(x, t, out)` writes `v(x, t)` (length `x.len()`) into `out`.
pub fn numeric_divergence<V>(velocity: V, x: &[f64], t: f64, step: f64) -> Result<f64>
where
    V: Fn(&[f64], f64, &mut [f64]),
{
    check_point("divergence location x", x)?;
    check_inputs("time t", &[t])?;
    check_positive("divergence step", step)?;
    let mut scratch = DivergenceScratch::new(x.len());
    scratch.divergence(&velocity, x, t, step)
}

/// Buffers for [`numeric_divergence`], allocated once per trajectory rather than once per evaluation.
struct DivergenceScratch {
    shifted: Vec<f64>,
    forward: Vec<f64>,
    backward: Vec<f64>,
}

impl DivergenceScratch {
    fn new(dims: usize) -> Self {
        Self {
            shifted: vec![0.0; dims],
            forward: vec![0.0; dims],
            backward: vec![0.0; dims],
        }
    }

    fn divergence<V>(&mut self, velocity: &V, x: &[f64], t: f64, step: f64) -> Result<f64>
    where
        V: Fn(&[f64], f64, &mut [f64]),
    {
        let mut divergence = 0.0;
        self.shifted.copy_from_slice(x);
        for (axis, &coordinate) in x.iter().enumerate() {
            let (ahead, behind) = (coordinate + step, coordinate - step);
            self.shifted[axis] = ahead;
            velocity(&self.shifted, t, &mut self.forward);
            check_evaluations("velocity", &self.shifted, t, &self.forward)?;
            self.shifted[axis] = behind;
            velocity(&self.shifted, t, &mut self.backward);
            check_evaluations("velocity", &self.shifted, t, &self.backward)?;
            self.shifted[axis] = coordinate;
            // Dividing by the represented distance rather than 2h removes the rounding of x +- h.
            divergence += (self.forward[axis] - self.backward[axis]) / (ahead - behind);
        }
        Ok(divergence)
    }
}

/// Integrates `dx/dt = v`, `d ln rho/dt = -div v` from `start` over `span` with RK4, with the divergence given by
/// the closure `divergence(x, t)`.
pub fn integrate_log_density<V, G>(
    velocity: V,
    divergence: G,
    start: &[f64],
    span: &TimeSpan,
) -> Result<LagrangianEnd>
where
    V: Fn(&[f64], f64, &mut [f64]),
    G: Fn(&[f64], f64) -> f64,
{
    integrate(
        &velocity,
        start,
        span,
        |x, t| check_evaluation("divergence", x, t, divergence(x, t)),
        0,
    )
}

/// As [`integrate_log_density`], with the divergence from [`numeric_divergence`] with step `divergence_step`.
pub fn integrate_log_density_numeric<V>(
    velocity: V,
    start: &[f64],
    span: &TimeSpan,
    divergence_step: f64,
) -> Result<LagrangianEnd>
where
    V: Fn(&[f64], f64, &mut [f64]),
{
    check_positive("divergence step", divergence_step)?;
    let mut scratch = DivergenceScratch::new(start.len());
    let calls_per_divergence = 2 * start.len();
    integrate(
        &velocity,
        start,
        span,
        |x, t| scratch.divergence(&velocity, x, t, divergence_step),
        calls_per_divergence,
    )
}

fn check_point(what: &'static str, x: &[f64]) -> Result<()> {
    if x.is_empty() {
        return Err(ContinuityError::EmptyPoint { what });
    }
    check_inputs(what, x)
}

/// The RK4 driver shared by both entry points. `calls_per_divergence` is how many velocity calls one divergence
/// makes, so the statistics count every velocity evaluation.
fn integrate<V, G>(
    velocity: &V,
    start: &[f64],
    span: &TimeSpan,
    mut divergence: G,
    calls_per_divergence: usize,
) -> Result<LagrangianEnd>
where
    V: Fn(&[f64], f64, &mut [f64]),
    G: FnMut(&[f64], f64) -> Result<f64>,
{
    check_point("trajectory start", start)?;
    span.validate()?;
    let dims = start.len();
    let step = (span.end - span.start) / span.n_steps as f64;
    let mut position = start.to_vec();
    let mut log_density_change = 0.0;
    let mut stage_point = vec![0.0; dims];
    let mut slopes = [vec![0.0; dims], vec![0.0; dims], vec![0.0; dims], vec![0.0; dims]];
    let mut log_slopes = [0.0; 4];
    // Stage k is evaluated at x + STAGE_OFFSET[k] * h * slope_{k-1}, t + STAGE_OFFSET[k] * h.
    const STAGE_OFFSET: [f64; 4] = [0.0, 0.5, 0.5, 1.0];
    const COMBINATION: [f64; 4] = [1.0 / 6.0, 2.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0];
    for step_idx in 0..span.n_steps {
        // Computing t from the index keeps rounding from accumulating over many steps.
        let t = span.start + step_idx as f64 * step;
        for stage in 0..4 {
            let offset = STAGE_OFFSET[stage] * step;
            if stage == 0 {
                stage_point.copy_from_slice(&position);
            } else {
                for ((point, &x), &slope) in stage_point.iter_mut().zip(&position).zip(&slopes[stage - 1]) {
                    *point = x + offset * slope;
                }
            }
            let stage_time = t + offset;
            velocity(&stage_point, stage_time, &mut slopes[stage]);
            check_evaluations("velocity", &stage_point, stage_time, &slopes[stage])?;
            log_slopes[stage] = -divergence(&stage_point, stage_time)?;
        }
        for (axis, x) in position.iter_mut().enumerate() {
            *x += step
                * (0..4)
                    .map(|stage| COMBINATION[stage] * slopes[stage][axis])
                    .sum::<f64>();
        }
        log_density_change += step
            * (0..4)
                .map(|stage| COMBINATION[stage] * log_slopes[stage])
                .sum::<f64>();
    }
    let divergence_evaluations = 4 * span.n_steps;
    Ok(LagrangianEnd {
        position,
        log_density_change,
        velocity_evaluations: divergence_evaluations * (1 + calls_per_divergence),
        divergence_evaluations,
    })
}
