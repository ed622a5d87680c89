//! Speed figures of the explorer (issue 14), printed, never asserted: (a) how many progress updates a second
//! the live training stream delivers; (b) how much the stream (progress events and sample snapshots) slows
//! training against the same training without it (same config and steps, runs interleaved, medians), and the
//! time the stream's observer itself spends on the training thread, which is what it adds whatever else loads
//! the machine; (c) the server round trip of the page's requests over real TCP (closed-form views,
//! trajectory, couplings, mode seeking), against the server's own compute time.
//!
//! `cargo run -p ferroflow-explorer --example speed` (debug, opt-level 1, as the tests build it); add
//! `--release` for optimised figures. `ARGS`: `[REPEATS] [STEPS]` (default 7 and 3000).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ferroflow_engine::error::TrainError;
use ferroflow_engine::train::FlowModel;
use ferroflow_engine::train::observe::{Journal, Observer, StepInfo};
use ferroflow_explorer::training::{StreamObserver, TrainEvent, TrainRequest, run_training};
use ferroflow_explorer::{ServerConfig, serve};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The training the page starts by default (the page's train panel), with `steps` steps.
fn request(steps: usize) -> TrainRequest {
    serde_json::from_value(json!({
        "client": "speed-example",
        "target": { "kind": "8gaussians" },
        "path": { "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 },
        "coupling": "independent",
        "width": 64, "depth": 3, "steps": steps, "batch_size": 256, "learning_rate": 0.001, "seed": 0
    }))
    .expect("a valid request")
}

/// Seconds of one training without the stream.
fn train_plain(runs_dir: &std::path::Path, steps: usize) -> f64 {
    let config = request(steps).run_config(runs_dir).expect("a valid config");
    let started = Instant::now();
    ferroflow_engine::run::train_new(&config, &mut [], None).expect("training runs");
    started.elapsed().as_secs_f64()
}

/// Seconds of one training with the stream, and the progress updates a second a reader received.
fn train_streamed(runs_dir: &std::path::Path, steps: usize) -> (f64, f64, usize) {
    let config = request(steps).run_config(runs_dir).expect("a valid config");
    let (sender, mut receiver) = mpsc::channel::<TrainEvent>(64);
    let reader = std::thread::spawn(move || {
        let mut progress = Vec::new();
        let mut snapshots = 0;
        while let Some(event) = receiver.blocking_recv() {
            match event {
                TrainEvent::Progress { .. } => progress.push(Instant::now()),
                TrainEvent::Snapshot { .. } => snapshots += 1,
                _ => {}
            }
        }
        (progress, snapshots)
    });
    let started = Instant::now();
    run_training(config, Arc::new(AtomicBool::new(false)), sender);
    let seconds = started.elapsed().as_secs_f64();
    let (progress, snapshots) = reader.join().expect("the reader ends");
    let rate = match (progress.first(), progress.last()) {
        (Some(first), Some(last)) if progress.len() > 1 => {
            (progress.len() - 1) as f64 / (*last - *first).as_secs_f64()
        }
        _ => 0.0,
    };
    (seconds, rate, snapshots)
}

/// The stream's observer with a clock on its own work: the time it adds to the training thread.
struct Timed {
    inner: StreamObserver,
    seconds: f64,
}

impl Observer<FlowModel> for Timed {
    fn on_start(&mut self, first_step: usize, total: usize) -> Result<(), TrainError> {
        self.inner.on_start(first_step, total)
    }

    fn on_step(
        &mut self,
        model: &FlowModel,
        info: &StepInfo,
        journal: &mut Journal,
    ) -> Result<(), TrainError> {
        let started = Instant::now();
        let result = self.inner.on_step(model, info, journal);
        self.seconds += started.elapsed().as_secs_f64();
        result
    }
}

/// Seconds of one training with the stream's observer, and the seconds spent inside it (snapshots among them).
fn train_timed(runs_dir: &std::path::Path, steps: usize) -> (f64, f64, f64) {
    let config = request(steps).run_config(runs_dir).expect("a valid config");
    let (sender, mut receiver) = mpsc::channel::<TrainEvent>(64);
    let reader = std::thread::spawn(move || while receiver.blocking_recv().is_some() {});
    let mut observer = Timed {
        inner: StreamObserver::new(sender, &config).expect("the config's path builds"),
        seconds: 0.0,
    };
    let started = Instant::now();
    ferroflow_engine::run::train_new(&config, &mut [&mut observer], None).expect("training runs");
    let seconds = started.elapsed().as_secs_f64();
    let (inside, snapshots) = (observer.seconds, observer.inner.snapshot_seconds);
    drop(observer);
    reader.join().expect("the reader ends");
    (seconds, inside, snapshots)
}

/// One POST over a fresh TCP connection: milliseconds from connect to the last byte, and the JSON answer.
fn post(addr: SocketAddr, path: &str, body: &Value) -> (f64, Value) {
    let body = body.to_string();
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("the request is sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the answer arrives");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let text = String::from_utf8_lossy(&answer);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (ms, json)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let repeats = args.first().copied().unwrap_or(7);
    let steps = args.get(1).copied().unwrap_or(3000);
    let runs_dir = std::env::temp_dir().join(format!("ferroflow-explorer-speed-{}", std::process::id()));
    std::fs::create_dir_all(&runs_dir).expect("a temporary runs folder");

    // (a) and (b): interleaved so that load from elsewhere hits both alike.
    let (mut plain, mut streamed, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    let mut snapshots = 0;
    train_plain(&runs_dir, 50); // warm-up: libtorch's first use
    for _ in 0..repeats {
        plain.push(train_plain(&runs_dir, steps));
        let (seconds, rate, shots) = train_streamed(&runs_dir, steps);
        streamed.push(seconds);
        rates.push(rate);
        snapshots = shots;
    }
    let mut inside = Vec::new();
    for _ in 0..repeats {
        let (seconds, observer, snapshots) = train_timed(&runs_dir, steps);
        inside.push((100.0 * observer / seconds, 100.0 * snapshots / seconds));
    }
    let (plain_median, streamed_median) = (median(plain.clone()), median(streamed.clone()));
    println!("training {steps} steps (MLP 3x64, batch 256, 8gaussians), {repeats} runs each, interleaved:");
    println!("  without the stream: median {plain_median:.2} s  (all: {plain:.2?})");
    println!("  with the stream:    median {streamed_median:.2} s  (all: {streamed:.2?})");
    println!(
        "  overhead of the stream: {:+.1} % (median vs median)",
        100.0 * (streamed_median / plain_median - 1.0)
    );
    println!(
        "  time inside the stream's observer on the training thread: median {:.2} % of training (snapshots \
         {:.2} %); all runs: {inside:.2?}",
        median(inside.iter().map(|p| p.0).collect()),
        median(inside.iter().map(|p| p.1).collect())
    );
    println!(
        "  progress updates received: median {:.1} /s (all: {rates:.1?}); {snapshots} snapshots in the last run",
        median(rates.clone())
    );

    // (c): the server over TCP.
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (bound, ready) = std::sync::mpsc::channel();
    let config = ServerConfig {
        runs_dir: runs_dir.clone(),
        initial_run: None,
    };
    runtime.spawn(async move {
        serve(config, "127.0.0.1:0".parse().expect("an address"), move |addr| {
            let _ = bound.send(addr);
        })
        .await
        .expect("the server runs");
    });
    let addr = ready.recv().expect("the server binds");
    let target = json!({ "kind": "8gaussians" });
    let path = json!({ "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 });
    let requests = [
        (
            "/api/flow (the page's: 2,000 particles, 40x40 arrows, 64x64 ln rho, 51 frames)",
            "/api/flow",
            json!({ "target": target, "path": path, "n_particles": 2000, "grid": 40, "density_grid": 64, "frames": 51 }),
        ),
        (
            "/api/flow (one frame pair: 2,000 particles, 40x40 arrows, 64x64 ln rho, 2 frames)",
            "/api/flow",
            json!({ "target": target, "path": path, "n_particles": 2000, "grid": 40, "density_grid": 64, "frames": 2 }),
        ),
        (
            "/api/flow (the page's, with a pushed grid of 15 + 15 lines)",
            "/api/flow",
            json!({ "target": target, "path": path, "n_particles": 2000, "grid": 40, "density_grid": 64, "frames": 51,
                    "grid_lines": 15 }),
        ),
        (
            "/api/flow (the page's, particles by DDPM's ancestral sampler)",
            "/api/flow",
            json!({ "target": target, "path": path, "n_particles": 2000, "grid": 40, "density_grid": 64, "frames": 51,
                    "sampler": "ddpm" }),
        ),
        (
            "/api/trajectory (400 RK4 steps)",
            "/api/trajectory",
            json!({ "target": target, "path": path, "start": [0.5, -0.5], "steps": 400 }),
        ),
        (
            "/api/coupling (64 pairs, OT and Sinkhorn)",
            "/api/coupling",
            json!({ "target": target, "n_pairs": 64 }),
        ),
        (
            "/api/mode_seeking (the page's: 2,000 samples, 50 Euler steps, 24x24 maps, 32 repeats)",
            "/api/mode_seeking",
            json!({ "target": target, "path": path, "lambda": 0.5, "estimator": "exact", "probes": 1,
                    "sampler": "euler", "steps": 50, "n_particles": 2000, "grid": 24, "t": 0.5, "repeats": 32 }),
        ),
        (
            "/api/classifier_free (the page's: 2,000 samples, 40 midpoint steps, three fields)",
            "/api/classifier_free",
            json!({ "target": target, "path": path, "class": 2, "weight": 2.0, "n_samples": 2000, "steps": 40 }),
        ),
    ];
    println!("server round trips over TCP (median of {repeats}; server compute where it reports it):");
    for (name, endpoint, body) in requests {
        let mut times = Vec::new();
        let mut compute = Vec::new();
        let mut bytes = 0;
        for _ in 0..repeats {
            let (ms, answer) = post(addr, endpoint, &body);
            assert!(answer.get("error").is_none(), "{endpoint}: {answer}");
            bytes = answer.to_string().len();
            times.push(ms);
            if let Some(c) = answer["compute_ms"].as_f64() {
                compute.push(c);
            }
        }
        let compute = if compute.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1} ms", median(compute))
        };
        println!(
            "  {name}: {:.1} ms round trip, {compute} compute, {:.0} kB of JSON",
            median(times),
            bytes as f64 / 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&runs_dir);
}
