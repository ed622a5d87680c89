//! Training progress as an observer of the engine's training loop: a bar with loss, steps/s and ETA on a
//! terminal, plain periodic lines otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::Instant;

use ferroflow_engine::TrainError;
use ferroflow_engine::train::{Journal, Observer, StepInfo};
use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug)]
pub enum Progress {
    /// An indicatif bar on stderr.
    Bar(Option<ProgressBar>),
    /// A line on stderr about every tenth of the run.
    Lines {
        /// When this invocation started.
        started: Option<Instant>,
        /// First step of this invocation.
        first: usize,
    },
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            Progress::Bar(None)
        } else {
            Progress::Lines {
                started: None,
                first: 0,
            }
        }
    }
}

impl<M: ?Sized> Observer<M> for Progress {
    fn on_start(&mut self, first_step: usize, total: usize) -> Result<(), TrainError> {
        match self {
            Progress::Bar(bar) => {
                let new = ProgressBar::new(total as u64).with_position(first_step as u64);
                new.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} steps  loss {msg}  {per_sec}  eta {eta}",
                    )
                    .expect("valid template"),
                );
                *bar = Some(new);
            }
            Progress::Lines { started, first } => {
                *started = Some(Instant::now());
                *first = first_step;
            }
        }
        Ok(())
    }

    fn on_step(&mut self, _: &M, info: &StepInfo, _: &mut Journal) -> Result<(), TrainError> {
        let (step, total, loss) = (info.step, info.total, info.loss);
        match self {
            Progress::Bar(Some(bar)) => {
                bar.set_position(step as u64);
                if step.is_multiple_of(10) {
                    bar.set_message(format!("{loss:.4}"));
                }
            }
            Progress::Lines {
                started: Some(started),
                first,
            } => {
                let every = (total / 10).max(1);
                if step.is_multiple_of(every) || step == total {
                    let rate = (step - *first) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "step {step}/{total}  loss {loss:.4}  {rate:.prec$} steps/s",
                        prec = if rate < 10.0 { 2 } else { 0 }
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_finish(&mut self, _: &M, _: &Journal, _completed: bool) {
        if let Progress::Bar(Some(bar)) = self {
            bar.finish();
        }
    }
}

/// Prints the engine's notes about a run (a lock taken over, leftovers removed, ...) on stderr, also with
/// `--quiet`.
#[derive(Debug, Default)]
pub struct Notes;

impl<M: ?Sized> Observer<M> for Notes {
    fn on_step(&mut self, _: &M, _: &StepInfo, _: &mut Journal) -> Result<(), TrainError> {
        Ok(())
    }

    fn on_note(&mut self, note: &str) {
        eprintln!("{note}");
    }
}
