//! Regression tests for the bad inputs of issue 15 that reach the program (the readers' own cases are in
//! the engine's and models' tests; kills, signals, a full disk and two processes in `faults.rs`): each is
//! refused with exit status 1 and a message naming what was wrong, and leaves the run folder as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A 200-step run `name` under `dir/runs` (`extra` appended to `[train]`), trained; returns its folder.
fn trained(dir: &Path, name: &str, extra: &str) -> PathBuf {
    trained_wide(dir, name, 16, extra)
}

/// [`trained`] with an MLP of `width`.
fn trained_wide(dir: &Path, name: &str, width: usize, extra: &str) -> PathBuf {
    let text = format!(
        "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\n\n[data]\ntarget = {{ kind = \"moons\" }}\n\n\
         [model]\nwidth = {width}\n\n[train]\nsteps = 200\nbatch_size = 32\ncheckpoint_every = 100\nlog_every = 50\n\
         {extra}\n[sample]\nn_samples = 100\nsteps = 10\nw2_samples = 100\n",
        out = dir.join("runs").display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = ferroflow(&["train", "--config", path.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir.join("runs").join(name)
}

/// Runs the program, expects exit status 1 (an error, not a panic or an abort) and returns stderr.
fn refused(args: &[&str]) -> String {
    let out = ferroflow(args);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {msg}");
    assert!(!msg.contains("panicked"), "{args:?}: {msg}");
    msg
}

#[test]
fn refused_resumes_leave_the_config_untouched_and_plain_resume_still_works() {
    // Causes 5 and 6: --steps beyond the bound or below the checkpoint, and checkpoints that do not fit.
    let dir = scratch("resume");
    let run = trained(&dir, "r", "ema_decay = 0.9");
    let other = trained_wide(&dir, "wide", 24, "ema_decay = 0.9").join("checkpoint.safetensors");
    let no_ema = trained(&dir, "plain", "").join("checkpoint.safetensors");
    let config = run.join("config.toml");
    let checkpoint = run.join("checkpoint.safetensors");
    let (config_before, checkpoint_before) = (
        std::fs::read(&config).unwrap(),
        std::fs::read(&checkpoint).unwrap(),
    );
    let resume = |steps: &str| {
        refused(&[
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--steps",
            steps,
            "--quiet",
        ])
    };

    let msg = resume("18446744073709551615");
    assert!(msg.contains("train.steps") && msg.contains("1000000000"), "{msg}");
    let msg = resume("100");
    assert!(
        msg.contains("step 200") && msg.contains("train.steps = 100"),
        "{msg}"
    );
    let truncated = &checkpoint_before[..checkpoint_before.len() / 2];
    for (what, bytes) in [
        ("truncated", truncated.to_vec()),
        ("empty", Vec::new()),
        (
            "random",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
        ("other architecture", std::fs::read(&other).unwrap()),
        ("without EMA", std::fs::read(&no_ema).unwrap()),
    ] {
        std::fs::write(&checkpoint, bytes).unwrap();
        let msg = resume("400");
        assert!(msg.contains("checkpoint.safetensors"), "{what}: {msg}");
        assert_eq!(
            std::fs::read(&config).unwrap(),
            config_before,
            "{what}: the config was rewritten"
        );
    }
    std::fs::write(&checkpoint, &checkpoint_before).unwrap();
    let out = ferroflow(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ferroflow(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--steps",
        "300",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&config).unwrap().contains("steps = 300"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_folder_without_checkpoint_trains_from_step_zero_and_an_unstarted_one_is_taken() {
    // Cause 4: a config without a checkpoint resumes from step 0; a checkpoint without a config (a start
    // that died between the two writes) is started again by the same `train --config`.
    let dir = scratch("nockpt");
    let reference = trained(&dir, "reference", "");
    let run = trained(&dir, "again", "");
    for file in [
        "checkpoint.safetensors",
        "model.safetensors",
        "samples.npy",
        "loss.csv",
        "metrics.json",
    ] {
        std::fs::remove_file(run.join(file)).unwrap();
    }
    let out = ferroflow(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no checkpoint yet"), "{}", stderr(&out));
    for file in ["model.safetensors", "samples.npy", "loss.csv"] {
        assert_eq!(
            std::fs::read(run.join(file)).unwrap(),
            std::fs::read(reference.join(file)).unwrap()
        );
    }
    let unstarted = dir.join("runs/unstarted");
    std::fs::create_dir_all(&unstarted).unwrap();
    std::fs::copy(
        reference.join("checkpoint.safetensors"),
        unstarted.join("checkpoint.safetensors"),
    )
    .unwrap();
    std::fs::write(unstarted.join("samples.npy.tmp-99999"), b"half").unwrap();
    let config = dir.join("unstarted.toml");
    std::fs::write(
        &config,
        std::fs::read_to_string(dir.join("reference.toml"))
            .unwrap()
            .replace("name = \"reference\"", "name = \"unstarted\""),
    )
    .unwrap();
    let out = ferroflow(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!unstarted.join("samples.npy.tmp-99999").exists());
    assert_eq!(
        std::fs::read(unstarted.join("model.safetensors")).unwrap(),
        std::fs::read(reference.join("model.safetensors")).unwrap()
    );
    // A folder that holds a config is a run: a fresh train still refuses it.
    let msg = refused(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
    assert!(
        msg.contains("exists already") && msg.contains("--resume"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn huge_counts_are_refused_with_their_bound_before_any_work() {
    // Causes 5, 11 and 16.
    let dir = scratch("counts");
    let run = trained(&dir, "s", "");
    let config = dir.join("s.toml");
    let msg = refused(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--name",
        "n",
        "--steps",
        "9223372036854775808",
    ]);
    assert!(msg.contains("train.steps"), "{msg}");
    assert!(!dir.join("runs/n").exists(), "a refused run leaves no folder");
    let out = dir.join("out.npy");
    let sample = |extra: &[&str]| {
        let mut args = vec![
            "sample",
            "--run",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        refused(&args)
    };
    for (extra, named) in [
        (&["--n", "1000000000"][..], "--n"),
        (&["--n", "100000000"][..], "67108864"),
        (&["--n", "0"][..], "--n"),
        (&["--trajectory", "0"][..], "--trajectory"),
        (&["--trajectory", "1000000000"][..], "--trajectory"),
        (&["--solver", "dopri5", "--atol", "1e-300"][..], "sample.atol"),
    ] {
        let msg = sample(extra);
        assert!(msg.contains(named), "{extra:?}: {msg}");
    }
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_a_finished_run_keeps_its_training_time_and_name_cannot_rename_it() {
    // Causes 14 and 15.
    let dir = scratch("metrics");
    let run = trained(&dir, "m", "");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
    };
    let before = read();
    let out = ferroflow(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = read();
    let seconds = |m: &serde_json::Value| m["train_seconds"].as_f64().unwrap();
    assert!(seconds(&after) >= seconds(&before), "{before} -> {after}");
    let rate = after["train_steps_per_second"].as_f64().unwrap();
    assert!((rate * seconds(&after) - 200.0).abs() < 1e-6, "{after}");
    let msg = stderr(&ferroflow(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--name",
        "other",
    ]));
    assert!(
        msg.contains("--name") && msg.contains("cannot be used with"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_gpu_that_is_not_there_is_an_error_not_a_fallback() {
    // Cause 2.
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has CUDA");
        return;
    }
    let dir = scratch("cuda");
    let config = dir.join("c.toml");
    for device in ["cuda", "cuda:7"] {
        std::fs::write(
            &config,
            format!(
                "[run]\nname = \"g\"\nout_dir = \"{}\"\ndevice = \"{device}\"\n[data]\ntarget = {{ kind = \"moons\" }}\n",
                dir.join("runs").display()
            ),
        )
        .unwrap();
        let msg = refused(&["train", "--config", config.to_str().unwrap(), "--quiet"]);
        assert!(
            msg.contains("run.device") && msg.contains("cargo xtask setup --cuda"),
            "{msg}"
        );
        assert!(
            !dir.join("runs/g").exists(),
            "no folder is left by a refused device"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
