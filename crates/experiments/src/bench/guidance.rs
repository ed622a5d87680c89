//! `ferroflow bench guidance`: the cost of a mode-seeking sampling step against a plain one.
//!
//! For MLP velocity networks on random weights (width 256, depth 3, SELU, time concatenated) at
//! D = 2, 16, 64, 256, 784 and batch 256, it times one Euler step (`x + h v`) with the plain field, with
//! Hutchinson's divergence gradient (K = 1 and 4 probes) and with the exact one, and prints a markdown table
//! of ratios to the plain step plus the exact/Hutchinson ratio against D (the notes predict it grows about
//! linearly in D, while Hutchinson stays a small constant multiple of the plain step). The Fashion-MNIST
//! U-Net of `ferroflow_models::unet` is timed at batch 16 (plain and Hutchinson; the exact gradient would
//! need 784 second-order backward passes through it per step, and is not run). Every timing is the median of
//! `--repeats` runs after one warm-up, except the exact step from D = 256 on, timed once (it takes seconds).
//!
//! `--study OUT` runs the effect study of [`crate::guidance_study::effect_study`] instead, writing its tables and
//! pictures into OUT.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferroflow_guidance::{ModeSeeking, ModeSeekingField};
use ferroflow_models::unet::{Unet, UnetConfig};
use ferroflow_models::{Activation, Mlp, MlpConfig, TimeEmbedding, VelocityNet};
use tch::{Device, Kind, Tensor};

use crate::timing::median_time;

/// Settings of `ferroflow bench guidance`.
#[derive(Clone, Debug)]
pub struct GuidanceBenchSettings {
    /// Data dimensions of the MLPs.
    pub dims: Vec<usize>,
    /// Batch of the MLP timings.
    pub batch: i64,
    /// Hidden width of the MLPs.
    pub width: usize,
    /// Hidden layers of the MLPs.
    pub depth: usize,
    /// Timed runs per measurement (the median is reported).
    pub repeats: usize,
    /// libtorch threads.
    pub threads: i32,
    /// Batch of the U-Net timings (0 skips the U-Net).
    pub unet_batch: i64,
    /// Run the effect study on 2D Gaussian mixtures instead, writing tables and pictures into this folder.
    pub study: Option<PathBuf>,
    /// Training steps of the study's MLPs.
    pub study_train_steps: usize,
}

/// Runs `ferroflow bench guidance`.
pub fn run(args: &GuidanceBenchSettings) -> Result<()> {
    if let Some(out_dir) = &args.study {
        let rows = crate::guidance_study::effect_study_with(out_dir, args.study_train_steps)?;
        println!(
            "effect study: {} settings measured; tables in {}, pictures guidance-*.png",
            rows.len(),
            out_dir.join("guidance-study.md").display()
        );
        return Ok(());
    }
    tch::set_num_threads(args.threads);
    let mut rows = Vec::new();
    for &dim in &args.dims {
        tch::manual_seed(dim as i64);
        let net = Mlp::new(
            MlpConfig {
                dim,
                width: args.width,
                depth: args.depth,
                activation: Activation::Selu,
                time_embedding: TimeEmbedding::Concat {},
                angle_columns: Vec::new(),
            },
            Device::Cpu,
        )?;
        let x = Tensor::randn([args.batch, dim as i64], (Kind::Float, Device::Cpu));
        let label = format!("MLP {}x{}", args.width, args.depth);
        rows.push(time_model(&label, &net, &x, dim, args.repeats, true)?);
        eprintln!("{}", rows.last().expect("just pushed").line());
    }
    if args.unet_batch > 0 {
        tch::manual_seed(7);
        let net = Unet::new(UnetConfig::default(), Device::Cpu).context("building the U-Net")?;
        let x = Tensor::randn([args.unet_batch, 1, 28, 28], (Kind::Float, Device::Cpu));
        rows.push(time_model("U-Net (default)", &net, &x, 784, args.repeats, false)?);
        eprintln!("{}", rows.last().expect("just pushed").line());
    }
    println!(
        "\nOne Euler step, {} libtorch thread(s); milliseconds for the plain step, ratios to it for the guided ones.\n",
        args.threads
    );
    println!(
        "| model | D | batch | plain (ms) | Hutchinson K=1 | Hutchinson K=4 | exact | exact / Hutchinson K=1 | (exact / K=1) / D |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!("{}", row.line());
    }
    Ok(())
}

/// Timings of one model, in seconds.
struct Row {
    model: String,
    dim: usize,
    batch: i64,
    plain: f64,
    hutchinson_1: f64,
    hutchinson_4: f64,
    exact: Option<f64>,
}

impl Row {
    fn line(&self) -> String {
        let ratio = |seconds: f64| format!("{:.1}x", seconds / self.plain);
        let (exact, exact_over_hutchinson, per_dim) = match self.exact {
            Some(exact) => (
                ratio(exact),
                format!("{:.1}", exact / self.hutchinson_1),
                format!("{:.2}", exact / self.hutchinson_1 / self.dim as f64),
            ),
            None => ("not run".into(), "-".into(), "-".into()),
        };
        format!(
            "| {} | {} | {} | {:.3} | {} | {} | {} | {} | {} |",
            self.model,
            self.dim,
            self.batch,
            self.plain * 1e3,
            ratio(self.hutchinson_1),
            ratio(self.hutchinson_4),
            exact,
            exact_over_hutchinson,
            per_dim
        )
    }
}

fn time_model<N: VelocityNet>(
    label: &str,
    net: &N,
    x: &Tensor,
    dim: usize,
    repeats: usize,
    with_exact: bool,
) -> Result<Row> {
    let times = Tensor::from_slice(&[0.5f32]);
    let velocity = |x: &Tensor, _t: f64| net.forward(x, &times);
    let step_size = 0.01;
    let plain = median_seconds(repeats, true, || {
        let v = tch::no_grad(|| velocity(x, 0.5));
        let _next = tch::no_grad(|| x + v * step_size);
        Ok(())
    })?;
    let guided = |config: ModeSeeking, repeats: usize, warm_up: bool| -> Result<f64> {
        let mut field = ModeSeekingField::new(velocity, config)?;
        median_seconds(repeats, warm_up, || {
            let v = field.guided_velocity(0.5, x)?;
            let _next = tch::no_grad(|| x + v * step_size);
            Ok(())
        })
    };
    let hutchinson_1 = guided(ModeSeeking::hutchinson(1.0, 1, 0), repeats, true)?;
    let hutchinson_4 = guided(ModeSeeking::hutchinson(1.0, 4, 0), repeats, true)?;
    let exact = if with_exact {
        // From D = 256 on one exact step takes seconds: one timed run, no warm-up.
        let (repeats, warm_up) = if dim >= 256 { (1, false) } else { (repeats, true) };
        Some(guided(ModeSeeking::exact(1.0), repeats, warm_up)?)
    } else {
        None
    };
    Ok(Row {
        model: label.to_string(),
        dim,
        batch: x.size()[0],
        plain,
        hutchinson_1,
        hutchinson_4,
        exact,
    })
}

/// The median wall time of `repeats` runs of `op`, after one untimed run when `warm_up`.
fn median_seconds(repeats: usize, warm_up: bool, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    if warm_up {
        op()?;
    }
    Ok(median_time(repeats, op)?.0.wall_seconds)
}
