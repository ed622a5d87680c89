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

/// A version 1.0 `.npy` file with the given header fields and raw data.
fn npy(dir: &Path, name: &str, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> PathBuf {
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}").into_bytes();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
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

#[test]
fn point_files_are_checked_before_any_work() {
    let dir = scratch("points");
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    // The same 3 x 2 points in C and in Fortran order, and 3 other points.
    let c_order = npy(
        &dir,
        "c.npy",
        "<f4",
        false,
        "(3, 2)",
        &f32_bytes(&[0., 1., 2., 3., 4., 5.]),
    );
    let fortran = npy(
        &dir,
        "f.npy",
        "<f4",
        true,
        "(3, 2)",
        &f32_bytes(&[0., 2., 4., 1., 3., 5.]),
    );
    let other = npy(&dir, "o.npy", "<f8", false, "(3, 2)", &[0; 48]);
    for command in ["w2", "ot"] {
        let (a, b) = if command == "w2" {
            ("--a", "--b")
        } else {
            ("--x0", "--x1")
        };
        let out = ferroflow(&[command, a, &path(&c_order), b, &path(&fortran)]);
        assert!(out.status.success(), "{command}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = stdout
            .split_whitespace()
            .find_map(|w| w.parse::<f64>().ok())
            .unwrap();
        assert_eq!(
            first, 0.0,
            "{command} between a file and its Fortran twin: {stdout}"
        );
        assert!(
            ferroflow(&[command, a, &path(&other), b, &path(&fortran)])
                .status
                .success()
        );
    }

    // Files that must be refused, with the word that says why; never an abort (exit 134) or a NaN.
    let refused = [
        (npy(&dir, "empty.npy", "<f4", false, "(0, 2)", &[]), "no points"),
        (npy(&dir, "ints.npy", "<i8", false, "(3, 2)", &[0; 48]), "'<i8'"),
        (
            npy(&dir, "huge.npy", "<f4", false, "(1048576, 1048576)", &[0; 24]),
            "[1048576, 1048576]",
        ),
        (
            npy(&dir, "cut.npy", "<f4", false, "(3, 2)", &[0; 20]),
            "truncated",
        ),
        (
            npy(
                &dir,
                "nan.npy",
                "<f4",
                false,
                "(3, 2)",
                &f32_bytes(&[0., 1., f32::NAN, 3., 4., 5.]),
            ),
            "[1, 0]",
        ),
    ];
    for (bad, reason) in &refused {
        for (command, a, b) in [("w2", "--a", "--b"), ("ot", "--x0", "--x1")] {
            let (bad_path, good_path) = (path(bad), path(&c_order));
            let (bad_path, good_path) = (bad_path.as_str(), good_path.as_str());
            for args in [[a, bad_path, b, good_path], [a, good_path, b, bad_path]] {
                let out = ferroflow(&[&[command][..], &args[..]].concat());
                let name = bad.file_name().unwrap().to_str().unwrap();
                assert_eq!(out.status.code(), Some(1), "{command} {name}: {}", stderr(&out));
                assert!(
                    stderr(&out).contains(name) && stderr(&out).contains(reason),
                    "{command} {name}: {}",
                    stderr(&out)
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_discrete_config_trains_from_the_command_line_and_mixes_are_refused_by_key() {
    let dir = scratch("discrete");
    let path = dir.join("tokens.toml");
    let text = format!(
        "[run]\nname = \"tokens\"\nout_dir = \"{}\"\n[data]\ntarget = {{ kind = \"tokens_2d\", dataset = \
         \"checkerboard\", bins = 8 }}\n[model]\nkind = \"token_mlp\"\n[model.token_mlp]\nwidth = 16\ndepth = 1\n\
         [train]\nsteps = 20\nbatch_size = 32\n[sample]\nn_samples = 50\nsteps = 8\n",
        dir.join("runs").display()
    );
    std::fs::write(&path, &text).unwrap();
    let out = ferroflow(&["train", "--config", path.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.join("runs/tokens");
    for name in [
        "config.toml",
        "checkpoint.safetensors",
        "loss.csv",
        "metrics.json",
        "samples.npy",
    ] {
        assert!(run.join(name).is_file(), "{name}");
    }
    // 50 x 2 float32 token ids after the 128-byte header, all data tokens (the mask, 8, is gone).
    let bytes = std::fs::read(run.join("samples.npy")).unwrap();
    let ids: Vec<f32> = bytes[128..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(ids.len(), 100);
    assert!(
        ids.iter()
            .all(|&id| id.fract() == 0.0 && (0.0..8.0).contains(&id)),
        "{ids:?}"
    );
    std::fs::write(&path, text.replace("token_mlp\"", "mlp\"")).unwrap();
    let out = ferroflow(&["train", "--config", path.to_str().unwrap(), "--quiet"]);
    assert!(
        !out.status.success() && stderr(&out).contains("model.kind"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
