//! Fashion-MNIST support without the real files: the IDX reader on small files written here (valid and
//! corrupt), the Frechet distance against Gaussian closed forms, the classifier's shapes and a short
//! training run on synthetic images, the image grid, and the TOML form of the image configs.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ferroflow_engine::images::{
    ClassifierTraining, FashionMnist, FeatureStatistics, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, ImageError,
    LabelledImages, accuracy, classifier_features, feature_statistics, frechet_distance, frechet_distance_of,
    image_grid, read_idx_images, read_idx_labels, read_labelled_images, train_classifier,
};
use ferroflow_models::classifier::{Classifier, ClassifierConfig};
use ferroflow_models::unet::UnetConfig;
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

/// Tests run on parallel threads but share tch's global random generator: each test that seeds it and
/// draws from it holds this lock, so seeded results are reproducible.
static TORCH_RNG: Mutex<()> = Mutex::new(());

fn torch_rng() -> MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh folder under the system's temporary folder.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bytes of an IDX file of unsigned bytes.
fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for dim in dims {
        bytes.extend(dim.to_be_bytes());
    }
    bytes.extend(data);
    bytes
}

/// `count` 28x28 images: image k has pixel p equal to (k * 784 + p) mod 256.
fn image_data(count: usize) -> Vec<u8> {
    (0..count * 784).map(|p| (p % 256) as u8).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn idx_files_read_into_scaled_images_and_labels() {
    let dir = scratch("valid");
    let images = write(
        &dir,
        "images",
        &idx_bytes(IDX_IMAGES_MAGIC, &[3, 28, 28], &image_data(3)),
    );
    let labels = write(&dir, "labels", &idx_bytes(IDX_LABELS_MAGIC, &[3], &[9, 0, 4]));
    let set = read_labelled_images(&images, &labels, 3).unwrap();
    assert_eq!(set.images.size(), vec![3, 1, 28, 28]);
    assert_eq!(set.images.kind(), Kind::Float);
    assert_eq!(set.labels.kind(), Kind::Int64);
    assert_eq!(Vec::<i64>::try_from(&set.labels).unwrap(), vec![9, 0, 4]);
    // Pixel p of image k is (784 k + p) mod 256, mapped by v / 127.5 - 1; row-major within an image.
    let value = |k: i64, row: i64, col: i64| set.images.double_value(&[k, 0, row, col]);
    assert_eq!(value(0, 0, 0), -1.0);
    assert!((value(0, 9, 3) - ((9 * 28 + 3) as f64 / 127.5 - 1.0)).abs() < 1e-6);
    assert!((value(1, 0, 0) - ((784 % 256) as f64 / 127.5 - 1.0)).abs() < 1e-6);
    assert!(
        value(0, 9, 3) == 1.0 && value(0, 9, 4) == -1.0,
        "pixel 255 (index 255) maps to 1, pixel 0 (index 256) to -1"
    );
    assert!(set.images.min().double_value(&[]) >= -1.0 && set.images.max().double_value(&[]) <= 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The error of `result`, with a check that its message names `path`.
fn error_naming(result: Result<impl std::fmt::Debug, ImageError>, path: &Path) -> ImageError {
    let err = result.expect_err("a corrupt file must be refused");
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(file), "`{err}` does not name {file}");
    err
}

#[test]
fn corrupt_idx_files_are_refused_naming_the_file() {
    let dir = scratch("corrupt");
    let good_images = idx_bytes(IDX_IMAGES_MAGIC, &[2, 28, 28], &image_data(2));
    let good_labels = idx_bytes(IDX_LABELS_MAGIC, &[2], &[1, 2]);
    let images = write(&dir, "images", &good_images);
    let labels = write(&dir, "labels", &good_labels);

    // A label file where an image file belongs, and the reverse.
    assert!(matches!(
        error_naming(read_idx_images(&labels), &labels),
        ImageError::Magic {
            found: 0x801,
            expected: 0x803,
            ..
        }
    ));
    assert!(matches!(
        error_naming(read_idx_labels(&images), &images),
        ImageError::Magic { .. }
    ));
    // A gzipped file (magic 1f 8b) was not decompressed.
    let gz = write(&dir, "gz", &[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]);
    assert!(matches!(
        error_naming(read_idx_images(&gz), &gz),
        ImageError::Magic {
            found: 0x1f8b0800,
            ..
        }
    ));

    // Truncated: one byte short, only part of the header, or almost empty; and a trailing byte.
    let short = write(&dir, "short", &good_images[..good_images.len() - 1]);
    assert!(matches!(
        error_naming(read_idx_images(&short), &short),
        ImageError::Length { expected, actual, .. } if expected == good_images.len() && actual == expected - 1
    ));
    let header_only = write(&dir, "header", &good_images[..10]);
    assert!(matches!(
        error_naming(read_idx_images(&header_only), &header_only),
        ImageError::Length { expected: 16, .. }
    ));
    let tiny = write(&dir, "tiny", &[0, 0]);
    assert!(matches!(
        error_naming(read_idx_labels(&tiny), &tiny),
        ImageError::Length { .. }
    ));
    let mut longer = good_labels.clone();
    longer.push(3);
    let long = write(&dir, "long", &longer);
    assert!(matches!(
        error_naming(read_idx_labels(&long), &long),
        ImageError::Length { .. }
    ));

    // Wrong counts: fewer items than expected, or images and labels disagreeing.
    assert!(matches!(
        error_naming(read_labelled_images(&images, &labels, 3), &images),
        ImageError::Count {
            found: 2,
            expected: 3,
            ..
        }
    ));
    let three_labels = write(
        &dir,
        "three-labels",
        &idx_bytes(IDX_LABELS_MAGIC, &[3], &[1, 2, 3]),
    );
    assert!(matches!(
        error_naming(read_labelled_images(&images, &three_labels, 2), &three_labels),
        ImageError::Count {
            found: 3,
            expected: 2,
            ..
        }
    ));

    // Images of another size; a label outside 0..10; a missing file.
    let small = write(
        &dir,
        "small",
        &idx_bytes(IDX_IMAGES_MAGIC, &[1, 27, 28], &[0; 27 * 28]),
    );
    assert!(matches!(
        error_naming(read_idx_images(&small), &small),
        ImageError::ImageSize {
            rows: 27,
            columns: 28,
            ..
        }
    ));
    let bad_label = write(&dir, "bad-label", &idx_bytes(IDX_LABELS_MAGIC, &[3], &[1, 10, 2]));
    assert!(matches!(
        error_naming(read_idx_labels(&bad_label), &bad_label),
        ImageError::Label {
            index: 1,
            label: 10,
            ..
        }
    ));
    let missing = dir.join("train-images-idx3-ubyte");
    assert!(matches!(
        error_naming(FashionMnist::load(&dir), &missing),
        ImageError::Io { .. }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Statistics with a given mean and covariance (f64).
fn stats(mean: &[f64], covariance: &[f64]) -> FeatureStatistics {
    let d = mean.len() as i64;
    FeatureStatistics {
        mean: Tensor::from_slice(mean),
        covariance: Tensor::from_slice(covariance).reshape([d, d]),
        count: 1000,
    }
}

#[test]
fn frechet_distance_matches_the_bures_closed_form() {
    // 2x2: tr (S1^{1/2} S2 S1^{1/2})^{1/2} = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)), since a 2x2 SPD
    // matrix M has tr M^{1/2} = sqrt(tr M + 2 sqrt(det M)). S1 and S2 do not commute.
    let (s1, s2) = ([2.0, 0.6, 0.6, 1.0], [0.5, -0.3, -0.3, 1.5]);
    let (m1, m2) = ([0.5, -1.0], [1.5, 1.0]);
    let tr_s1s2 = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
    let det = |s: [f64; 4]| s[0] * s[3] - s[1] * s[2];
    let cross = (tr_s1s2 + 2.0 * (det(s1) * det(s2)).sqrt()).sqrt();
    let expected = 1.0 + 4.0 + (s1[0] + s1[3]) + (s2[0] + s2[3]) - 2.0 * cross;
    let found = frechet_distance_of(&stats(&m1, &s1), &stats(&m2, &s2)).unwrap();
    assert!((found - expected).abs() < 1e-10, "{found} vs {expected}");
    // Symmetric in its arguments.
    let swapped = frechet_distance_of(&stats(&m2, &s2), &stats(&m1, &s1)).unwrap();
    assert!((swapped - expected).abs() < 1e-10);

    // Commuting (diagonal) covariances: sum over coordinates of (sqrt a - sqrt b)^2.
    let a: [f64; 4] = [1.0, 4.0, 0.25, 9.0];
    let b: [f64; 4] = [4.0, 1.0, 0.25, 2.0];
    let diag = |v: [f64; 4]| {
        let mut m = [0.0; 16];
        for i in 0..4 {
            m[5 * i] = v[i];
        }
        m
    };
    let expected: f64 = a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum();
    let found = frechet_distance_of(&stats(&[0.0; 4], &diag(a)), &stats(&[0.0; 4], &diag(b))).unwrap();
    assert!((found - expected).abs() < 1e-10, "{found} vs {expected}");
}

#[test]
fn frechet_distance_of_samples() {
    let _rng = torch_rng();
    tch::manual_seed(0);
    let opts = (Kind::Double, Device::Cpu);
    let a = Tensor::randn([20_000, 4], opts);
    // Identical samples: zero up to rounding.
    assert!(frechet_distance(&a, &a).unwrap() < 1e-9);
    // N(0, I) against N(m, I): |m|^2 = 4, plus a sampling error of order d / sqrt(n).
    let shift = Tensor::from_slice(&[1.0, -1.0, 1.0, 1.0]);
    let b = Tensor::randn([20_000, 4], opts) + &shift;
    let found = frechet_distance(&a, &b).unwrap();
    assert!((found - 4.0).abs() < 0.1, "{found}");
    // Float features are accepted (and computed in f64).
    let found32 = frechet_distance(&a.to_kind(Kind::Float), &b.to_kind(Kind::Float)).unwrap();
    assert!((found32 - found).abs() < 1e-4);
    // Correlated Gaussians through a Cholesky factor L: S = L L^T.
    let l = Tensor::from_slice(&[1.2, 0.0, 0.5, 0.7]).reshape([2, 2]);
    let c = Tensor::randn([20_000, 2], opts).matmul(&l.transpose(0, 1));
    let d = Tensor::randn([20_000, 2], opts);
    let s = l.matmul(&l.transpose(0, 1));
    let s: Vec<f64> = Vec::try_from(&s.reshape([-1])).unwrap();
    let expected = frechet_distance_of(
        &stats(&[0.0, 0.0], &s),
        &stats(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0]),
    )
    .unwrap();
    let found = frechet_distance(&c, &d).unwrap();
    assert!(expected > 0.05);
    assert!((found - expected).abs() < 0.03, "{found} vs {expected}");
}

#[test]
fn frechet_distance_handles_rank_deficient_features_and_refuses_bad_shapes() {
    let _rng = torch_rng();
    tch::manual_seed(1);
    // Fewer samples than dimensions, and a dead (constant) feature: singular covariances.
    let a = Tensor::randn([5, 10], CPU);
    let b = Tensor::cat(&[Tensor::randn([8, 9], CPU), Tensor::zeros([8, 1], CPU)], 1);
    let found = frechet_distance(&a, &b).unwrap();
    assert!(found.is_finite() && found > 0.0);
    assert!(frechet_distance(&b, &b).unwrap() < 1e-6);
    let stats_a = feature_statistics(&a).unwrap();
    assert_eq!(stats_a.count, 5);
    assert_eq!(stats_a.covariance.size(), vec![10, 10]);

    let shape_error =
        |result: Result<f64, ImageError>| assert!(matches!(result, Err(ImageError::Shape { .. })));
    shape_error(frechet_distance(&Tensor::randn([10], CPU), &a));
    shape_error(frechet_distance(&Tensor::randn([1, 10], CPU), &a));
    shape_error(frechet_distance(&a, &Tensor::randn([5, 9], CPU)));
    let with_nan = Tensor::cat(&[a.shallow_clone(), Tensor::full([1, 10], f64::NAN, CPU)], 0);
    assert!(matches!(
        frechet_distance(&with_nan, &a),
        Err(ImageError::NonFinite { .. })
    ));
}

#[test]
fn classifier_shapes_features_and_accuracy() {
    let _rng = torch_rng();
    tch::manual_seed(0);
    let classifier = Classifier::new(ClassifierConfig::default(), Device::Cpu).unwrap();
    let x = Tensor::rand([3, 1, 28, 28], CPU) * 2.0 - 1.0;
    assert_eq!(classifier.logits(&x).size(), vec![3, 10]);
    let features = classifier.features(&x);
    assert_eq!(features.size(), vec![3, 128]);
    assert!(features.min().double_value(&[]) >= 0.0, "features follow a ReLU");
    let names: Vec<&str> = classifier
        .params()
        .specs()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "conv3.weight",
            "conv3.bias",
            "fc.weight",
            "fc.bias",
            "head.weight",
            "head.bias"
        ]
    );
    assert_eq!(classifier.params().specs()[6].shape, vec![128, 64 * 7 * 7]);

    // Chunked feature extraction (chunks of 1000) equals one pass; a small classifier keeps this quick.
    let classifier = Classifier::new(small_classifier(), Device::Cpu).unwrap();
    let many = Tensor::rand([1100, 1, 28, 28], CPU) * 2.0 - 1.0;
    let chunked = classifier_features(&classifier, &many).unwrap();
    assert_eq!(chunked.size(), vec![1100, 32]);
    let direct = tch::no_grad(|| classifier.features(&many.narrow(0, 995, 10)));
    assert!(chunked.narrow(0, 995, 10).allclose(&direct, 1e-5, 1e-5, false));

    // Accuracy counts argmax agreements: labels set to the predictions, then half of them shifted.
    let predicted = tch::no_grad(|| classifier.logits(&many)).argmax(-1, false);
    let data = LabelledImages {
        images: many,
        labels: predicted.copy(),
    };
    assert_eq!(accuracy(&classifier, &data).unwrap(), 1.0);
    let shifted = Tensor::cat(
        &[
            predicted.narrow(0, 0, 550),
            (predicted.narrow(0, 550, 550) + 1).remainder(10),
        ],
        0,
    );
    let data = LabelledImages {
        labels: shifted,
        ..data
    };
    assert!((accuracy(&classifier, &data).unwrap() - 0.5).abs() < 1e-12);
    assert!(matches!(
        classifier_features(&classifier, &Tensor::zeros([2, 784], CPU)),
        Err(ImageError::Shape { name: "images", .. })
    ));
}

/// A classifier small enough for quick tests.
fn small_classifier() -> ClassifierConfig {
    ClassifierConfig {
        channels: [8, 16],
        feature_dim: 32,
        num_classes: 10,
    }
}

/// Synthetic 10-class images: class c is a bright 6x6 square at a position given by c, plus noise.
fn synthetic(count: i64, seed: i64) -> LabelledImages {
    tch::manual_seed(seed);
    let labels = Tensor::randint(10, [count], (Kind::Int64, Device::Cpu));
    let images = Tensor::randn([count, 1, 28, 28], CPU) * 0.3 - 1.0;
    let classes: Vec<i64> = Vec::try_from(&labels).unwrap();
    for (idx, class) in classes.iter().enumerate() {
        let (row, col) = (2 + 12 * (class / 5), 1 + 5 * (class % 5));
        let _ = images
            .get(idx as i64)
            .narrow(1, row, 6)
            .narrow(2, col, 6)
            .fill_(1.0);
    }
    LabelledImages { images, labels }
}

#[test]
fn the_classifier_learns_synthetic_classes() {
    let _rng = torch_rng();
    let data = FashionMnist {
        train: synthetic(512, 0),
        test: synthetic(200, 1),
    };
    let training = ClassifierTraining {
        steps: 40,
        batch_size: 32,
        lr: 2e-3,
        seed: 0,
        classifier: small_classifier(),
    };
    let (classifier, test_accuracy) = train_classifier(&data, &training).unwrap();
    assert!(test_accuracy > 0.95, "test accuracy {test_accuracy}");
    assert_eq!(accuracy(&classifier, &data.test).unwrap(), test_accuracy);
    // The same seed gives the same classifier.
    let (again, _) = train_classifier(&data, &training).unwrap();
    assert!(again.params().flat().equal(classifier.params().flat()));

    let bad = ClassifierTraining {
        batch_size: 0,
        ..training.clone()
    };
    assert!(matches!(
        train_classifier(&data, &bad),
        Err(ImageError::Config {
            key: "batch_size",
            ..
        })
    ));
    let too_big = ClassifierTraining {
        batch_size: 1024,
        ..training
    };
    assert!(matches!(
        train_classifier(&data, &too_big),
        Err(ImageError::Shape { .. })
    ));
}

#[test]
fn image_grid_lays_out_tiles_and_writes_a_png() {
    // Five images: image k is uniformly (k / 2 - 1), i.e. -1, -0.5, 0, 0.5, 1; 3 per row.
    let images = Tensor::cat(
        &(0..5)
            .map(|k| Tensor::full([1, 1, 28, 28], k as f64 / 2.0 - 1.0, CPU))
            .collect::<Vec<_>>(),
        0,
    );
    let grid = image_grid(&images, 3).unwrap();
    // Each tile is 28 * 2 + 2 pixels, plus the 2-pixel frame.
    assert_eq!((grid.width, grid.height), (3 * 58 + 2, 2 * 58 + 2));
    assert_eq!(grid.rgb.len(), grid.width * grid.height * 3);
    let pixel = |x: usize, y: usize| grid.rgb[3 * (y * grid.width + x)];
    assert_eq!(pixel(0, 0), 40, "frame");
    assert_eq!(pixel(2, 2), 0, "image 0 is black");
    assert_eq!(pixel(2 + 55, 2 + 55), 0, "image 0's last pixel");
    assert_eq!(pixel(2 + 56, 2), 40, "gap after image 0");
    assert_eq!(pixel(2 + 58, 2), 64, "image 1 is -0.5");
    assert_eq!(pixel(2 + 2 * 58 + 10, 2 + 20), 128, "image 2 is 0");
    assert_eq!(
        pixel(2 + 58 + 3, 2 + 58 + 3),
        255,
        "image 4 starts the second row's second tile"
    );
    assert_eq!(pixel(2 + 2 * 58 + 3, 2 + 58 + 3), 40, "the last tile is empty");

    // Fewer images than columns: one row.
    assert_eq!(image_grid(&images.narrow(0, 0, 2), 8).unwrap().width, 2 * 58 + 2);
    assert!(matches!(
        image_grid(&images, 0),
        Err(ImageError::Config { key: "columns", .. })
    ));
    assert!(matches!(
        image_grid(&Tensor::zeros([2, 3, 28, 28], CPU), 2),
        Err(ImageError::Shape { .. })
    ));
}

#[test]
fn image_configs_read_from_toml() {
    let unet: UnetConfig =
        toml::from_str("channels = 16\nattention_at = [14, 7]\nnum_classes = 10\n").unwrap();
    assert_eq!(unet.channels, 16);
    assert_eq!(unet.attention_at, vec![14, 7]);
    assert_eq!(unet.num_classes, Some(10));
    assert_eq!(unet.channel_mult, UnetConfig::default().channel_mult);
    assert!(
        toml::from_str::<UnetConfig>("channel = 16\n").is_err(),
        "unknown keys are refused"
    );
    let training: ClassifierTraining = toml::from_str("steps = 10\n").unwrap();
    assert_eq!(
        training,
        ClassifierTraining {
            steps: 10,
            ..ClassifierTraining::default()
        }
    );
    assert!(toml::from_str::<ClassifierTraining>("step = 10\n").is_err());
}
