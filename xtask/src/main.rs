//! Project tasks for ferroflow, run as `cargo xtask <task>`.
//!
//! xtask stays light: it never links tch. Real work (training, evaluation, benchmarks) runs through
//! `cargo run -p ferroflow --release`, after [`setup`] has made sure libtorch and the system packages are
//! there. Every task prints what it does in one line and fails with one clear line saying what to do.

mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  setup [--cuda] [--peers]   install libtorch 2.13.0 (CPU, or the full CUDA set) and the Debian packages;
                             --peers also installs Python's flow_matching and torchcfm into .peers
  train [--config FILE] [-- ARGS]   set up, then train (default config: configs/default.toml)
  eval [--run DIR] [-- ARGS]  set up, then evaluate a run (default: the newest folder under runs/)
  test                       set up, then fmt --check, clippy -D warnings, and the whole test suite
  bench ot|train|likelihood|guidance|riemannian|discrete|distributed [--peers] [-- ARGS]   benchmarks in
                             release mode (distributed: 1 process against 2 MPI ranks);
                             --peers installs the Python peers and runs them side by side
  bench2d [--seeds N] [--steps S] [--only TEXT,...]   the 2D OT-CFM benchmark, written to docs/results-2d.md
  explore [-- ARGS]          set up, then serve the browser explorer on 127.0.0.1 (`ferroflow explore`)
  data fashion-mnist         install and prepare Fashion-MNIST under data/
  train-classifier [STEPS THREADS OUT_DIR]   the Fashion-MNIST classifier behind the Frechet distance
  image-eval --run DIR [-- ARGS]   measure a Fashion-MNIST run (Frechet distance, class accuracy, bits/dim);
                             trains the classifier first when runs/classifier has none";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => {
            println!("{USAGE}");
            return Ok(());
        }
    };
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    match task {
        "setup" => {
            let (mode, peers) = parse_setup_flags(rest)?;
            setup::setup(&root, mode)?;
            if peers {
                setup::peers(&root)?;
            }
            Ok(())
        }
        "train" => {
            let (config, extra) = take_flag(rest, "--config")?;
            let config = config.unwrap_or_else(|| "configs/default.toml".to_owned());
            setup::ensure(&root)?;
            // Image configs name their data set; prepare it first (a cheap check when it is there).
            let text = std::fs::read_to_string(&config).with_context(|| format!("cannot read {config}"))?;
            if text.contains("fashion_mnist") {
                setup::fashion_mnist(&root)?;
            }
            let mut args = vec!["train".to_owned(), "--config".to_owned(), config];
            args.extend(extra);
            ferroflow(&args)
        }
        "eval" => {
            let (run_dir, extra) = take_flag(rest, "--run")?;
            let run_dir = match run_dir {
                Some(dir) => PathBuf::from(dir),
                None => newest_run(&root.join("runs"))?,
            };
            setup::ensure(&root)?;
            let mut args = vec![
                "eval".to_owned(),
                "--run".to_owned(),
                run_dir.display().to_string(),
            ];
            args.extend(extra);
            ferroflow(&args)
        }
        "test" => {
            setup::ensure(&root)?;
            cargo(&["fmt", "--all", "--check"]).context("formatting differs: run `cargo fmt --all`")?;
            cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            // The NCCL backend runs only where a GPU is, but it compiles (and passes clippy) everywhere.
            cargo(&[
                "clippy",
                "-p",
                "ferroflow-distributed",
                "--features",
                "nccl",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // ... and refuses to start without CUDA (its GPU checks are scripts/gpu-check.sh).
            cargo(&[
                "test",
                "-p",
                "ferroflow-distributed",
                "--features",
                "nccl",
                "--test",
                "gpu",
            ])?;
            // The program builds without MPI too (for machines without Open MPI).
            cargo(&["check", "-p", "ferroflow", "--no-default-features"])?;
            cargo(&["test", "--workspace"])
        }
        "bench" => bench(&root, rest),
        "explore" => {
            setup::ensure(&root)?;
            let mut args = vec!["explore".to_owned()];
            args.extend(rest.iter().filter(|a| *a != "--").cloned());
            ferroflow(&args)
        }
        "bench2d" => {
            setup::ensure(&root)?;
            let mut args = vec!["bench2d".to_owned()];
            args.extend(rest.iter().filter(|a| *a != "--").cloned());
            ferroflow(&args)
        }
        "train-classifier" => {
            setup::ensure(&root)?;
            setup::fashion_mnist(&root)?;
            train_classifier(rest)
        }
        "image-eval" => {
            let (run_dir, extra) = take_flag(rest, "--run")?;
            let run_dir = run_dir.context("image-eval needs --run DIR (a Fashion-MNIST run)")?;
            setup::ensure(&root)?;
            setup::fashion_mnist(&root)?;
            if !root.join("runs/classifier/classifier.safetensors").is_file() {
                train_classifier(&[])?;
            }
            let mut args = vec!["image-eval".to_owned(), "--run".to_owned(), run_dir];
            args.extend(extra);
            ferroflow(&args)
        }
        "data" => match rest.first().map(String::as_str) {
            Some("fashion-mnist") => setup::fashion_mnist(&root).map(|_| ()),
            other => bail!("unknown data set {other:?}; known: fashion-mnist"),
        },
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n{USAGE}"),
    }
}

/// `setup`'s flags: the libtorch mode and whether to install the peers.
fn parse_setup_flags(rest: &[String]) -> Result<(setup::Mode, bool)> {
    let mut mode = setup::Mode::Cpu;
    let mut peers = false;
    for flag in rest {
        match flag.as_str() {
            "--cuda" => mode = setup::Mode::Cuda,
            "--peers" => peers = true,
            other => bail!("setup takes only `--cuda` and `--peers`, got {other:?}"),
        }
    }
    Ok((mode, peers))
}

fn bench(root: &Path, rest: &[String]) -> Result<()> {
    let Some((which, extra)) = rest.split_first() else {
        bail!("bench needs one of: ot, train, likelihood, guidance, riemannian, discrete, distributed");
    };
    let with_peers = extra.iter().take_while(|a| *a != "--").any(|a| a == "--peers");
    let mut extra: Vec<String> = extra
        .iter()
        .filter(|a| *a != "--" && *a != "--peers")
        .cloned()
        .collect();
    ensure!(
        !with_peers || ["train", "likelihood", "riemannian", "discrete"].contains(&which.as_str()),
        "bench {which} has no side-by-side peer run; --peers goes with train, likelihood, riemannian and \
         discrete"
    );
    match which.as_str() {
        // The OT benchmark needs no libtorch: it runs the coupling crate's example directly.
        "ot" => {
            let mut args = vec![
                "run",
                "--release",
                "-p",
                "ferroflow-coupling",
                "--example",
                "bench_ot",
                "--",
            ];
            args.extend(extra.iter().map(String::as_str));
            cargo(&args)
        }
        "train" | "likelihood" | "guidance" | "riemannian" | "discrete" => {
            setup::ensure(root)?;
            if with_peers {
                let python = setup::peers(root)?;
                extra.push("--peer-python".to_owned());
                extra.push(python.display().to_string());
            }
            let mut args = vec!["bench".to_owned(), which.clone()];
            args.extend(extra);
            ferroflow(&args)
        }
        // 1 process against 2 MPI ranks; the U-Net half needs Fashion-MNIST.
        "distributed" => {
            setup::ensure(root)?;
            setup::fashion_mnist(root)?;
            let mut args = vec!["bench".to_owned(), "distributed".to_owned()];
            // Open MPI refuses to start as root unless told; --oversubscribe lets 2 ranks share few cores.
            let mpirun_args = if running_as_root() {
                "--allow-run-as-root --oversubscribe"
            } else {
                "--oversubscribe"
            };
            args.push(format!("--mpirun-args={mpirun_args}"));
            args.extend(extra);
            ferroflow(&args)
        }
        other => {
            bail!(
                "unknown benchmark `{other}`; known: ot, train, likelihood, guidance, riemannian, discrete, \
                 distributed"
            )
        }
    }
}

/// Whether this process runs as root (Linux: the real uid in `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().next())
            == Some("0")
    })
}

/// Splits `--flag VALUE` out of `args`; what follows a bare `--` is passed through untouched.
fn take_flag(args: &[String], flag: &str) -> Result<(Option<String>, Vec<String>)> {
    let mut value = None;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            let v = iter.next().with_context(|| format!("`{flag}` needs a value"))?;
            value = Some(v.clone());
        } else if arg == "--" {
            rest.extend(iter.by_ref().cloned());
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((value, rest))
}

fn newest_run(runs: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(runs)
        .with_context(|| format!("no runs found: {} is missing; train first", runs.display()))?;
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries {
        let entry = entry?;
        if !entry.path().join("model.safetensors").exists() {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, entry.path()));
        }
    }
    newest.map(|(_, p)| p).with_context(|| {
        format!(
            "no finished run (with model.safetensors) under {}",
            runs.display()
        )
    })
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the workspace root")
        .to_path_buf()
}

/// Trains the Fashion-MNIST classifier (the `train_classifier` example) with `args` (`[STEPS THREADS
/// OUT_DIR]`; a bare `--` is ignored).
fn train_classifier(args: &[String]) -> Result<()> {
    let mut full = vec![
        "run",
        "--release",
        "-p",
        "ferroflow",
        "--example",
        "train_classifier",
        "--",
    ];
    full.extend(args.iter().map(String::as_str).filter(|a| *a != "--"));
    cargo(&full)
}

/// Runs the `ferroflow` program in release mode with `args`. It is built first in a separate cargo call that
/// shows cargo's progress (a fresh clone's release build takes minutes and would otherwise look stuck); the
/// run itself is then quiet.
fn ferroflow(args: &[String]) -> Result<()> {
    cargo(&["build", "--release", "-p", "ferroflow", "--bin", "ferroflow"])?;
    let mut full = vec![
        "run",
        "--quiet",
        "--release",
        "-p",
        "ferroflow",
        "--bin",
        "ferroflow",
        "--",
    ];
    full.extend(args.iter().map(String::as_str));
    cargo(&full)
}

/// Runs cargo (the one that runs xtask) with `args`, failing with the command line when it fails.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("cannot start {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn setup_flags_combine_and_refuse_strangers() {
        assert_eq!(parse_setup_flags(&[]).unwrap(), (setup::Mode::Cpu, false));
        assert_eq!(
            parse_setup_flags(&strings(&["--peers", "--cuda"])).unwrap(),
            (setup::Mode::Cuda, true)
        );
        let err = parse_setup_flags(&strings(&["--gpu"])).unwrap_err();
        assert!(format!("{err:#}").contains("\"--gpu\""), "{err:#}");
    }

    #[test]
    fn peers_are_refused_for_a_benchmark_without_a_peer_run() {
        let err = bench(Path::new("/nonexistent"), &strings(&["guidance", "--peers"])).unwrap_err();
        assert!(format!("{err:#}").contains("no side-by-side peer run"), "{err:#}");
    }
}
