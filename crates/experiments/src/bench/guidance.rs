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
//! Each row also prints the arithmetic rate of the plain and the K = 1 step and its share of the roofline
//! ([`crate::roofline`], measured at the same thread count): the plain step is one forward pass, the
//! Hutchinson step through autograd four (the forward pass, the vector-Jacobian product built with
//! `create_graph`, and the backward pass through both). For the MLPs the row gives the fewest FLOPs any
//! implementation of a K = 1 step needs, as a ratio to the plain step ([`least_hutchinson_ratio`]): that is
//! what bounds the guided/plain ratio when both run near the machine's rate.
//!
//! `--study OUT` runs the effect study of [`crate::guidance_study::effect_study`] instead, writing its tables and
//! pictures into OUT.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferroflow_guidance::{ModeSeeking, ModeSeekingField};
use ferroflow_models::unet::{Unet, UnetConfig};
use ferroflow_models::{Activation, Mlp, MlpConfig, TimeEmbedding, VelocityNet};
use tch::{Device, Kind, Tensor};

use crate::roofline::{Roofline, network_flops};
use crate::timing::median_time;

/// Forward-pass equivalents of a Hutchinson K = 1 step through autograd (see the module docs).
const HUTCHINSON_PASSES: f64 = 4.0;

/// The fewest weight multiply-adds of a Hutchinson K = 1 guided step, over those of a plain step, for an
/// MLP with layer shapes `(fan_in, fan_out)` in order (time input included in the first). `e^T J e` and its
/// gradient need the forward pass (`F` in total, shared with the velocity), the forward-mode tangent `J e`
/// (every layer again, `F`), and one reverse pass through both: the tangent's adjoint in every layer but the
/// first (whose input, the probe, needs none) and the value's adjoint in every layer but the last (the
/// output value does not enter `e^T J e`), so `3 F + sum of the inner layers`, against `F`.
pub fn least_hutchinson_ratio(layers: &[(usize, usize)]) -> f64 {
    let macs: Vec<f64> = layers.iter().map(|&(i, o)| (i * o) as f64).collect();
    let total: f64 = macs.iter().sum();
    let inner: f64 = if macs.len() > 2 {
        macs[1..macs.len() - 1].iter().sum()
    } else {
        0.0
    };
    (3.0 * total + inner) / total
}

/// Layer shapes of an MLP with concatenated time: `dim + 1 -> width -> ... -> width -> dim`, `depth` hidden layers.
fn mlp_layers(dim: usize, width: usize, depth: usize) -> Vec<(usize, usize)> {
    let mut layers = vec![(dim + 1, width)];
    layers.extend(std::iter::repeat_n((width, width), depth.saturating_sub(1)));
    layers.push((width, dim));
    layers
}

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
    let roofline = Roofline::measure(&[args.threads.max(1) as usize], 7);
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
                num_classes: None,
            },
            Device::Cpu,
        )?;
        let x = Tensor::randn([args.batch, dim as i64], (Kind::Float, Device::Cpu));
        let label = format!("MLP {}x{}", args.width, args.depth);
        let mut row = time_model(&label, &net, &x, dim, args.repeats, true)?;
        row.least_ratio = Some(least_hutchinson_ratio(&mlp_layers(dim, args.width, args.depth)));
        rows.push(row);
        eprintln!(
            "{}",
            rows.last().expect("just pushed").line(&roofline, args.threads)
        );
    }
    if args.unet_batch > 0 {
        tch::manual_seed(7);
        let net = Unet::new(UnetConfig::default(), Device::Cpu).context("building the U-Net")?;
        let x = Tensor::randn([args.unet_batch, 1, 28, 28], (Kind::Float, Device::Cpu));
        rows.push(time_model("U-Net (default)", &net, &x, 784, args.repeats, false)?);
        eprintln!(
            "{}",
            rows.last().expect("just pushed").line(&roofline, args.threads)
        );
    }
    println!(
        "\nOne Euler step, {} libtorch thread(s); milliseconds for the plain step, ratios to it for the guided ones.\n",
        args.threads
    );
    println!("{}\n", roofline.summary());
    println!(
        "| model | D | batch | plain (ms) | plain GFLOP/s | roofline | Hutchinson K=1 | K=1 GFLOP/s | roofline | fewest FLOPs K=1 / plain | Hutchinson K=4 | exact | exact / Hutchinson K=1 | (exact / K=1) / D |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!("{}", row.line(&roofline, args.threads));
    }
    println!(
        "\nGFLOP/s count the weights' multiply-adds only (a forward pass for the plain step, {HUTCHINSON_PASSES} forward-pass \
         equivalents for the autograd K=1 step); the U-Net's count is a lower bound (each weight once per pixel of \
         its coarsest level), so its shares are too. The fewest-FLOPs column is what any implementation of the \
         K=1 step must compute, relative to the plain step: the guided/plain ratio cannot go below it when both \
         run at the same share of the roofline."
    );
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
    /// Weight FLOPs of one forward pass over the batch.
    forward_flops: f64,
    /// [`least_hutchinson_ratio`] where the layer shapes are known.
    least_ratio: Option<f64>,
}

impl Row {
    fn line(&self, roofline: &Roofline, threads: i32) -> String {
        let threads = threads.max(1) as usize;
        let (plain_rate, plain_share) = roofline.cells(self.forward_flops, self.plain, threads);
        let (guided_rate, guided_share) =
            roofline.cells(HUTCHINSON_PASSES * self.forward_flops, self.hutchinson_1, threads);
        let least = self.least_ratio.map_or("-".into(), |r| format!("{r:.2}x"));
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
            "| {} | {} | {} | {:.3} | {plain_rate} | {plain_share} | {} | {guided_rate} | {guided_share} | {least} | {} | {} | {} | {} |",
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
        forward_flops: network_flops(net, x.size()[0] as usize, 1.0),
        least_ratio: None,
    })
}

/// The median wall time of `repeats` runs of `op`, after one untimed run when `warm_up`.
fn median_seconds(repeats: usize, warm_up: bool, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    if warm_up {
        op()?;
    }
    Ok(median_time(repeats, op)?.0.wall_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_hutchinson_ratio_counts_three_passes_plus_the_inner_layers() {
        // One layer: forward, tangent, and the value's adjoint only (no inner layer): exactly 3.
        assert_eq!(least_hutchinson_ratio(&[(5, 7)]), 3.0);
        // L equal layers: 3 + (L - 2) / L.
        assert_eq!(least_hutchinson_ratio(&[(8, 8); 4]), 3.5);
        // The benchmark's MLP at D = 64: 65 x 256 + 2 x 256 x 256 + 256 x 64 = 164,096 multiply-adds,
        // of which 131,072 in the inner layers.
        let layers = mlp_layers(64, 256, 3);
        assert_eq!(layers, vec![(65, 256), (256, 256), (256, 256), (256, 64)]);
        let expected = 3.0 + 131_072.0 / 164_096.0;
        assert!((least_hutchinson_ratio(&layers) - expected).abs() < 1e-12);
    }
}
