//! End-to-end tests of the `ferroflow` program: a small run from config to metrics, exact resume, and the
//! bad-input paths (unknown key, existing run folder, missing file, a loss that overflows).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small config: 3 x 32 MLP, gaussian -> 8gaussians.
fn small_config(dir: &Path, name: &str, steps: usize, extra: &str) -> PathBuf {
    let text = format!(
        "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\nseed = 3\n\n[data]\ntarget = {{ kind = \"8gaussians\" }}\n\n\
         [model]\nwidth = 32\n\n[train]\nsteps = {steps}\nbatch_size = 64\ncheckpoint_every = 100\nlog_every = 50\n\
         ema_decay = 0.9\n\n[sample]\nn_samples = 300\nsteps = 20\nw2_samples = 300\n{extra}",
        out = dir.join("runs").display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn train_then_eval_writes_every_output() {
    let dir = scratch("e2e");
    let config = small_config(&dir, "run", 200, "");
    let out = ferroflow(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.join("runs/run");
    for file in [
        "config.toml",
        "model.safetensors",
        "checkpoint.safetensors",
        "samples.npy",
        "metrics.json",
        "samples.png",
        "loss.csv",
    ] {
        assert!(run.join(file).is_file(), "{file} is missing");
    }
    let out = ferroflow(&["eval", "--run", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let w2 = metrics["w2"].as_f64().unwrap();
    // 200 steps learn little, but the samples must be finite and nearer than the untrained source (W2 ~ 5).
    assert!(w2.is_finite() && w2 > 0.0 && w2 < 5.0, "w2 = {w2}");
    // A sample with a trajectory via the CLI.
    let samples = dir.join("s.npy");
    let out = ferroflow(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--n",
        "50",
        "--out",
        samples.to_str().unwrap(),
        "--solver",
        "rk4",
        "--steps",
        "5",
        "--trajectory",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.join("s.trajectory.npy").is_file());
    // The W2 of a sample set with itself is zero.
    let out = ferroflow(&[
        "w2",
        "--a",
        samples.to_str().unwrap(),
        "--b",
        samples.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .unwrap(),
        0.0
    );
    // A second run of the same name is refused and leaves the first one alone.
    let before = std::fs::read(run.join("model.safetensors")).unwrap();
    let out = ferroflow(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exists already") && stderr(&out).contains("run.name"),
        "{}",
        stderr(&out)
    );
    assert_eq!(before, std::fs::read(run.join("model.safetensors")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_one_exactly() {
    let dir = scratch("resume");
    let straight = small_config(&dir, "straight", 200, "");
    assert!(
        ferroflow(&["train", "--config", straight.to_str().unwrap(), "--quiet"])
            .status
            .success()
    );
    let halted = small_config(&dir, "halted", 100, "");
    assert!(
        ferroflow(&["train", "--config", halted.to_str().unwrap(), "--quiet"])
            .status
            .success()
    );
    let halted_run = dir.join("runs/halted");
    let out = ferroflow(&[
        "train",
        "--resume",
        halted_run.to_str().unwrap(),
        "--steps",
        "200",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let straight_run = dir.join("runs/straight");
    let read = |run: &Path, file: &str| std::fs::read(run.join(file)).unwrap();
    assert_eq!(
        read(&straight_run, "loss.csv"),
        read(&halted_run, "loss.csv"),
        "loss curves differ"
    );
    assert_eq!(
        read(&straight_run, "model.safetensors"),
        read(&halted_run, "model.safetensors")
    );
    // (The checkpoints differ only in the training seconds they record.)
    assert_eq!(
        read(&straight_run, "samples.npy"),
        read(&halted_run, "samples.npy")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_configs_are_refused_with_file_and_key() {
    let dir = scratch("bad");
    let config = small_config(&dir, "bad", 10, "[flow]\ncouplng = { kind = \"exact_ot\" }\n");
    let out = ferroflow(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(msg.contains("bad.toml") && msg.contains("couplng"), "{msg}");
    assert!(
        !dir.join("runs/bad").exists(),
        "a refused config must not leave a run folder"
    );
    let out = ferroflow(&["train", "--config", dir.join("missing.toml").to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("missing.toml"),
        "{}",
        stderr(&out)
    );
    let config = small_config(&dir, "lr", 10, "[train.optimizer]\nlr = 0.0\n");
    let out = ferroflow(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
    assert!(
        !out.status.success() && stderr(&out).contains("train.optimizer.lr"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_overflowing_loss_stops_the_run_and_names_the_step() {
    let dir = scratch("nan");
    // A learning rate of 1e30 throws the weights out of f32's range after the first update.
    let config = small_config(&dir, "inf", 50, "[train.optimizer]\nlr = 1e30\n")
        .to_str()
        .unwrap()
        .to_owned();
    let out = ferroflow(&["train", "--config", &config, "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let msg = stderr(&out);
    assert!(
        msg.contains("at step ") && msg.contains("the last good checkpoint (step 0) is kept"),
        "{msg}"
    );
    let run = dir.join("runs/inf");
    assert!(
        !run.join("model.safetensors").exists(),
        "no model is written from a diverged run"
    );
    // Issue 15, cause 4: the checkpoint the message names exists, and the config describes it.
    assert!(run.join("checkpoint.safetensors").is_file() && run.join("config.toml").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_command_declares_its_flags_to_clap() {
    // `bench guidance` used to take its flags as leftover strings for a second parser; now each command's
    // flags are clap's, so `--help` lists them and a wrong value is refused before any work.
    let out = ferroflow(&["bench", "guidance", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && help.contains("--study") && help.contains("--dims"),
        "{help}"
    );
    for (command, flag) in [
        ("sample", "--atol"),
        ("likelihood", "--rtol"),
        ("image-eval", "--atol"),
    ] {
        let out = ferroflow(&[command, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(flag), "{command} --help lacks {flag}: {help}");
    }
    let out = ferroflow(&[
        "sample",
        "--run",
        "nowhere",
        "--out",
        "x.npy",
        "--guidance",
        "mode",
        "--lambda",
        "1",
        "--estimator",
        "bogus",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("allowed: exact, hutchinson"),
        "{}",
        stderr(&out)
    );
    let out = ferroflow(&["ot", "--x0", "a.npy", "--x1", "b.npy", "--solver", "simplex"]);
    assert!(
        !out.status.success() && stderr(&out).contains("allowed: fast (jv), hungarian"),
        "{}",
        stderr(&out)
    );
}
