//! Parameters held in one flat tensor.
//!
//! Every parameter of a model is a view into a single flat leaf tensor. The forward pass takes fresh views
//! (cheap: no copy), so the whole gradient lands in one flat `grad` tensor. The optimizer, gradient
//! clipping and the EMA of the weights then each cost a handful of tensor operations, whatever the number
//! of layers: for small models the per-operation overhead of libtorch dominates, and this keeps it low.
//!
//! Parameter names follow PyTorch's module naming (`net.0.weight`, ...), and a checkpoint is a safetensors
//! file of those names, so it loads into the equivalent PyTorch module with `load_state_dict`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::ModelError;

/// Guards libtorch's process-wide random generator during a seeded initialisation.
static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Runs `init` with libtorch's global generator seeded with `seed`, holding a process-wide lock for the whole
/// call: two seeded initialisations in one process (tests of one binary, trainings started by the explorer's
/// server) would otherwise interleave their seeding and draws, and a run would no longer be a function of its
/// config and seed. Every draw from libtorch's generator that must be reproducible goes through here.
pub fn with_torch_seed<T>(seed: u64, init: impl FnOnce() -> T) -> T {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed as i64);
    init()
}

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform on [-bound, bound]; PyTorch's `nn.Linear` and `nn.Conv2d` use bound = 1/sqrt(fan_in) for
    /// the bias and (for a = sqrt 5) the same bound for the weight.
    Uniform {
        /// Half-width of the interval.
        bound: f64,
    },
    /// A constant (zeros for biases of normalisation layers, ones for their scales).
    Constant {
        /// The value.
        value: f64,
    },
    /// Normal with the given standard deviation (embeddings).
    Normal {
        /// Standard deviation.
        std: f64,
    },
}

/// The shape and place of one parameter inside the flat tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// PyTorch-style dotted name.
    pub name: String,
    /// Shape of the parameter.
    pub shape: Vec<i64>,
    /// Offset of its first element in the flat tensor.
    pub offset: i64,
    /// Initialisation used when the store is built.
    pub init: Init,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// Collects parameter specs while a model is being defined; [`ParamBuilder::build`] allocates them.
#[derive(Debug, Default)]
pub struct ParamBuilder {
    specs: Vec<ParamSpec>,
    len: i64,
}

/// The index of a parameter in its store, handed out by [`ParamBuilder::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamId(pub usize);

impl ParamBuilder {
    /// Registers a parameter and returns its index.
    pub fn add(&mut self, name: impl Into<String>, shape: &[i64], init: Init) -> ParamId {
        let spec = ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            offset: self.len,
            init,
        };
        self.len += spec.numel();
        self.specs.push(spec);
        ParamId(self.specs.len() - 1)
    }

    /// Allocates and initialises every parameter from libtorch's global generator: call it inside
    /// [`with_torch_seed`] for a reproducible initialisation.
    pub fn build(self, device: Device) -> ParamStore {
        let pieces: Vec<Tensor> = self
            .specs
            .iter()
            .map(|spec| {
                let shape = [spec.numel()];
                let opts = (Kind::Float, Device::Cpu);
                match spec.init {
                    Init::Uniform { bound } => Tensor::empty(shape, opts).uniform_(-bound, bound),
                    Init::Constant { value } => Tensor::full(shape, value, opts),
                    Init::Normal { std } => Tensor::randn(shape, opts) * std,
                }
            })
            .collect();
        let flat = if pieces.is_empty() {
            Tensor::zeros([0], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&pieces, 0)
        };
        let flat = flat.to_device(device).detach().set_requires_grad(true);
        ParamStore {
            specs: self.specs,
            flat,
        }
    }
}

/// A model's parameters: named specs over one flat leaf tensor that requires a gradient.
#[derive(Debug)]
pub struct ParamStore {
    specs: Vec<ParamSpec>,
    flat: Tensor,
}

impl ParamStore {
    /// The specs, in registration order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The flat leaf tensor (all parameters, in registration order).
    pub fn flat(&self) -> &Tensor {
        &self.flat
    }

    /// Total number of scalar parameters.
    pub fn numel(&self) -> i64 {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.flat.device()
    }

    /// Views of every parameter into `source` (the flat parameters, or an EMA copy of the same length).
    pub fn views_of(&self, source: &Tensor) -> Vec<Tensor> {
        self.specs
            .iter()
            .map(|s| source.narrow(0, s.offset, s.numel()).view(s.shape.as_slice()))
            .collect()
    }

    /// Views of the trainable parameters, taken anew for each forward pass.
    pub fn views(&self) -> Vec<Tensor> {
        self.views_of(&self.flat)
    }

    /// Named contiguous copies of `source` viewed as the parameters.
    pub fn named_of(&self, source: &Tensor) -> Vec<(String, Tensor)> {
        self.specs
            .iter()
            .zip(self.views_of(source))
            .map(|(s, v)| (s.name.clone(), v.detach().to(Device::Cpu).contiguous()))
            .collect()
    }

    /// Overwrites `target` (flat parameters or an EMA copy) from named tensors, checking that every name is
    /// there with the right shape and that no unknown name is left over.
    pub fn load_named_into(
        &self,
        target: &Tensor,
        named: Vec<(String, Tensor)>,
        origin: &Path,
    ) -> Result<(), ModelError> {
        let mut by_name: BTreeMap<String, Tensor> = named.into_iter().collect();
        let _guard = tch::no_grad_guard();
        for (spec, view) in self.specs.iter().zip(self.views_of(target)) {
            let tensor = by_name
                .remove(&spec.name)
                .ok_or_else(|| ModelError::CheckpointMismatch {
                    path: origin.to_path_buf(),
                    detail: format!("parameter `{}` is missing", spec.name),
                })?;
            if tensor.size() != spec.shape {
                return Err(ModelError::CheckpointMismatch {
                    path: origin.to_path_buf(),
                    detail: format!(
                        "parameter `{}` has shape {:?}, this model needs {:?}",
                        spec.name,
                        tensor.size(),
                        spec.shape
                    ),
                });
            }
            let mut view = view;
            view.copy_(&tensor.to_kind(Kind::Float).to_device(target.device()));
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(ModelError::CheckpointMismatch {
                path: origin.to_path_buf(),
                detail: format!("parameter `{extra}` does not belong to this model"),
            });
        }
        Ok(())
    }

    /// Loads the parameters from a safetensors file written by [`crate::checkpoint::save_tensors`].
    pub fn load(&self, path: &Path) -> Result<(), ModelError> {
        let named = crate::checkpoint::load_tensors(path)?;
        self.load_named_into(&self.flat, named, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(seed: u64) -> Vec<f32> {
        with_torch_seed(seed, || {
            let mut builder = ParamBuilder::default();
            builder.add("w", &[64, 64], Init::Normal { std: 1.0 });
            builder.add("b", &[64], Init::Uniform { bound: 0.5 });
            let store = builder.build(Device::Cpu);
            Vec::<f32>::try_from(&store.flat.detach()).unwrap()
        })
    }

    #[test]
    fn seeded_initialisations_on_concurrent_threads_do_not_mix_their_draws() {
        let (a, b) = (draw(1), draw(2));
        assert_ne!(a, b);
        let workers: Vec<_> = [(1, a), (2, b)]
            .into_iter()
            .map(|(seed, expected)| std::thread::spawn(move || (0..200).all(|_| draw(seed) == expected)))
            .collect();
        for worker in workers {
            assert!(
                worker.join().unwrap(),
                "a concurrent initialisation changed the draws of a seed"
            );
        }
    }
}
