//! `ferroflow bench2d`: the 2D benchmark of Tong et al. 2023 (OT-CFM) reproduced. Every config under
//! `configs/bench2d/` is trained for each seed, then measured on 10,000 test samples: the exact
//! 2-Wasserstein distance to fresh target samples and the normalised path energy
//! NPE = |E int_0^1 |v(x_t, t)|^2 dt - W2(source, target)^2| / W2(source, target)^2, with the energy summed
//! along the same 100-step Euler integration that produces the samples and W2(source, target)^2 estimated once
//! per task as the mean of several exact estimates on independent test samples; and the path energy's excess over
//! straight optimal paths to the flow's own samples, which measures straightness alone. Results go to a Markdown table beside
//! the published figures. Finished runs are reused, so an interrupted benchmark continues where it stopped;
//! a failed run is reported with its reason and the others go on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferroflow_solvers::{FnObserver, Method, OdeOptions, SolverError, StepView, solve_observed};
use tch::{Kind, Tensor};

use ferroflow_engine::config::{DataSection, RunConfig};
use ferroflow_engine::files::write_atomic;
use ferroflow_engine::metrics::{METRICS_FILE, RunMetrics};
use ferroflow_engine::run::{CONFIG_FILE, w2_f32};
use ferroflow_engine::sample::{TrainedFlow, reference_samples, source_sample, to_array};
use ferroflow_engine::stream::Stream;
use ferroflow_engine::train::MODEL_FILE;

/// Settings of `ferroflow bench2d`.
#[derive(Clone, Debug)]
pub struct Bench2dSettings {
    /// Seeds per config (0, 1, ...).
    pub seeds: u64,
    /// Folder of benchmark configs.
    pub configs: PathBuf,
    /// Override `train.steps` of every config (the published budget is the configs' own).
    pub steps: Option<usize>,
    /// Only configs whose file name contains one of these texts (comma-separated).
    pub only: Vec<String>,
    /// Skip configs whose file name contains this text.
    pub exclude: Option<String>,
    /// Where the runs go.
    pub out_dir: PathBuf,
    /// The Markdown report.
    pub report: PathBuf,
    /// Run only this share of the (config, seed) runs and write no report: one task of a job array.
    pub share: Option<Share>,
    /// Train nothing: write the report from the runs the shares finished (refusing when one is missing).
    pub merge: bool,
}

/// One task's share of a sweep: of the runs numbered 0, 1, ... in (config file, seed) order, those whose
/// number is `index` modulo `count` (round robin, so every task gets every kind of config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// This task, `0..count`.
    pub index: usize,
    /// The number of tasks.
    pub count: usize,
}

impl Share {
    /// A share, refused unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            bail!("task index {index} is outside the {count} task(s) of the sweep (0..{count})");
        }
        Ok(Self { index, count })
    }

    /// Whether run number `n` is this task's.
    pub fn takes(&self, n: usize) -> bool {
        n % self.count == self.index
    }
}

/// Published W2 and NPE (SF2M paper, Table 2, as read in reference.md) by method and task.
fn published(method: &str, task: &str) -> (Option<f64>, Option<f64>) {
    let tasks = [
        "gaussian-8gaussians",
        "moons-8gaussians",
        "gaussian-moons",
        "gaussian-scurve",
    ];
    let Some(col) = tasks.iter().position(|t| *t == task) else {
        return (None, None);
    };
    let w2: [Option<f64>; 4] = match method {
        "otcfm" => [Some(0.303), Some(0.601), Some(0.130), Some(0.144)],
        "icfm" => [Some(0.373), Some(1.557), Some(0.178), Some(0.242)],
        "sbcfm" => [Some(2.314), None, Some(0.434), Some(0.341)],
        "fm" => [Some(0.343), None, Some(0.209), Some(0.198)],
        _ => [None; 4],
    };
    let npe: [Option<f64>; 4] = match method {
        "otcfm" => [Some(0.031), Some(0.015), Some(0.083), Some(0.027)],
        "icfm" => [Some(0.202), Some(2.680), Some(0.891), Some(0.856)],
        _ => [None; 4],
    };
    (w2[col], npe[col])
}

/// One measured run.
struct Outcome {
    w2: f64,
    npe: f64,
    /// (E - W2(x0, x1)^2) / W2(x0, x1)^2 between the source points and the flow's own end points.
    excess: f64,
    train_seconds: f64,
}

/// Samples `x0` forward with `n_steps` steps of the solvers crate's Euler method through `velocity` and returns
/// the end points and the mean path energy E sum_k |v(x_k, t_k)|^2 dt along those same steps.
///
/// The energy is summed by an observer of the solve (the solver hands it the velocity at each step's start,
/// which Euler computes anyway), a left Riemann sum of int_0^1 E |v(x_t, t)|^2 dt with no extra evaluation.
pub fn euler_with_energy(
    mut velocity: impl FnMut(&Tensor, f64) -> Tensor,
    x0: Tensor,
    n_steps: usize,
) -> Result<(Tensor, f64), SolverError> {
    let mut field = |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(velocity(x, t)) };
    let mut energy = 0.0;
    let mut path_energy = FnObserver(|step: &StepView<'_, Tensor>| {
        energy += step
            .velocity_prev
            .square()
            .sum_dim_intlist(1, false, Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
            * step.h;
    });
    let end = solve_observed(
        &mut field,
        x0,
        0.0,
        1.0,
        &OdeOptions::fixed(Method::Euler, n_steps),
        &mut path_energy,
    )?
    .state;
    Ok((end, energy))
}

fn measure(config: &RunConfig, run_dir: &Path, reference: &Reference) -> Result<Outcome> {
    let stored = RunMetrics::read(run_dir)?;
    let mut update = RunMetrics::default();
    // The samples' W2, the path energy and its excess belong to the run and are measured once; the NPE is
    // recomputed from the stored energy whenever the task's reference is.
    let (w2, energy, excess) = match (stored.w2, stored.path_energy, stored.path_excess) {
        (Some(w2), Some(energy), Some(excess)) => (w2, energy, excess),
        _ => {
            let flow = TrainedFlow::from_config(config.clone(), run_dir)?;
            let n = config.sample.w2_samples;
            let x0 = flow.source_points(n, Stream::EvalSource);
            let start = to_array(&x0);
            let (x1, energy) = euler_with_energy(|x, t| flow.velocity(x, t), x0, config.sample.steps)?;
            let generated = to_array(&x1);
            if generated.iter().any(|v| !v.is_finite()) {
                bail!("the samples are not finite");
            }
            let w2 = w2_f32(generated.view(), reference_samples(config, n).view())?;
            // The cheapest transport to the flow's own samples: the energy of straight optimal paths to them.
            let own_w2_sq = w2_f32(start.view(), generated.view())?.powi(2);
            let excess = (energy - own_w2_sq) / own_w2_sq;
            update.w2 = Some(w2);
            update.w2_samples = Some(n);
            update.path_energy = Some(energy);
            update.source_samples_w2_sq = Some(own_w2_sq);
            update.path_excess = Some(excess);
            (w2, energy, excess)
        }
    };
    let npe = (energy - reference.mean).abs() / reference.mean;
    update.npe = Some(npe);
    update.source_target_w2_sq = Some(reference.mean);
    update.source_target_w2_sq_stderr = Some(reference.standard_error);
    update.merge(run_dir)?;
    Ok(Outcome {
        w2,
        npe,
        excess,
        train_seconds: stored.train_seconds.unwrap_or(f64::NAN),
    })
}

/// Independent draws whose mean is a task's W2(source, target)^2 in the NPE.
pub const REFERENCE_DRAWS: u64 = 8;
/// The draws use seeds from here on, apart from the runs' own seeds.
const REFERENCE_SEED: u64 = 1_000;

/// A task's W2(source, target)^2: the energy of the optimal straight paths, the NPE's yardstick.
#[derive(Clone, Copy, Debug)]
pub struct Reference {
    /// Mean of the draws.
    pub mean: f64,
    /// Its standard error.
    pub standard_error: f64,
}

/// The reference measured for one data section and test-sample size, with the task name it is shown under.
struct TaskReference {
    task: String,
    data: DataSection,
    samples: usize,
    reference: Reference,
}

/// Estimates W2(source, target)^2 as the mean of [`REFERENCE_DRAWS`] exact W2^2 between independent test
/// samples of `w2_samples` points each. One draw of 10,000 points varies by about 1.3 % (measured on
/// N -> scurve), the size of the NPE differences being compared, so a single draw per seed would put its own
/// noise into every NPE; the mean is shared by every method and seed of the task.
pub fn source_target_w2_sq(config: &RunConfig) -> Result<Reference> {
    let n = config.sample.w2_samples;
    let mut draws = Vec::new();
    for draw in 0..REFERENCE_DRAWS {
        let mut config = config.clone();
        config.run.seed = REFERENCE_SEED + draw;
        let source = source_sample(&config, n, Stream::EvalSource);
        let source = ndarray::Array2::from_shape_vec((n, config.data.source.dim()), source)?;
        draws.push(w2_f32(source.view(), reference_samples(&config, n).view())?.powi(2));
    }
    let (mean, sd) = mean_std(&draws);
    Ok(Reference {
        mean,
        standard_error: sd / (draws.len() as f64).sqrt(),
    })
}

fn train_or_reuse(config: &RunConfig) -> Result<PathBuf> {
    let run_dir = Path::new(&config.run.out_dir).join(&config.run.name);
    // Reuse a finished run only if it was trained with exactly this config (another `--steps`, an edited
    // config file or another Sinkhorn cap must not be mistaken for it).
    let same_config = RunConfig::load(&run_dir.join(CONFIG_FILE)).is_ok_and(|saved| saved == *config);
    if same_config && run_dir.join(MODEL_FILE).is_file() && run_dir.join(METRICS_FILE).is_file() {
        return Ok(run_dir);
    }
    if run_dir.exists() {
        // An interrupted or outdated earlier attempt of this benchmark run: it belongs to the benchmark, start
        // it again.
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("cannot remove {}", run_dir.display()))?;
    }
    ferroflow_engine::run::train_new(config, &mut [], None)
}

/// A run of the sweep that `--merge` found unfinished.
#[derive(Debug, thiserror::Error)]
#[error("{run}: {why}")]
struct Unfinished {
    run: String,
    why: &'static str,
}

/// The folder of a run that a task of the sweep finished with exactly this config.
fn finished_run(config: &RunConfig) -> Result<PathBuf> {
    let run_dir = Path::new(&config.run.out_dir).join(&config.run.name);
    let unfinished = |why| Unfinished {
        run: run_dir.display().to_string(),
        why,
    };
    let saved = RunConfig::load(&run_dir.join(CONFIG_FILE))
        .map_err(|_| unfinished("no run folder (or no config in it)"))?;
    if saved != *config {
        return Err(unfinished("trained with another config (or other --steps)").into());
    }
    let measured = RunMetrics::read(&run_dir)?;
    if !run_dir.join(MODEL_FILE).is_file() || measured.path_excess.is_none() {
        return Err(unfinished("training or its measurement did not finish").into());
    }
    Ok(run_dir)
}

/// A line in the report below which everything is written by hand: a new run replaces the tables above it and
/// keeps the rest.
pub const KEEP_MARKER: &str = "<!-- Written by hand below this line; `ferroflow bench2d` keeps it. -->";

/// Runs the benchmark and writes the report.
pub fn run(args: &Bench2dSettings) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.configs)
        .with_context(|| format!("cannot list {}", args.configs.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    if !args.only.is_empty() {
        files.retain(|p| {
            p.file_name().is_some_and(|n| {
                let name = n.to_string_lossy();
                args.only.iter().any(|only| name.contains(only.as_str()))
            })
        });
    }
    if let Some(exclude) = &args.exclude {
        files.retain(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().contains(exclude.as_str()))
        });
    }
    files.sort();
    if files.is_empty() {
        bail!("no benchmark configs (*.toml) in {}", args.configs.display());
    }
    // results[(task, method)] = per-seed outcomes or failure reasons.
    let mut results: BTreeMap<(String, String), Vec<Result<Outcome, String>>> = BTreeMap::new();
    // The NPE's W2(source, target)^2 per data section and test-sample size (two configs of one task name with
    // different data do not share it), shared by every method and seed.
    let mut references: Vec<TaskReference> = Vec::new();
    let configs = files
        .iter()
        .map(|f| RunConfig::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut number = 0;
    let mut taken = 0;
    let mut missing = Vec::new();
    for (file, base) in files.iter().zip(&configs) {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let (task, method) = stem
            .rsplit_once('-')
            .map(|(t, m)| (t.to_owned(), m.to_owned()))
            .unwrap_or((stem.clone(), stem.clone()));
        for seed in 0..args.seeds {
            let this = number;
            number += 1;
            if args.share.is_some_and(|share| !share.takes(this)) {
                continue;
            }
            taken += 1;
            let mut config = base.clone();
            config.run.seed = seed;
            config.run.name = format!("{stem}-s{seed}");
            config.run.out_dir = args.out_dir.display().to_string();
            if let Some(steps) = args.steps {
                config.train.steps = steps;
            }
            let attempt = (|| -> Result<Outcome> {
                let samples = config.sample.w2_samples;
                let known = references
                    .iter()
                    .find(|r| r.data == config.data && r.samples == samples);
                let reference = match known {
                    Some(r) => r.reference,
                    None => {
                        let r = source_target_w2_sq(&config)?;
                        eprintln!(
                            "bench2d: {task}: W2(source, target)^2 = {:.4} ± {:.4} ({REFERENCE_DRAWS} draws of {samples})",
                            r.mean, r.standard_error
                        );
                        references.push(TaskReference {
                            task: task.clone(),
                            data: config.data.clone(),
                            samples,
                            reference: r,
                        });
                        r
                    }
                };
                let run_dir = if args.merge {
                    finished_run(&config)?
                } else {
                    train_or_reuse(&config)?
                };
                measure(&config, &run_dir, &reference)
            })();
            match &attempt {
                Ok(o) => eprintln!(
                    "bench2d: {stem} seed {seed}: W2 {:.3}, NPE {:.3}, excess {:.4}, {:.0} s ({:.0} s so far)",
                    o.w2,
                    o.npe,
                    o.excess,
                    o.train_seconds,
                    started.elapsed().as_secs_f64()
                ),
                Err(e) if args.merge && e.is::<Unfinished>() => missing.push(format!("{e}")),
                Err(e) => eprintln!("bench2d: {stem} seed {seed}: failed: {e:#}"),
            }
            results
                .entry((task.clone(), method.clone()))
                .or_default()
                .push(attempt.map_err(|e| format!("{e:#}")));
        }
    }
    if let Some(share) = args.share {
        eprintln!(
            "bench2d: task {} of {} ran {taken} of the sweep's {number} runs in {:.0} s; write the report with \
             `ferroflow bench2d --merge` once every task has finished",
            share.index,
            share.count,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if !missing.is_empty() {
        bail!(
            "cannot merge: {} of the sweep's {number} runs are not finished:\n  {}",
            missing.len(),
            missing.join("\n  ")
        );
    }
    let report = render(&results, &references, args, &configs)?;
    if let Some(parent) = args.report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Text written by hand below the marker in an earlier report is kept under the new tables.
    let kept = std::fs::read_to_string(&args.report)
        .ok()
        .and_then(|old| old.find(KEEP_MARKER).map(|at| old[at..].to_owned()));
    let report = match kept {
        Some(kept) => format!("{report}{kept}"),
        None => report,
    };
    write_atomic(&args.report, report.as_bytes())?;
    println!("{report}");
    eprintln!("bench2d: report written to {}", args.report.display());
    Ok(())
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The training and evaluation setting the configs share, in words; a setting on which they disagree lists
/// every value it takes.
fn setting(configs: &[RunConfig], steps: Option<usize>) -> String {
    let describe = |value: &dyn Fn(&RunConfig) -> String| -> String {
        let mut distinct: Vec<String> = Vec::new();
        for v in configs.iter().map(value) {
            if !distinct.contains(&v) {
                distinct.push(v);
            }
        }
        if distinct.len() == 1 {
            distinct.remove(0)
        } else {
            format!("{} (differs between configs)", distinct.join(" / "))
        }
    };
    [
        describe(&|c| {
            format!(
                "MLP {} x {} {:?} with time concatenated",
                c.model.depth, c.model.width, c.model.activation
            )
            .replace("Selu", "SELU")
        }),
        describe(&|c| {
            let o = &c.train.optimizer;
            format!("{:?} lr {} (weight decay {})", o.kind, o.lr, o.weight_decay)
        }),
        describe(&|c| format!("batch {}", c.train.batch_size)),
        describe(&|c| format!("{} training steps", steps.unwrap_or(c.train.steps))),
        describe(&|c| format!("sigma = {}", c.flow.sigma)),
        describe(&|c| {
            if c.train.ema_decay > 0.0 {
                format!(
                    "EMA of the weights (decay {}) used for sampling",
                    c.train.ema_decay
                )
            } else {
                "no EMA".to_owned()
            }
        }),
        describe(&|c| {
            format!(
                "evaluation with {} {:?} steps on {} test samples per seed",
                c.sample.steps, c.sample.solver, c.sample.w2_samples
            )
        }),
    ]
    .join(", ")
}

fn render(
    results: &BTreeMap<(String, String), Vec<Result<Outcome, String>>>,
    references: &[TaskReference],
    args: &Bench2dSettings,
    configs: &[RunConfig],
) -> Result<String> {
    let tasks = [
        "gaussian-8gaussians",
        "moons-8gaussians",
        "gaussian-moons",
        "gaussian-scurve",
    ];
    let methods = [
        ("otcfm", "OT-CFM"),
        ("icfm", "I-CFM"),
        ("sbcfm", "SB-CFM"),
        ("fm", "FM (Lipman)"),
        ("vpcfm", "VP-CFM"),
    ];
    let mut out = String::new();
    writeln!(out, "# 2D benchmark results\n")?;
    let mut command = format!("--seeds {}", args.seeds);
    if let Some(steps) = args.steps {
        write!(command, " --steps {steps}")?;
    }
    if let Some(exclude) = &args.exclude {
        write!(command, " --exclude {exclude}")?;
    }
    if !args.only.is_empty() {
        write!(command, " --only {}", args.only.join(","))?;
    }
    writeln!(
        out,
        "Written by `cargo xtask bench2d` (`ferroflow bench2d {command}`). Setting (from the configs in `{}`): {}. \
         W2 is the exact 2-Wasserstein distance (exact assignment between equal-size samples) to fresh target \
         samples; NPE = |E int |v|^2 dt - W2(source, target)^2| / W2(source, target)^2 with the energy summed \
         along the same Euler integration and W2(source, target)^2 the mean of {REFERENCE_DRAWS} exact estimates \
         on independent test samples of the same size, one value per task (listed below). The excess \
         (E - W2(x0, x1)^2) / W2(x0, x1)^2 compares the same energy with that of straight optimal paths from the \
         same source points x0 to the flow's own end points x1: it is never negative (Cauchy-Schwarz along the \
         Euler steps, and pairing each x0 with its own x1 is one transport plan), zero only for straight paths \
         that do not cross, and unlike the NPE it does not count the samples' error as path energy. Cells are mean ± standard deviation over seeds; \"pub.\" is the \
         published figure (SF2M paper, Table 2, via reference.md; their data sets differ in small details, see \
         reference.md).\n",
        args.configs.display(),
        setting(configs, args.steps)
    )?;
    if let Some(exclude) = &args.exclude {
        writeln!(
            out,
            "Configs whose name contains `{exclude}` were excluded from this run (`--exclude {exclude}`).\n"
        )?;
    }
    if !references.is_empty() {
        writeln!(
            out,
            "W2(source, target)^2 per task (mean ± standard error of {REFERENCE_DRAWS} draws):\n"
        )?;
        writeln!(out, "| task | test samples | W2(source, target)^2 |")?;
        writeln!(out, "|---|---|---|")?;
        for r in references {
            writeln!(
                out,
                "| {} | {} | {:.4} ± {:.4} |",
                r.task, r.samples, r.reference.mean, r.reference.standard_error
            )?;
        }
        writeln!(out)?;
    }
    for (title, pick) in [
        ("W2 (lower is better)", 0usize),
        ("NPE (lower is better)", 1),
        (
            "Path energy in excess of straight optimal paths to the flow's own samples (lower is better)",
            3,
        ),
        ("Training wall time per run (s)", 2),
    ] {
        writeln!(out, "## {title}\n")?;
        writeln!(
            out,
            "| method | N -> 8gaussians | moons -> 8gaussians | N -> moons | N -> scurve |"
        )?;
        writeln!(out, "|---|---|---|---|---|")?;
        for (key, label) in methods {
            if !tasks
                .iter()
                .any(|t| results.contains_key(&((*t).to_owned(), key.to_owned())))
            {
                continue;
            }
            let mut row = format!("| {label} |");
            for task in tasks {
                let cell = match results.get(&(task.to_owned(), key.to_owned())) {
                    None => "-".to_owned(),
                    Some(runs) => {
                        let ok: Vec<&Outcome> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
                        let failed: Vec<&String> = runs.iter().filter_map(|r| r.as_ref().err()).collect();
                        let values: Vec<f64> = ok
                            .iter()
                            .map(|o| match pick {
                                0 => o.w2,
                                1 => o.npe,
                                3 => o.excess,
                                _ => o.train_seconds,
                            })
                            .collect();
                        let mut cell = if values.is_empty() {
                            String::new()
                        } else {
                            let (m, s) = mean_std(&values);
                            if pick == 2 {
                                format!("{m:.0}")
                            } else if pick == 3 {
                                format!("{m:.4} ± {s:.4}")
                            } else {
                                format!("{m:.3} ± {s:.3}")
                            }
                        };
                        let (pub_w2, pub_npe) = published(key, task);
                        let published = if pick == 0 {
                            pub_w2
                        } else if pick == 1 {
                            pub_npe
                        } else {
                            None
                        };
                        if let Some(p) = published {
                            write!(cell, " (pub. {p:.3})")?;
                        }
                        if !failed.is_empty() {
                            write!(
                                cell,
                                " **{} failed: {}**",
                                failed.len(),
                                failed[0].replace('|', "/")
                            )?;
                        }
                        cell
                    }
                };
                write!(row, " {cell} |")?;
            }
            writeln!(out, "{row}")?;
        }
        writeln!(out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(rows: &[[f64; 2]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, 2])
    }

    #[test]
    fn a_constant_field_moves_by_its_value_and_spends_its_square() {
        let x0 = points(&[[0.5, -1.0], [2.0, 3.0]]);
        let c = points(&[[3.0, -4.0]]);
        let (x1, energy) = euler_with_energy(|x, _| x.zeros_like() + &c, x0.shallow_clone(), 7).unwrap();
        let moved = (x1 - x0 - &c).abs().max().double_value(&[]);
        assert!(moved < 1e-12, "{moved}");
        assert!((energy - 25.0).abs() < 1e-12, "{energy}");
    }

    #[test]
    fn a_linear_field_gives_the_discrete_closed_form() {
        // v = a x: Euler's x_k = (1 + a dt)^k x0, so the energy is dt sum_k a^2 (1 + a dt)^(2k) E|x0|^2.
        let (a, n) = (-0.7, 25usize);
        let x0 = points(&[[1.0, 2.0], [-3.0, 0.5], [0.0, -1.5]]);
        let mean_sq = (1.0 + 4.0 + 9.0 + 0.25 + 2.25) / 3.0;
        let (x1, energy) = euler_with_energy(|x, _| x * a, x0.shallow_clone(), n).unwrap();
        let dt = 1.0 / n as f64;
        let growth = 1.0 + a * dt;
        let expected: f64 = (0..n)
            .map(|k| dt * a * a * growth.powi(2 * k as i32) * mean_sq)
            .sum();
        assert!(
            (energy - expected).abs() < 1e-12 * expected,
            "{energy} vs {expected}"
        );
        let end = (x1 - x0 * growth.powi(n as i32)).abs().max().double_value(&[]);
        assert!(end < 1e-12, "{end}");
    }

    #[test]
    fn the_energy_bounds_the_squared_displacement() {
        // Cauchy-Schwarz on x1 - x0 = dt sum_k v_k: |x1 - x0|^2 <= dt sum_k |v_k|^2 for every sample, with
        // equality only for straight constant-speed paths; a rotating, time-dependent field is strictly above.
        let x0 = points(&[[1.0, 0.0], [0.3, -2.0], [-1.0, 1.0], [2.5, 2.5]]);
        let field = |x: &Tensor, t: f64| {
            let (u, w) = (x.select(1, 0), x.select(1, 1));
            Tensor::stack(&[-&w * (1.0 + t) + 0.2, u * (1.0 + t)], 1)
        };
        let (x1, energy) = euler_with_energy(field, x0.shallow_clone(), 50).unwrap();
        let displacement = (x1 - x0)
            .square()
            .sum_dim_intlist(1, false, Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!(energy > displacement * 1.05, "{energy} vs {displacement}");
    }

    #[test]
    fn mean_and_sample_standard_deviation() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-15);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(mean_std(&[7.0]), (7.0, 0.0));
    }
}
