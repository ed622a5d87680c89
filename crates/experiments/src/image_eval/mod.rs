//! `ferroflow image-eval`: measures a trained Fashion-MNIST run with the project's own classifier.
//!
//! For every setting of a sweep (classifier-free guidance weights `--cfg` for a class-conditional run,
//! mode-seeking strengths `--lambda`), it draws samples (for a conditional run, the same number of each
//! class) and reports:
//! - the Frechet distance between the classifier's penultimate features of the samples and of the 10,000 test
//!   images (no Inception network can be fetched here, so this is a stand-in for FID, not FID), next to the
//!   same distance for as many training images (the floor of a perfect sampler at this sample size);
//! - the mean classifier confidence: the probability of the requested class for conditional samples, of the
//!   most likely class otherwise; for conditional samples also the class accuracy (classifier's label equals
//!   the requested class) and for every run the share of samples the classifier gives each class;
//! - the wall time of the sampling, and an image grid per setting (a row per class when conditional).
//!
//! With `--bpd-images N` it also writes the first N test images, dequantised (`(k + u) / 128 - 1`,
//! `u ~ U(0, 1)`), as `test-images.npy` and gives their bits/dim under the run's flow with the likelihood
//! code of `ferroflow likelihood` (`--scaling symmetric`), so the figure can be reproduced with that command.
//! Results go to `image-eval.json` and `image-eval.md` in the output folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferroflow_models::classifier::ClassifierConfig;
use ferroflow_solvers::DataScaling;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Kind, Tensor};

use ferroflow_engine::config::SolverOverrides;
use ferroflow_engine::data::Dataset;
use ferroflow_engine::files::{write_atomic, write_npy};
use ferroflow_engine::guided::{GuidanceSettings, sample_guided};
use ferroflow_engine::images::{
    CLASS_NAMES, FashionMnist, NUM_CLASSES, class_probabilities, classifier_features, feature_statistics,
    frechet_distance_of, image_grid, load_classifier,
};
use ferroflow_engine::likelihood::{LikelihoodSettings, log_likelihood_with};
use ferroflow_engine::sample::{TrainedFlow, to_array};
use ferroflow_engine::stream::{IMAGE_EVAL_MAX_CHUNKS, Stream};
use ferroflow_guidance::{ClassifierFree, ModeSeeking, Normalize, Schedule};
use ferroflow_models::DivergenceEstimator;
use ferroflow_report::plot::rgb_png;

/// Samples integrated at once (bounds the memory of the autograd graphs of mode seeking).
const SAMPLE_CHUNK: usize = 250;

/// Settings of an image evaluation (`ferroflow image-eval` builds them from its flags).
#[derive(Clone, Debug)]
pub struct ImageEvalSettings {
    /// The run folder (a Fashion-MNIST run).
    pub run: PathBuf,
    /// The classifier's parameters, as written by `cargo xtask train-classifier`.
    pub classifier: PathBuf,
    /// Samples per setting (for a conditional run, n / 10 of each class, rounded up).
    pub n: usize,
    /// Classifier-free guidance weights to sweep (class-conditional runs; empty: weight 0).
    pub cfg: Vec<f64>,
    /// Mode-seeking strengths to sweep (empty: 0, no mode seeking).
    pub lambda: Vec<f64>,
    /// Divergence-gradient estimator of mode seeking; its probes also serve bits/dim.
    pub estimator: DivergenceEstimator,
    /// Mode-seeking normalisation.
    pub normalize: Normalize,
    /// Mode-seeking schedule.
    pub schedule: Schedule,
    /// Overrides of the run's sampling solver (`--solver`, `--steps`, `--atol`, `--rtol`).
    pub ode: SolverOverrides,
    /// Test images whose bits/dim to measure (0: skip).
    pub bpd_images: usize,
    /// Output folder (`None`: RUN/image-eval).
    pub out: Option<PathBuf>,
}

impl ImageEvalSettings {
    /// Probes of Hutchinson's estimator for bits/dim (the mode-seeking estimator's, or 1 when it is exact).
    fn probes(&self) -> usize {
        match self.estimator {
            DivergenceEstimator::Hutchinson { probes, .. } => probes,
            DivergenceEstimator::Exact => 1,
        }
    }
}

/// One measured setting.
#[derive(Clone, Debug, Serialize)]
pub struct SettingResult {
    /// Classifier-free guidance weight (`None` for an unconditional run).
    pub cfg: Option<f64>,
    /// Mode-seeking strength (0: none).
    pub lambda: f64,
    /// Samples drawn.
    pub samples: usize,
    /// Frechet distance to the test set in the classifier's features.
    pub frechet_distance: f64,
    /// Mean probability of the requested class (conditional) or of the most likely class (unconditional).
    pub confidence: f64,
    /// Share of samples labelled as the requested class (conditional runs only).
    pub class_accuracy: Option<f64>,
    /// Share of the samples the classifier gives each class.
    pub class_shares: Vec<f64>,
    /// Wall time of the sampling.
    pub seconds: f64,
    /// The image grid, relative to the output folder.
    pub grid: String,
}

/// Everything `image-eval` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ImageEval {
    /// The run folder.
    pub run: String,
    /// The classifier's accuracy on the test set.
    pub classifier_test_accuracy: f64,
    /// Frechet distance between as many training images as samples and the test set.
    pub train_frechet_distance: f64,
    /// ODE method and steps of the sampling.
    pub sampler: String,
    /// Mode-seeking estimator (`none` when no strength is positive), with the schedule and normalisation.
    pub estimator: String,
    /// The measured settings.
    pub settings: Vec<SettingResult>,
    /// Bits/dim of the first test images, when asked for.
    pub bits_per_dim: Option<BitsPerDim>,
}

/// Bits/dim of dequantised test images.
#[derive(Clone, Debug, Serialize)]
pub struct BitsPerDim {
    /// Test images measured.
    pub images: usize,
    /// Mean bits/dim (`--scaling symmetric`).
    pub bits_per_dim: f64,
    /// Standard error of the mean over the images.
    pub standard_error: f64,
    /// The divergence estimator.
    pub estimator: String,
    /// Wall time.
    pub seconds: f64,
}

/// Checks the sweep values before any work starts.
fn check_args(args: &ImageEvalSettings) -> Result<()> {
    if args.n < 2 {
        bail!(
            "--n {}: at least 2 samples are needed for a Frechet distance",
            args.n
        );
    }
    if let DivergenceEstimator::Hutchinson { probes: 0, .. } = args.estimator {
        bail!("--probes 0: Hutchinson's estimator needs at least 1 probe");
    }
    for &w in &args.cfg {
        if !(w.is_finite() && w >= 0.0) {
            bail!("--cfg {w}: a guidance weight must be finite and >= 0");
        }
    }
    for &lambda in &args.lambda {
        if !(lambda.is_finite() && lambda >= 0.0) {
            bail!("--lambda {lambda}: a mode-seeking strength must be finite and >= 0");
        }
    }
    Ok(())
}

/// The guidance settings of one point of the sweep.
fn settings_for(
    args: &ImageEvalSettings,
    cfg: Option<f64>,
    class: Option<usize>,
    lambda: f64,
) -> Result<GuidanceSettings> {
    let mode_seeking = (lambda > 0.0).then_some(ModeSeeking {
        lambda,
        estimator: args.estimator,
        schedule: args.schedule,
        normalize: args.normalize,
        seed: 0,
    });
    if let Some(config) = &mode_seeking {
        config.validate().context("mode-seeking settings")?;
    }
    let classifier_free = class.map(|class| ClassifierFree {
        weight: cfg.unwrap_or(0.0),
        class,
    });
    if let Some(config) = &classifier_free {
        config.validate().context("--cfg")?;
    }
    Ok(GuidanceSettings {
        mode_seeking,
        classifier_free,
    })
}

/// Measures the run; see the module documentation.
pub fn evaluate(args: &ImageEvalSettings) -> Result<ImageEval> {
    check_args(args)?;
    let flow = TrainedFlow::load(&args.run)?;
    let Dataset::FashionMnist { dir } = &flow.config.data.target else {
        bail!(
            "run {}: image-eval measures Fashion-MNIST runs (data.target.kind = \"fashion_mnist\"), this one has \
             target {:?}",
            args.run.display(),
            flow.config.data.target.name()
        );
    };
    let conditional = flow.net.num_classes().is_some();
    if !conditional && !args.cfg.is_empty() {
        bail!(
            "--cfg: run {} is unconditional (its model has no class labels), so it has no classifier-free guidance",
            args.run.display()
        );
    }
    let mut config = flow.config.clone();
    let options = args
        .ode
        .apply(&mut config)
        .context("sampling options (--solver, --steps, --atol, --rtol)")?;
    let sampler = format!("{:?}, {} steps", config.sample.solver, config.sample.steps).to_lowercase();

    let out_dir = args.out.clone().unwrap_or_else(|| args.run.join("image-eval"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    let classifier = load_classifier(ClassifierConfig::default(), &args.classifier).with_context(|| {
        format!(
            "classifier {} (train it with `cargo xtask train-classifier`)",
            args.classifier.display()
        )
    })?;
    let data = FashionMnist::load(Path::new(dir))
        .with_context(|| format!("data.target.dir = {dir:?} of run {}", args.run.display()))?;
    let classifier_test_accuracy = ferroflow_engine::images::accuracy(&classifier, &data.test)?;
    let test_stats = feature_statistics(&classifier_features(&classifier, &data.test.images)?)?;

    let per_class = args.n.div_ceil(NUM_CLASSES);
    let n_samples = if conditional {
        per_class * NUM_CLASSES
    } else {
        args.n
    };
    let train_count = n_samples.min(FashionMnist::TRAIN_COUNT) as i64;
    let train_features = classifier_features(&classifier, &data.train.images.narrow(0, 0, train_count))?;
    let train_frechet_distance = frechet_distance_of(&feature_statistics(&train_features)?, &test_stats)?;
    eprintln!(
        "image-eval: classifier test accuracy {:.2} %, Frechet distance of {train_count} training images {:.3}",
        100.0 * classifier_test_accuracy,
        train_frechet_distance
    );

    let cfgs: Vec<Option<f64>> = match (conditional, args.cfg.is_empty()) {
        (false, _) => vec![None],
        (true, true) => vec![Some(0.0)],
        (true, false) => args.cfg.iter().map(|&w| Some(w)).collect(),
    };
    let lambdas = if args.lambda.is_empty() {
        vec![0.0]
    } else {
        args.lambda.clone()
    };
    let mut settings = Vec::new();
    for &cfg in &cfgs {
        for &lambda in &lambdas {
            let started = Instant::now();
            // Requested labels (conditional) and images, drawn chunk by chunk.
            let mut images = Vec::new();
            let mut requested = Vec::new();
            let groups: Vec<(Option<usize>, usize)> = if conditional {
                (0..NUM_CLASSES).map(|c| (Some(c), per_class)).collect()
            } else {
                vec![(None, n_samples)]
            };
            for (class, count) in groups {
                let guidance = settings_for(args, cfg, class, lambda)?;
                for (chunk_idx, first) in (0..count).step_by(SAMPLE_CHUNK).enumerate() {
                    let len = SAMPLE_CHUNK.min(count - first);
                    // Distinct source points per class and chunk, the same across settings.
                    if chunk_idx >= IMAGE_EVAL_MAX_CHUNKS {
                        bail!(
                            "--n {}: more than {IMAGE_EVAL_MAX_CHUNKS} chunks of {SAMPLE_CHUNK} samples per class",
                            args.n
                        );
                    }
                    let stream = Stream::ImageEval {
                        class,
                        chunk: chunk_idx,
                    };
                    let x0 = flow.source_points(len, stream);
                    let solution = sample_guided(&flow, x0, &options, None, &guidance)
                        .with_context(|| format!("sampling with cfg {cfg:?}, lambda {lambda}"))?;
                    images.push(solution.state);
                    requested.extend(std::iter::repeat_n(class.unwrap_or(0) as i64, len));
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let images = Tensor::cat(&images, 0).view([-1, 1, 28, 28]);
            if images.isfinite().all().int64_value(&[]) == 0 {
                bail!("the samples with cfg {cfg:?}, lambda {lambda} are not finite");
            }
            // The classifier was trained on pixels in [-1, 1].
            let clipped = images.clamp(-1.0, 1.0);
            let features = classifier_features(&classifier, &clipped)?;
            let frechet_distance = frechet_distance_of(&feature_statistics(&features)?, &test_stats)?;
            let probabilities = class_probabilities(&classifier, &clipped)?;
            let predicted = probabilities.argmax(-1, false);
            let class_shares: Vec<f64> = (0..NUM_CLASSES as i64)
                .map(|c| {
                    predicted
                        .eq(c)
                        .to_kind(Kind::Double)
                        .mean(Kind::Double)
                        .double_value(&[])
                })
                .collect();
            let (confidence, class_accuracy) = if conditional {
                let labels = Tensor::from_slice(&requested);
                let chosen = probabilities.gather(1, &labels.unsqueeze(1), false);
                let accuracy = predicted
                    .eq_tensor(&labels)
                    .to_kind(Kind::Double)
                    .mean(Kind::Double);
                (
                    chosen.mean(Kind::Double).double_value(&[]),
                    Some(accuracy.double_value(&[])),
                )
            } else {
                let (max, _) = probabilities.max_dim(-1, false);
                (max.mean(Kind::Double).double_value(&[]), None)
            };
            let grid = format!(
                "samples{}-lambda{lambda}.png",
                cfg.map_or(String::new(), |w| format!("-cfg{w}"))
            );
            // A row per class for conditional runs (the first 10 of each), the first 100 otherwise.
            let shown = if conditional {
                let rows: Vec<Tensor> = (0..NUM_CLASSES as i64)
                    .map(|c| images.narrow(0, c * per_class as i64, (per_class as i64).min(10)))
                    .collect();
                Tensor::cat(&rows, 0)
            } else {
                images.narrow(0, 0, (n_samples as i64).min(100))
            };
            let pixels = image_grid(&shown, if conditional { per_class.min(10) } else { 10 })?;
            rgb_png(&out_dir.join(&grid), pixels.width, pixels.height, &pixels.rgb)?;
            let row = SettingResult {
                cfg,
                lambda,
                samples: n_samples,
                frechet_distance,
                confidence,
                class_accuracy,
                class_shares,
                seconds,
                grid,
            };
            eprintln!(
                "image-eval: cfg {:?}, lambda {lambda}: Frechet distance {:.3}, confidence {:.3}, class accuracy {}, {:.0} s",
                cfg,
                row.frechet_distance,
                row.confidence,
                row.class_accuracy.map_or("-".into(), |a| format!("{:.3}", a)),
                seconds
            );
            settings.push(row);
        }
    }

    let bits_per_dim = if args.bpd_images > 0 {
        Some(measure_bits_per_dim(&flow, &data, args, &options, &out_dir)?)
    } else {
        None
    };
    let result = ImageEval {
        run: args.run.display().to_string(),
        classifier_test_accuracy,
        train_frechet_distance,
        sampler,
        estimator: match args.estimator {
            _ if lambdas.iter().all(|&l| l == 0.0) => "none (no mode seeking)".into(),
            DivergenceEstimator::Exact => format!("exact{}", mode_options(args)),
            DivergenceEstimator::Hutchinson { probes, .. } => {
                format!("hutchinson K={probes}{}", mode_options(args))
            }
        },
        settings,
        bits_per_dim,
    };
    let json = serde_json::to_string_pretty(&result)?;
    write_atomic(&out_dir.join("image-eval.json"), json.as_bytes())?;
    write_atomic(&out_dir.join("image-eval.md"), render(&result).as_bytes())?;
    eprintln!("image-eval: wrote {}", out_dir.join("image-eval.md").display());
    Ok(result)
}

/// The schedule and normalisation of mode seeking, as ", schedule S, normalize N" in the flags' spelling.
fn mode_options(args: &ImageEvalSettings) -> String {
    format!(
        ", schedule {}, normalize {}",
        schedule_text(&args.schedule),
        normalize_text(&args.normalize)
    )
}

/// A schedule as `constant`, `window:T_START:T_END` or `decay:POWER`.
pub fn schedule_text(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Constant => "constant".into(),
        Schedule::Window { t_start, t_end } => format!("window:{t_start}:{t_end}"),
        Schedule::Decay { power } => format!("decay:{power}"),
    }
}

/// A normalisation as `none`, `clip:SCALE` or `rescale:SCALE`.
pub fn normalize_text(normalize: &Normalize) -> String {
    match normalize {
        Normalize::None => "none".into(),
        Normalize::Clip { scale } => format!("clip:{scale}"),
        Normalize::Rescale { scale } => format!("rescale:{scale}"),
    }
}

/// Dequantises the first `args.bpd_images` test images, writes them as `test-images.npy` and measures their
/// bits/dim with Hutchinson's estimator (`args.probes()` probes).
fn measure_bits_per_dim(
    flow: &TrainedFlow,
    data: &FashionMnist,
    args: &ImageEvalSettings,
    options: &ferroflow_solvers::OdeOptions,
    out_dir: &Path,
) -> Result<BitsPerDim> {
    let count = args.bpd_images.min(FashionMnist::TEST_COUNT);
    let pixels = data
        .test
        .images
        .narrow(0, 0, count as i64)
        .reshape([count as i64, -1]);
    // Back to the integer levels k, then (k + u) / 128 - 1 with u ~ U(0, 1) from a fixed seed.
    let levels = ((pixels + 1.0) * 127.5).round();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let noise: Vec<f32> = (0..count * 784).map(|_| rng.random::<f32>()).collect();
    let noise = Tensor::from_slice(&noise).view([count as i64, 784]);
    let dequantised = (levels + noise) / 128.0 - 1.0;
    let npy = out_dir.join("test-images.npy");
    write_npy(&npy, to_array(&dequantised).view())?;
    let started = Instant::now();
    let settings = LikelihoodSettings::new(
        DivergenceEstimator::hutchinson(args.probes()),
        flow.config.run.seed,
    );
    let likelihood = log_likelihood_with(flow, &dequantised, &settings, options)
        .with_context(|| format!("bits/dim of {}", npy.display()))?;
    let per_image: Vec<f64> = likelihood
        .log_density
        .iter()
        .map(|&lp| ferroflow_solvers::bits_per_dim(lp, 784, DataScaling::Symmetric))
        .collect();
    let mean = per_image.iter().sum::<f64>() / count as f64;
    let variance = per_image.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (count.max(2) - 1) as f64;
    if !mean.is_finite() {
        bail!("the bits/dim of {} are not finite", npy.display());
    }
    let result = BitsPerDim {
        images: count,
        bits_per_dim: mean,
        standard_error: (variance / count as f64).sqrt(),
        estimator: format!("hutchinson K={}", args.probes()),
        seconds: started.elapsed().as_secs_f64(),
    };
    eprintln!(
        "image-eval: {count} dequantised test images: {:.3} ± {:.3} bits/dim ({:.0} s)",
        result.bits_per_dim, result.standard_error, result.seconds
    );
    Ok(result)
}

/// The Markdown report of an evaluation.
pub fn render(result: &ImageEval) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Image evaluation of `{}`\n", result.run);
    let _ = writeln!(
        md,
        "Frechet distance in the penultimate features of the project's Fashion-MNIST classifier (test accuracy \
         {:.2} %), against the 10,000 test images: a stand-in for FID, not FID (no Inception network here). \
         Floor at this sample size: {:.3} for as many training images. Sampler: {}; mode-seeking estimator: {}.\n",
        100.0 * result.classifier_test_accuracy,
        result.train_frechet_distance,
        result.sampler,
        result.estimator
    );
    let _ = writeln!(
        md,
        "| cfg w | lambda | samples | Frechet distance | confidence | class accuracy | most frequent class | time (s) | grid |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---|---:|---|");
    for row in &result.settings {
        let (top, share) = row
            .class_shares
            .iter()
            .enumerate()
            .fold((0, 0.0), |best, (c, &s)| if s > best.1 { (c, s) } else { best });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {:.3} | {} | {} ({:.0} %) | {:.0} | [png]({}) |",
            row.cfg.map_or("-".into(), |w| format!("{w}")),
            row.lambda,
            row.samples,
            row.frechet_distance,
            row.confidence,
            row.class_accuracy
                .map_or("-".into(), |a| format!("{:.1} %", 100.0 * a)),
            CLASS_NAMES[top],
            100.0 * share,
            row.seconds,
            row.grid
        );
    }
    if let Some(bpd) = &result.bits_per_dim {
        let _ = writeln!(
            md,
            "\nBits/dim of the first {} test images, dequantised (`test-images.npy`), {}: **{:.3} ± {:.3}** \
             ({:.0} s). Reproduce with `ferroflow likelihood --run RUN --data OUT/test-images.npy --hutchinson K \
             --scaling symmetric`.",
            bpd.images, bpd.estimator, bpd.bits_per_dim, bpd.standard_error, bpd.seconds
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ImageEvalSettings {
        ImageEvalSettings {
            run: PathBuf::from("runs/none"),
            classifier: PathBuf::from("none.safetensors"),
            n: 100,
            cfg: vec![],
            lambda: vec![],
            estimator: DivergenceEstimator::Hutchinson {
                probes: 1,
                distribution: ferroflow_models::ProbeDistribution::Rademacher,
            },
            normalize: Normalize::None,
            schedule: Schedule::Constant,
            ode: SolverOverrides::default(),
            bpd_images: 0,
            out: None,
        }
    }

    #[test]
    fn bad_sweep_values_are_refused_with_their_flag() {
        for (edit, flag) in [
            (
                Box::new(|a: &mut ImageEvalSettings| a.lambda = vec![0.1, -1.0])
                    as Box<dyn Fn(&mut ImageEvalSettings)>,
                "--lambda -1",
            ),
            (
                Box::new(|a: &mut ImageEvalSettings| a.lambda = vec![f64::NAN]),
                "--lambda NaN",
            ),
            (
                Box::new(|a: &mut ImageEvalSettings| a.cfg = vec![-0.5]),
                "--cfg -0.5",
            ),
            (
                Box::new(|a: &mut ImageEvalSettings| {
                    a.estimator = DivergenceEstimator::Hutchinson {
                        probes: 0,
                        distribution: ferroflow_models::ProbeDistribution::Rademacher,
                    }
                }),
                "--probes 0",
            ),
            (Box::new(|a: &mut ImageEvalSettings| a.n = 1), "--n 1"),
        ] {
            let mut bad = args();
            edit(&mut bad);
            let message = evaluate(&bad).unwrap_err().to_string();
            assert!(message.contains(flag), "{flag}: {message}");
        }
    }

    #[test]
    fn a_missing_run_is_named() {
        let message = format!("{:#}", evaluate(&args()).unwrap_err());
        assert!(message.contains("runs/none"), "{message}");
    }

    #[test]
    fn settings_turn_on_mode_seeking_only_for_positive_strengths() {
        let a = args();
        assert_eq!(
            settings_for(&a, None, None, 0.0).unwrap(),
            GuidanceSettings::default()
        );
        let guided = settings_for(&a, Some(1.5), Some(3), 0.2).unwrap();
        assert_eq!(guided.mode_seeking.unwrap().lambda, 0.2);
        let cfg = guided.classifier_free.unwrap();
        assert_eq!((cfg.weight, cfg.class), (1.5, 3));
    }
}
