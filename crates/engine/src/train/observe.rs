//! The one training loop and its observer seam (after argmin's executor and observers): a [`Trainable`]
//! takes steps, [`execute`] runs them and calls every [`Observer`] at the start, after each step and at the
//! end. Progress display, the loss curve, checkpoints and the NaN guard are observers, so the flow trainer
//! and the classifier trainer share the loop and a caller adds its own watcher without touching it.
//!
//! Observers run in the order given; one that returns an error stops the run (the others still get
//! [`Observer::on_finish`]). They record what others need in the run's [`Journal`]: the loss curve (read by
//! the checkpoint writer) and the step of the last checkpoint (named by the NaN guard's error).

use crate::error::TrainError;

/// One recorded point of the loss curve: the mean loss over the `log_every` steps ending at `step`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossPoint {
    /// Last step of the window (1-based).
    pub step: usize,
    /// Mean training loss over the window.
    pub loss: f64,
}

/// What observers record for one another during a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Journal {
    /// The loss curve from step 1 (restored from the checkpoint when resuming).
    pub loss_curve: Vec<LossPoint>,
    /// The step of the last checkpoint written (the first step's predecessor until one is written).
    pub last_checkpoint: usize,
    /// The loss window not yet recorded: sum and count of the losses since the last point of the curve.
    /// Checkpoints keep it, so a run interrupted in the middle of a window resumes to the same curve.
    pub loss_window: (f64, usize),
    /// Training seconds of the run up to the last checkpoint, over every invocation (recorded in it).
    pub train_seconds: f64,
}

/// The step just taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    /// The step (1-based).
    pub step: usize,
    /// The last step of the run.
    pub total: usize,
    /// The training loss of this step.
    pub loss: f64,
}

/// Something that trains step by step.
pub trait Trainable {
    /// What observers see of it (the weights and optimizer state a checkpoint saves, ...).
    type Model: ?Sized;

    /// Takes optimizer step `step` (1-based) and returns its loss.
    fn step(&mut self, step: usize) -> Result<f64, TrainError>;

    /// The model in its current state.
    fn model(&self) -> &Self::Model;
}

/// Watches a training run. Only [`Observer::on_step`] is required.
pub trait Observer<M: ?Sized = ()> {
    /// Called once before the first step; steps `1..=first_step` are already behind (resume).
    fn on_start(&mut self, first_step: usize, total: usize) -> Result<(), TrainError> {
        let _ = (first_step, total);
        Ok(())
    }

    /// Called after every step, with the model in its state after the step.
    fn on_step(&mut self, model: &M, info: &StepInfo, journal: &mut Journal) -> Result<(), TrainError>;

    /// A message about the run for the user (a lock taken over, leftovers removed, a Sinkhorn coupling that
    /// stops at its iteration cap, ...), before it starts.
    fn on_note(&mut self, note: &str) {
        let _ = note;
    }

    /// Called once at the end, also when a step or an observer failed (`completed` is false then).
    fn on_finish(&mut self, model: &M, journal: &Journal, completed: bool) {
        let _ = (model, journal, completed);
    }
}

/// Runs steps `first_step + 1 ..= total` of `trainer`, calling `observers` in order around each.
pub fn execute<T: Trainable + ?Sized>(
    trainer: &mut T,
    first_step: usize,
    total: usize,
    journal: &mut Journal,
    observers: &mut [&mut dyn Observer<T::Model>],
) -> Result<(), TrainError> {
    journal.last_checkpoint = first_step;
    let mut run = || -> Result<(), TrainError> {
        for observer in observers.iter_mut() {
            observer.on_start(first_step, total)?;
        }
        for step in first_step + 1..=total {
            let loss = trainer.step(step)?;
            let info = StepInfo { step, total, loss };
            for observer in observers.iter_mut() {
                observer.on_step(trainer.model(), &info, journal)?;
            }
        }
        Ok(())
    };
    let result = run();
    for observer in observers.iter_mut() {
        observer.on_finish(trainer.model(), journal, result.is_ok());
    }
    result
}

/// Stops the run at the first loss that is NaN or infinite, naming the step and the last good checkpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct NanGuard;

impl<M: ?Sized> Observer<M> for NanGuard {
    fn on_step(&mut self, _: &M, info: &StepInfo, journal: &mut Journal) -> Result<(), TrainError> {
        if info.loss.is_finite() {
            Ok(())
        } else {
            Err(TrainError::NonFiniteLoss {
                step: info.step,
                value: info.loss,
                last_good: journal.last_checkpoint,
            })
        }
    }
}

/// Records the mean loss of every window of `log_every` steps (windows end at multiples of `log_every`; the
/// last one ends at the last step and may be shorter) in the journal's loss curve. The window being filled
/// lives in the journal ([`Journal::loss_window`]), so it survives a checkpoint and resume.
#[derive(Clone, Debug)]
pub struct LossCurve {
    log_every: usize,
}

impl LossCurve {
    /// Windows of `log_every` steps (at least 1).
    pub fn new(log_every: usize) -> Self {
        Self {
            log_every: log_every.max(1),
        }
    }
}

impl<M: ?Sized> Observer<M> for LossCurve {
    fn on_step(&mut self, _: &M, info: &StepInfo, journal: &mut Journal) -> Result<(), TrainError> {
        let (sum, len) = &mut journal.loss_window;
        *sum += info.loss;
        *len += 1;
        if info.step.is_multiple_of(self.log_every) || info.step == info.total {
            let loss = *sum / *len as f64;
            journal.loss_curve.push(LossPoint {
                step: info.step,
                loss,
            });
            journal.loss_window = (0.0, 0);
        }
        Ok(())
    }
}

/// A closure `(step info) -> ()` watching the run, for quick observers (tests, logging).
pub struct OnStep<F>(pub F);

impl<M: ?Sized, F: FnMut(&StepInfo)> Observer<M> for OnStep<F> {
    fn on_step(&mut self, _: &M, info: &StepInfo, _: &mut Journal) -> Result<(), TrainError> {
        (self.0)(info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose loss at step k is `losses[k - 1]`.
    struct Scripted {
        losses: Vec<f64>,
        taken: Vec<usize>,
    }

    impl Trainable for Scripted {
        type Model = Scripted;

        fn model(&self) -> &Scripted {
            self
        }

        fn step(&mut self, step: usize) -> Result<f64, TrainError> {
            self.taken.push(step);
            Ok(self.losses[step - 1])
        }
    }

    /// Records the calls it gets.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    impl Observer<Scripted> for Recorder {
        fn on_start(&mut self, first_step: usize, total: usize) -> Result<(), TrainError> {
            self.calls.push(format!("start {first_step} {total}"));
            Ok(())
        }
        fn on_step(&mut self, _: &Scripted, info: &StepInfo, _: &mut Journal) -> Result<(), TrainError> {
            self.calls.push(format!("step {}", info.step));
            Ok(())
        }
        fn on_finish(&mut self, _: &Scripted, _: &Journal, completed: bool) {
            self.calls.push(format!("finish {completed}"));
        }
    }

    #[test]
    fn the_loss_curve_averages_windows_and_the_last_partial_one() {
        let mut model = Scripted {
            losses: vec![1.0, 3.0, 5.0, 7.0, 9.0],
            taken: vec![],
        };
        let mut journal = Journal::default();
        let mut curve = LossCurve::new(2);
        execute(&mut model, 0, 5, &mut journal, &mut [&mut curve]).unwrap();
        let points: Vec<(usize, f64)> = journal.loss_curve.iter().map(|p| (p.step, p.loss)).collect();
        assert_eq!(points, vec![(2, 2.0), (4, 6.0), (5, 9.0)]);
    }

    #[test]
    fn resuming_runs_only_the_remaining_steps_and_observers_see_every_call() {
        let mut model = Scripted {
            losses: vec![0.5; 6],
            taken: vec![],
        };
        let mut recorder = Recorder::default();
        execute(&mut model, 4, 6, &mut Journal::default(), &mut [&mut recorder]).unwrap();
        assert_eq!(model.taken, vec![5, 6]);
        assert_eq!(recorder.calls, ["start 4 6", "step 5", "step 6", "finish true"]);
    }

    #[test]
    fn the_nan_guard_stops_at_the_first_non_finite_loss_and_names_the_last_checkpoint() {
        let mut model = Scripted {
            losses: vec![1.0, 1.0, f64::NAN, 1.0],
            taken: vec![],
        };
        let mut recorder = Recorder::default();
        let mut journal = Journal::default();
        let err = execute(
            &mut model,
            1,
            4,
            &mut journal,
            &mut [&mut NanGuard, &mut recorder],
        )
        .unwrap_err();
        match err {
            TrainError::NonFiniteLoss { step, last_good, .. } => assert_eq!((step, last_good), (3, 1)),
            other => panic!("{other}"),
        }
        assert_eq!(model.taken, vec![2, 3], "no step after the NaN");
        // The recorder after the guard never saw step 3, but it was told the run did not complete.
        assert_eq!(recorder.calls, ["start 1 4", "step 2", "finish false"]);
    }
}
