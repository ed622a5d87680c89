//! Data-parallel training through the program, under Open MPI's `mpirun` (installed by `cargo xtask setup`):
//! two ranks with global batch B train what one process with batch B trains (independent and exact-OT
//! couplings), every rank holds bit-identical weights after every step, checkpoints resume across world
//! sizes, a killed rank or a non-finite loss ends the whole job with a message naming the rank and leaves the
//! last checkpoint resumable, Ctrl-C on mpirun checkpoints the step the ranks agreed to stop at, and a world
//! size that does not divide the batch is refused before training. Discrete (token) runs train on ranks too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-cli-distributed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ferroflow ARGS` in one process.
fn one(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// `mpirun -np N ferroflow ARGS`.
fn mpirun(dir: &Path, ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .current_dir(dir)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            &ranks.to_string(),
        ])
        .arg(env!("CARGO_BIN_EXE_ferroflow"));
    command
}

fn ranks(dir: &Path, n: usize, args: &[&str]) -> Output {
    mpirun(dir, n)
        .args(args)
        .output()
        .expect("mpirun runs (Open MPI, installed by `cargo xtask setup`)")
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    text
}

/// A small 2D run: moons from N(0, I), a 2 x 32 MLP with an EMA, global batch 64.
fn config(dir: &Path, coupling: &str, steps: usize, lr: f64) -> PathBuf {
    let text = format!(
        "[run]\nname = \"r\"\nseed = 3\n[data]\nsource = {{ kind = \"gaussian\" }}\ntarget = {{ kind = \"moons\" }}\n\
         [model]\nwidth = 32\ndepth = 2\n[flow]\ncoupling = {{ kind = \"{coupling}\" }}\n[train]\nsteps = {steps}\n\
         batch_size = 64\ncheckpoint_every = 20\nlog_every = 10\nema_decay = 0.99\n[train.optimizer]\nlr = {lr}\n\
         [sample]\nn_samples = 200\nsteps = 10\nw2_samples = 200\n"
    );
    let path = dir.join(format!("{coupling}-{steps}-{lr}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Every tensor of a checkpoint, by name, as f64 values.
fn checkpoint(run: &Path) -> Vec<(String, Vec<f64>)> {
    let mut named = Tensor::read_safetensors(run.join("checkpoint.safetensors")).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
        .into_iter()
        .filter(|(name, _)| name != "state.train_seconds")
        .map(|(name, t)| {
            let t = t.to_kind(tch::Kind::Double).flatten(0, -1);
            (name, Vec::<f64>::try_from(&t).unwrap())
        })
        .collect()
}

/// The largest difference between two checkpoints' tensors (same names and sizes required).
fn max_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (checkpoint(a), checkpoint(b));
    assert_eq!(
        a.iter().map(|(n, v)| (n, v.len())).collect::<Vec<_>>(),
        b.iter().map(|(n, v)| (n, v.len())).collect::<Vec<_>>()
    );
    a.iter()
        .zip(&b)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f64::max)
}

fn loss_curve(run: &Path) -> Vec<(usize, f64)> {
    std::fs::read_to_string(run.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let (step, loss) = line.split_once(',').unwrap();
            (step.parse().unwrap(), loss.parse().unwrap())
        })
        .collect()
}

fn assert_same_curve(a: &Path, b: &Path) {
    let (a, b) = (loss_curve(a), loss_curve(b));
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
            "step {sa}: {la} vs {lb}"
        );
    }
}

fn metrics(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn two_ranks_train_what_one_process_trains() {
    for coupling in ["independent", "exact_ot"] {
        let dir = temp_dir(&format!("equivalence-{coupling}"));
        let cfg = config(&dir, coupling, 60, 1e-3);
        let cfg = cfg.to_str().unwrap();
        ok(one(&dir, &["train", "--config", cfg, "--name", "one", "--quiet"]));
        // --check-replicas compares every rank's weights, moments and EMA bit for bit after every step.
        let out = ok(ranks(
            &dir,
            2,
            &[
                "train",
                "--config",
                cfg,
                "--name",
                "two",
                "--quiet",
                "--check-replicas",
            ],
        ));
        // Only rank 0 reports.
        assert_eq!(out.matches("trained 60").count(), 1, "{out}");
        let (a, b) = (dir.join("runs/one"), dir.join("runs/two"));
        // The mean of two half-batch gradients is the full-batch gradient up to f32 rounding.
        let diff = max_difference(&a, &b);
        assert!(diff < 1e-5, "{coupling}: weights differ by {diff}");
        assert_same_curve(&a, &b);
        let m = metrics(&b);
        assert_eq!(m["world_size"], 2);
        assert_eq!(m["backend"], "mpi");
        assert_eq!(metrics(&a)["world_size"], 1);
        let recorded = std::fs::read_to_string(b.join("config.toml")).unwrap();
        assert!(
            recorded.contains("world_size = 2") && recorded.contains("backend = \"mpi\""),
            "{recorded}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn checkpoints_resume_across_world_sizes() {
    let dir = temp_dir("resume");
    let cfg = config(&dir, "exact_ot", 80, 1e-3);
    let cfg = cfg.to_str().unwrap();
    ok(one(
        &dir,
        &["train", "--config", cfg, "--name", "straight", "--quiet"],
    ));
    // 2 ranks -> 1 process.
    ok(ranks(
        &dir,
        2,
        &[
            "train", "--config", cfg, "--name", "two-one", "--steps", "40", "--quiet",
        ],
    ));
    ok(one(
        &dir,
        &["train", "--resume", "runs/two-one", "--steps", "80", "--quiet"],
    ));
    // 1 process -> 2 ranks.
    ok(one(
        &dir,
        &[
            "train", "--config", cfg, "--name", "one-two", "--steps", "40", "--quiet",
        ],
    ));
    ok(ranks(
        &dir,
        2,
        &[
            "train",
            "--resume",
            "runs/one-two",
            "--steps",
            "80",
            "--quiet",
            "--check-replicas",
        ],
    ));
    let straight = dir.join("runs/straight");
    for resumed in ["two-one", "one-two"] {
        let run = dir.join("runs").join(resumed);
        let diff = max_difference(&straight, &run);
        assert!(
            diff < 1e-5,
            "{resumed}: weights differ from the uninterrupted run by {diff}"
        );
        assert_same_curve(&straight, &run);
    }
    assert_eq!(metrics(&dir.join("runs/one-two"))["world_size"], 2);
    assert_eq!(metrics(&dir.join("runs/two-one"))["world_size"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The step a checkpoint holds.
fn checkpoint_step(run: &Path) -> i64 {
    checkpoint(run)
        .into_iter()
        .find(|(name, _)| name == "state.step")
        .map(|(_, v)| v[0] as i64)
        .unwrap()
}

/// A 2-rank training of `cfg` that would run for hours, started in the background; returns once its folder
/// has a config (and, with `checkpointed`, a checkpoint past step 0).
fn start_long_job(dir: &Path, cfg: &Path, checkpointed: bool) -> (std::process::Child, PathBuf) {
    let job = mpirun(dir, 2)
        .args(["train", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = dir.join("runs/r");
    let started = Instant::now();
    while !(run.join("config.toml").exists() && (!checkpointed || checkpoint_step(&run) > 0)) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training did not start in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (job, run)
}

/// Waits for `job` to end after `what` happened, killing it and failing if it runs 30 s more; returns its
/// output.
fn ends_within_30s(mut job: std::process::Child, what: &str) -> Output {
    let since = Instant::now();
    while job.try_wait().unwrap().is_none() {
        if since.elapsed() > Duration::from_secs(30) {
            let _ = job.kill();
            panic!("the job still runs 30 s after {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    job.wait_with_output().unwrap()
}

/// Resumes `run` in one process 3 steps past its checkpoint and checks that it got there.
fn resumes_from_checkpoint(dir: &Path, run: &Path) {
    let step = checkpoint_step(run);
    assert!(step > 0, "no checkpoint past step 0");
    let until = (step + 3).to_string();
    ok(one(
        dir,
        &["train", "--resume", "runs/r", "--steps", &until, "--quiet"],
    ));
    assert_eq!(checkpoint_step(run), step + 3);
}

#[test]
fn killing_a_rank_ends_the_job_and_keeps_the_checkpoint() {
    let dir = temp_dir("kill");
    let cfg = config(&dir, "independent", 10_000_000, 1e-3);
    let (job, run) = start_long_job(&dir, &cfg, true);
    let children = Command::new("pgrep")
        .args(["-P", &job.id().to_string()])
        .output()
        .unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(pids.len(), 2, "mpirun's children: {pids:?}");
    Command::new("kill").args(["-9", &pids[1]]).status().unwrap();
    let text = failed(&ends_within_30s(job, "a rank died"));
    assert!(text.contains("rank 1") && text.contains("signal 9"), "{text}");
    // The last checkpoint is intact: one process resumes it.
    resumes_from_checkpoint(&dir, &run);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failure_on_rank_0_alone_ends_the_job_instead_of_hanging() {
    let dir = temp_dir("rank0");
    let cfg = config(&dir, "independent", 10_000_000, 1e-3);
    let (job, run) = start_long_job(&dir, &cfg, false);
    // The folder disappears: rank 0's next checkpoint fails, while rank 1 waits in the next all-reduce. It is
    // moved away in one atomic rename, not removed: removing it file by file races with rank 0 writing its
    // next checkpoint into it (`remove_dir_all` then fails with "directory not empty", seen in CI).
    std::fs::rename(&run, dir.join("moved-away")).unwrap();
    let text = failed(&ends_within_30s(job, "rank 0 failed"));
    assert!(
        text.contains("rank 0 of 2") && text.contains("checkpoint"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_non_finite_loss_stops_every_rank() {
    let dir = temp_dir("nan");
    let cfg = config(&dir, "independent", 400, 1e9);
    let output = ranks(&dir, 2, &["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
    let text = failed(&output);
    assert!(
        text.contains("became non-finite") && text.contains("every rank stopped"),
        "{text}"
    );
    assert!(
        text.contains("rank 0 of 2") && text.contains("rank 1 of 2"),
        "{text}"
    );
    // The folder keeps its last good checkpoint and config.
    assert!(dir.join("runs/r/checkpoint.safetensors").exists());
    assert!(dir.join("runs/r/config.toml").exists());
    assert!(!dir.join("runs/r/model.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_world_size_that_does_not_divide_the_batch_is_refused() {
    let dir = temp_dir("uneven");
    let cfg = config(&dir, "independent", 10, 1e-3);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("batch_size = 64", "batch_size = 63");
    std::fs::write(&cfg, text).unwrap();
    let output = ranks(&dir, 2, &["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
    let text = failed(&output);
    assert!(
        text.contains("train.batch_size = 63") && text.contains("2 ranks"),
        "{text}"
    );
    assert!(!dir.join("runs/r").exists(), "a refused launch left a run folder");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_discrete_run_on_two_ranks_trains_what_one_process_trains() {
    let dir = temp_dir("discrete");
    let text = "[run]\nname = \"d\"\nseed = 1\n[data]\ntarget = { kind = \"tokens_2d\", dataset = \"moons\", bins = 16, half_width = 3.0 }\n\
         [model]\nkind = \"token_mlp\"\n[model.token_mlp]\nembedding_dim = 8\nwidth = 32\ndepth = 2\n[train]\nsteps = 40\n\
         batch_size = 32\ncheckpoint_every = 20\nlog_every = 10\nema_decay = 0.99\n[sample]\nn_samples = 50\nsteps = 8\n\
         w2_samples = 50\n";
    let cfg = dir.join("tokens.toml");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.to_str().unwrap();
    ok(one(&dir, &["train", "--config", cfg, "--name", "one", "--quiet"]));
    ok(ranks(
        &dir,
        2,
        &[
            "train",
            "--config",
            cfg,
            "--name",
            "two",
            "--quiet",
            "--check-replicas",
            "--steps",
            "20",
        ],
    ));
    ok(ranks(
        &dir,
        2,
        &[
            "train",
            "--resume",
            "runs/two",
            "--steps",
            "40",
            "--quiet",
            "--check-replicas",
        ],
    ));
    let (a, b) = (dir.join("runs/one"), dir.join("runs/two"));
    let diff = max_difference(&a, &b);
    assert!(diff < 1e-5, "discrete: weights differ by {diff}");
    assert_same_curve(&a, &b);
    assert_eq!(metrics(&b)["world_size"], 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_backend_this_build_lacks_is_an_error_not_a_fallback() {
    let dir = temp_dir("nccl");
    let cfg = config(&dir, "independent", 10, 1e-3);
    let output = one(
        &dir,
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--backend",
            "nccl",
            "--quiet",
        ],
    );
    let text = failed(&output);
    // The default build has no NCCL; a build with it on this CPU machine has no CUDA. Either way: refused.
    assert!(text.contains("--backend") && text.contains("nccl"), "{text}");
    assert!(
        text.contains("not in this build") || text.contains("NCCL needs CUDA"),
        "{text}"
    );
    assert!(!dir.join("runs/r").exists());
    let output = one(
        &dir,
        &["train", "--config", cfg.to_str().unwrap(), "--backend", "gloo"],
    );
    let text = failed(&output);
    assert!(text.contains("unknown backend \"gloo\""), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_on_mpirun_checkpoints_the_step_every_rank_stopped_at() {
    let dir = temp_dir("interrupt");
    let cfg = config(&dir, "independent", 10_000_000, 1e-3);
    // Checkpoints every 1,000,000 steps: a checkpoint past step 0 can only come from the interruption.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("checkpoint_every = 20", "checkpoint_every = 1000000");
    std::fs::write(&cfg, text).unwrap();
    let (job, run) = start_long_job(&dir, &cfg, false);
    std::thread::sleep(Duration::from_secs(2));
    // mpirun passes SIGINT on to the ranks as SIGTERM; they agree on the step in its all-reduce.
    Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status()
        .unwrap();
    ends_within_30s(job, "Ctrl-C");
    resumes_from_checkpoint(&dir, &run);
    std::fs::remove_dir_all(&dir).unwrap();
}
