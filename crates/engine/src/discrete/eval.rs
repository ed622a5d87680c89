//! `eval` of a discrete run: the held-out ELBO in bits per token, and what the samples look like next to the
//! data — for a 2D token target the W2 of the decoded samples (bin centres) against fresh continuous target
//! points and the total variation between bin histograms, each beside its floor (the same figure for a fresh
//! discretised data sample, which is what a perfect model would score); for words the share of samples that
//! are real words of the list, the share that are real but not training words (novel), the share of distinct
//! samples, and the total variation of letter and length frequencies against the training words; for a
//! conditional run, the same words figures and the share of samples of the requested length for a few
//! guidance weights.
//!
//! Random numbers: samples from [`Stream::EvalSource`], fresh target points from [`Stream::EvalTarget`] (the
//! 2D held-out sequences are those points discretised), the ELBO's `x_t` and then the floor's second data
//! sample from [`Stream::EvalHeldOut`]; guided samples from [`Stream::Sample`].

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use ferroflow_discrete::Token;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::{TokenData, TokenGuidance, TokenSampling, TrainedTokens};
use crate::lock::RunLock;
use crate::metrics::RunMetrics;
use crate::stream::Stream;
use crate::tokens::{Grid, decode_word};

/// The largest number of held-out words the ELBO is estimated on.
pub const MAX_HELD_OUT_WORDS: usize = 2000;
/// The guidance weights `eval` measures a conditional run at.
pub const GUIDANCE_WEIGHTS: [f64; 4] = [0.0, 1.0, 2.0, 4.0];
/// Samples per class for the guidance figures.
pub const GUIDED_PER_CLASS: usize = 200;

/// Words figures of one set of samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WordFigures {
    /// Share of samples that are words of the list (training or held-out).
    pub real: f64,
    /// Share of samples that are held-out words (real, never trained on).
    pub novel: f64,
    /// Share of distinct samples.
    pub distinct: f64,
    /// Total variation between the letter frequencies of the samples and of the training words.
    pub letter_tv: f64,
    /// Total variation between the length distributions of the samples and of the training words.
    pub length_tv: f64,
}

/// The figures of a conditional run's samples at one guidance weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuidanceFigures {
    /// The guidance weight `w`.
    pub weight: f64,
    /// Share of samples with the requested length (over every class, [`GUIDED_PER_CLASS`] samples each).
    pub on_class: f64,
    /// Share of samples that are real words.
    pub real: f64,
}

/// Total variation distance between two histograms (each normalised by its own total).
pub fn total_variation<K: Ord>(a: &BTreeMap<K, usize>, b: &BTreeMap<K, usize>) -> f64 {
    let (na, nb) = (
        a.values().sum::<usize>().max(1) as f64,
        b.values().sum::<usize>().max(1) as f64,
    );
    let keys: std::collections::BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    0.5 * keys
        .into_iter()
        .map(|k| {
            (a.get(k).copied().unwrap_or(0) as f64 / na - b.get(k).copied().unwrap_or(0) as f64 / nb).abs()
        })
        .sum::<f64>()
}

fn histogram<K: Ord, I: IntoIterator<Item = K>>(items: I) -> BTreeMap<K, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

fn bins_histogram(tokens: ArrayView2<Token>) -> BTreeMap<(Token, Token), usize> {
    histogram(tokens.rows().into_iter().map(|row| (row[0], row[1])))
}

/// The words figures of `samples` against the training and held-out words.
pub fn word_figures(samples: &[String], train: &[String], held_out: &[String]) -> WordFigures {
    let train_set: HashSet<&str> = train.iter().map(String::as_str).collect();
    let held_set: HashSet<&str> = held_out.iter().map(String::as_str).collect();
    let n = samples.len().max(1) as f64;
    let count = |keep: &dyn Fn(&str) -> bool| samples.iter().filter(|w| keep(w)).count() as f64 / n;
    let letters = |words: &[String]| histogram(words.iter().flat_map(|w| w.bytes()));
    let lengths = |words: &[String]| histogram(words.iter().map(String::len));
    WordFigures {
        real: count(&|w| train_set.contains(w) || held_set.contains(w)),
        novel: count(&|w| held_set.contains(w)),
        distinct: samples.iter().collect::<HashSet<_>>().len() as f64 / n,
        letter_tv: total_variation(&letters(samples), &letters(train)),
        length_tv: total_variation(&lengths(samples), &lengths(train)),
    }
}

/// The words a token array spells.
pub fn words_of(tokens: ArrayView2<Token>) -> Vec<String> {
    tokens
        .rows()
        .into_iter()
        .map(|row| decode_word(&row.to_vec()))
        .collect()
}

/// Evaluates the discrete run in `run_dir` (see the module documentation) and merges the figures into its
/// `metrics.json`.
pub fn evaluate(run_dir: &Path) -> Result<RunMetrics> {
    let _lock = RunLock::acquire(run_dir)?;
    let tokens = TrainedTokens::load(run_dir)?;
    let config = tokens.config.clone();
    let seed = config.run.seed;
    let data = TokenData::load(&config)?;
    let n_samples = config.sample.w2_samples;
    let started = Instant::now();
    let sampling = TokenSampling::of(&config);
    let samples = tokens.sample(n_samples, &sampling, &mut Stream::EvalSource.rng(seed))?;
    let mut held_out_rng = Stream::EvalHeldOut.rng(seed);
    let mut metrics = RunMetrics {
        eval_solver: Some("euler-ctmc".into()),
        ..RunMetrics::default()
    };
    match &data {
        TokenData::Grid2d { dataset, grid } => {
            let reference = dataset.sample(n_samples, &mut Stream::EvalTarget.rng(seed));
            let reference = Array2::from_shape_vec((n_samples, 2), reference)?;
            let held_out = grid.encode_points(reference.view());
            let elbo = tokens.elbo(held_out.view(), &mut held_out_rng)?;
            let floor_points =
                Array2::from_shape_vec((n_samples, 2), dataset.sample(n_samples, &mut held_out_rng))?;
            let floor_tokens = grid.encode_points(floor_points.view());
            metrics.w2 = Some(crate::run::w2_f32(
                grid.decode_points(samples.view()).view(),
                reference.view(),
            )?);
            metrics.w2_floor = Some(crate::run::w2_f32(
                grid.decode_points(floor_tokens.view()).view(),
                reference.view(),
            )?);
            metrics.w2_samples = Some(n_samples);
            let reference_bins = bins_histogram(held_out.view());
            metrics.bin_tv = Some(total_variation(&bins_histogram(samples.view()), &reference_bins));
            metrics.bin_tv_floor = Some(total_variation(
                &bins_histogram(floor_tokens.view()),
                &reference_bins,
            ));
            set_elbo(&mut metrics, elbo);
        }
        TokenData::Words(split) => {
            let held: Vec<String> = split.held_out.iter().take(MAX_HELD_OUT_WORDS).cloned().collect();
            let held_tokens = Array2::from_shape_vec(
                (held.len(), split.max_length),
                crate::tokens::encode_words(&held, split.max_length),
            )?;
            set_elbo(&mut metrics, tokens.elbo(held_tokens.view(), &mut held_out_rng)?);
            let words = words_of(samples.view());
            metrics.words = Some(word_figures(&words, &split.train, &split.held_out));
            metrics.word_samples = Some(n_samples);
            if let Some(classes) = tokens.net.num_classes() {
                metrics.token_guidance = Some(guidance_figures(&tokens, split, classes, &sampling)?);
            }
        }
    }
    metrics.eval_seconds = Some(started.elapsed().as_secs_f64());
    metrics.merge(run_dir)
}

fn set_elbo(metrics: &mut RunMetrics, elbo: super::ElboEstimate) {
    metrics.elbo_bits_per_token = Some(elbo.bits_per_token);
    metrics.elbo_stderr = Some(elbo.stderr);
    metrics.elbo_sequences = Some(elbo.sequences);
}

/// Length accuracy and real-word share of a length-conditional words run at each of [`GUIDANCE_WEIGHTS`].
fn guidance_figures(
    tokens: &TrainedTokens,
    split: &crate::tokens::WordSplit,
    classes: usize,
    sampling: &TokenSampling,
) -> Result<Vec<GuidanceFigures>> {
    let all: HashSet<&str> = split
        .train
        .iter()
        .chain(&split.held_out)
        .map(String::as_str)
        .collect();
    let mut figures = Vec::new();
    for weight in GUIDANCE_WEIGHTS {
        let mut rng = Stream::Sample.rng(tokens.config.run.seed);
        let (mut on_class, mut real, mut total) = (0usize, 0usize, 0usize);
        for class in 0..classes {
            let guided = TokenSampling {
                guidance: Some(TokenGuidance { class, weight }),
                ..*sampling
            };
            let words = words_of(tokens.sample(GUIDED_PER_CLASS, &guided, &mut rng)?.view());
            on_class += words.iter().filter(|w| w.len() == class + 1).count();
            real += words.iter().filter(|w| all.contains(w.as_str())).count();
            total += words.len();
        }
        figures.push(GuidanceFigures {
            weight,
            on_class: on_class as f64 / total as f64,
            real: real as f64 / total as f64,
        });
    }
    Ok(figures)
}

/// The grid of a `tokens_2d` run, if it is one.
pub fn grid_of(config: &crate::RunConfig) -> Option<Grid> {
    match config.data.target {
        crate::data::Dataset::Tokens2d { bins, half_width, .. } => Some(Grid { bins, half_width }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_variation_is_half_the_l1_distance_of_normalised_histograms() {
        let a = histogram([1, 1, 2, 3]);
        let b = histogram([1, 2, 2, 2, 4, 4, 4, 4]);
        // a: 1/2, 1/4, 1/4, 0; b: 1/8, 3/8, 0, 1/2 over keys 1, 2, 3, 4.
        let expected = 0.5 * (0.375 + 0.125 + 0.25 + 0.5);
        assert!((total_variation(&a, &b) - expected).abs() < 1e-12);
        assert_eq!(total_variation(&a, &a), 0.0);
        assert_eq!(total_variation(&histogram([1]), &histogram([2])), 1.0);
    }

    #[test]
    fn word_figures_count_real_novel_and_distinct_samples() {
        let train: Vec<String> = ["cat", "dog", "bird"].map(String::from).to_vec();
        let held: Vec<String> = ["cow"].map(String::from).to_vec();
        let samples: Vec<String> = ["cat", "cat", "cow", "zzz"].map(String::from).to_vec();
        let figures = word_figures(&samples, &train, &held);
        assert_eq!(figures.real, 0.75);
        assert_eq!(figures.novel, 0.25);
        assert_eq!(figures.distinct, 0.75);
        // Lengths: samples all 3 letters, training 3, 3, 4.
        assert!((figures.length_tv - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(word_figures(&train, &train, &held).letter_tv, 0.0);
    }
}
