//! Training progress: a bar with loss, steps/s and ETA on a terminal, plain periodic lines otherwise (logs,
//! CI), nothing when silenced (tests).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug)]
pub enum Progress {
    /// An indicatif bar on stderr.
    Bar(Option<ProgressBar>),
    /// A line on stderr about every tenth of the run.
    Lines {
        /// When the run (or this invocation) started.
        started: Option<Instant>,
        /// First step of this invocation.
        first: usize,
        /// Last step.
        total: usize,
    },
    /// Nothing.
    Silent,
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
                total: 0,
            }
        }
    }

    /// Called once before the first step; `done` steps are already behind (resume).
    pub fn start(&mut self, done: usize, total: usize) {
        match self {
            Progress::Bar(bar) => {
                let new = ProgressBar::new(total as u64).with_position(done as u64);
                new.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} steps  loss {msg}  {per_sec}  eta {eta}",
                    )
                    .expect("valid template"),
                );
                *bar = Some(new);
            }
            Progress::Lines {
                started,
                first,
                total: t,
            } => {
                *started = Some(Instant::now());
                *first = done;
                *t = total;
            }
            Progress::Silent => {}
        }
    }

    /// Called after every step.
    pub fn update(&mut self, step: usize, loss: f64) {
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
                total,
            } => {
                let every = (*total / 10).max(1);
                if step.is_multiple_of(every) || step == *total {
                    let rate = (step - *first) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "step {step}/{total}  loss {loss:.4}  {rate:.prec$} steps/s",
                        prec = if rate < 10.0 { 2 } else { 0 }
                    );
                }
            }
            _ => {}
        }
    }

    /// Called after the last step.
    pub fn finish(&mut self) {
        if let Progress::Bar(Some(bar)) = self {
            bar.finish();
        }
    }
}
