//! `ferroflow bench distributed`: training steps/s of one process against two MPI ranks (`mpirun -np 2`),
//! for the 2D MLP of the default config and the Fashion-MNIST U-Net, with the time per step spent in the
//! gradient all-reduce and the scaling efficiency.
//!
//! Each measurement is a separate launch of the program (`ferroflow bench distributed --worker`, under
//! `mpirun` for two ranks) that trains the config's model for a fixed number of steps through the engine's
//! own data-parallel loop and prints one line of figures on rank 0; the median over the repeats is kept.
//! Three launches per model: one process on one thread, one process on two threads (what the same two cores
//! give without MPI), and two ranks of one thread each. `train.batch_size` is the global batch in all
//! three, so two ranks do the same work per step as one process (strong scaling): the ideal speed-up is 2.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use ferroflow_distributed::Collective;
use ferroflow_engine::RunConfig;
use ferroflow_engine::distributed::Launch;
use ferroflow_engine::train::{Start, train};

use crate::timing::{load_average, median};

/// The line prefix of a worker's figures.
const MARK: &str = "BENCH-DISTRIBUTED";

/// Settings of `ferroflow bench distributed`.
#[derive(Clone, Debug)]
pub struct DistributedBenchSettings {
    /// The `ferroflow` program to launch (this one).
    pub program: PathBuf,
    /// The models: a label, a config file and the steps of each launch.
    pub models: Vec<(String, PathBuf, usize)>,
    /// Launches of each (model, layout).
    pub repeats: usize,
    /// Where the workers' runs go (replaced).
    pub out_dir: PathBuf,
    /// Extra arguments for `mpirun` before `-np` (e.g. `--allow-run-as-root --oversubscribe`).
    pub mpirun_args: Vec<String>,
}

/// One layout of a launch.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ranks: usize,
    threads: usize,
}

/// What a worker measured.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    steps_per_second: f64,
    allreduce_ms_per_step: f64,
}

/// Runs every launch and returns the report (Markdown).
pub fn run(settings: &DistributedBenchSettings) -> Result<String> {
    let layouts = [
        Layout { ranks: 1, threads: 1 },
        Layout { ranks: 1, threads: 2 },
        Layout { ranks: 2, threads: 1 },
    ];
    if settings.out_dir.exists() {
        std::fs::remove_dir_all(&settings.out_dir)
            .with_context(|| format!("cannot clear {}", settings.out_dir.display()))?;
    }
    let mut out = String::new();
    writeln!(out, "# Data-parallel training: 1 process against 2 MPI ranks\n")?;
    writeln!(
        out,
        "Global batch fixed (each of 2 ranks trains half of it); median of {} launches; machine load before: {}.\n",
        settings.repeats,
        load_average()
    )?;
    writeln!(
        out,
        "| model | launch | steps/s | all-reduce ms/step | all-reduce share | speed-up vs 1 x 1 thread | efficiency |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
    for (label, config, steps) in &settings.models {
        let mut base = None;
        for layout in layouts {
            let mut runs = Vec::new();
            for repeat in 0..settings.repeats.max(1) {
                let name = format!("{label}-{}x{}-{repeat}", layout.ranks, layout.threads);
                runs.push(launch(settings, config, *steps, layout, &name)?);
            }
            let mut rates: Vec<f64> = runs.iter().map(|f| f.steps_per_second).collect();
            let mut reduce: Vec<f64> = runs.iter().map(|f| f.allreduce_ms_per_step).collect();
            let (rate, reduce_ms) = (median(&mut rates), median(&mut reduce));
            let base_rate = *base.get_or_insert(rate);
            let speed_up = rate / base_rate;
            let workers = (layout.ranks * layout.threads) as f64;
            let share = reduce_ms / (1000.0 / rate);
            let kind = if layout.ranks == 1 {
                format!("1 process, {} thread(s)", layout.threads)
            } else {
                format!("{} MPI ranks x {} thread", layout.ranks, layout.threads)
            };
            writeln!(
                out,
                "| {label} | {kind} | {rate:.1} | {reduce_ms:.3} | {:.1} % | {speed_up:.2}x | {:.0} % |",
                share * 100.0,
                speed_up / workers * 100.0
            )?;
            eprintln!(
                "bench distributed: {label}, {kind}: {rate:.1} steps/s, all-reduce {reduce_ms:.3} ms/step"
            );
        }
    }
    writeln!(
        out,
        "\nEfficiency = speed-up / cores used. The all-reduce time includes waiting for the slower rank."
    )?;
    Ok(out)
}

fn launch(
    settings: &DistributedBenchSettings,
    config: &Path,
    steps: usize,
    layout: Layout,
    name: &str,
) -> Result<Figures> {
    let mut command = if layout.ranks > 1 {
        let mut c = Command::new("mpirun");
        c.args(&settings.mpirun_args)
            .args(["-np", &layout.ranks.to_string()])
            .arg(&settings.program);
        c
    } else {
        Command::new(&settings.program)
    };
    command.args(["bench", "distributed", "--worker"]);
    command.arg("--worker-config").arg(config);
    command.args(["--worker-steps", &steps.to_string()]);
    command.args(["--worker-threads", &layout.threads.to_string()]);
    command.args(["--worker-name", name]);
    command.arg("--out-dir").arg(&settings.out_dir);
    let output = command
        .output()
        .with_context(|| format!("cannot start {command:?} (mpirun comes with `cargo xtask setup`)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{name} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARK))
        .with_context(|| format!("{name}: no `{MARK}` line in the worker's output:\n{stdout}"))?;
    let values: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().with_context(|| format!("{name}: bad figure {v:?}")))
        .collect::<Result<_>>()?;
    let [steps_per_second, allreduce_ms_per_step] = values[..] else {
        bail!("{name}: expected 2 figures, got {line:?}");
    };
    Ok(Figures {
        steps_per_second,
        allreduce_ms_per_step,
    })
}

/// The worker: trains `config` for `steps` steps on `threads` threads as one rank of `comm` into
/// `out_dir/name`, and prints the figures on rank 0.
pub fn worker(
    comm: &dyn Collective,
    config: &Path,
    steps: usize,
    threads: usize,
    out_dir: &Path,
    name: &str,
) -> Result<()> {
    ensure!(steps > 0, "--worker-steps must be positive");
    let mut config = RunConfig::load(config)?;
    config.train.steps = steps;
    config.train.checkpoint_every = 0;
    config.train.log_every = steps;
    config.run.threads = threads;
    config.run.name = name.to_owned();
    config.run.out_dir = out_dir.display().to_string();
    config.validate()?;
    let run_dir = out_dir.join(name);
    if comm.rank() == 0 {
        std::fs::create_dir_all(&run_dir)?;
    }
    let summary = train(&config, &run_dir, Start::Fresh, None, &Launch::on(comm), &mut [])?;
    if comm.rank() == 0 {
        println!(
            "{MARK} {} {}",
            summary.steps_run as f64 / summary.seconds,
            summary.allreduce_seconds * 1000.0 / summary.steps_run as f64
        );
    }
    Ok(())
}
