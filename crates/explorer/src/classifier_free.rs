//! The classifier-free guidance panel: `v_w(x, t | c) = (1 + w) v(x, t | c) - w v(x, t)` (Ho and Salimans
//! 2022) on a labelled target, sampled from the same source points as the unconditional field `v(x, t)` and
//! the conditional one `v(x, t | c)` (`w = 0`).
//!
//! On a closed-form target the fields are exact: the marginal velocity of the whole mixture, and of the
//! components of class `c` alone (the data set's labels: the modes of 8gaussians, the two moons, the
//! components of a mixture; moons through its labelled kernel density estimate). On a trained run they are
//! the class-conditional network with the class's label and with the null label (a run trained with
//! `conditional`, labels dropped to the null class while training), through the guidance crate's
//! [`combine_classifier_free`], the same combination as `ferroflow sample --guidance`.
//!
//! Each sample set is scored by the target's own classifier `p(c | x)`: the posterior of the class's
//! components under the target mixture, so guidance's effect (the samples pushed into the class, and past
//! it as `w` grows) is a number next to the picture.

use std::path::Path;
use std::time::Instant;

use ferroflow_engine::sample::{TrainedFlow, integrate_unit_interval};
use ferroflow_guidance::{MixtureVelocity, combine_classifier_free};
use ferroflow_paths::{AffinePath, CondOtScheduler, ConditionalPath};
use ferroflow_solvers::{OdeOptions, SolverError};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{ApiError, check_range, check_real};
use crate::runs::{run_dir, run_source};
use crate::views::{
    FieldSource, LabelledMixture, Marginal, PathSpec, T_MAX, TargetSpec, WINDOW, dataset_mixture,
    field_source, source_points,
};

/// The largest guidance weight accepted.
pub const MAX_WEIGHT: f64 = 20.0;

/// A request for the classifier-free guidance views: a closed-form field (`target` and `path`) or a
/// class-conditional run (`run`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierFreeRequest {
    /// A trained run's name under the runs folder.
    #[serde(default)]
    pub run: Option<String>,
    /// A closed-form target.
    #[serde(default)]
    pub target: Option<TargetSpec>,
    /// The path of a closed-form target.
    #[serde(default)]
    pub path: Option<PathSpec>,
    /// The class, in `0..classes`.
    pub class: i64,
    /// The guidance weight `w`, in `[0, MAX_WEIGHT]`.
    pub weight: f64,
    /// Samples per set, 1..=2000.
    pub n_samples: i64,
    /// Sampler steps, 1..=200.
    pub steps: i64,
    /// `euler` or `midpoint` (default).
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Seed of the source points (and of a kernel density estimate).
    #[serde(default)]
    pub seed: u64,
}

fn default_sampler() -> String {
    "midpoint".into()
}

/// The three sample sets and their scores.
#[derive(Clone, Debug, Serialize)]
pub struct ClassifierFreeView {
    /// What was guided: the target's name or `run NAME`.
    pub field: String,
    /// The number of classes.
    pub classes: usize,
    /// The class guided towards.
    pub class: usize,
    /// The weight.
    pub weight: f64,
    /// Half width of the window.
    pub window: f64,
    /// Samples of `v(x, t)`, `[n * 2]`.
    pub unconditional: Vec<f32>,
    /// Samples of `v(x, t | c)` (`w = 0`).
    pub conditional: Vec<f32>,
    /// Samples of `(1 + w) v(x, t | c) - w v(x, t)`.
    pub guided: Vec<f32>,
    /// The mean of `p(c | x)` over each set (unconditional, conditional, guided) under the target mixture.
    pub class_probability: [f64; 3],
    /// Whether that classifier is the target's exact mixture (else its kernel density estimate).
    pub classifier_exact: bool,
    /// Milliseconds the server spent.
    pub compute_ms: f64,
}

/// The fields: closed-form mixtures in f64, or a class-conditional network in f32.
enum Fields {
    Closed {
        all: MixtureVelocity<Box<dyn ConditionalPath + Send + Sync>>,
        class: MixtureVelocity<Box<dyn ConditionalPath + Send + Sync>>,
        t_min: f64,
    },
    Run(Box<TrainedFlow>),
}

impl Fields {
    /// `v(x, t)` (`class = None`) or `v(x, t | class)`, without gradients; NaN where a closed form refuses
    /// (never at regular times).
    fn eval(&self, x: &Tensor, t: f64, class: Option<usize>) -> Tensor {
        tch::no_grad(|| match self {
            Fields::Closed {
                all,
                class: of_class,
                t_min,
            } => {
                let field = if class.is_some() { of_class } else { all };
                field
                    .velocity(x, t.clamp(*t_min, T_MAX))
                    .unwrap_or_else(|_| x.full_like(f64::NAN))
            }
            Fields::Run(flow) => {
                let label = class.map(|c| Tensor::from_slice(&[c as i64]).to_device(x.device()));
                flow.velocity_labelled(x, t, label.as_ref())
            }
        })
    }
}

fn flat(tensor: &Tensor) -> Result<Vec<f32>, ApiError> {
    let values = Vec::<f32>::try_from(&tensor.to_kind(Kind::Float).contiguous().view([-1]))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if values.iter().all(|v| v.is_finite()) {
        Ok(values)
    } else {
        Err(ApiError::Internal(
            "the guided samples are not finite (lower the weight)".into(),
        ))
    }
}

/// The target's classifier: the posterior `p(c | x)` of a class's components under its mixture.
struct Classifier {
    /// The mixture at t = 1 of the CondOT path, which is the mixture itself.
    mixture: MixtureVelocity<AffinePath<CondOtScheduler>>,
    /// The components of the class.
    members: Tensor,
}

impl Classifier {
    fn new(labelled: &LabelledMixture, class: usize) -> Result<Self, ApiError> {
        let mixture =
            MixtureVelocity::new(&labelled.mixture, AffinePath::without_noise(CondOtScheduler), 1.0)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        let members: Vec<i64> = (0..labelled.labels.len())
            .filter(|&k| labelled.labels[k] == class)
            .map(|k| k as i64)
            .collect();
        Ok(Self {
            mixture,
            members: Tensor::from_slice(&members),
        })
    }

    /// The mean of `p(c | x)` over the rows of `x`.
    fn mean_probability(&self, x: &Tensor) -> Result<f64, ApiError> {
        let x = x.to_device(tch::Device::Cpu).to_kind(Kind::Double);
        let responsibilities = tch::no_grad(|| self.mixture.responsibilities(&x, 1.0))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mass = responsibilities.index_select(1, &self.members).sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Double,
        );
        Ok(mass.mean(Kind::Double).double_value(&[]))
    }
}

/// Computes the classifier-free guidance views of `request`.
pub fn classifier_free(
    runs_dir: &Path,
    request: &ClassifierFreeRequest,
) -> Result<ClassifierFreeView, ApiError> {
    let started = Instant::now();
    let weight = check_real("weight", request.weight, 0.0, MAX_WEIGHT)?;
    let n_samples = check_range("n_samples", request.n_samples, 1, 2_000)?;
    let steps = check_range("steps", request.steps, 1, 200)?;
    let method = crate::mode_seeking::sampler("sampler", &request.sampler)?;
    let class_index = check_range("class", request.class, 0, i64::MAX)?;
    let outside = |classes: usize| {
        ApiError::invalid(
            "class",
            format!("class {class_index} is outside 0..{classes} (the target's classes)"),
        )
    };
    let no_classes = |what: String| {
        ApiError::invalid(
            "class",
            format!(
                "{what} has no classes; classifier-free guidance needs a labelled target (8gaussians, moons, mixtures)"
            ),
        )
    };
    let (fields, labelled, name, x0) = match field_source(&request.run, &request.target, &request.path)? {
        FieldSource::Run(run) => {
            let flow = TrainedFlow::load(&run_dir(runs_dir, run)?)
                .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
            let Some(classes) = flow.net.num_classes() else {
                return Err(ApiError::invalid(
                    "run",
                    format!(
                        "run {run} is unconditional; train it with `conditional` (class labels) for guidance"
                    ),
                ));
            };
            let mut labelled = dataset_mixture(&flow.config.data.target, request.seed)?;
            labelled.classes = classes;
            let x0 = run_source(&flow, n_samples, request.seed);
            (Fields::Run(Box::new(flow)), labelled, format!("run {run}"), x0)
        }
        FieldSource::Closed(target, path) => {
            let labelled = target.labelled_mixture("target", request.seed)?;
            if labelled.classes < 2 {
                return Err(no_classes(format!("target `{}`", target.kind)));
            }
            let t_min = Marginal::new(target, path, request.seed)?.t_min;
            let class_mixture = labelled
                .class_mixture(class_index)
                .ok_or_else(|| outside(labelled.classes))?;
            let fields = Fields::Closed {
                all: path.mixture_velocity(&labelled.mixture)?,
                class: path.mixture_velocity(&class_mixture)?,
                t_min,
            };
            let start = source_points(n_samples, request.seed);
            let flat: Vec<f64> = start.iter().flat_map(|p| [p[0], p[1]]).collect();
            let x0 = Tensor::from_slice(&flat).view([n_samples as i64, 2]);
            (fields, labelled, target.kind.clone(), x0)
        }
    };
    if class_index >= labelled.classes {
        return Err(outside(labelled.classes));
    }
    let options = OdeOptions::fixed(method, steps);
    let solve = |field: &dyn Fn(&Tensor, f64) -> Tensor| -> Result<Tensor, ApiError> {
        let mut field = |t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(field(x, t)) };
        integrate_unit_interval(&mut field, x0.shallow_clone(), &options, None)
            .map(|solution| solution.state)
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    let unconditional = solve(&|x, t| fields.eval(x, t, None))?;
    let conditional = solve(&|x, t| fields.eval(x, t, Some(class_index)))?;
    let guided = solve(&|x, t| {
        let class = fields.eval(x, t, Some(class_index));
        combine_classifier_free(&class, &fields.eval(x, t, None), weight)
    })?;
    let classifier = Classifier::new(&labelled, class_index)?;
    let mut probabilities = [0.0; 3];
    for (slot, samples) in probabilities
        .iter_mut()
        .zip([&unconditional, &conditional, &guided])
    {
        *slot = classifier.mean_probability(samples)?;
    }
    Ok(ClassifierFreeView {
        field: name,
        classes: labelled.classes,
        class: class_index,
        weight,
        window: WINDOW,
        unconditional: flat(&unconditional)?,
        conditional: flat(&conditional)?,
        guided: flat(&guided)?,
        class_probability: probabilities,
        classifier_exact: labelled.exact,
        compute_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}
