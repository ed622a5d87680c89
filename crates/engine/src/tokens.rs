//! Token data sets of discrete runs: 2D densities discretised into two tokens (`tokens_2d`) and words spelt in
//! lowercase letters (`words`), with their vocabularies, encodings and the seeded split of a word list.
//!
//! `tokens_2d` cuts the square window `[-half_width, half_width]^2` (default half width 4) into `bins` equal
//! bins per axis; a point becomes the pair of its bin indices (x first), points outside the window go to the
//! nearest edge bin, and a token decodes to its bin's centre. `words` reads a word list (one word a line), keeps
//! the words of 1 to `max_length` letters a-z (lowercased; words with any other character are dropped, as are
//! duplicates), spells each as letter ids `a = 0 .. z = 25` padded with [`PAD`] (`26`) to `max_length`, and
//! splits them with the run's seed into a training part and a held-out part of `held_out` (default 0.1) of the
//! words (at least one each).

use std::collections::BTreeSet;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::ConfigError;

/// The padding token of words, after the 26 letters.
pub const PAD: u32 = 26;
/// The vocabulary of words: 26 letters and the padding token.
pub const WORD_VOCAB: usize = 27;
/// The default half width of the `tokens_2d` window.
pub const DEFAULT_HALF_WIDTH: f64 = 4.0;
/// The default held-out fraction of a word list.
pub const DEFAULT_HELD_OUT: f64 = 0.1;
/// The largest word list read (bytes).
pub const MAX_WORD_FILE_BYTES: u64 = 64 << 20;

/// The continuous 2D data sets a `tokens_2d` target discretises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base2d {
    /// The 4x4 checkerboard on [-2, 2]^2.
    Checkerboard,
    /// Two moons.
    Moons,
    /// Eight Gaussians on a circle of radius 5 (partly outside the default window: widen `half_width`).
    #[serde(rename = "8gaussians")]
    EightGaussians,
    /// The S curve.
    Scurve,
    /// A ring of radius 3.
    Ring,
}

impl Base2d {
    /// The continuous data set.
    pub fn dataset(self) -> Dataset {
        match self {
            Base2d::Checkerboard => Dataset::Checkerboard {},
            Base2d::Moons => Dataset::Moons {},
            Base2d::EightGaussians => Dataset::EightGaussians {},
            Base2d::Scurve => Dataset::Scurve {},
            Base2d::Ring => Dataset::Ring {},
        }
    }
}

/// The grid of a `tokens_2d` data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// Bins per axis.
    pub bins: usize,
    /// The window is `[-half_width, half_width]^2`.
    pub half_width: f64,
}

impl Grid {
    fn width(&self) -> f64 {
        2.0 * self.half_width / self.bins as f64
    }

    /// The bin of one coordinate (clamped to the window).
    pub fn encode(&self, coordinate: f64) -> u32 {
        let index = ((coordinate + self.half_width) / self.width()).floor();
        index.clamp(0.0, (self.bins - 1) as f64) as u32
    }

    /// The centre of bin `token`.
    pub fn decode(&self, token: u32) -> f64 {
        -self.half_width + (token as f64 + 0.5) * self.width()
    }

    /// The points (bin centres) of token pairs `[n, 2]`, as `f32` like every continuous sample.
    pub fn decode_points(&self, tokens: ndarray::ArrayView2<u32>) -> ndarray::Array2<f32> {
        tokens.mapv(|token| self.decode(token) as f32)
    }

    /// The token pairs of points `[n, 2]`.
    pub fn encode_points(&self, points: ndarray::ArrayView2<f32>) -> ndarray::Array2<u32> {
        points.mapv(|x| self.encode(f64::from(x)))
    }
}

/// Checks a `tokens_2d` target's settings.
pub fn validate_tokens_2d(key: &str, bins: usize, half_width: f64) -> Result<(), ConfigError> {
    if !(2..=4096).contains(&bins) {
        return Err(ConfigError::value(
            format!("{key}.bins"),
            format!("{bins} is outside 2..=4096"),
        ));
    }
    if !(half_width.is_finite() && half_width > 0.0 && half_width <= 1e6) {
        return Err(ConfigError::value(
            format!("{key}.half_width"),
            format!("{half_width} is outside (0, 1e6]"),
        ));
    }
    Ok(())
}

/// Checks a `words` target's settings (the file is read by [`WordSplit::load`]).
pub fn validate_words(key: &str, file: &str, max_length: usize, held_out: f64) -> Result<(), ConfigError> {
    if file.is_empty() {
        return Err(ConfigError::value(format!("{key}.file"), "must name a word list"));
    }
    if !(1..=64).contains(&max_length) {
        return Err(ConfigError::value(
            format!("{key}.max_length"),
            format!("{max_length} is outside 1..=64"),
        ));
    }
    if !(held_out > 0.0 && held_out < 1.0) {
        return Err(ConfigError::value(
            format!("{key}.held_out"),
            format!("{held_out} is outside (0, 1)"),
        ));
    }
    Ok(())
}

/// A word list read, filtered and split with a seed.
#[derive(Clone, Debug, PartialEq)]
pub struct WordSplit {
    /// The training words, in the order of the seeded shuffle.
    pub train: Vec<String>,
    /// The held-out words.
    pub held_out: Vec<String>,
    /// Letters per word after padding.
    pub max_length: usize,
}

impl WordSplit {
    /// Reads `file` and splits its usable words with `seed` (errors name `key.file`).
    pub fn load(
        key: &str,
        file: &str,
        max_length: usize,
        held_out: f64,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        let read_error =
            |detail: String| ConfigError::value(format!("{key}.file"), format!("{file}: {detail}"));
        let size = std::fs::metadata(file).map_err(|e| {
            read_error(format!(
                "{e} (the default list comes with Debian's wamerican: `cargo xtask setup`)"
            ))
        })?;
        if size.len() > MAX_WORD_FILE_BYTES {
            return Err(read_error(format!("larger than {MAX_WORD_FILE_BYTES} bytes")));
        }
        let bytes = std::fs::read(file).map_err(|e| read_error(e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        Self::from_text(&text, max_length, held_out, seed).map_err(read_error)
    }

    /// Splits the usable words of `text` (see the module doc).
    pub fn from_text(text: &str, max_length: usize, held_out: f64, seed: u64) -> Result<Self, String> {
        let words: BTreeSet<String> = text
            .lines()
            .map(|line| line.trim().to_lowercase())
            .filter(|word| {
                (1..=max_length).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_lowercase())
            })
            .collect();
        if words.len() < 2 {
            return Err(format!(
                "{} words of 1 to {max_length} letters a-z; at least 2 are needed",
                words.len()
            ));
        }
        let mut words: Vec<String> = words.into_iter().collect();
        words.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_held = ((words.len() as f64 * held_out).round() as usize).clamp(1, words.len() - 1);
        let held_out = words.split_off(words.len() - n_held);
        Ok(Self {
            train: words,
            held_out,
            max_length,
        })
    }

    /// The training words as `[n, max_length]` token ids, row-major.
    pub fn train_tokens(&self) -> Vec<u32> {
        encode_words(&self.train, self.max_length)
    }
}

/// Spells `words` as letter ids padded with [`PAD`] to `max_length`, row-major.
pub fn encode_words(words: &[String], max_length: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(words.len() * max_length);
    for word in words {
        out.extend(word.bytes().take(max_length).map(|b| u32::from(b - b'a')));
        out.extend(std::iter::repeat_n(PAD, max_length - word.len().min(max_length)));
    }
    out
}

/// The word a row of token ids spells: letters in order, padding (and any id beyond the letters) dropped.
pub fn decode_word(row: &[u32]) -> String {
    row.iter()
        .filter(|&&token| token < 26)
        .map(|&token| char::from(b'a' + token as u8))
        .collect()
}

/// Reads the words of a `samples.txt` back (one per line).
pub fn read_words(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_encode_and_decode_within_the_window() {
        let grid = Grid {
            bins: 8,
            half_width: 4.0,
        };
        assert_eq!(grid.encode(-4.0), 0);
        assert_eq!(grid.encode(-3.01), 0);
        assert_eq!(grid.encode(0.0), 4);
        assert_eq!(grid.encode(3.99), 7);
        assert_eq!(grid.encode(100.0), 7);
        assert_eq!(grid.encode(-100.0), 0);
        assert_eq!(grid.decode(0), -3.5);
        assert_eq!(grid.decode(7), 3.5);
        for token in 0..8 {
            assert_eq!(grid.encode(grid.decode(token)), token);
        }
        let pairs = ndarray::array![[0u32, 7], [3, 4]];
        let points = grid.decode_points(pairs.view());
        assert_eq!(points, ndarray::array![[-3.5f32, 3.5], [-0.5, 0.5]]);
        assert_eq!(grid.encode_points(points.view()), pairs);
    }

    #[test]
    fn words_are_filtered_split_by_seed_and_spelt_with_padding() {
        let text = "Apple\nbanana\ncat's\ncat\nDog\nélan\nzebra\ncat\nextraordinary\nox\n";
        let split = WordSplit::from_text(text, 6, 0.4, 3).unwrap();
        let mut all: Vec<String> = split.train.iter().chain(&split.held_out).cloned().collect();
        all.sort();
        assert_eq!(all, ["apple", "banana", "cat", "dog", "ox", "zebra"]);
        assert_eq!(split.held_out.len(), 2);
        assert_eq!(split, WordSplit::from_text(text, 6, 0.4, 3).unwrap());
        assert_ne!(split, WordSplit::from_text(text, 6, 0.4, 4).unwrap());
        let tokens = encode_words(&["ox".to_owned()], 4);
        assert_eq!(tokens, [14, 23, PAD, PAD]);
        assert_eq!(decode_word(&tokens), "ox");
        assert!(WordSplit::from_text("a\n", 4, 0.1, 0).is_err());
    }
}
