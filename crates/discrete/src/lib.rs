//! Discrete flow-matching math on token sequences, plain Rust on `ndarray`: factorised mixture paths with masked
//! or uniform sources, the conversion from posteriors to CTMC rates (with the divergence-free corrector), Euler
//! sampling, the cross-entropy and generalized-KL losses, the continuous-time ELBO, and exact ground truth for
//! small data distributions to test all of it against (Gat et al. 2024, "Discrete Flow Matching"; Shaul et al.
//! 2024, "Flow Matching with General Discrete Paths: A Kinetic-Optimal Perspective").
//!
//! A model predicts the posterior `p_{1|t}(x1^i | x_t)` per position; the torch layer applies these formulas to
//! its outputs and checks its tensor code against the arrays here.
//!
//! - [`path`]: [`Token`] (`u32`), [`Source`], [`MixturePath`] (sampling `x_t ~ p_t(. | x0, x1)`), and the
//!   schedule `kappa_t` ([`Kappa`], [`KappaSchedule`]; a `ferroflow-paths` scheduler serves as
//!   `kappa_t = alpha_t`);
//! - [`rate`]: [`marginal_rates`], [`corrector_rates`] and [`validate_rates`];
//! - [`exact`]: [`DataTable`] with the exact marginal `p_t(x)` and posterior, and [`all_sequences`];
//! - [`sampler`]: [`jump_probabilities`], [`euler_step`], [`sample`] over a time grid ([`uniform_grid`],
//!   [`graded_grid`]), [`Corrector`];
//! - [`logits`]: [`softmax`] and [`log_softmax`] with a temperature, [`classifier_free_guidance`];
//! - [`loss`]: [`cross_entropy`] and [`generalized_kl`] per position;
//! - [`elbo`](mod@elbo): the ELBO of one sequence and bits per token.
//!
//! Batches are `[n_samples, length]` token arrays and `[n_samples, length, n_states]` probability arrays;
//! `n_states` is `vocab_size + 1` with a masked source (the mask is the token `vocab_size`) and `vocab_size`
//! with a uniform one. The crate depends on no other workspace crate. Every failure is a [`DiscreteError`];
//! nothing panics on user input.
//!
//! ```
//! use ferroflow_discrete::{Corrector, DataTable, Kappa, MixturePath, Source, sample, uniform_grid};
//! use ndarray::array;
//! use rand::SeedableRng;
//!
//! // Two tokens, sequences of length 2: "01" or "10", equally likely.
//! let path = MixturePath::new(2, Source::Masked)?;
//! let table = DataTable::new(2, array![[0, 1], [1, 0]], array![0.5, 0.5])?;
//! let cond_ot = |t: f64| Kappa { value: t, derivative: 1.0 };
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let x0 = path.sample_source(100, 2, &mut rng);
//! let x1 = sample(&path, &cond_ot, x0.view(), &uniform_grid(20)?, &Corrector::Off,
//!     |x_t, t| table.posterior_for_sampling(&path, &cond_ot, x_t, t), &mut rng)?;
//! // Every position is unmasked; all but the rare samples whose two positions jumped in the same step
//! // (an Euler error of order 1/20) are one of the two data sequences.
//! assert!(x1.iter().all(|token| *token < 2));
//! let in_support = x1.rows().into_iter().filter(|row| table.probability(*row).unwrap() > 0.0).count();
//! assert!(in_support >= 80, "{in_support} of 100");
//! # Ok::<(), ferroflow_discrete::DiscreteError>(())
//! ```

mod check;
pub mod elbo;
pub mod error;
pub mod exact;
pub mod logits;
pub mod loss;
pub mod path;
pub mod rate;
pub mod sampler;

pub use check::PROBABILITY_TOLERANCE;
pub use elbo::{Elbo, conditional_support, elbo, quadrature_nodes};
pub use error::{DiscreteError, Result};
pub use exact::{DataTable, all_sequences, sequence_index};
pub use logits::{classifier_free_guidance, log_softmax, softmax};
pub use loss::{cross_entropy, generalized_kl};
pub use path::{Kappa, KappaSchedule, MixturePath, Source, Token};
pub use rate::{corrector_rates, marginal_rates, validate_rates};
pub use sampler::{Corrector, euler_step, graded_grid, jump_probabilities, sample, uniform_grid};
