//! Fault injection against the `ferroflow` program: `kill -9` at seeded random moments of a training (from
//! before its first checkpoint to its final writes), SIGINT, a disk that fills up, and two processes on one
//! run. After each fault the user's one recovery (`train --resume` when the folder has a config, the same
//! `train --config` otherwise) must work, leave no temporary or lock file, and finish bit-identical to an
//! uninterrupted run (model, samples, loss curve).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferroflow");

fn ferroflow(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("the binary runs")
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config of `steps` steps writing into `out_dir/name`: small MLP with EMA, checkpoints every 250 steps.
fn config(dir: &Path, out_dir: &Path, name: &str, steps: usize) -> PathBuf {
    let text = format!(
        "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\nseed = 5\n\n[data]\ntarget = {{ kind = \"moons\" }}\n\n\
         [model]\nwidth = 32\n\n[train]\nsteps = {steps}\nbatch_size = 64\ncheckpoint_every = 250\n\
         log_every = 40\nema_decay = 0.99\n\n[sample]\nn_samples = 256\nsteps = 20\n",
        out = out_dir.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The files that must match an uninterrupted run byte for byte.
const OUTPUTS: [&str; 3] = ["model.safetensors", "samples.npy", "loss.csv"];

fn assert_same_outputs(run: &Path, reference: &Path, what: &str) {
    for file in OUTPUTS {
        let (a, b) = (std::fs::read(run.join(file)), std::fs::read(reference.join(file)));
        assert!(
            a.is_ok() && a.ok() == b.ok(),
            "{what}: {file} differs from the uninterrupted run"
        );
    }
}

/// No temporary file and no lock is left in `run`.
fn assert_no_leftovers(run: &Path, what: &str) {
    for entry in std::fs::read_dir(run).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp-") && name != ".lock",
            "{what}: {name} was left in {}",
            run.display()
        );
    }
}

/// What a user does after a crash: resume when the folder has a config, else start the same config again.
fn recover(config: &Path, run: &Path) -> Output {
    if run.join("config.toml").exists() {
        ferroflow(&["train", "--resume", run.to_str().unwrap(), "--quiet"])
    } else {
        ferroflow(&["train", "--config", config.to_str().unwrap(), "--quiet"])
    }
}

/// A small seeded generator for the kill moments (no dependency for a few numbers).
struct SplitMix(u64);

impl SplitMix {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

#[test]
fn kill_9_at_random_moments_then_recovery_reproduces_the_uninterrupted_run() {
    let dir = scratch("kill");
    let runs = dir.join("runs");
    let steps = 1500;
    let reference_config = config(&dir, &runs, "reference", steps);
    let started = Instant::now();
    let out = ferroflow(&["train", "--config", reference_config.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let duration = started.elapsed();
    let reference = runs.join("reference");

    // Moments spread over the whole run: the first ones fall before the first checkpoint (even before the
    // program has loaded libtorch), the last ones into sampling and the final writes.
    let mut rng = SplitMix(15);
    let mut moments: Vec<f64> = vec![0.0, 0.01, 0.98, 1.0];
    moments.extend((0..6).map(|_| rng.next_unit()));
    let mut injected = 0;
    for (idx, fraction) in moments.iter().enumerate() {
        let name = format!("killed-{idx}");
        let cfg = config(&dir, &runs, &name, steps);
        let run = runs.join(&name);
        let mut child = spawn(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
        std::thread::sleep(duration.mul_f64(*fraction));
        let killed = child.try_wait().unwrap().is_none();
        child.kill().ok();
        child.wait().unwrap();
        injected += usize::from(killed);
        // A kill can come more than once before the run is recovered.
        if killed && idx % 3 == 1 {
            let mut again = spawn(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
            std::thread::sleep(duration.mul_f64(0.3));
            again.kill().ok();
            again.wait().unwrap();
        }
        let out = recover(&cfg, &run);
        assert!(
            out.status.success(),
            "recovery after a kill at {:.0} % failed: {}",
            fraction * 100.0,
            stderr(&out)
        );
        assert_same_outputs(&run, &reference, &format!("kill at {:.0} %", fraction * 100.0));
        assert_no_leftovers(&run, &format!("kill at {:.0} %", fraction * 100.0));
    }
    assert!(
        injected >= 6,
        "only {injected} of the kills hit a running process"
    );
    eprintln!("faults: {injected} kill -9 injected, every run recovered bit-identical");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_crash_between_writing_and_renaming_any_file_loses_nothing() {
    // The worst moment of every atomic write, hit deterministically: the process aborts after writing the
    // temporary of the named file and before renaming it (FERROFLOW_CRASH_BEFORE_RENAME, a test-only hook).
    let dir = scratch("crash");
    let runs = dir.join("runs");
    let steps = 600;
    let reference_config = config(&dir, &runs, "reference", steps);
    let out = ferroflow(&["train", "--config", reference_config.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = runs.join("reference");
    let points = [
        "checkpoint.safetensors#1", // the step-0 checkpoint, before any config exists
        "config.toml",
        "checkpoint.safetensors#2",
        "checkpoint.safetensors#4", // the last one (steps 250, 500, 600)
        "model.safetensors",
        "loss.csv",
        "samples.npy",
        "metrics.json",
        "samples.png",
    ];
    for (idx, point) in points.iter().enumerate() {
        let name = format!("crash-{idx}");
        let cfg = config(&dir, &runs, &name, steps);
        let run = runs.join(&name);
        let out = Command::new(BIN)
            .args(["train", "--config", cfg.to_str().unwrap(), "--quiet"])
            .env("FERROFLOW_CRASH_BEFORE_RENAME", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success() && stderr(&out).contains("aborting before renaming"),
            "{point}: the crash point was not reached: {}",
            stderr(&out)
        );
        let out = recover(&cfg, &run);
        assert!(
            out.status.success(),
            "recovery after a crash at {point}: {}",
            stderr(&out)
        );
        assert_same_outputs(&run, &reference, &format!("crash at {point}"));
        assert_no_leftovers(&run, &format!("crash at {point}"));
    }
    eprintln!(
        "faults: {} crashes between write and rename, every run recovered bit-identical",
        points.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigint_checkpoints_the_current_step_and_prints_the_resume_command() {
    let dir = scratch("sigint");
    let runs = dir.join("runs");
    let steps = 20_000;
    let reference_config = config(&dir, &runs, "reference", steps);
    let interrupted_config = config(&dir, &runs, "interrupted", steps);
    let run = runs.join("interrupted");
    let child = spawn(&[
        "train",
        "--config",
        interrupted_config.to_str().unwrap(),
        "--quiet",
    ]);
    // Interrupt once training is under way (the config is written after the step-0 checkpoint).
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join("config.toml").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let waited = signalled.elapsed();
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{msg}");
    assert!(waited < Duration::from_secs(10), "took {waited:?} to stop");
    let resume_line = format!("ferroflow train --resume {}", run.display());
    assert!(
        msg.contains("interrupted at step") && msg.contains(&resume_line),
        "{msg}"
    );
    let step: usize = msg
        .split("interrupted at step ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in {msg}"));
    assert!(step > 0 && step < steps, "{msg}");
    assert!(
        !run.join("model.safetensors").exists(),
        "an interrupted run has no final model"
    );
    assert_no_leftovers(&run, "SIGINT");

    let out = ferroflow(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ferroflow(&["train", "--config", reference_config.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_outputs(&run, &runs.join("reference"), "SIGINT then resume");
    // The metrics count both legs: at least as many seconds as steps at any plausible rate would need.
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["train_steps"].as_u64(), Some(steps as u64));
    let rate = metrics["train_steps_per_second"].as_f64().unwrap();
    let seconds = metrics["train_seconds"].as_f64().unwrap();
    assert!((rate * seconds - steps as f64).abs() < 1.0, "{metrics}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_process_on_a_running_run_is_refused_and_changes_nothing() {
    let dir = scratch("two");
    let runs = dir.join("runs");
    let cfg = config(&dir, &runs, "busy", 50_000);
    let run = runs.join("busy");
    let mut first = spawn(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join("config.toml").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let config_before = std::fs::read(run.join("config.toml")).unwrap();
    let resume = ferroflow(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--steps",
        "60000",
        "--quiet",
    ]);
    let msg = stderr(&resume);
    assert!(
        !resume.status.success() && msg.contains("in use by process"),
        "{msg}"
    );
    assert!(
        msg.contains(&first.id().to_string()),
        "the holder is named: {msg}"
    );
    let again = ferroflow(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
    let msg = stderr(&again);
    assert!(
        !again.status.success() && msg.contains("exists already") && msg.contains("another process"),
        "{msg}"
    );
    let eval = ferroflow(&["eval", "--run", run.to_str().unwrap()]);
    assert!(
        !eval.status.success() && stderr(&eval).contains("in use"),
        "{}",
        stderr(&eval)
    );
    assert_eq!(std::fs::read(run.join("config.toml")).unwrap(), config_before);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first training still runs"
    );
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_no_leftovers(&run, "SIGTERM");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tmpfs mounted for a test, unmounted when dropped (also when the test fails).
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn ten_simultaneous_trainings_of_one_name_leave_exactly_one_winner() {
    let dir = scratch("race");
    let runs = dir.join("runs");
    let steps = 300;
    let reference_config = config(&dir, &runs, "reference", steps);
    let out = ferroflow(&["train", "--config", reference_config.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = config(&dir, &runs, "raced", steps);
    let children: Vec<Child> = (0..10)
        .map(|_| spawn(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]))
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "{:?}", outputs.iter().map(stderr).collect::<Vec<_>>());
    for out in outputs.iter().filter(|o| !o.status.success()) {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
        assert!(stderr(out).contains("exists already"), "{}", stderr(out));
    }
    let run = runs.join("raced");
    assert_same_outputs(&run, &runs.join("reference"), "the winner of the race");
    assert_no_leftovers(&run, "the race");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Mounts a tmpfs of `kib` KiB at `dir`; `None` when this process may not (not root, no mount).
fn small_disk(dir: &Path, kib: usize) -> Option<SmallDisk> {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| SmallDisk(dir.to_path_buf()))
}

#[test]
fn a_full_disk_fails_cleanly_and_the_run_resumes_elsewhere() {
    let dir = scratch("full");
    let runs = dir.join("runs");
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    // The reference first, to learn how large a checkpoint is.
    let steps = 1000;
    let reference_config = config(&dir, &runs, "reference", steps);
    let out = ferroflow(&["train", "--config", reference_config.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checkpoint = std::fs::metadata(runs.join("reference/checkpoint.safetensors"))
        .unwrap()
        .len() as usize;
    // Room for the step-0 checkpoint and the config, not for the temporary of the next checkpoint.
    let kib = (checkpoint * 3 / 2).div_ceil(4096) * 4;
    let Some(mounted) = small_disk(&disk, kib) else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root and mount)");
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    };
    let full_config = config(&dir, &disk, "full", steps);
    let out = ferroflow(&["train", "--config", full_config.to_str().unwrap(), "--quiet"]);
    let msg = stderr(&out);
    let run = disk.join("full");
    let listing: Vec<String> = std::fs::read_dir(&run)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean error, no panic or abort: {msg}"
    );
    assert!(
        msg.contains("space") || msg.contains("28"),
        "the cause is named: {msg}"
    );
    assert_no_leftovers(&run, "disk full");
    // Move the folder to a disk with room and finish it there.
    let moved = runs.join("full");
    std::fs::create_dir_all(&moved).unwrap();
    for name in &listing {
        std::fs::copy(run.join(name), moved.join(name)).unwrap();
    }
    drop(mounted);
    let out = if moved.join("config.toml").exists() {
        // The folder's config names the full disk as out_dir; resuming reads only the folder itself.
        ferroflow(&["train", "--resume", moved.to_str().unwrap(), "--quiet"])
    } else {
        let cfg = config(&dir, &runs, "full", steps);
        ferroflow(&["train", "--config", cfg.to_str().unwrap(), "--quiet"])
    };
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_outputs(&moved, &runs.join("reference"), "disk full, then moved");
    std::fs::remove_dir_all(&dir).unwrap();
}
