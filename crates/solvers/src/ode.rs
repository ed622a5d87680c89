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
//!
//! The driver is public as a stepper, after diffsol's `OdeSolverMethod` (`step`, `interpolate`, with the solve
//! on top): [`OdeStepper::step`] takes one accepted step and returns a [`StepView`] of it (both ends, the step
//! size, and the velocity at its start, which every explicit method computes anyway), and
//! [`OdeStepper::interpolate`] gives the dense output inside that step. [`solve`], [`solve_with_trajectory`]
//! and [`solve_tableau_with_trajectory`] are one loop over it; [`solve_observed`] and
//! [`solve_observed_with_trajectory`] also show every accepted step to a [`StepObserver`], so quantities along
//! the path are observed instead of being recorded through a side-effecting field, and cost no evaluation:
//!
//! ```
//! use ferroflow_solvers::{FnField, FnObserver, Method, OdeOptions, StepView, solve, solve_observed};
//! use ndarray::{Array1, array};
//!
//! // The path energy sum |f(t_prev, x_prev)|^2 h of 64 Euler steps along dx/dt = -x.
//! let mut field = FnField(|_t: f64, x: &Array1<f64>| -x);
//! let options = OdeOptions::fixed(Method::Euler, 64);
//! let mut energy = 0.0;
//! let mut observer = FnObserver(|step: &StepView<'_, Array1<f64>>| {
//!     energy += step.velocity_prev.dot(step.velocity_prev) * step.h;
//! });
//! let observed = solve_observed(&mut field, array![1.0, 2.0], 0.0, 1.0, &options, &mut observer)?;
//! // |x0|^2 (1 - e^-2) / 2 in the limit of small steps.
//! assert!((energy - 5.0 * (1.0 - (-2.0f64).exp()) / 2.0).abs() < 0.1);
//! // Observing changes neither the result nor its cost.
//! let plain = solve(&mut field, array![1.0, 2.0], 0.0, 1.0, &options)?;
//! assert_eq!((observed.state, observed.stats), (plain.state, plain.stats));
//! # Ok::<(), ferroflow_solvers::SolverError>(())
//! ```

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
    solve_observed(field, x0, t0, t1, options, &mut NoObserver)
}

/// [`solve`], showing every accepted step to `observer` as it is taken. The observer sees the step's ends and
/// the velocity at its start, so it adds no field evaluation; an error it returns stops the solve and is
/// returned as it is.
pub fn solve_observed<S, F, O>(
    field: &mut F,
    x0: S,
    t0: f64,
    t1: f64,
    options: &OdeOptions,
    observer: &mut O,
) -> Result<Solution<S>, SolverError>
where
    S: State,
    F: Field<S> + ?Sized,
    O: StepObserver<S> + ?Sized,
{
    let stepper = OdeStepper::new(x0, t0, t1, options)?;
    drive(stepper, field, &[], observer)
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

/// [`solve_with_trajectory`], showing every accepted step to `observer` as it is taken (see
/// [`solve_observed`]). The observer sees each step before the requested times inside it are interpolated.
pub fn solve_observed_with_trajectory<S, F, O>(
    field: &mut F,
    x0: S,
    times: &[f64],
    options: &OdeOptions,
    observer: &mut O,
) -> Result<Solution<S>, SolverError>
where
    S: State,
    F: Field<S> + ?Sized,
    O: StepObserver<S> + ?Sized,
{
    check_times(times)?;
    let stepper = OdeStepper::new(x0, times[0], times[times.len() - 1], options)?;
    drive(stepper, field, times, observer)
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
    let stepper = OdeStepper::with_tableau(x0, times[0], times[times.len() - 1], tableau, control)?;
    drive(stepper, field, times, &mut NoObserver)
}

/// The one solve loop: steps `stepper` to its end time, shows every accepted step to `observer`, and
/// interpolates the requested `output_times` (already checked, starting at the stepper's start time or empty)
/// inside the step that reaches them.
fn drive<S, F, O>(
    mut stepper: OdeStepper<'_, S>,
    field: &mut F,
    output_times: &[f64],
    observer: &mut O,
) -> Result<Solution<S>, SolverError>
where
    S: State,
    F: Field<S> + ?Sized,
    O: StepObserver<S> + ?Sized,
{
    let direction = stepper.direction;
    let mut trajectory = Vec::with_capacity(output_times.len());
    let mut next_idx = 0;
    if output_times.first() == Some(&stepper.t()) {
        trajectory.push(stepper.state().clone_state());
        next_idx = 1;
    }
    while let Some(step) = stepper.step(field)? {
        observer.on_step(&step)?;
        let t_step = step.t;
        while next_idx < output_times.len() && direction * (output_times[next_idx] - t_step) <= 0.0 {
            trajectory.push(stepper.interpolate(field, output_times[next_idx])?);
            next_idx += 1;
        }
    }
    debug_assert_eq!(trajectory.len(), output_times.len());
    let stats = stepper.stats();
    Ok(Solution {
        state: stepper.into_state(),
        times: output_times.to_vec(),
        trajectory,
        stats,
    })
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

/// The `step_idx`-th of `n_steps + 1` equally spaced times from `t0` to `t1`; exact at both ends. The grid of
/// every fixed-step solve (ODE and SDE), public so that a solve outside the stepper can take the same times.
pub fn grid_time(t0: f64, t1: f64, step_idx: usize, n_steps: usize) -> f64 {
    if step_idx == n_steps {
        t1
    } else {
        t0 + (t1 - t0) * (step_idx as f64 / n_steps as f64)
    }
}

/// One accepted step, as [`OdeStepper::step`] returns it and a [`StepObserver`] sees it: the step
/// `(t_prev, state_prev) -> (t, state)` of size `h = t - t_prev`, and the velocity at its start.
///
/// `velocity_prev` is the method's first stage, which every explicit Runge-Kutta step computes anyway, so
/// left-endpoint sums along the path such as the path energy `sum |f(t_prev, state_prev)|^2 h` cost no field
/// evaluation.
#[derive(Debug)]
pub struct StepView<'s, S> {
    /// Index of this step among the accepted steps, from 0.
    pub step_idx: usize,
    /// Start time of the step.
    pub t_prev: f64,
    /// End time of the step (exactly the end time of the solve on the last step).
    pub t: f64,
    /// The step size `t - t_prev`; negative when integrating backwards in time.
    pub h: f64,
    /// The state at `t_prev`.
    pub state_prev: &'s S,
    /// The state at `t`.
    pub state: &'s S,
    /// `f(t_prev, state_prev)`: the field's value at the start of the step.
    pub velocity_prev: &'s S,
}

// Written out because deriving would ask for `S: Clone`, which a view of references does not need.
impl<S> Clone for StepView<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for StepView<'_, S> {}

/// Watches a solve one accepted step at a time (see [`solve_observed`], [`solve_observed_with_trajectory`]):
/// path energies, step-grid trajectories, step-size logs.
///
/// Implemented for closures `FnMut(&StepView<'_, S>) -> Result<(), SolverError>`; wrap an infallible closure
/// in [`FnObserver`]. An error stops the solve and is returned from it as it is;
/// [`SolverError::observer`] wraps an observer's own error type.
pub trait StepObserver<S> {
    /// Called once per accepted step, in order, after the step and before any dense output inside it.
    fn on_step(&mut self, step: &StepView<'_, S>) -> Result<(), SolverError>;
}

impl<S, O> StepObserver<S> for O
where
    O: FnMut(&StepView<'_, S>) -> Result<(), SolverError>,
{
    fn on_step(&mut self, step: &StepView<'_, S>) -> Result<(), SolverError> {
        self(step)
    }
}

/// Adapts an infallible closure `FnMut(&StepView<'_, S>)` to a [`StepObserver`].
#[derive(Clone, Debug)]
pub struct FnObserver<O>(pub O);

impl<S, O> StepObserver<S> for FnObserver<O>
where
    O: FnMut(&StepView<'_, S>),
{
    fn on_step(&mut self, step: &StepView<'_, S>) -> Result<(), SolverError> {
        (self.0)(step);
        Ok(())
    }
}

/// The observer of the unobserved solves.
struct NoObserver;

impl<S> StepObserver<S> for NoObserver {
    fn on_step(&mut self, _step: &StepView<'_, S>) -> Result<(), SolverError> {
        Ok(())
    }
}

/// The step controller's state.
#[derive(Debug)]
enum Control<S> {
    /// `n_steps` equal steps; the step index is the stepper's accepted step count.
    Fixed { n_steps: usize },
    /// Error-controlled steps.
    Adaptive {
        options: AdaptiveOptions,
        /// `1 / (q + 1)` with `q` the lower order of the embedded pair.
        exponent: f64,
        /// Magnitude of the next step to try; `None` until the first step chooses it.
        h_abs: Option<f64>,
        /// The embedded error estimate of the last attempt (a work buffer).
        err: S,
    },
}

/// An explicit Runge-Kutta integration of `dx/dt = f(t, x)` from `t0` to `t1`, one accepted step at a time;
/// the solve functions of this module are one loop over it.
///
/// Each [`step`](OdeStepper::step) takes one accepted step (adaptive rejections happen inside it and are
/// counted in [`stats`](OdeStepper::stats)) and returns a [`StepView`] of it;
/// [`interpolate`](OdeStepper::interpolate) gives the dense output inside the last accepted step. The same
/// field must be passed to every call: the first stage of a step is reused from the previous one (FSAL, and the
/// end-of-step evaluation of Hermite dense output).
///
/// ```
/// use ferroflow_solvers::{FnField, Method, OdeOptions, OdeStepper};
/// use ndarray::array;
///
/// // dx/dt = -x, adaptive Dormand-Prince, stepped by hand; the state halfway through the first step.
/// let mut field = FnField(|_t: f64, x: &ndarray::Array1<f64>| -x);
/// let options = OdeOptions::adaptive(Method::Dopri5, 1e-8, 1e-8);
/// let mut stepper = OdeStepper::new(array![1.0], 0.0, 1.0, &options)?;
/// let first = stepper.step(&mut field)?.expect("the solve has not reached t = 1");
/// let t_mid = 0.5 * (first.t_prev + first.t);
/// let mid = stepper.interpolate(&mut field, t_mid)?;
/// assert!((mid[0] - (-t_mid).exp()).abs() < 1e-8);
/// while stepper.step(&mut field)?.is_some() {}
/// assert!(stepper.is_finished() && stepper.t() == 1.0);
/// assert!((stepper.state()[0] - (-1.0f64).exp()).abs() < 1e-7);
/// # Ok::<(), ferroflow_solvers::SolverError>(())
/// ```
///
/// After an error the stepper stays at its last accepted step and has no step to interpolate in; stepping
/// again retries from there, at the cost of more field evaluations.
#[derive(Debug)]
pub struct OdeStepper<'a, S> {
    stages: Stages<'a, S>,
    control: Control<S>,
    t0: f64,
    t1: f64,
    /// `+1` forwards in time, `-1` backwards.
    direction: f64,
    t_prev: f64,
    t: f64,
    y_prev: S,
    y: S,
    /// Work buffer each attempt builds its new state in; it trades places with `y` on acceptance, so the
    /// stepper itself allocates no state per step (the field's values are the field's).
    y_next: S,
    /// Whether `(t_prev, y_prev) -> (t, y)` is a step the stage derivatives still describe: true from an
    /// accepted step until the next step begins (which first moves the reusable derivative into `k[0]`).
    has_last_step: bool,
    steps: usize,
    rejected_steps: usize,
}

impl<'a, S: State> OdeStepper<'a, S> {
    /// A stepper for `options` (a built-in method) from `(t0, x0)` to `t1`. Refuses equal or non-finite times and
    /// out-of-range options; evaluates nothing.
    pub fn new(x0: S, t0: f64, t1: f64, options: &OdeOptions) -> Result<Self, SolverError> {
        Self::with_tableau(x0, t0, t1, options.method.tableau(), &options.control)
    }

    /// A stepper for any tableau (for methods that are not built in). Adaptive control needs an embedded pair.
    pub fn with_tableau(
        x0: S,
        t0: f64,
        t1: f64,
        tableau: &'a ButcherTableau,
        control: &StepControl,
    ) -> Result<Self, SolverError> {
        check_times(&[t0, t1])?;
        let control = match control {
            StepControl::Fixed { n_steps } => {
                if *n_steps == 0 {
                    return Err(SolverError::option("n_steps", n_steps, "at least 1"));
                }
                Control::Fixed { n_steps: *n_steps }
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
                Control::Adaptive {
                    options: options.clone(),
                    exponent: 1.0 / (tableau.order.min(tableau.embedded_order) as f64 + 1.0),
                    h_abs: None,
                    err: x0.clone_state(),
                }
            }
        };
        Ok(OdeStepper {
            stages: Stages::new(tableau, &x0),
            control,
            t0,
            t1,
            direction: (t1 - t0).signum(),
            t_prev: t0,
            t: t0,
            y_prev: x0.clone_state(),
            y_next: x0.clone_state(),
            // The buffers rotate and are written in place, so the caller's state must not be one of them: a
            // tensor passed by value may still share its storage with the caller's (a shallow clone).
            y: x0.clone_state(),
            has_last_step: false,
            steps: 0,
            rejected_steps: 0,
        })
    }

    /// The time reached.
    pub fn t(&self) -> f64 {
        self.t
    }

    /// The state at [`t`](OdeStepper::t).
    pub fn state(&self) -> &S {
        &self.y
    }

    /// The time the stepper integrates to.
    pub fn end_time(&self) -> f64 {
        self.t1
    }

    /// Whether the end time is reached; [`step`](OdeStepper::step) then returns `None`.
    pub fn is_finished(&self) -> bool {
        match self.control {
            // Counting steps rather than comparing times: the last grid time is the end time by construction.
            Control::Fixed { n_steps } => self.steps == n_steps,
            Control::Adaptive { .. } => self.direction * (self.t1 - self.t) <= 0.0,
        }
    }

    /// What the integration has cost so far.
    pub fn stats(&self) -> SolverStats {
        SolverStats {
            steps: self.steps,
            rejected_steps: self.rejected_steps,
            field_evals: self.stages.evals,
        }
    }

    /// Takes one accepted step and returns it, or `None` when the end time is already reached. Adaptive
    /// stepping retries rejected attempts inside this call; its first call also chooses the initial step.
    pub fn step<F: Field<S> + ?Sized>(
        &mut self,
        field: &mut F,
    ) -> Result<Option<StepView<'_, S>>, SolverError> {
        if self.is_finished() {
            return Ok(None);
        }
        // Moving past the last step waits until here, so that its stage derivatives (the dense output and the
        // view's `velocity_prev`) stay valid for as long as the caller may look at that step.
        if self.has_last_step {
            self.stages.advance();
            self.has_last_step = false;
        }
        let t_new = match self.control {
            Control::Fixed { .. } => self.attempt_fixed(field)?,
            Control::Adaptive { .. } => self.attempt_adaptive(field)?,
        };
        // The accepted state is in `y_next`: rotate the buffers so that no state is allocated.
        std::mem::swap(&mut self.y_prev, &mut self.y);
        std::mem::swap(&mut self.y, &mut self.y_next);
        self.t_prev = self.t;
        self.t = t_new;
        self.steps += 1;
        self.has_last_step = true;
        Ok(Some(StepView {
            step_idx: self.steps - 1,
            t_prev: self.t_prev,
            t: self.t,
            h: self.t - self.t_prev,
            state_prev: &self.y_prev,
            state: &self.y,
            velocity_prev: &self.stages.k[0],
        }))
    }

    /// The dense output at `t_out` inside the last accepted step (ends included): the method's continuous
    /// extension, or cubic Hermite interpolation, which evaluates the field once at the step's end unless the
    /// method is FSAL (that evaluation is then reused as the next step's first stage). Before the first step
    /// and after an error only the current time can be asked for; any other time is
    /// [`SolverError::InvalidTimeGrid`].
    pub fn interpolate<F: Field<S> + ?Sized>(&mut self, field: &mut F, t_out: f64) -> Result<S, SolverError> {
        let t_start = if self.has_last_step { self.t_prev } else { self.t };
        let inside = self.direction * (t_out - t_start) >= 0.0 && self.direction * (self.t - t_out) >= 0.0;
        if !inside {
            return Err(SolverError::InvalidTimeGrid {
                reason: format!(
                    "t = {t_out} is outside the last accepted step [{t_start}, {}] (in the direction of \
                     integration)",
                    self.t
                ),
            });
        }
        if !self.has_last_step {
            return Ok(self.y.clone_state());
        }
        self.stages
            .interpolate(field, (self.t_prev, &self.y_prev, self.t, &self.y), t_out)
    }

    /// The final state, once [`is_finished`](OdeStepper::is_finished) (otherwise the state at
    /// [`t`](OdeStepper::t)).
    pub fn into_state(self) -> S {
        self.y
    }

    /// The final state and the cost as a [`Solution`] without trajectory.
    pub fn into_solution(self) -> Solution<S> {
        let stats = self.stats();
        Solution {
            state: self.y,
            times: Vec::new(),
            trajectory: Vec::new(),
            stats,
        }
    }

    /// One step on the fixed grid into `y_next`; returns its end time.
    fn attempt_fixed<F: Field<S> + ?Sized>(&mut self, field: &mut F) -> Result<f64, SolverError> {
        let Control::Fixed { n_steps } = self.control else {
            unreachable!("called for fixed control only")
        };
        let t = self.t;
        let t_new = grid_time(self.t0, self.t1, self.steps + 1, n_steps);
        let h = t_new - t;
        self.stages.ensure_k0(field, t, &self.y)?;
        self.stages
            .attempt(field, t, &self.y, h, t_new, &mut self.y_next)?;
        if !self.y_next.all_finite() {
            return Err(SolverError::NonFiniteState {
                t_reached: t,
                t_attempted: t_new,
            });
        }
        Ok(t_new)
    }

    /// Attempts steps from `(t, y)` until one is accepted, its state in `y_next`; returns its end time and sets
    /// the size of the step after it.
    fn attempt_adaptive<F: Field<S> + ?Sized>(&mut self, field: &mut F) -> Result<f64, SolverError> {
        let OdeStepper {
            stages,
            control,
            t1,
            direction,
            t,
            y,
            y_next,
            steps,
            rejected_steps,
            ..
        } = self;
        let Control::Adaptive {
            options,
            exponent,
            h_abs: h_abs_next,
            err,
        } = control
        else {
            unreachable!("called for adaptive control only")
        };
        let (t, t1, direction, exponent) = (*t, *t1, *direction, *exponent);
        let mut h_abs = match *h_abs_next {
            Some(h_abs) => h_abs,
            None => {
                stages.ensure_k0(field, t, y)?;
                if !stages.k[0].all_finite() {
                    return Err(SolverError::NonFiniteState {
                        t_reached: t,
                        t_attempted: t,
                    });
                }
                let span = (t1 - t).abs();
                match options.initial_step {
                    Some(initial_step) => initial_step.min(options.max_step).min(span),
                    None => initial_step(field, stages, t, y, span, direction, options)?,
                }
            }
        };
        let mut rejected_last = false;
        let mut rejected_non_finite = false;
        loop {
            if *steps + *rejected_steps >= options.max_steps {
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
            stages.ensure_k0(field, t, y)?;
            stages.attempt(field, t, y, h, t_new, y_next)?;
            stages.error_estimate(h, err);
            let norm = S::error_norm(err, y, y_next, options.atol, options.rtol);
            if !norm.is_finite() {
                // A non-finite slope at the accepted state cannot be cured by a smaller step; anything else might be.
                if !stages.k[0].all_finite() {
                    return Err(SolverError::NonFiniteState {
                        t_reached: t,
                        t_attempted: t_new,
                    });
                }
                *rejected_steps += 1;
                rejected_last = true;
                rejected_non_finite = true;
                h_abs *= options.min_factor;
                continue;
            }
            rejected_non_finite = false;
            if norm <= 1.0 {
                if !y_next.all_finite() {
                    return Err(SolverError::NonFiniteState {
                        t_reached: t,
                        t_attempted: t_new,
                    });
                }
                let max_factor = if rejected_last { 1.0 } else { options.max_factor };
                let factor = if norm == 0.0 {
                    max_factor
                } else {
                    options.safety * norm.powf(-exponent)
                };
                *h_abs_next =
                    Some((h.abs() * factor.clamp(options.min_factor, max_factor)).min(options.max_step));
                return Ok(t_new);
            }
            *rejected_steps += 1;
            rejected_last = true;
            let factor = (options.safety * norm.powf(-exponent)).max(options.min_factor);
            h_abs = h.abs() * factor;
        }
    }
}

/// The stage derivatives and work buffers of one Runge-Kutta step, and the routines on them: attempting a
/// step, its error estimate, dense output inside it, and moving on past it.
#[derive(Debug)]
struct Stages<'a, S> {
    tableau: &'a ButcherTableau,
    /// Stage derivatives; `k[0]` is `f(t, y)` when `k0_valid`.
    k: Vec<S>,
    k0_valid: bool,
    stage: S,
    /// `f(t_new, y_new)` when it was computed for Hermite dense output of a non-FSAL method.
    f_new: Option<S>,
    evals: usize,
}

impl<'a, S: State> Stages<'a, S> {
    fn new(tableau: &'a ButcherTableau, like: &S) -> Self {
        Stages {
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

    /// Computes stages 2..s of the step `(t, y) -> t_new` (with `k[0]` valid) and writes `y_new`.
    fn attempt<F: Field<S> + ?Sized>(
        &mut self,
        field: &mut F,
        t: f64,
        y: &S,
        h: f64,
        t_new: f64,
        y_new: &mut S,
    ) -> Result<(), SolverError> {
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
            // The last stage's argument is the new state (its row of A is b); the buffers trade places rather
            // than copy, as every stage overwrites `stage` before use.
            std::mem::swap(&mut self.stage, y_new);
            return Ok(());
        }
        y_new.copy_from(y);
        for (stage_idx, &b) in tableau.b.iter().enumerate() {
            if b != 0.0 {
                y_new.add_scaled(h * b, &self.k[stage_idx]);
            }
        }
        Ok(())
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
        // Cubic Hermite on (y, f) at both ends; f at the end is the FSAL stage, or one evaluation that the next
        // step reuses as its first stage.
        if !self.tableau.fsal && self.f_new.is_none() {
            let f_new = self.eval(field, t_new, y_new)?;
            self.f_new = Some(f_new);
        }
        let f_new = if self.tableau.fsal {
            &self.k[self.tableau.n_stages() - 1]
        } else {
            self.f_new.as_ref().expect("just computed")
        };
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

    /// Moves past an accepted step: the FSAL stage or the dense-output evaluation becomes `k[0]`.
    fn advance(&mut self) {
        if self.tableau.fsal {
            let last = self.tableau.n_stages() - 1;
            self.k.swap(0, last);
            self.k0_valid = true;
        } else if let Some(f_new) = self.f_new.take() {
            self.k[0] = f_new;
            self.k0_valid = true;
        } else {
            self.k0_valid = false;
        }
    }
}

/// Hairer's starting step (Solving ODEs I, II.4): balance the first step's local error estimate against
/// `atol + rtol |y0|`, with one probe evaluation at `t0 + h0`. Returns a positive magnitude.
fn initial_step<S: State, F: Field<S> + ?Sized>(
    field: &mut F,
    stages: &mut Stages<'_, S>,
    t0: f64,
    y0: &S,
    span: f64,
    direction: f64,
    options: &AdaptiveOptions,
) -> Result<f64, SolverError> {
    let (atol, rtol) = (options.atol, options.rtol);
    let f0 = &stages.k[0];
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
    let mut f1 = stages.eval(field, t0 + direction * h0, &probe)?;
    f1.add_scaled(-1.0, &stages.k[0]);
    let d2 = S::error_norm(&f1, y0, y0, atol, rtol) / h0;
    let largest = d1.max(d2);
    let order = stages.tableau.order as f64;
    let h1 = if largest <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / largest).powf(1.0 / (order + 1.0))
    };
    let h = (100.0 * h0).min(h1).min(options.max_step).min(span);
    Ok(if h.is_finite() && h > 0.0 { h } else { h0 })
}
