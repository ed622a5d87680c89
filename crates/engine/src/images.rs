//! Fashion-MNIST images: reading the IDX files, training the project's own classifier on them, the
//! Frechet distance in that classifier's feature space, and image grids as pixels (the report crate writes
//! them as PNG files).
//!
//! No Inception network can be fetched here, so FID proper is not computable; the Frechet distance of
//! [`frechet_distance`] over [`Classifier::features`] of a classifier trained by [`train_classifier`] is the
//! stand-in, and every report of it should say so ("Frechet distance in the features of our Fashion-MNIST
//! classifier", not "FID").
//!
//! The IDX files are the four uncompressed files that `cargo xtask data fashion-mnist` prepares under
//! `data/fashion-mnist/` (from Debian's `dataset-fashion-mnist` package). Pixels are mapped from `0..=255`
//! to `[-1, 1]` by `p / 127.5 - 1`.

use std::io::Read;
use std::path::{Path, PathBuf};

use ferroflow_models::ModelError;
use ferroflow_models::checkpoint::save_tensors;
use ferroflow_models::classifier::{Classifier, ClassifierConfig};
use ferroflow_models::optim::{FlatAdam, OptimizerConfig};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::TrainError;
use crate::train::{Journal, NanGuard, Trainable, execute};

/// Side length of the images, in pixels.
pub const IMAGE_SIDE: usize = 28;

/// IDX magic number of an image file: unsigned bytes (`0x08`), three dimensions.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;

/// IDX magic number of a label file: unsigned bytes (`0x08`), one dimension.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Number of Fashion-MNIST classes.
pub const NUM_CLASSES: usize = 10;

/// Names of the Fashion-MNIST classes, by label.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where `cargo xtask data fashion-mnist` puts the files, relative to the workspace root.
pub const FASHION_MNIST_DIR: &str = "data/fashion-mnist";

/// Images per evaluation chunk (bounds the memory of feature extraction).
const EVAL_CHUNK: i64 = 1000;

/// A failure while reading, training on, measuring or drawing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// An IDX file starts with the wrong magic number.
    #[error("{path}: IDX magic number {found:#010x}, expected {expected:#010x} ({what})")]
    Magic {
        /// The file.
        path: PathBuf,
        /// The number in the file.
        found: u32,
        /// The number of this kind of file.
        expected: u32,
        /// Which kind of file was expected.
        what: &'static str,
    },
    /// An IDX file's length does not match its header (truncated, or with trailing bytes).
    #[error("{path}: {actual} bytes, but its header announces {expected} (truncated or corrupt)")]
    Length {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: usize,
        /// Bytes in the file.
        actual: usize,
    },
    /// An IDX header announces dimensions whose product overflows.
    #[error("{path}: the header announces dimensions {dims:?}, more bytes than any file holds")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The dimensions in the header.
        dims: Vec<usize>,
    },
    /// An IDX file holds a number of items other than expected.
    #[error("{path}: holds {found} items, expected {expected}")]
    Count {
        /// The file.
        path: PathBuf,
        /// Items in the file.
        found: usize,
        /// Items expected.
        expected: usize,
    },
    /// An image file holds images of another size.
    #[error("{path}: images are {rows}x{columns}, expected 28x28")]
    ImageSize {
        /// The file.
        path: PathBuf,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        columns: usize,
    },
    /// A label is outside `0..NUM_CLASSES`.
    #[error("{path}: label {label} of item {index} is outside 0..{NUM_CLASSES}")]
    Label {
        /// The file.
        path: PathBuf,
        /// Index of the item.
        index: usize,
        /// The label.
        label: u8,
    },
    /// A tensor argument has the wrong shape or too few rows.
    #[error("`{name}` has shape {actual:?}, expected {expected}")]
    Shape {
        /// Which argument.
        name: &'static str,
        /// Its shape.
        actual: Vec<i64>,
        /// What is allowed.
        expected: String,
    },
    /// A training setting is out of range.
    #[error("invalid value for `{key}`: {detail}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is allowed.
        detail: String,
    },
    /// A value (loss, feature) became NaN or infinite.
    #[error("{what} is not finite")]
    NonFinite {
        /// What was not finite.
        what: String,
    },
    /// An error of the models crate.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A failure of the training loop other than a non-finite loss (which is [`ImageError::NonFinite`]).
    #[error(transparent)]
    Train(TrainError),
}

/// Images `[n, 1, 28, 28]` (float, in [-1, 1]) with their labels `[n]` (int64, in `0..10`).
#[derive(Debug)]
pub struct LabelledImages {
    /// The images.
    pub images: Tensor,
    /// The labels.
    pub labels: Tensor,
}

impl LabelledImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The Fashion-MNIST training (60,000) and test (10,000) sets.
#[derive(Debug)]
pub struct FashionMnist {
    /// The training set.
    pub train: LabelledImages,
    /// The test set.
    pub test: LabelledImages,
}

impl FashionMnist {
    /// Number of training images.
    pub const TRAIN_COUNT: usize = 60_000;
    /// Number of test images.
    pub const TEST_COUNT: usize = 10_000;

    /// Reads `{train,t10k}-{images-idx3,labels-idx1}-ubyte` from `dir`, checking magic numbers, sizes and
    /// counts.
    pub fn load(dir: &Path) -> Result<Self, ImageError> {
        let split = |prefix: &str, count| {
            read_labelled_images(
                &dir.join(format!("{prefix}-images-idx3-ubyte")),
                &dir.join(format!("{prefix}-labels-idx1-ubyte")),
                count,
            )
        };
        Ok(Self {
            train: split("train", Self::TRAIN_COUNT)?,
            test: split("t10k", Self::TEST_COUNT)?,
        })
    }
}

/// Reads an IDX file of unsigned bytes with magic `magic`; returns its dimensions and its data. The size
/// the header announces is checked against the file's length before the data is read.
fn read_idx(path: &Path, magic: u32, what: &'static str) -> Result<(Vec<usize>, Vec<u8>), ImageError> {
    let io = |e: std::io::Error| ImageError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot read: {e}"),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(ImageError::Io {
            path: path.to_path_buf(),
            detail: "not a regular file".into(),
        });
    }
    // On the 64-bit targets libtorch supports, a file's length fits a usize.
    let actual = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
    let length_error = |expected| ImageError::Length {
        path: path.to_path_buf(),
        expected,
        actual,
    };
    let ndim = (magic & 0xff) as usize;
    let header_len = 4 * (1 + ndim);
    let mut header = vec![0u8; header_len];
    // The magic number first, as far as the file goes, so that a short file of another kind is called that.
    let magic_len = actual.min(4);
    file.read_exact(&mut header[..magic_len]).map_err(io)?;
    if actual < 4 {
        return Err(length_error(4));
    }
    let word = |bytes: &[u8], idx: usize| {
        u32::from_be_bytes([
            bytes[4 * idx],
            bytes[4 * idx + 1],
            bytes[4 * idx + 2],
            bytes[4 * idx + 3],
        ])
    };
    let found = word(&header, 0);
    if found != magic {
        return Err(ImageError::Magic {
            path: path.to_path_buf(),
            found,
            expected: magic,
            what,
        });
    }
    if actual < header_len {
        return Err(length_error(header_len));
    }
    file.read_exact(&mut header[4..]).map_err(io)?;
    let dims: Vec<usize> = (1..=ndim).map(|idx| word(&header, idx) as usize).collect();
    let Some(expected) = dims
        .iter()
        .try_fold(1usize, |size, &dim| size.checked_mul(dim))
        .and_then(|n_bytes| n_bytes.checked_add(header_len))
    else {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            dims,
        });
    };
    if actual != expected {
        return Err(length_error(expected));
    }
    let mut data = vec![0u8; expected - header_len];
    file.read_exact(&mut data).map_err(|e| ImageError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot read the data (was the file changed while it was read?): {e}"),
    })?;
    Ok((dims, data))
}

/// Reads an IDX image file of 28x28 images into `[n, 1, 28, 28]` floats in [-1, 1].
pub fn read_idx_images(path: &Path) -> Result<Tensor, ImageError> {
    let (dims, data) = read_idx(path, IDX_IMAGES_MAGIC, "images: unsigned bytes, 3 dimensions")?;
    let (count, rows, columns) = (dims[0], dims[1], dims[2]);
    if (rows, columns) != (IMAGE_SIDE, IMAGE_SIDE) {
        return Err(ImageError::ImageSize {
            path: path.to_path_buf(),
            rows,
            columns,
        });
    }
    let side = IMAGE_SIDE as i64;
    Ok((Tensor::from_slice(&data).to_kind(Kind::Float) / 127.5 - 1.0).view([count as i64, 1, side, side]))
}

/// Reads an IDX label file into `[n]` int64 labels, each checked to lie in `0..10`.
pub fn read_idx_labels(path: &Path) -> Result<Tensor, ImageError> {
    let (_, data) = read_idx(path, IDX_LABELS_MAGIC, "labels: unsigned bytes, 1 dimension")?;
    if let Some((index, &label)) = data
        .iter()
        .enumerate()
        .find(|(_, label)| **label as usize >= NUM_CLASSES)
    {
        return Err(ImageError::Label {
            path: path.to_path_buf(),
            index,
            label,
        });
    }
    Ok(Tensor::from_slice(&data).to_kind(Kind::Int64))
}

/// Reads an image file and its label file, checking that each holds `expected_count` items.
pub fn read_labelled_images(
    images_path: &Path,
    labels_path: &Path,
    expected_count: usize,
) -> Result<LabelledImages, ImageError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    for (path, tensor) in [(images_path, &images), (labels_path, &labels)] {
        let found = tensor.size()[0] as usize;
        if found != expected_count {
            return Err(ImageError::Count {
                path: path.to_path_buf(),
                found,
                expected: expected_count,
            });
        }
    }
    Ok(LabelledImages { images, labels })
}

/// Settings of [`train_classifier`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierTraining {
    /// Adam steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Images per step.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Adam's learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Seed of the initial weights and of the order of the training images.
    #[serde(default)]
    pub seed: u64,
    /// The classifier's architecture.
    #[serde(default)]
    pub classifier: ClassifierConfig,
}

fn default_steps() -> usize {
    3000
}
fn default_batch_size() -> usize {
    128
}
fn default_lr() -> f64 {
    1e-3
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            batch_size: default_batch_size(),
            lr: default_lr(),
            seed: 0,
            classifier: ClassifierConfig::default(),
        }
    }
}

impl ClassifierTraining {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ImageError> {
        let bad = |key, detail: String| Err(ImageError::Config { key, detail });
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if !(1..=65_536).contains(&self.batch_size) {
            return bad("batch_size", format!("{} is outside 1..=65536", self.batch_size));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} must be finite and > 0", self.lr));
        }
        Ok(())
    }
}

/// The classifier trainer of [`train_classifier`], run by the engine's one training loop: Adam on the
/// cross-entropy of shuffled batches (a fresh order each epoch, the last partial batch of an epoch skipped).
struct ClassifierTrainer<'a> {
    classifier: Classifier,
    adam: FlatAdam,
    images: &'a LabelledImages,
    rng: ChaCha8Rng,
    order: Vec<i64>,
    cursor: i64,
    batch: i64,
}

impl Trainable for ClassifierTrainer<'_> {
    type Model = Classifier;

    fn model(&self) -> &Classifier {
        &self.classifier
    }

    fn step(&mut self, _step: usize) -> Result<f64, TrainError> {
        let n_train = self.order.len() as i64;
        if self.cursor + self.batch > n_train {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let (first, end) = (self.cursor as usize, (self.cursor + self.batch) as usize);
        let idx = Tensor::from_slice(&self.order[first..end]).to_device(self.images.images.device());
        self.cursor += self.batch;
        let images = self.images.images.index_select(0, &idx);
        let labels = self.images.labels.index_select(0, &idx);
        let loss = self.classifier.logits(&images).cross_entropy_for_logits(&labels);
        loss.backward();
        let value = loss.double_value(&[]);
        // As in the flow trainer, a non-finite loss never reaches the weights; the NaN guard stops the run.
        if value.is_finite() {
            self.adam.step(self.classifier.params().flat());
        }
        Ok(value)
    }
}

/// Trains a [`Classifier`] (of `training.classifier`) on `data.train` with Adam and cross-entropy, visiting the
/// training images in a fresh random order each epoch (the last partial batch of an epoch is skipped); returns it with its accuracy on `data.test`.
/// Runs on the device of the images.
pub fn train_classifier(
    data: &FashionMnist,
    training: &ClassifierTraining,
) -> Result<(Classifier, f64), ImageError> {
    training.validate()?;
    let n_train = data.train.len() as i64;
    let batch = training.batch_size as i64;
    if n_train < batch {
        return Err(ImageError::Shape {
            name: "train.images",
            actual: data.train.images.size(),
            expected: format!("at least batch_size = {batch} images"),
        });
    }
    let device = data.train.images.device();
    let classifier = ferroflow_models::with_torch_seed(training.seed, || {
        Classifier::new(training.classifier.clone(), device)
    })?;
    let optimizer = OptimizerConfig {
        lr: training.lr,
        ..OptimizerConfig::default()
    };
    let adam = FlatAdam::new(optimizer, classifier.params().flat())?;
    // The order of the images comes from a generator of our own, so it depends on the seed only; the
    // initial weights come from tch's global generator, seeded above (other threads drawing from it
    // meanwhile would change them).
    let mut trainer = ClassifierTrainer {
        classifier,
        adam,
        images: &data.train,
        rng: ChaCha8Rng::seed_from_u64(training.seed),
        order: (0..n_train).collect(),
        cursor: n_train,
        batch,
    };
    execute(
        &mut trainer,
        0,
        training.steps,
        &mut Journal::default(),
        &mut [&mut NanGuard],
    )
    .map_err(|e| match e {
        TrainError::NonFiniteLoss { step, value, .. } => ImageError::NonFinite {
            what: format!("the classifier's loss at step {step} ({value})"),
        },
        other => ImageError::Train(other),
    })?;
    let classifier = trainer.classifier;
    let accuracy = accuracy(&classifier, &data.test)?;
    Ok((classifier, accuracy))
}

/// Loads Fashion-MNIST from `data_dir`, trains a classifier with `training`, saves its parameters to
/// `checkpoint` (safetensors, names as in [`ferroflow_models::classifier`]) and returns it with its test
/// accuracy. This is the whole of `train-classifier`.
pub fn train_fashion_mnist_classifier(
    data_dir: &Path,
    checkpoint: &Path,
    training: &ClassifierTraining,
) -> Result<(Classifier, f64), ImageError> {
    training.validate()?;
    let data = FashionMnist::load(data_dir)?;
    let (classifier, test_accuracy) = train_classifier(&data, training)?;
    let params = classifier.params();
    save_tensors(&params.named_of(params.flat()), checkpoint)?;
    Ok((classifier, test_accuracy))
}

/// A classifier of architecture `config` with the parameters saved at `checkpoint`.
pub fn load_classifier(config: ClassifierConfig, checkpoint: &Path) -> Result<Classifier, ImageError> {
    let classifier = Classifier::new(config, Device::Cpu)?;
    classifier.params().load(checkpoint)?;
    Ok(classifier)
}

/// Checks that `images` is `[n, 1, 28, 28]` with `n >= 1`.
fn check_images(name: &'static str, images: &Tensor) -> Result<(), ImageError> {
    let size = images.size();
    let side = IMAGE_SIDE as i64;
    if size.len() != 4 || size[0] < 1 || size[1..] != [1, side, side] {
        return Err(ImageError::Shape {
            name,
            actual: size,
            expected: "[n, 1, 28, 28] with n >= 1".into(),
        });
    }
    Ok(())
}

/// The fraction of `data` that `classifier` labels correctly.
pub fn accuracy(classifier: &Classifier, data: &LabelledImages) -> Result<f64, ImageError> {
    check_images("images", &data.images)?;
    let _guard = tch::no_grad_guard();
    let params = classifier.params().views();
    let n_images = data.len() as i64;
    let mut correct = 0i64;
    for start in (0..n_images).step_by(EVAL_CHUNK as usize) {
        let len = EVAL_CHUNK.min(n_images - start);
        let logits = classifier.logits_with(&params, &data.images.narrow(0, start, len));
        let predicted = logits.argmax(-1, false);
        let labels = data.labels.narrow(0, start, len).to_device(predicted.device());
        correct += predicted.eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
    }
    Ok(correct as f64 / n_images as f64)
}

/// `head(params, chunk)` over `images` `[n, 1, 28, 28]` in chunks of [`EVAL_CHUNK`] images without a
/// gradient, concatenated along the batch.
fn in_chunks(
    classifier: &Classifier,
    images: &Tensor,
    head: impl Fn(&[Tensor], &Tensor) -> Tensor,
) -> Result<Tensor, ImageError> {
    check_images("images", images)?;
    let _guard = tch::no_grad_guard();
    let params = classifier.params().views();
    let n_images = images.size()[0];
    let chunks: Vec<Tensor> = (0..n_images)
        .step_by(EVAL_CHUNK as usize)
        .map(|start| {
            head(
                &params,
                &images.narrow(0, start, EVAL_CHUNK.min(n_images - start)),
            )
        })
        .collect();
    Ok(Tensor::cat(&chunks, 0))
}

/// Penultimate features `[n, feature_dim]` of `images` `[n, 1, 28, 28]`, computed in chunks without a
/// gradient.
pub fn classifier_features(classifier: &Classifier, images: &Tensor) -> Result<Tensor, ImageError> {
    in_chunks(classifier, images, |params, chunk| {
        classifier.features_with(params, chunk)
    })
}

/// Class probabilities `[n, 10]` (softmax of the logits) of `images` `[n, 1, 28, 28]`, computed in chunks
/// without a gradient.
pub fn class_probabilities(classifier: &Classifier, images: &Tensor) -> Result<Tensor, ImageError> {
    in_chunks(classifier, images, |params, chunk| {
        classifier.logits_with(params, chunk).softmax(-1, Kind::Float)
    })
}

/// Mean and covariance of a set of feature vectors, in f64 on the CPU.
#[derive(Debug)]
pub struct FeatureStatistics {
    /// Mean `[d]`.
    pub mean: Tensor,
    /// Unbiased covariance `[d, d]` (divided by `n - 1`, as numpy's `cov` and the FID code).
    pub covariance: Tensor,
    /// Number of feature vectors.
    pub count: usize,
}

/// The mean and covariance of `features` `[n, d]` (`n >= 2`, all finite).
pub fn feature_statistics(features: &Tensor) -> Result<FeatureStatistics, ImageError> {
    let size = features.size();
    if size.len() != 2 || size[0] < 2 || size[1] < 1 {
        return Err(ImageError::Shape {
            name: "features",
            actual: size,
            expected: "[n, d] with n >= 2 and d >= 1".into(),
        });
    }
    let features = features.detach().to_device(Device::Cpu).to_kind(Kind::Double);
    if features.isfinite().all().int64_value(&[]) == 0 {
        return Err(ImageError::NonFinite {
            what: "a feature vector".into(),
        });
    }
    let mean = features.mean_dim(0, false, Kind::Double);
    let centred = &features - &mean;
    let covariance = centred.transpose(0, 1).matmul(&centred) / (size[0] - 1) as f64;
    Ok(FeatureStatistics {
        mean,
        covariance,
        count: size[0] as usize,
    })
}

/// The symmetric positive-semidefinite square root of a symmetric matrix, through its eigendecomposition,
/// with rounding-error negative eigenvalues set to zero.
fn psd_sqrt(matrix: &Tensor) -> Tensor {
    let (eigenvalues, eigenvectors) = matrix.linalg_eigh("L");
    (&eigenvectors * eigenvalues.clamp_min(0.0).sqrt().unsqueeze(0)).matmul(&eigenvectors.transpose(0, 1))
}

/// The Frechet distance between the Gaussians fitted to two feature sets:
/// `|m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})` (the squared 2-Wasserstein or
/// Bures-Wasserstein distance; FID's formula).
///
/// Square roots come from symmetric eigendecompositions in f64 with negative eigenvalues (rounding) set to
/// zero, so rank-deficient covariances (fewer samples than dimensions, or dead ReLU features) are fine;
/// this is why it does not use `ferroflow_paths::linalg::spd_sqrt`, which insists on positive definite
/// matrices. A result below zero by rounding is returned as zero.
pub fn frechet_distance_of(a: &FeatureStatistics, b: &FeatureStatistics) -> Result<f64, ImageError> {
    if a.mean.size() != b.mean.size() {
        return Err(ImageError::Shape {
            name: "features_b",
            actual: b.mean.size(),
            expected: format!("feature width {:?}, as features_a", a.mean.size()),
        });
    }
    let mean_term = (&a.mean - &b.mean).square().sum(Kind::Double).double_value(&[]);
    let root_a = psd_sqrt(&a.covariance);
    let product = root_a.matmul(&b.covariance).matmul(&root_a);
    let product = (&product + product.transpose(0, 1)) * 0.5;
    let cross = product
        .linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    let trace_a = a.covariance.trace().double_value(&[]);
    let trace_b = b.covariance.trace().double_value(&[]);
    let distance = mean_term + trace_a + trace_b - 2.0 * cross;
    if !distance.is_finite() {
        return Err(ImageError::NonFinite {
            what: "the Frechet distance".into(),
        });
    }
    Ok(distance.max(0.0))
}

/// The Frechet distance between two feature sets `[n_a, d]` and `[n_b, d]`; see [`frechet_distance_of`].
pub fn frechet_distance(features_a: &Tensor, features_b: &Tensor) -> Result<f64, ImageError> {
    frechet_distance_of(&feature_statistics(features_a)?, &feature_statistics(features_b)?)
}

/// Pixels per image pixel in [`image_grid`].
const GRID_SCALE: usize = 2;

/// Background pixels between and around the images in [`image_grid`].
const GRID_GAP: usize = 2;

/// Grey level of the background of [`image_grid`].
const GRID_BACKGROUND: u8 = 40;

/// An RGB picture: `width * height * 3` bytes, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Red, green and blue of each pixel, row by row from the top.
    pub rgb: Vec<u8>,
}

/// Lays `images` `[n, 1, 28, 28]` (values in [-1, 1]; outside values are clipped) out as a grid with
/// `columns` images per row (fewer when `n < columns`), each pixel drawn as a 2x2 block, images separated
/// and framed by 2 dark-grey (40, 40, 40) pixels; -1 is black and 1 white.
pub fn image_grid(images: &Tensor, columns: usize) -> Result<RgbImage, ImageError> {
    check_images("images", images)?;
    if columns == 0 {
        return Err(ImageError::Config {
            key: "columns",
            detail: "must be at least 1".into(),
        });
    }
    let n_images = images.size()[0] as usize;
    let columns = columns.min(n_images);
    let rows = n_images.div_ceil(columns);
    let tile = IMAGE_SIDE * GRID_SCALE + GRID_GAP;
    let (width, height) = (columns * tile + GRID_GAP, rows * tile + GRID_GAP);
    let grey = ((images
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .clamp(-1.0, 1.0)
        + 1.0)
        * 127.5)
        .round()
        .to_kind(Kind::Uint8)
        .reshape([-1]);
    let grey: Vec<u8> = Vec::try_from(&grey).map_err(|e| ImageError::NonFinite {
        what: format!("the pixels ({e})"),
    })?;

    let mut rgb = vec![GRID_BACKGROUND; width * height * 3];
    for (image_idx, pixels) in grey.chunks_exact(IMAGE_SIDE * IMAGE_SIDE).enumerate() {
        let left = GRID_GAP + (image_idx % columns) * tile;
        let top = GRID_GAP + (image_idx / columns) * tile;
        for (pixel_idx, &value) in pixels.iter().enumerate() {
            let (row, column) = (pixel_idx / IMAGE_SIDE, pixel_idx % IMAGE_SIDE);
            let x = left + column * GRID_SCALE;
            for dy in 0..GRID_SCALE {
                let y = top + row * GRID_SCALE + dy;
                rgb[3 * (y * width + x)..3 * (y * width + x + GRID_SCALE)].fill(value);
            }
        }
    }
    Ok(RgbImage { width, height, rgb })
}
