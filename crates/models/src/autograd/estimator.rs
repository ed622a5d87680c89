//! [`DivergenceEstimator`], the one description of how a divergence is computed (exactly, or by Hutchinson's
//! estimator with `probes` probes of a [`ProbeDistribution`]), shared by likelihoods
//! ([`super::AutogradDivergence`]) and divergence-based guidance.
//!
//! In TOML it reads `{ kind = "exact" }` or `{ kind = "hutchinson", probes = 4, distribution = "gaussian" }`
//! (`distribution` defaults to `"rademacher"`; the older key `probe` is accepted for it). Parsing is strict:
//! unknown keys, keys of the other kind and a Hutchinson estimator without `probes` are refused, and
//! [`DivergenceEstimator::validate`] refuses zero probes.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{gaussian_probes, rademacher_probes};
use crate::ModelError;

/// How a divergence is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawEstimator")]
pub enum DivergenceEstimator {
    /// Exactly, by one vector-Jacobian product per coordinate (`D` per evaluation, see
    /// [`super::divergence_exact`]).
    #[default]
    Exact,
    /// Hutchinson's unbiased estimate `mean_k e_k^T J e_k` over `probes` random probes (one vector-Jacobian
    /// product each, see [`super::divergence_hutchinson`]).
    Hutchinson {
        /// Probes per evaluation, at least 1.
        probes: usize,
        /// The probes' distribution.
        distribution: ProbeDistribution,
    },
}

impl DivergenceEstimator {
    /// Hutchinson's estimator with `probes` Rademacher probes (the lowest-variance distribution).
    pub fn hutchinson(probes: usize) -> Self {
        Self::Hutchinson {
            probes,
            distribution: ProbeDistribution::Rademacher,
        }
    }

    /// Checks the number of probes: a Hutchinson estimator needs at least one (key `estimator.probes`).
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Self::Hutchinson { probes: 0, .. } = self {
            return Err(ModelError::InvalidConfig {
                key: "estimator.probes",
                detail: "must be at least 1 (got 0)".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for DivergenceEstimator {
    /// `exact`, or `hutchinson K=4 (rademacher)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact => f.write_str("exact"),
            Self::Hutchinson { probes, distribution } => write!(f, "hutchinson K={probes} ({distribution})"),
        }
    }
}

/// The distribution of Hutchinson probes; both have `E[e e^T] = I`, which makes the estimate unbiased.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeDistribution {
    /// Entries +-1 with probability 1/2 each ([`rademacher_probes`]): the lowest variance of all probes with
    /// `E[e e^T] = I`, and exact for a diagonal Jacobian.
    #[default]
    Rademacher,
    /// Standard normal entries ([`gaussian_probes`]).
    Gaussian,
}

impl ProbeDistribution {
    /// Draws `n_probes` probes shaped like `like`, stacked on a new leading dimension
    /// (`[n_probes, like.size()...]`), in the kind and on the device of `like`.
    pub fn draw<R: Rng + ?Sized>(self, n_probes: usize, like: &Tensor, rng: &mut R) -> Tensor {
        match self {
            Self::Rademacher => rademacher_probes(n_probes, like, rng),
            Self::Gaussian => gaussian_probes(n_probes, like, rng),
        }
    }

    /// The name used in settings and reports: `rademacher` or `gaussian`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rademacher => "rademacher",
            Self::Gaussian => "gaussian",
        }
    }
}

impl fmt::Display for ProbeDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// serde ignores unknown fields next to the tag of a unit variant (`{ kind = "exact", probes = 3 }` would
// parse), so the estimator is read through a flat struct that refuses unknown keys and keys of another kind.

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum EstimatorKind {
    Exact,
    Hutchinson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEstimator {
    kind: EstimatorKind,
    probes: Option<usize>,
    // Guidance settings written before the estimator was shared call this key `probe`.
    #[serde(alias = "probe")]
    distribution: Option<ProbeDistribution>,
}

impl TryFrom<RawEstimator> for DivergenceEstimator {
    type Error = String;

    fn try_from(raw: RawEstimator) -> Result<Self, String> {
        match (raw.kind, raw.probes) {
            (EstimatorKind::Exact, None) if raw.distribution.is_none() => Ok(Self::Exact),
            (EstimatorKind::Exact, _) => {
                Err("`probes` and `distribution` belong to kind = \"hutchinson\", not \"exact\"".into())
            }
            (EstimatorKind::Hutchinson, Some(probes)) => Ok(Self::Hutchinson {
                probes,
                distribution: raw.distribution.unwrap_or_default(),
            }),
            (EstimatorKind::Hutchinson, None) => Err("kind = \"hutchinson\" needs `probes`".into()),
        }
    }
}
