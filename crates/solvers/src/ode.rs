//! The generic explicit Runge-Kutta driver: fixed or adaptive steps, forward or backward in time, dense output
//! at requested times, and cost statistics.
//!
//! Step-size control follows Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4: the error estimate
//! `err = h sum_i (b_i - b_hat_i) k_i` is measured in the weighted RMS norm of [`State::error_norm`], a step is
//! accepted when the norm is at most 1, and the next step is `h * clamp(safety * norm^(-1/(q+1)))` with `q` the
//! lower of the two orders; after a rejection the step may not grow. The initial step is Hairer's heuristic
//! (II.4, "Starting step size"), which costs one extra field evaluation. Dense output uses the method's
//! continuous extension when it has one (Dormand-Prince, Bogacki-Shampine) and cubic Hermite interpolation of
//! `(y, f)` at both ends of the step otherwise (II.6, eq. 6.7).

use crate::error::SolverError;
use crate::field::Field;
use crate::state::State;
use crate::tableau::{ButcherTableau, Method};

/// Adaptive step-size options. Defaults: `atol = 1e-6`, `rtol = 1e-3`, `safety = 0.9`, factors in
/// `[0.2, 10]`, `min_step = 1e-12`, no maximum step, `max_steps = 100_000`, automatic initial step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveOptions {
    /// Absolute tolerance, > 0.
    pub atol: f64,
    /// Relative tolerance, >= 0.
    pub rtol: f64,
    /// Safety factor on the optimal step, in (0, 1].
    pub safety: f64,
    /// Smallest ratio between consecutive steps, in (0, 1).
    pub min_factor: f64,
    /// Largest ratio between consecutive steps, > 1.
    pub max_factor: f64,
    /// Smallest step magnitude; asking for less is [`SolverError::StepSizeUnderflow`].
    pub min_step: f64,
    /// Largest step magnitude (`f64::INFINITY` for none).
    pub max_step: f64,
    /// Most step attempts, accepted plus rejected.
    pub max_steps: usize,
    /// The first step's magnitude; `None` selects it automatically (one extra field evaluation).
    pub initial_step: Option<f64>,
}

impl Default for AdaptiveOptions {
    fn default() -> Self {
        AdaptiveOptions {
            atol: 1e-6,
            rtol: 1e-3,
            safety: 0.9,
            min_factor: 0.2,
            max_factor: 10.0,
            min_step: 1e-12,
            max_step: f64::INFINITY,
            max_steps: 100_000,
            initial_step: None,
        }
    }
}

impl AdaptiveOptions {
    /// Default options with the given tolerances.
    pub fn with_tolerances(atol: f64, rtol: f64) -> Self {
        AdaptiveOptions {
            atol,
            rtol,
            ..Default::default()
        }
    }

    /// Checks every option against its allowed range.
    pub fn validate(&self) -> Result<(), SolverError> {
        let positive = |value: f64| value.is_finite() && value > 0.0;
        if !positive(self.atol) {
            return Err(SolverError::option("atol", self.atol, "a finite value > 0"));
        }
        if !(self.rtol.is_finite() && self.rtol >= 0.0) {
            return Err(SolverError::option("rtol", self.rtol, "a finite value >= 0"));
        }
        if !(positive(self.safety) && self.safety <= 1.0) {
            return Err(SolverError::option("safety", self.safety, "a value in (0, 1]"));
        }
        if !(positive(self.min_factor) && self.min_factor < 1.0) {
            return Err(SolverError::option(
                "min_factor",
                self.min_factor,
                "a value in (0, 1)",
            ));
        }
        if !(self.max_factor.is_finite() && self.max_factor > 1.0) {
            return Err(SolverError::option(
                "max_factor",
                self.max_factor,
                "a finite value > 1",
            ));
        }
        if !(self.min_step.is_finite() && self.min_step >= 0.0) {
            return Err(SolverError::option(
                "min_step",
                self.min_step,
                "a finite value >= 0",
            ));
        }
        if !(self.max_step > 0.0 && self.max_step >= self.min_step) {
            return Err(SolverError::option(
                "max_step",
                self.max_step,
                "a value > 0 and >= min_step",
            ));
        }
        if self.max_steps == 0 {
            return Err(SolverError::option("max_steps", self.max_steps, "at least 1"));
        }
        if let Some(initial_step) = self.initial_step
            && !positive(initial_step)
        {
            return Err(SolverError::option(
                "initial_step",
                initial_step,
                "a finite value > 0",
            ));
        }
        Ok(())
    }
}

/// How steps are chosen.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepControl {
    /// `n_steps` equal steps from the start time to the end time (any method; the embedded estimate of an
    /// adaptive tableau is not computed).
    Fixed {
        /// Number of steps, at least 1.
        n_steps: usize,
    },
    /// Error-controlled steps (methods with an embedded pair only).
    Adaptive(AdaptiveOptions),
}

/// A method and its step control.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdeOptions {
    /// The Runge-Kutta method.
    pub method: Method,
    /// Fixed or adaptive steps.
    pub control: StepControl,
}

impl OdeOptions {
    /// `n_steps` fixed steps of `method`.
    pub fn fixed(method: Method, n_steps: usize) -> Self {
        OdeOptions {
            method,
            control: StepControl::Fixed { n_steps },
        }
    }

    /// Adaptive `method` with tolerances `atol`, `rtol` and otherwise default options.
    pub fn adaptive(method: Method, atol: f64, rtol: f64) -> Self {
        OdeOptions {
            method,
            control: StepControl::Adaptive(AdaptiveOptions::with_tolerances(atol, rtol)),
        }
    }
}

/// What a solve cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SolverStats {
    /// Accepted steps.
    pub steps: usize,
    /// Rejected steps (adaptive only).
    pub rejected_steps: usize,
    /// Field evaluations, including the initial-step probe and any evaluation made only for dense output.
    pub field_evals: usize,
}

/// The result of a solve.
#[derive(Debug)]
pub struct Solution<S> {
    /// The state at the end time.
    pub state: S,
    /// The requested times (empty when none were requested).
    pub times: Vec<f64>,
    /// The state at each requested time, the first being the initial state.
    pub trajectory: Vec<S>,
    /// Cost of the solve.
    pub stats: SolverStats,
}

/// Integrates `dx/dt = field(t, x)` from `t0` to `t1` (either direction) and returns the final state.
pub fn solve<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    x0: S,
    t0: f64,
    t1: f64,
    options: &OdeOptions,
) -> Result<Solution<S>, SolverError> {
    check_times(&[t0, t1])?;
    integrate(field, x0, t0, t1, &[], options.method.tableau(), &options.control)
}

/// Integrates from `times[0]` to the last of `times` (strictly monotone, increasing or decreasing, at least two)
/// and returns the state at every one of them, interpolated with the method's dense output. Steps do not stop
/// at the requested times, so adding output times does not change the final state.
pub fn solve_with_trajectory<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    x0: S,
    times: &[f64],
    options: &OdeOptions,
) -> Result<Solution<S>, SolverError> {
    solve_tableau_with_trajectory(field, x0, times, options.method.tableau(), &options.control)
}

/// [`solve_with_trajectory`] with any tableau (for methods that are not built in).
pub fn solve_tableau_with_trajectory<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    x0: S,
    times: &[f64],
    tableau: &ButcherTableau,
    control: &StepControl,
) -> Result<Solution<S>, SolverError> {
    check_times(times)?;
    let (t0, t1) = (times[0], times[times.len() - 1]);
    integrate(field, x0, t0, t1, times, tableau, control)
}

/// Refuses empty, non-finite, or non-monotone time grids.
pub(crate) fn check_times(times: &[f64]) -> Result<(), SolverError> {
    if times.len() < 2 {
        return Err(SolverError::InvalidTimeGrid {
            reason: format!(
                "need at least a start and an end time, got {} time(s)",
                times.len()
            ),
        });
    }
    if let Some(idx) = times.iter().position(|t| !t.is_finite()) {
        return Err(SolverError::InvalidTimeGrid {
            reason: format!("times[{idx}] = {} is not finite", times[idx]),
        });
    }
    let direction = (times[1] - times[0]).signum();
    for idx in 1..times.len() {
        if (times[idx] - times[idx - 1]).signum() != direction || times[idx] == times[idx - 1] {
            return Err(SolverError::InvalidTimeGrid {
                reason: format!(
                    "times must be strictly monotone: times[{}] = {} then times[{idx}] = {}",
                    idx - 1,
                    times[idx - 1],
                    times[idx]
                ),
            });
        }
    }
    Ok(())
}

/// The `step_idx`-th of `n_steps + 1` equally spaced times from `t0` to `t1`; exact at both ends.
pub(crate) fn grid_time(t0: f64, t1: f64, step_idx: usize, n_steps: usize) -> f64 {
    if step_idx == n_steps {
        t1
    } else {
        t0 + (t1 - t0) * (step_idx as f64 / n_steps as f64)
    }
}

/// Work buffers and the one step routine shared by fixed and adaptive stepping.
struct Stepper<'a, S> {
    tableau: &'a ButcherTableau,
    /// Stage derivatives; `k[0]` is `f(t, y)` when `k0_valid`.
    k: Vec<S>,
    k0_valid: bool,
    stage: S,
    /// `f(t_new, y_new)` when it was computed for Hermite dense output of a non-FSAL method.
    f_new: Option<S>,
    evals: usize,
}

impl<'a, S: State> Stepper<'a, S> {
    fn new(tableau: &'a ButcherTableau, like: &S) -> Self {
        Stepper {
            tableau,
            k: (0..tableau.n_stages()).map(|_| like.clone_state()).collect(),
            k0_valid: false,
            stage: like.clone_state(),
            f_new: None,
            evals: 0,
        }
    }

    fn eval<F: Field<S> + ?Sized>(&mut self, field: &mut F, t: f64, x: &S) -> Result<S, SolverError> {
        self.evals += 1;
        field.eval(t, x)
    }

    fn ensure_k0<F: Field<S> + ?Sized>(&mut self, field: &mut F, t: f64, y: &S) -> Result<(), SolverError> {
        if !self.k0_valid {
            self.k[0] = self.eval(field, t, y)?;
            self.k0_valid = true;
        }
        Ok(())
    }

    /// Computes stages 2..s of the step `(t, y) -> t_new` (with `k[0]` valid) and returns `y_new`.
    fn attempt<F: Field<S> + ?Sized>(
        &mut self,
        field: &mut F,
        t: f64,
        y: &S,
        h: f64,
        t_new: f64,
    ) -> Result<S, SolverError> {
        let tableau = self.tableau;
        let n_stages = tableau.n_stages();
        for stage_idx in 1..n_stages {
            self.stage.copy_from(y);
            for (prev_idx, &a) in tableau.a[stage_idx].iter().enumerate() {
                if a != 0.0 {
                    self.stage.add_scaled(h * a, &self.k[prev_idx]);
                }
            }
            // A node of 1 is evaluated at exactly t_new, so the last step ends on the requested time.
            let c = tableau.c[stage_idx];
            let t_stage = if c == 1.0 { t_new } else { t + c * h };
            self.evals += 1;
            self.k[stage_idx] = field.eval(t_stage, &self.stage)?;
        }
        if tableau.fsal {
            // The last stage's argument is the new state (its row of A is b).
            return Ok(self.stage.clone_state());
        }
        let mut y_new = y.clone_state();
        for (stage_idx, &b) in tableau.b.iter().enumerate() {
            if b != 0.0 {
                y_new.add_scaled(h * b, &self.k[stage_idx]);
            }
        }
        Ok(y_new)
    }

    /// The embedded error estimate `h sum_i (b_i - b_hat_i) k_i` of the last attempt.
    fn error_estimate(&self, h: f64, into: &mut S) {
        let tableau = self.tableau;
        let embedded = tableau
            .b_embedded
            .expect("adaptive stepping needs an embedded pair");
        into.copy_from(&self.k[0]);
        into.scale(h * (tableau.b[0] - embedded[0]));
        for (stage_idx, (b, b_embedded)) in tableau.b.iter().zip(embedded).enumerate().skip(1) {
            let weight = b - b_embedded;
            if weight != 0.0 {
                into.add_scaled(h * weight, &self.k[stage_idx]);
            }
        }
    }

    /// The dense output at `t_out` inside the accepted step `(t, y) -> (t_new, y_new)`.
    fn interpolate<F: Field<S> + ?Sized>(
        &mut self,
        field: &mut F,
        step: (f64, &S, f64, &S),
        t_out: f64,
    ) -> Result<S, SolverError> {
        let (t, y, t_new, y_new) = step;
        if t_out == t_new {
            return Ok(y_new.clone_state());
        }
        if t_out == t {
            return Ok(y.clone_state());
        }
        let h = t_new - t;
        let theta = (t_out - t) / h;
        let mut out = y.clone_state();
        if let Some(dense) = self.tableau.dense {
            for (stage_idx, row) in dense.iter().enumerate() {
                let mut power = theta;
                let mut weight = 0.0;
                for &coefficient in row.iter() {
                    weight += coefficient * power;
                    power *= theta;
                }
                if weight != 0.0 {
                    out.add_scaled(h * weight, &self.k[stage_idx]);
                }
            }
            return Ok(out);
        }
        // Cubic Hermite on (y, f) at both ends; f at the end is the next step's first stage.
        if self.tableau.fsal {
            let last = self.tableau.n_stages() - 1;
            self.f_new = Some(self.k[last].clone_state());
        }
        if self.f_new.is_none() {
            let f_new = self.eval(field, t_new, y_new)?;
            self.f_new = Some(f_new);
        }
        let f_new = self.f_new.as_ref().expect("just computed");
        let theta2 = theta * theta;
        let theta3 = theta2 * theta;
        let h00 = 2.0 * theta3 - 3.0 * theta2 + 1.0;
        let h10 = theta3 - 2.0 * theta2 + theta;
        let h01 = -2.0 * theta3 + 3.0 * theta2;
        let h11 = theta3 - theta2;
        out.scale(h00);
        out.add_scaled(h * h10, &self.k[0]);
        out.add_scaled(h01, y_new);
        out.add_scaled(h * h11, f_new);
        Ok(out)
    }

    /// Moves the stepper past an accepted step: the FSAL stage or the dense-output evaluation becomes `k[0]`.
    fn advance(&mut self) {
        if self.tableau.fsal {
            let last = self.tableau.n_stages() - 1;
            self.k.swap(0, last);
            self.k0_valid = true;
            self.f_new = None;
        } else if let Some(f_new) = self.f_new.take() {
            self.k[0] = f_new;
            self.k0_valid = true;
        } else {
            self.k0_valid = false;
        }
    }
}

/// Emits the requested outputs that fall in the accepted step `(t, t_new]`.
struct Outputs<'o, S> {
    times: &'o [f64],
    next_idx: usize,
    direction: f64,
    states: Vec<S>,
}

impl<S: State> Outputs<'_, S> {
    fn emit<F: Field<S> + ?Sized>(
        &mut self,
        stepper: &mut Stepper<'_, S>,
        field: &mut F,
        step: (f64, &S, f64, &S),
    ) -> Result<(), SolverError> {
        while self.next_idx < self.times.len() && self.direction * (self.times[self.next_idx] - step.2) <= 0.0
        {
            let state = stepper.interpolate(field, step, self.times[self.next_idx])?;
            self.states.push(state);
            self.next_idx += 1;
        }
        Ok(())
    }
}

fn integrate<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    x0: S,
    t0: f64,
    t1: f64,
    output_times: &[f64],
    tableau: &ButcherTableau,
    control: &StepControl,
) -> Result<Solution<S>, SolverError> {
    let direction = (t1 - t0).signum();
    let mut outputs = Outputs {
        times: output_times,
        next_idx: 0,
        direction,
        states: Vec::new(),
    };
    if output_times.first() == Some(&t0) {
        outputs.states.push(x0.clone_state());
        outputs.next_idx = 1;
    }
    let mut stepper = Stepper::new(tableau, &x0);
    let (state, steps, rejected_steps) = match control {
        StepControl::Fixed { n_steps } => {
            if *n_steps == 0 {
                return Err(SolverError::option("n_steps", n_steps, "at least 1"));
            }
            let state = run_fixed(field, x0, t0, t1, *n_steps, &mut stepper, &mut outputs)?;
            (state, *n_steps, 0)
        }
        StepControl::Adaptive(options) => {
            options.validate()?;
            if !tableau.is_adaptive() {
                return Err(SolverError::option(
                    "method",
                    tableau.name,
                    "a method with an embedded error estimate (bosh3, dopri5) for adaptive steps",
                ));
            }
            run_adaptive(field, x0, t0, t1, options, &mut stepper, &mut outputs)?
        }
    };
    debug_assert_eq!(outputs.states.len(), output_times.len());
    Ok(Solution {
        state,
        times: output_times.to_vec(),
        trajectory: outputs.states,
        stats: SolverStats {
            steps,
            rejected_steps,
            field_evals: stepper.evals,
        },
    })
}

fn run_fixed<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    x0: S,
    t0: f64,
    t1: f64,
    n_steps: usize,
    stepper: &mut Stepper<'_, S>,
    outputs: &mut Outputs<'_, S>,
) -> Result<S, SolverError> {
    let mut y = x0;
    let mut t = t0;
    for step_idx in 0..n_steps {
        let t_new = grid_time(t0, t1, step_idx + 1, n_steps);
        let h = t_new - t;
        stepper.ensure_k0(field, t, &y)?;
        let y_new = stepper.attempt(field, t, &y, h, t_new)?;
        if !y_new.all_finite() {
            return Err(SolverError::NonFiniteState {
                t_reached: t,
                t_attempted: t_new,
            });
        }
        outputs.emit(stepper, field, (t, &y, t_new, &y_new))?;
        stepper.advance();
        y = y_new;
        t = t_new;
    }
    Ok(y)
}

/// Hairer's starting step (Solving ODEs I, II.4): balance the first step's local error estimate against
/// `atol + rtol |y0|`, with one probe evaluation at `t0 + h0`. Returns a positive magnitude.
fn initial_step<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    stepper: &mut Stepper<'_, S>,
    t0: f64,
    y0: &S,
    span: f64,
    direction: f64,
    options: &AdaptiveOptions,
) -> Result<f64, SolverError> {
    let (atol, rtol) = (options.atol, options.rtol);
    let f0 = &stepper.k[0];
    let d0 = S::error_norm(y0, y0, y0, atol, rtol);
    let d1 = S::error_norm(f0, y0, y0, atol, rtol);
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    let h0 = h0.min(options.max_step).min(span);
    let mut probe = y0.clone_state();
    probe.add_scaled(direction * h0, f0);
    let mut f1 = stepper.eval(field, t0 + direction * h0, &probe)?;
    f1.add_scaled(-1.0, &stepper.k[0]);
    let d2 = S::error_norm(&f1, y0, y0, atol, rtol) / h0;
    let largest = d1.max(d2);
    let order = stepper.tableau.order as f64;
    let h1 = if largest <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / largest).powf(1.0 / (order + 1.0))
    };
    let h = (100.0 * h0).min(h1).min(options.max_step).min(span);
    Ok(if h.is_finite() && h > 0.0 { h } else { h0 })
}

fn run_adaptive<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    x0: S,
    t0: f64,
    t1: f64,
    options: &AdaptiveOptions,
    stepper: &mut Stepper<'_, S>,
    outputs: &mut Outputs<'_, S>,
) -> Result<(S, usize, usize), SolverError> {
    let direction = (t1 - t0).signum();
    let span = (t1 - t0).abs();
    let tableau = stepper.tableau;
    let exponent = 1.0 / (tableau.order.min(tableau.embedded_order) as f64 + 1.0);
    let mut y = x0;
    let mut t = t0;
    stepper.ensure_k0(field, t, &y)?;
    if !stepper.k[0].all_finite() {
        return Err(SolverError::NonFiniteState {
            t_reached: t,
            t_attempted: t,
        });
    }
    let mut h_abs = match options.initial_step {
        Some(initial_step) => initial_step.min(options.max_step).min(span),
        None => initial_step(field, stepper, t, &y, span, direction, options)?,
    };
    let mut err = y.clone_state();
    let (mut steps, mut rejected_steps) = (0usize, 0usize);
    let mut rejected_last = false;
    let mut rejected_non_finite = false;
    while direction * (t1 - t) > 0.0 {
        if steps + rejected_steps >= options.max_steps {
            return Err(SolverError::MaxStepsExceeded {
                max_steps: options.max_steps,
                t,
                t_end: t1,
            });
        }
        let is_last = h_abs >= (t1 - t).abs();
        let t_new = if is_last { t1 } else { t + direction * h_abs };
        if h_abs < options.min_step || t_new == t {
            // Shrinking because the stages kept turning non-finite is a non-finite state, not a stiff problem.
            if rejected_non_finite {
                return Err(SolverError::NonFiniteState {
                    t_reached: t,
                    t_attempted: t_new,
                });
            }
            return Err(SolverError::StepSizeUnderflow {
                t,
                step: h_abs,
                min_step: options.min_step,
            });
        }
        let h = t_new - t;
        stepper.ensure_k0(field, t, &y)?;
        let y_new = stepper.attempt(field, t, &y, h, t_new)?;
        stepper.error_estimate(h, &mut err);
        let norm = S::error_norm(&err, &y, &y_new, options.atol, options.rtol);
        if !norm.is_finite() {
            // A non-finite slope at the accepted state cannot be cured by a smaller step; anything else might be.
            if !stepper.k[0].all_finite() {
                return Err(SolverError::NonFiniteState {
                    t_reached: t,
                    t_attempted: t_new,
                });
            }
            rejected_steps += 1;
            rejected_last = true;
            rejected_non_finite = true;
            h_abs *= options.min_factor;
            continue;
        }
        rejected_non_finite = false;
        if norm <= 1.0 {
            if !y_new.all_finite() {
                return Err(SolverError::NonFiniteState {
                    t_reached: t,
                    t_attempted: t_new,
                });
            }
            outputs.emit(stepper, field, (t, &y, t_new, &y_new))?;
            stepper.advance();
            y = y_new;
            t = t_new;
            steps += 1;
            let max_factor = if rejected_last { 1.0 } else { options.max_factor };
            let factor = if norm == 0.0 {
                max_factor
            } else {
                options.safety * norm.powf(-exponent)
            };
            h_abs = (h.abs() * factor.clamp(options.min_factor, max_factor)).min(options.max_step);
            rejected_last = false;
        } else {
            rejected_steps += 1;
            rejected_last = true;
            let factor = (options.safety * norm.powf(-exponent)).max(options.min_factor);
            h_abs = h.abs() * factor;
        }
    }
    Ok((y, steps, rejected_steps))
}
