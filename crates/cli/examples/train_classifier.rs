//! Trains the Fashion-MNIST classifier whose features define the project's Frechet distance, and prints
//! its test accuracy and a few reference distances.
//!
//! Needs the data prepared by `cargo xtask data fashion-mnist`. Run from the workspace root:
//! `cargo run --release -p ferroflow --example train_classifier -- [steps] [threads] [out_dir]`
//! (defaults 3000, 2, `runs/classifier`). Writes `classifier.safetensors` and `test-images.png` there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ferroflow_engine::images::{
    ClassifierTraining, FASHION_MNIST_DIR, FashionMnist, classifier_features, frechet_distance, image_grid,
    train_fashion_mnist_classifier,
};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.first().map_or(Ok(3000), |a| a.parse()).context("steps")?;
    let threads: i32 = args.get(1).map_or(Ok(2), |a| a.parse()).context("threads")?;
    let out_dir = PathBuf::from(args.get(2).map_or("runs/classifier", String::as_str));
    tch::set_num_threads(threads);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data_dir = root.join(FASHION_MNIST_DIR);
    let training = ClassifierTraining {
        steps,
        ..ClassifierTraining::default()
    };
    println!("training {training:?} on {threads} threads");
    let start = Instant::now();
    let checkpoint = out_dir.join("classifier.safetensors");
    let (classifier, test_accuracy) = train_fashion_mnist_classifier(&data_dir, &checkpoint, &training)
        .context("run `cargo xtask data fashion-mnist` first if the files are missing")?;
    println!(
        "test accuracy {:.2}% after {steps} steps in {:.1} s; saved {}",
        100.0 * test_accuracy,
        start.elapsed().as_secs_f64(),
        checkpoint.display()
    );

    // Reference Frechet distances in the classifier's features (not FID: no Inception network here).
    let data = FashionMnist::load(&data_dir)?;
    let test = classifier_features(&classifier, &data.test.images)?;
    let train = classifier_features(&classifier, &data.train.images.narrow(0, 0, 10_000))?;
    let halves = frechet_distance(&test.narrow(0, 0, 5000), &test.narrow(0, 5000, 5000))?;
    let train_test = frechet_distance(&train, &test)?;
    let noise = tch::Tensor::rand([10_000, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu)) * 2.0 - 1.0;
    let noise_test = frechet_distance(&classifier_features(&classifier, &noise)?, &test)?;
    println!(
        "Frechet distance (classifier features): test halves {halves:.3}, train 10k vs test {train_test:.3}, uniform noise vs test {noise_test:.1}"
    );
    let grid = out_dir.join("test-images.png");
    let pixels = image_grid(&data.test.images.narrow(0, 0, 64), 8)?;
    ferroflow_report::plot::rgb_png(&grid, pixels.width, pixels.height, &pixels.rgb)?;
    println!("wrote {}", grid.display());
    Ok(())
}
