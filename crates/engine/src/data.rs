//! The 2D data sets of the flow-matching benchmarks, generated from a seed, and Gaussian mixtures.
//!
//! Definitions follow `../shared/reference.md` exactly (they match torchcfm's generators in law).
//! Samples are written row-major into `f32` buffers (`[n, 2]`), the layout the training loop hands to
//! libtorch without a copy of its own.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::path::PathBuf;
use std::sync::Arc;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ensure_finite};

/// A distribution to draw points from: a source or a target of a flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Dataset {
    /// N(0, s^2 I) in `dim` dimensions (s = `std`, default 1).
    Gaussian {
        /// Dimension (default 2).
        #[serde(default = "two")]
        dim: usize,
        /// Standard deviation (default 1).
        #[serde(default = "one")]
        std: f64,
    },
    /// Eight Gaussians of std 0.1^(1/4) on a circle of radius 5.
    #[serde(rename = "8gaussians")]
    EightGaussians {},
    /// Two interleaved half circles, scaled by 3 and shifted by -1.
    Moons {},
    /// The S curve, scaled by 1.5.
    Scurve {},
    /// The 4x4 checkerboard on [-2, 2]^2, uniform on the squares with i + j even.
    Checkerboard {},
    /// A ring of radius N(3, 0.1^2).
    Ring {},
    /// A Gaussian mixture with full covariances.
    Mixture(MixtureSpec),
    /// The uniform distribution on `manifold` (the default source when `data.manifold` is set).
    Uniform {
        /// The manifold.
        manifold: crate::manifold::ManifoldSpec,
    },
    /// A mixture of von Mises-Fisher distributions on the sphere S^2 (unit `means` in R^3).
    VmfMixture {
        /// Component weights (normalised when used).
        weights: Vec<f64>,
        /// Unit mean directions, one per component.
        means: Vec<Vec<f64>>,
        /// Concentrations kappa >= 0, one per component.
        concentrations: Vec<f64>,
    },
    /// A mixture of wrapped Gaussians on the flat torus T^d (independent coordinates; angles in [-pi, pi)).
    WrappedGaussianMixture {
        /// Component weights (normalised when used).
        weights: Vec<f64>,
        /// Mean angles, one row per component.
        means: Vec<Vec<f64>>,
        /// Standard deviations per angle, one row per component.
        stds: Vec<Vec<f64>>,
    },
    /// The 4 x 4 checkerboard of the periodic square T^2, uniform on the squares with i + j even.
    TorusCheckerboard {},
    /// Independent factors on a product manifold (each a data set on a sphere or a torus), coordinates in
    /// the order of the factors.
    Product {
        /// The factors.
        factors: Vec<Dataset>,
    },
    /// Fashion-MNIST training images (1 x 28 x 28, scaled to [-1, 1], flattened to 784 coordinates) with
    /// their class labels, read from `dir` (prepared by `cargo xtask data fashion-mnist`).
    FashionMnist {
        /// Folder of the un-gzipped IDX files.
        #[serde(default = "default_fashion_dir")]
        dir: String,
    },
    /// A 2D data set discretised into two tokens of `bins` bins each over the window
    /// `[-half_width, half_width]^2` ([`crate::tokens`]): the target of a discrete run. Sampled as a
    /// continuous set it draws the undiscretised points (the reference of its W2).
    #[serde(rename = "tokens_2d")]
    Tokens2d {
        /// The continuous data set.
        dataset: crate::tokens::Base2d,
        /// Bins per axis (the vocabulary), 2..=4096.
        bins: usize,
        /// Half width of the window (default 4).
        #[serde(default = "default_half_width")]
        half_width: f64,
    },
    /// Words of a word list as letter tokens padded to `max_length` ([`crate::tokens`]): the target of a
    /// discrete run, split with the run's seed into training and held-out words.
    Words {
        /// The word list, one word a line.
        #[serde(default = "default_word_file")]
        file: String,
        /// The longest word kept and the sequence length (default 8).
        #[serde(default = "default_max_length")]
        max_length: usize,
        /// The held-out fraction of the words (default 0.1).
        #[serde(default = "default_held_out")]
        held_out: f64,
    },
}

fn default_half_width() -> f64 {
    crate::tokens::DEFAULT_HALF_WIDTH
}
fn default_word_file() -> String {
    "/usr/share/dict/american-english".into()
}
fn default_max_length() -> usize {
    8
}
fn default_held_out() -> f64 {
    crate::tokens::DEFAULT_HELD_OUT
}

fn default_fashion_dir() -> String {
    "data/fashion-mnist".into()
}

/// Fashion-MNIST's training set as flat row-major pixels in [-1, 1] and labels, loaded once per process.
pub struct ImageStore {
    /// `[n, 784]` pixels.
    pub pixels: Vec<f32>,
    /// `[n]` labels in 0..10.
    pub labels: Vec<i64>,
}

/// The image sets loaded so far, by folder: a process that reads two folders gets each one's images.
static FASHION: std::sync::Mutex<BTreeMap<PathBuf, Arc<ImageStore>>> = std::sync::Mutex::new(BTreeMap::new());

/// The Fashion-MNIST training set from `dir`, loaded and checked on first use of that folder and shared
/// afterwards (errors name the file; a failed load is not remembered, so a repaired folder loads next time).
pub fn fashion_store(dir: &str) -> Result<Arc<ImageStore>, String> {
    let key = PathBuf::from(dir);
    // A panic while another thread held the lock leaves the map itself consistent (inserts are atomic).
    if let Some(store) = FASHION.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Arc::clone(store));
    }
    let data = crate::images::FashionMnist::load(&key)
        .map_err(|e| format!("{e} (prepare the data set with `cargo xtask data fashion-mnist`)"))?;
    let flat = data.train.images.reshape([-1]).to_kind(tch::Kind::Float);
    let pixels = Vec::<f32>::try_from(&flat).map_err(|e| e.to_string())?;
    let labels =
        Vec::<i64>::try_from(&data.train.labels.to_kind(tch::Kind::Int64)).map_err(|e| e.to_string())?;
    let store = Arc::new(ImageStore { pixels, labels });
    FASHION
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::clone(&store));
    Ok(store)
}

fn two() -> usize {
    2
}
fn one() -> f64 {
    1.0
}

/// Weights, means and covariances of a Gaussian mixture (config form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSpec {
    /// Component weights (normalised when used).
    pub weights: Vec<f64>,
    /// Component means, one row each.
    pub means: Vec<Vec<f64>>,
    /// Component covariances (`dim x dim` each).
    pub covariances: Vec<Vec<Vec<f64>>>,
}

impl Default for Dataset {
    fn default() -> Self {
        Dataset::Gaussian { dim: 2, std: 1.0 }
    }
}

impl Dataset {
    /// Dimension of a sample.
    pub fn dim(&self) -> usize {
        match self {
            Dataset::Gaussian { dim, .. } => *dim,
            Dataset::Mixture(spec) => spec.means.first().map_or(0, Vec::len),
            Dataset::FashionMnist { .. } => 784,
            Dataset::Words { max_length, .. } => *max_length,
            Dataset::Uniform { .. }
            | Dataset::VmfMixture { .. }
            | Dataset::WrappedGaussianMixture { .. }
            | Dataset::TorusCheckerboard {}
            | Dataset::Product { .. } => crate::manifold::manifold_of(self).map_or(0, |m| m.ambient_dim()),
            _ => 2,
        }
    }

    /// A short name for file names and tables.
    pub fn name(&self) -> String {
        match self {
            Dataset::Gaussian { .. } => "gaussian".into(),
            Dataset::EightGaussians {} => "8gaussians".into(),
            Dataset::Moons {} => "moons".into(),
            Dataset::Scurve {} => "scurve".into(),
            Dataset::Checkerboard {} => "checkerboard".into(),
            Dataset::Ring {} => "ring".into(),
            Dataset::Mixture(_) => "mixture".into(),
            Dataset::FashionMnist { .. } => "fashion_mnist".into(),
            Dataset::Tokens2d { dataset, .. } => format!("tokens_2d-{}", dataset.dataset().name()),
            Dataset::Words { .. } => "words".into(),
            Dataset::Uniform { .. } => "uniform".into(),
            Dataset::VmfMixture { .. } => "vmf_mixture".into(),
            Dataset::WrappedGaussianMixture { .. } => "wrapped_gaussian_mixture".into(),
            Dataset::TorusCheckerboard {} => "torus_checkerboard".into(),
            Dataset::Product { factors } => factors.iter().map(Dataset::name).collect::<Vec<_>>().join("-x-"),
        }
    }

    /// The shape of one sample for the network (`[dim]` for vectors, `[1, 28, 28]` for images).
    pub fn sample_shape(&self) -> Vec<i64> {
        match self {
            Dataset::FashionMnist { .. } => vec![1, 28, 28],
            other => vec![other.dim() as i64],
        }
    }

    /// Whether this is a token data set, the target of a discrete run.
    pub fn is_tokens(&self) -> bool {
        matches!(self, Dataset::Tokens2d { .. } | Dataset::Words { .. })
    }

    /// The vocabulary of a token data set (`None` for continuous ones).
    pub fn vocab_size(&self) -> Option<usize> {
        match self {
            Dataset::Tokens2d { bins, .. } => Some(*bins),
            Dataset::Words { .. } => Some(crate::tokens::WORD_VOCAB),
            _ => None,
        }
    }

    /// Number of classes of the labels drawn with the samples (1 for unlabelled sets).
    pub fn num_classes(&self) -> usize {
        match self {
            Dataset::FashionMnist { .. } => 10,
            Dataset::EightGaussians {} => 8,
            Dataset::Moons {} => 2,
            Dataset::Mixture(spec) => spec.weights.len(),
            _ => 1,
        }
    }

    /// Checks parameters; `key` is the config key of this data set, for messages.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match self {
            Dataset::Gaussian { dim, std } => {
                if *dim == 0 {
                    return Err(ConfigError::value(format!("{key}.dim"), "must be at least 1"));
                }
                check_scale(&format!("{key}.std"), *std, MAX_COORDINATE)?;
                if *std <= 0.0 {
                    return Err(ConfigError::value(
                        format!("{key}.std"),
                        format!("{std} must be > 0"),
                    ));
                }
            }
            Dataset::Mixture(spec) => spec.validate(key)?,
            Dataset::Tokens2d { bins, half_width, .. } => {
                crate::tokens::validate_tokens_2d(key, *bins, *half_width)?;
            }
            Dataset::Words {
                file,
                max_length,
                held_out,
            } => crate::tokens::validate_words(key, file, *max_length, *held_out)?,
            Dataset::FashionMnist { dir } => {
                fashion_store(dir).map_err(|e| ConfigError::value(format!("{key}.dir"), e))?;
            }
            Dataset::Uniform { manifold } => manifold.validate(&format!("{key}.manifold"))?,
            Dataset::VmfMixture { .. }
            | Dataset::WrappedGaussianMixture { .. }
            | Dataset::TorusCheckerboard {}
            | Dataset::Product { .. } => {
                if let Dataset::Product { factors } = self {
                    for (idx, factor) in factors.iter().enumerate() {
                        if crate::manifold::manifold_of(factor).is_none()
                            || matches!(factor, Dataset::Product { .. })
                        {
                            return Err(ConfigError::value(
                                format!("{key}.factors[{idx}]"),
                                format!("{} is not a data set on a sphere or a torus", factor.name()),
                            ));
                        }
                    }
                }
                if let Some(manifold) = crate::manifold::manifold_of(self) {
                    manifold.validate(key)?;
                }
                crate::manifold::density_of(self, key)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Draws `n_samples` points into a row-major `[n_samples, dim]` buffer. Image sets must have passed
    /// [`Dataset::validate`] (which loads them) first.
    pub fn sample(&self, n_samples: usize, rng: &mut impl Rng) -> Vec<f32> {
        let mut out = Vec::with_capacity(n_samples * self.dim());
        self.sample_into(n_samples, rng, &mut out);
        out
    }

    /// Appends `n_samples` points to `out` (row-major), reusing its allocation.
    pub fn sample_into(&self, n_samples: usize, rng: &mut impl Rng, out: &mut Vec<f32>) {
        self.sample_labelled_into(n_samples, rng, out, None);
    }

    /// Appends `n_samples` points to `out` and, when asked, their labels to `labels`: the class of an image,
    /// the mode of 8gaussians (k), the moon (0 upper, 1 lower), the mixture component; 0 otherwise.
    pub fn sample_labelled_into(
        &self,
        n_samples: usize,
        rng: &mut impl Rng,
        out: &mut Vec<f32>,
        mut labels: Option<&mut Vec<i64>>,
    ) {
        let mut label = |value: i64| {
            if let Some(labels) = labels.as_deref_mut() {
                labels.push(value);
            }
        };
        let mut normal = || -> f64 { rng.sample(StandardNormal) };
        match self {
            Dataset::Gaussian { dim, std } => {
                out.extend((0..n_samples * dim).map(|_| (normal() * std) as f32));
            }
            Dataset::EightGaussians {} => {
                let spread = 0.1f64.powf(0.25);
                for _ in 0..n_samples {
                    let k = rng.random_range(0..8u32);
                    label(k as i64);
                    let (s, c) = (k as f64 * PI / 4.0).sin_cos();
                    out.push((5.0 * c + spread * rng.sample::<f64, _>(StandardNormal)) as f32);
                    out.push((5.0 * s + spread * rng.sample::<f64, _>(StandardNormal)) as f32);
                }
            }
            Dataset::Moons {} => {
                for _ in 0..n_samples {
                    let upper = rng.random_bool(0.5);
                    label(i64::from(!upper));
                    let a = rng.random_range(0.0..PI);
                    let (x, y) = if upper {
                        (a.cos(), a.sin())
                    } else {
                        (1.0 - a.cos(), 0.5 - a.sin())
                    };
                    let nx: f64 = rng.sample(StandardNormal);
                    let ny: f64 = rng.sample(StandardNormal);
                    out.push((3.0 * (x + 0.1 * nx) - 1.0) as f32);
                    out.push((3.0 * (y + 0.1 * ny) - 1.0) as f32);
                }
            }
            Dataset::Scurve {} => {
                for _ in 0..n_samples {
                    let a = rng.random_range(-1.5 * PI..1.5 * PI);
                    let x = a.sin();
                    let y = a.signum() * (a.cos() - 1.0);
                    let nx: f64 = rng.sample(StandardNormal);
                    let ny: f64 = rng.sample(StandardNormal);
                    out.push((1.5 * (x + 0.05 * nx)) as f32);
                    out.push((1.5 * (y + 0.05 * ny)) as f32);
                }
            }
            Dataset::Checkerboard {} => {
                // The eight unit squares [i, i+1] x [j, j+1] with i, j in {-2, ..., 1} and i + j even.
                for _ in 0..n_samples {
                    let square = rng.random_range(0..8i32);
                    let i = square / 2 - 2;
                    let j_choices = if (i + 2) % 2 == 0 { [-2, 0] } else { [-1, 1] };
                    let j = j_choices[(square % 2) as usize];
                    out.push((i as f64 + rng.random::<f64>()) as f32);
                    out.push((j as f64 + rng.random::<f64>()) as f32);
                }
            }
            Dataset::Ring {} => {
                for _ in 0..n_samples {
                    let a = rng.random_range(0.0..2.0 * PI);
                    let r = 3.0 + 0.1 * rng.sample::<f64, _>(StandardNormal);
                    out.push((r * a.cos()) as f32);
                    out.push((r * a.sin()) as f32);
                }
            }
            Dataset::Mixture(spec) => spec.sample_into(n_samples, rng, out, &mut label),
            Dataset::Tokens2d { dataset, .. } => dataset.dataset().sample_into(n_samples, rng, out),
            Dataset::Words { .. } => {
                // `RunConfig::validate` refuses words anywhere but as a discrete run's target, whose batches
                // come from `crate::discrete`, never from here.
                panic!("a words data set has no continuous samples; it is a discrete run's target")
            }
            Dataset::Uniform { .. }
            | Dataset::VmfMixture { .. }
            | Dataset::WrappedGaussianMixture { .. }
            | Dataset::TorusCheckerboard {}
            | Dataset::Product { .. } => {
                // `validate` builds the density first; a config that passed it cannot fail here.
                let density = crate::manifold::density_of(self, "data")
                    .expect("Dataset::validate builds the density before sampling");
                let points = density.sample(n_samples, rng);
                out.extend(points.iter().map(|&v| v as f32));
            }
            Dataset::FashionMnist { dir } => {
                // `validate` loads the store first; a config that passed it cannot fail here.
                let store = fashion_store(dir).expect("Dataset::validate loads the images before sampling");
                let count = store.labels.len();
                for _ in 0..n_samples {
                    let idx = rng.random_range(0..count);
                    out.extend_from_slice(&store.pixels[idx * 784..(idx + 1) * 784]);
                    label(store.labels[idx]);
                }
            }
        }
        if !matches!(
            self,
            Dataset::EightGaussians {}
                | Dataset::Moons {}
                | Dataset::Mixture(_)
                | Dataset::FashionMnist { .. }
        ) {
            for _ in 0..n_samples {
                label(0);
            }
        }
    }
}

impl MixtureSpec {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let k = self.weights.len();
        if k == 0 {
            return Err(ConfigError::value(
                format!("{key}.weights"),
                "needs at least one component",
            ));
        }
        if self.means.len() != k || self.covariances.len() != k {
            return Err(ConfigError::value(
                format!("{key}.means"),
                format!(
                    "{} weights, {} means, {} covariances: they must match",
                    k,
                    self.means.len(),
                    self.covariances.len()
                ),
            ));
        }
        let dim = self.means[0].len();
        if dim == 0 {
            return Err(ConfigError::value(
                format!("{key}.means"),
                "means must have at least one coordinate",
            ));
        }
        for (idx, w) in self.weights.iter().enumerate() {
            ensure_finite(&format!("{key}.weights[{idx}]"), *w)?;
            if *w < 0.0 {
                return Err(ConfigError::value(
                    format!("{key}.weights[{idx}]"),
                    format!("{w} is negative"),
                ));
            }
        }
        let total = self.weights.iter().sum::<f64>();
        if total <= 0.0 {
            return Err(ConfigError::value(
                format!("{key}.weights"),
                "weights sum to zero",
            ));
        }
        if !total.is_finite() {
            return Err(ConfigError::value(
                format!("{key}.weights"),
                "their sum overflows; scale them down (they are normalised when used)",
            ));
        }
        for (idx, (mean, cov)) in self.means.iter().zip(&self.covariances).enumerate() {
            if mean.len() != dim || cov.len() != dim || cov.iter().any(|row| row.len() != dim) {
                return Err(ConfigError::value(
                    format!("{key}.covariances[{idx}]"),
                    format!(
                        "component {idx} does not have dimension {dim} in its mean and {dim}x{dim} covariance"
                    ),
                ));
            }
            for (coordinate, value) in mean.iter().enumerate() {
                check_scale(
                    &format!("{key}.means[{idx}][{coordinate}]"),
                    *value,
                    MAX_COORDINATE,
                )?;
            }
            for (row, values) in cov.iter().enumerate() {
                for (column, value) in values.iter().enumerate() {
                    check_scale(
                        &format!("{key}.covariances[{idx}][{row}][{column}]"),
                        *value,
                        MAX_COORDINATE * MAX_COORDINATE,
                    )?;
                }
            }
            if cholesky(cov).is_none() {
                return Err(ConfigError::value(
                    format!("{key}.covariances[{idx}]"),
                    "is not symmetric positive definite",
                ));
            }
        }
        Ok(())
    }

    fn sample_into(
        &self,
        n_samples: usize,
        rng: &mut impl Rng,
        out: &mut Vec<f32>,
        label: &mut impl FnMut(i64),
    ) {
        let total: f64 = self.weights.iter().sum();
        let factors: Vec<Vec<Vec<f64>>> = self
            .covariances
            .iter()
            .map(|c| cholesky(c).expect("validated covariance"))
            .collect();
        let dim = self.means[0].len();
        let mut z = vec![0.0; dim];
        for _ in 0..n_samples {
            let mut u = rng.random::<f64>() * total;
            let mut comp = self.weights.len() - 1;
            for (idx, w) in self.weights.iter().enumerate() {
                if u < *w {
                    comp = idx;
                    break;
                }
                u -= w;
            }
            label(comp as i64);
            for zi in z.iter_mut() {
                *zi = StandardNormal.sample(rng);
            }
            let l = &factors[comp];
            for (row, (factor_row, mean)) in l.iter().zip(&self.means[comp]).enumerate() {
                let offset: f64 = factor_row[..=row].iter().zip(&z).map(|(a, b)| a * b).sum();
                out.push((mean + offset) as f32);
            }
        }
    }
}

/// The largest mean coordinate or standard deviation a data set may have: training runs in `f32`, where
/// squares of larger values lose all precision long before they overflow.
pub const MAX_COORDINATE: f64 = 1e6;

/// Refuses a value that is not finite or larger than `bound` in magnitude, naming `key`.
fn check_scale(key: &str, value: f64, bound: f64) -> Result<(), ConfigError> {
    ensure_finite(key, value)?;
    if value.abs() > bound {
        return Err(ConfigError::value(
            key,
            format!("{value} is larger than {bound:e} in magnitude (training runs in float32)"),
        ));
    }
    Ok(())
}

/// The lower Cholesky factor of a small symmetric matrix, or `None` if it is not positive definite.
fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            if (a[i][j] - a[j][i]).abs() > 1e-9 * (1.0 + a[i][j].abs()) {
                return None;
            }
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i][j] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn moments(points: &[f32]) -> ([f64; 2], [f64; 2]) {
        let n = points.len() as f64 / 2.0;
        let mut mean = [0.0; 2];
        let mut var = [0.0; 2];
        for p in points.chunks(2) {
            mean[0] += p[0] as f64 / n;
            mean[1] += p[1] as f64 / n;
        }
        for p in points.chunks(2) {
            var[0] += (p[0] as f64 - mean[0]).powi(2) / n;
            var[1] += (p[1] as f64 - mean[1]).powi(2) / n;
        }
        (mean, var)
    }

    #[test]
    fn eight_gaussians_has_its_closed_form_moments() {
        // Mean 0; variance per axis = 25 * E[cos^2] + s^2 = 12.5 + sqrt(0.1).
        let pts = Dataset::EightGaussians {}.sample(200_000, &mut ChaCha8Rng::seed_from_u64(1));
        let (mean, var) = moments(&pts);
        let expected = 12.5 + 0.1f64.sqrt();
        for axis in 0..2 {
            assert!(mean[axis].abs() < 0.03, "mean {mean:?}");
            assert!(
                (var[axis] - expected).abs() < 0.1,
                "variance {var:?}, expected {expected}"
            );
        }
    }

    #[test]
    fn ring_radius_and_checkerboard_support() {
        let pts = Dataset::Ring {}.sample(50_000, &mut ChaCha8Rng::seed_from_u64(2));
        let radii: Vec<f64> = pts.chunks(2).map(|p| (p[0] as f64).hypot(p[1] as f64)).collect();
        let mean_r = radii.iter().sum::<f64>() / radii.len() as f64;
        assert!((mean_r - 3.0).abs() < 0.005, "mean radius {mean_r}");
        let pts = Dataset::Checkerboard {}.sample(20_000, &mut ChaCha8Rng::seed_from_u64(3));
        for p in pts.chunks(2) {
            let (i, j) = (p[0].floor() as i32, p[1].floor() as i32);
            assert!(
                (-2..=1).contains(&i) && (-2..=1).contains(&j) && (i + j).rem_euclid(2) == 0,
                "{p:?}"
            );
        }
        let (mean, _) = moments(&pts);
        // The squares with i + j even are symmetric about (-0, -0)... their centre of mass is (0, 0).
        assert!(mean[0].abs() < 0.03 && mean[1].abs() < 0.03, "{mean:?}");
    }

    #[test]
    fn moons_and_scurve_match_their_definitions() {
        // Moons: E[x] = 3 * 0.5 - 1 = 0.5; E[y] = 3 * (0.5 * 2/pi + 0.5 * (0.5 - 2/pi)) - 1 = -0.25.
        let pts = Dataset::Moons {}.sample(200_000, &mut ChaCha8Rng::seed_from_u64(4));
        let (mean, _) = moments(&pts);
        assert!(
            (mean[0] - 0.5).abs() < 0.02 && (mean[1] + 0.25).abs() < 0.02,
            "{mean:?}"
        );
        // S curve: E[x] = 0 by symmetry, E[y] = 1.5 * E[sign(a)(cos a - 1)] = 0 by symmetry; var x = 1.5^2 (1/2 + 0.05^2 - ...).
        let pts = Dataset::Scurve {}.sample(200_000, &mut ChaCha8Rng::seed_from_u64(5));
        let (mean, var) = moments(&pts);
        assert!(mean[0].abs() < 0.02 && mean[1].abs() < 0.03, "{mean:?}");
        // E[sin^2 a] for a ~ U(-1.5 pi, 1.5 pi) is 1/2.
        let expected = 2.25 * (0.5 + 0.0025);
        assert!((var[0] - expected).abs() < 0.02, "{var:?} vs {expected}");
    }

    #[test]
    fn mixture_samples_and_validation() {
        let spec = MixtureSpec {
            weights: vec![0.25, 0.75],
            means: vec![vec![-2.0, 0.0], vec![2.0, 1.0]],
            covariances: vec![
                vec![vec![1.0, 0.0], vec![0.0, 1.0]],
                vec![vec![0.5, 0.2], vec![0.2, 0.3]],
            ],
        };
        let ds = Dataset::Mixture(spec.clone());
        ds.validate("data.target").unwrap();
        let pts = ds.sample(200_000, &mut ChaCha8Rng::seed_from_u64(6));
        let (mean, _) = moments(&pts);
        assert!(
            (mean[0] - 1.0).abs() < 0.02 && (mean[1] - 0.75).abs() < 0.02,
            "{mean:?}"
        );
        let mut bad = spec;
        bad.covariances[1] = vec![vec![1.0, 2.0], vec![2.0, 1.0]];
        let err = Dataset::Mixture(bad)
            .validate("data.target")
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.target.covariances[1]"), "{err}");
    }

    #[test]
    fn same_seed_same_samples() {
        let a = Dataset::Moons {}.sample(100, &mut ChaCha8Rng::seed_from_u64(7));
        let b = Dataset::Moons {}.sample(100, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a, b);
    }
}
