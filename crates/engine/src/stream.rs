//! The run's random streams, each with one name: every random draw of a run comes from a ChaCha8 stream of
//! the run's seed, and this enum is the only place that says which stream number a purpose gets. Callers
//! name a purpose; they never add offsets to stream numbers.
//!
//! Why it matters: two purposes on the same stream draw the same random numbers. Before this enum existed,
//! `eval` drew its source points from "sampling + 1", which was also the stream of the fresh target samples
//! it compared against, so a flow close to the identity scored about half the W2 of two independent
//! samples. [`Stream::id`] is injective (tested below over every purpose and wide index ranges).
//!
//! Stream numbers are part of a run's reproducibility: batches use the step number itself (so a resumed run
//! redraws exactly the batches of the uninterrupted one), and the named purposes sit at `2^62` and above.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// First stream number of the named purposes; batch streams stay below it.
const NAMED: u64 = 1 << 62;

/// Largest number of image-evaluation chunks per class that keeps [`Stream::ImageEval`] streams apart.
pub const IMAGE_EVAL_MAX_CHUNKS: usize = 1000;

/// A purpose that draws random numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The training batch of step `step` (1-based, below `2^62`): source and target samples, the coupling's
    /// randomness, times, noise, label dropout.
    Batch {
        /// The optimizer step.
        step: u64,
    },
    /// Source points of the samples written after training (`samples.npy`).
    TrainSamples,
    /// Fresh target samples, never seen in training: `eval`'s W2 reference, the pictures' reference cloud,
    /// and the target side of bench2d's W2(source, target).
    EvalTarget,
    /// Source points of `eval`'s generated samples (and the source side of bench2d's W2(source, target)).
    EvalSource,
    /// Source points of `ferroflow sample`.
    Sample,
    /// Source points of the report's pictures and animation.
    Report,
    /// Source points of `ferroflow bench likelihood`'s sampling timings, and the second fresh target sample
    /// of `bench riemannian`'s sampling floor.
    Benchmark,
    /// The data pools a side-by-side benchmark hands to a Python peer (`bench riemannian`): source and target
    /// points for every training step, apart from every stream ferroflow's own run draws.
    PeerData,
    /// The held-out evaluation of a discrete run: the states `x_t` of its ELBO estimate, then the second data
    /// sample of the discretisation floor.
    EvalHeldOut,
    /// Source points of image-eval's samples: `class` (`None` for unconditional sampling) and chunk
    /// `chunk < IMAGE_EVAL_MAX_CHUNKS`.
    ImageEval {
        /// The class sampled, if any.
        class: Option<usize>,
        /// The chunk of samples.
        chunk: usize,
    },
}

impl Stream {
    /// The ChaCha8 stream number of this purpose. The fixed purposes keep the numbers they had before they
    /// were named (so figures that did not suffer from the collision stay reproducible); only `EvalSource`
    /// and `Report`, which shared a stream with another purpose, moved.
    pub fn id(self) -> u64 {
        match self {
            Stream::Batch { step } => step,
            Stream::TrainSamples => NAMED,
            Stream::EvalTarget => NAMED + 1,
            Stream::Sample => NAMED + 2,
            Stream::EvalSource => NAMED + 3,
            Stream::Report => NAMED + 4,
            Stream::Benchmark => NAMED + 7,
            Stream::PeerData => NAMED + 8,
            Stream::EvalHeldOut => NAMED + 9,
            Stream::ImageEval { class, chunk } => {
                let class_code = class.map_or(0, |c| c as u64 + 1);
                NAMED + 10 + 1000 * (class_code + 1) + chunk as u64
            }
        }
    }

    /// The random generator of this purpose for a run seeded with `seed`.
    pub fn rng(self, seed: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(self.id());
        rng
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::Rng;

    use super::*;

    /// Every purpose, with batch steps up to `max_step` and image-eval chunks for 12 classes.
    fn every_purpose(max_step: u64) -> Vec<Stream> {
        let mut all = vec![
            Stream::TrainSamples,
            Stream::EvalTarget,
            Stream::EvalSource,
            Stream::Sample,
            Stream::Report,
            Stream::Benchmark,
            Stream::PeerData,
            Stream::EvalHeldOut,
        ];
        all.extend((1..=max_step).map(|step| Stream::Batch { step }));
        for class in std::iter::once(None).chain((0..12).map(Some)) {
            all.extend((0..IMAGE_EVAL_MAX_CHUNKS).map(|chunk| Stream::ImageEval { class, chunk }));
        }
        all
    }

    #[test]
    fn no_two_purposes_share_a_stream() {
        let mut owner: HashMap<u64, Stream> = HashMap::new();
        for stream in every_purpose(200_000) {
            if let Some(previous) = owner.insert(stream.id(), stream) {
                panic!("{previous:?} and {stream:?} share stream {}", stream.id());
            }
        }
        // Batch streams of any realistic run stay below the named ones.
        assert!(Stream::Batch { step: 1 << 40 }.id() < Stream::TrainSamples.id());
    }

    #[test]
    fn evaluation_source_and_target_draw_different_numbers() {
        let draw = |stream: Stream| -> Vec<u64> {
            let mut rng = stream.rng(0);
            (0..8).map(|_| rng.random()).collect()
        };
        assert_ne!(draw(Stream::EvalSource), draw(Stream::EvalTarget));
        assert_ne!(draw(Stream::Sample), draw(Stream::Report));
        // Same purpose and seed: the same numbers (reproducibility).
        assert_eq!(draw(Stream::EvalSource), draw(Stream::EvalSource));
    }
}
