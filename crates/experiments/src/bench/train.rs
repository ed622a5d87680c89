//! `ferroflow bench train`: training throughput in the setting of torchcfm's 2D examples (8gaussians ->
//! moons, batch 256, MLP 3 x 64 SELU, Adam, CPU), for I-CFM (independent coupling), OT-CFM (exact OT) and
//! SB-CFM (Brownian bridge, Sinkhorn at reg 2 sigma^2),
//! reported as the median steps/s of several repetitions, with ratios to torchcfm's figures measured on
//! this kind of machine (reference.md: 307 and 109 steps/s), or to torchcfm run side by side when a Python
//! with torch and torchcfm is given (`--peer-python PYTHON`, `PYTHONPATH` passed through).

use std::path::Path;

use anyhow::{Result, bail};

use ferroflow_coupling::{CouplingConfig, IndependentOrder, SolverKind};
use ferroflow_engine::RunConfig;
use ferroflow_engine::config::PathKind;
use ferroflow_engine::config::{
    DataSection, FlowSection, ModelSection, RunSection, SampleSection, TrainSection,
};
use ferroflow_engine::data::Dataset;
use ferroflow_models::{Mlp, MlpConfig};

use crate::roofline::{Roofline, network_flops};
use crate::timing::median;

/// torchcfm 1.0.7's steps/s measured on this kind of machine (../shared/reference.md; none for SB-CFM).
const TORCHCFM_REFERENCE: [(&str, f64); 3] = [("I-CFM", 307.0), ("OT-CFM", 109.0), ("SB-CFM", f64::NAN)];

/// torchcfm's 2D training setting as a typed config: 8gaussians -> moons, sigma 0.1, batch 256, MLP 3 x 64.
fn bench_config(
    name: &str,
    path: PathKind,
    coupling: CouplingConfig,
    steps: usize,
    threads: usize,
    out_dir: &Path,
) -> Result<RunConfig> {
    let config = RunConfig {
        run: RunSection {
            threads,
            ..RunSection::named(name, out_dir)
        },
        data: DataSection {
            source: Dataset::EightGaussians {},
            target: Dataset::Moons {},
            manifold: None,
        },
        model: ModelSection::default(),
        flow: FlowSection {
            path,
            sigma: 0.1,
            coupling,
            ..FlowSection::default()
        },
        train: TrainSection {
            steps,
            batch_size: 256,
            checkpoint_every: 0,
            log_every: 1000,
            ..TrainSection::default()
        },
        sample: SampleSection {
            n_samples: 16,
            steps: 2,
            ..SampleSection::default()
        },
    };
    config.validate()?;
    Ok(config)
}

/// Settings of `ferroflow bench train`.
#[derive(Clone, Debug)]
pub struct TrainBenchSettings {
    /// Steps per timed run.
    pub steps: usize,
    /// Timed runs per setting (the median is reported).
    pub repeats: usize,
    /// libtorch thread counts to measure, comma-separated.
    pub threads: Vec<usize>,
    /// A Python with torch and torchcfm: also run torchcfm's loop in the same setting, side by side.
    pub peer_python: Option<String>,
}

/// Runs the benchmark.
pub fn run(args: &TrainBenchSettings) -> Result<()> {
    let TrainBenchSettings {
        steps,
        repeats,
        ref threads,
        ref peer_python,
    } = *args;
    if steps == 0 || repeats == 0 {
        bail!("--steps and --repeats must be at least 1");
    }
    let out_dir = std::env::temp_dir().join(format!("ferroflow-bench-train-{}", std::process::id()));
    let mut rows = Vec::new();
    let couplings = [
        (
            "I-CFM",
            "independent",
            PathKind::Affine,
            CouplingConfig::Independent {
                order: IndependentOrder::Identity,
            },
        ),
        (
            "OT-CFM",
            "exact_ot",
            PathKind::Affine,
            CouplingConfig::ExactOt {
                solver: SolverKind::Jv,
            },
        ),
        // torchcfm's SB-CFM: Brownian bridge, Sinkhorn plan at reg = 2 sigma^2 = 0.02, pairs sampled from it;
        // iterations capped as in configs/bench2d/*-sbcfm.toml.
        (
            "SB-CFM",
            "schrodinger_bridge",
            PathKind::SchrodingerBridge,
            CouplingConfig::SchrodingerBridge {
                sigma: 0.1,
                max_iterations: 100,
                tolerance: 1e-3,
            },
        ),
    ];
    let roofline = Roofline::measure(threads, 7);
    // One step: the forward pass, and a backward pass that forms the input's and the weights' gradients.
    let flops_per_step = network_flops(&Mlp::new(MlpConfig::benchmark(2), tch::Device::Cpu)?, 256, 3.0);
    for (label, coupling_name, path, coupling) in couplings {
        for &t in threads {
            let mut rates = Vec::new();
            for rep in 0..repeats {
                let config = bench_config(
                    &format!("{coupling_name}-{t}-{rep}"),
                    path,
                    coupling.clone(),
                    steps,
                    t,
                    &out_dir,
                )?;
                let run_dir = out_dir.join(&config.run.name);
                std::fs::create_dir_all(&run_dir)?;
                let summary = ferroflow_engine::train::train(
                    &config,
                    &run_dir,
                    ferroflow_engine::train::Start::Fresh,
                    None,
                    &ferroflow_engine::distributed::Launch::single(),
                    &mut [],
                )?;
                rates.push(summary.steps_per_second());
            }
            rows.push((label, t, median(&mut rates)));
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    let peers = match peer_python {
        Some(python) => Some(peer_rates(python, steps)?),
        None => None,
    };
    println!(
        "training throughput, 8gaussians -> moons, batch 256, MLP 3x64 SELU, Adam, CPU; median of {repeats} x {steps} steps\n"
    );
    println!("{}\n", roofline.summary());
    let peer_header = if peers.is_some() {
        " torchcfm (same run) | ratio |"
    } else {
        ""
    };
    println!(
        "| method | threads | ferroflow steps/s | of I-CFM | GFLOP/s | roofline | torchcfm (reference.md) | ratio |{peer_header}"
    );
    println!(
        "|---|---|---|---|---|---|---|---|{}",
        if peers.is_some() { "---|---|" } else { "" }
    );
    let icfm_rate = |threads: usize| {
        rows.iter()
            .find(|(label, t, _)| *label == "I-CFM" && *t == threads)
            .map_or(f64::NAN, |row| row.2)
    };
    for &(label, t, rate) in &rows {
        let reference = TORCHCFM_REFERENCE
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(f64::NAN, |(_, r)| *r);
        let (gflops, share) = roofline.cells(flops_per_step * rate, 1.0, t);
        let (reference, reference_ratio) = if reference.is_nan() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (format!("{reference:.0}"), format!("{:.1}x", rate / reference))
        };
        let mut line = format!(
            "| {label} | {t} | {rate:.0} | {:.0} % | {gflops} | {share} | {reference} | {reference_ratio} |",
            100.0 * rate / icfm_rate(t),
        );
        if let Some(peers) = &peers {
            let peer = peers
                .iter()
                .find(|(l, _)| *l == label)
                .map_or(f64::NAN, |(_, r)| *r);
            line.push_str(&format!(" {peer:.0} | {:.1}x |", rate / peer));
        }
        println!("{line}");
    }
    Ok(())
}

/// Runs torchcfm's training loop in the same setting and reads its steps/s.
fn peer_rates(python: &str, steps: usize) -> Result<Vec<(&'static str, f64)>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/torchcfm_train.py");
    let text = super::run_peer_script(python, script, &[steps.to_string()])?;
    let mut rates = Vec::new();
    for (label, key) in [("I-CFM", "icfm"), ("OT-CFM", "otcfm"), ("SB-CFM", "sbcfm")] {
        rates.push((label, super::peer_value(&text, script, key)?));
    }
    Ok(rates)
}
