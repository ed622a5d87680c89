//! The training engine on images: a tiny class-conditional U-Net trained for a few steps through
//! `run::train_new` on a synthetic data set in Fashion-MNIST's exact file format (the real files live outside
//! the repository, so the test writes full-size IDX files of random pixels itself).

use std::path::Path;

use ferroflow_engine::RunConfig;

/// Writes an IDX file: magic, counts, then bytes from a small linear congruential generator.
fn write_idx(path: &Path, magic: u32, dims: &[u32], mut value: impl FnMut(usize) -> u8) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&magic.to_be_bytes());
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    let n: usize = dims.iter().map(|&d| d as usize).product();
    bytes.extend((0..n).map(&mut value));
    std::fs::write(path, bytes).unwrap();
}

fn synthetic_fashion_mnist(dir: &Path) {
    let mut state = 12345u32;
    let mut pixel = move |_| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 24) as u8
    };
    for (prefix, count) in [("train", 60_000u32), ("t10k", 10_000)] {
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte")),
            0x0803,
            &[count, 28, 28],
            &mut pixel,
        );
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte")),
            0x0801,
            &[count],
            |i| (i % 10) as u8,
        );
    }
}

#[test]
fn a_conditional_unet_trains_and_samples_through_the_engine() {
    let dir = std::env::temp_dir().join(format!("ferroflow-unet-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    synthetic_fashion_mnist(&dir);
    let text = format!(
        "[run]\nname = \"unet\"\nout_dir = \"{out}\"\nseed = 1\nthreads = 1\n\n\
         [data]\nsource = {{ kind = \"gaussian\", dim = 784 }}\ntarget = {{ kind = \"fashion_mnist\", dir = \"{data}\" }}\n\n\
         [model]\nkind = \"unet\"\n\n[model.unet]\nchannels = 8\nchannel_mult = [1, 2]\nattention_at = [14]\n\
         groups = 4\ntime_embedding_dim = 16\nnum_classes = 10\n\n\
         [flow]\ncoupling = {{ kind = \"exact_ot\" }}\n\n\
         [train]\nsteps = 4\nbatch_size = 6\ncheckpoint_every = 2\nlog_every = 1\nlabel_dropout = 0.5\n\n\
         [sample]\nn_samples = 4\nsolver = \"midpoint\"\nsteps = 2\n",
        out = dir.join("runs").display(),
        data = dir.display()
    );
    let config = RunConfig::parse(&text, Path::new("unet.toml")).unwrap();
    let run_dir = ferroflow_engine::run::train_new(&config, &mut [], None).unwrap();
    ferroflow_report::write_samples_picture(&run_dir).unwrap();
    for file in [
        "model.safetensors",
        "checkpoint.safetensors",
        "samples.npy",
        "samples.png",
        "loss.csv",
    ] {
        assert!(run_dir.join(file).is_file(), "{file} is missing");
    }
    let samples = ferroflow_engine::files::read_npy(&run_dir.join("samples.npy")).unwrap();
    assert_eq!(samples.dim(), (4, 784));
    let losses = std::fs::read_to_string(run_dir.join("loss.csv")).unwrap();
    assert_eq!(losses.lines().count(), 1 + 4, "{losses}");
    assert!(
        losses
            .lines()
            .skip(1)
            .all(|l| l.split(',').nth(1).unwrap().parse::<f64>().unwrap().is_finite())
    );
    image_eval_measures_the_run(&dir, &run_dir);
    // A second config naming a U-Net with the wrong number of classes is refused with its key.
    let wrong = text.replace("num_classes = 10", "num_classes = 7");
    let err = RunConfig::parse(&wrong, Path::new("unet.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.unet.num_classes"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ferroflow image-eval` on the trained run: a tiny classifier, a sweep over guidance weights and mode-seeking
/// strengths, bits/dim of a few dequantised test images.
fn image_eval_measures_the_run(dir: &Path, run_dir: &Path) {
    use ferroflow_engine::images::{ClassifierTraining, train_fashion_mnist_classifier};
    use ferroflow_experiments::image_eval::{ImageEvalSettings, evaluate, normalize_text};
    use ferroflow_guidance::{DivergenceEstimator, Normalize, ProbeDistribution, Schedule};

    let classifier = dir.join("classifier.safetensors");
    let training = ClassifierTraining {
        steps: 2,
        batch_size: 16,
        ..ClassifierTraining::default()
    };
    train_fashion_mnist_classifier(dir, &classifier, &training).unwrap();
    let out = dir.join("image-eval");
    let args = ImageEvalSettings {
        run: run_dir.to_path_buf(),
        classifier,
        n: 15,
        cfg: vec![0.0, 1.0],
        lambda: vec![0.0, 0.1],
        estimator: DivergenceEstimator::Hutchinson {
            probes: 1,
            distribution: ProbeDistribution::Rademacher,
        },
        normalize: Normalize::Clip { scale: 1.0 },
        schedule: Schedule::Constant,
        ode: ferroflow_engine::config::SolverOverrides::default(),
        bpd_images: 3,
        out: Some(out.clone()),
    };
    let result = evaluate(&args).unwrap();
    assert_eq!(result.settings.len(), 4);
    for row in &result.settings {
        // n = 15 rounds up to 2 per class.
        assert_eq!(row.samples, 20);
        assert!(row.frechet_distance.is_finite() && row.frechet_distance >= 0.0);
        assert!((0.0..=1.0).contains(&row.confidence));
        let accuracy = row
            .class_accuracy
            .expect("a conditional run has a class accuracy");
        assert!((0.0..=1.0).contains(&accuracy));
        // Accuracy is a multiple of 1/20 and the shares add up to one.
        assert!(((accuracy * 20.0) - (accuracy * 20.0).round()).abs() < 1e-9);
        assert!((row.class_shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(out.join(&row.grid).is_file(), "{}", row.grid);
    }
    // Plain sampling is deterministic: the same setting again gives the same distance.
    let again = evaluate(&ImageEvalSettings {
        cfg: vec![0.0],
        lambda: vec![0.0],
        bpd_images: 0,
        ..args.clone()
    })
    .unwrap();
    assert_eq!(
        again.settings[0].frechet_distance,
        result.settings[0].frechet_distance
    );
    assert_eq!(normalize_text(&args.normalize), "clip:1");
    let bpd = result.bits_per_dim.expect("bits/dim were asked for");
    assert_eq!(bpd.images, 3);
    assert!(bpd.bits_per_dim.is_finite(), "{bpd:?}");
    // The dequantised test images: levels k/127.5 - 1 moved to (k + u)/128 - 1, inside [-1, 1).
    let test = ferroflow_engine::files::read_npy(&out.join("test-images.npy")).unwrap();
    assert_eq!(test.dim(), (3, 784));
    assert!(test.iter().all(|&v| (-1.0..1.0).contains(&v)));
    assert!(out.join("image-eval.json").is_file() && out.join("image-eval.md").is_file());
    // An unconditional sweep flag on the wrong kind of value is refused before any work.
    let bad = ImageEvalSettings {
        lambda: vec![-0.1],
        ..args
    };
    assert!(evaluate(&bad).unwrap_err().to_string().contains("--lambda -0.1"));
}
