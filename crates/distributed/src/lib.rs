//! The collective seam of data-parallel training: every rank of a job holds one [`Collective`] and trains
//! its slice of the global batch; after each backward pass the flat gradient is mean-reduced in one call, so
//! every rank applies the same update and the replicas stay identical.
//!
//! Three backends stand behind the seam:
//! - [`Single`]: one process, every collective a no-op (world size 1);
//! - MPI (`mpi` feature, [`mpi_backend::Mpi`]): processes started by `mpirun` or Slurm's `srun`, through
//!   Open MPI and the `mpi` crate; CUDA tensors travel through host memory;
//! - NCCL (`nccl` feature, [`nccl_backend::Nccl`]): CUDA tensors reduced on the GPUs by NCCL (through
//!   `cudarc`), one GPU per rank; the NCCL unique id travels from rank 0 over MPI, as in NCCL's own
//!   examples, and everything that is not a CUDA tensor (bytes, CPU tensors) goes over MPI.
//!
//! [`init`] picks one from a [`BackendChoice`] and the launcher's environment ([`launched_by_mpi`]). No
//! home-made protocol: a job whose rank dies is ended by the MPI launcher (Open MPI's `mpirun` and Slurm's
//! `srun` both kill the other ranks and name the one that died).

use std::fmt;
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

#[cfg(feature = "mpi")]
pub mod mpi_backend;
#[cfg(feature = "nccl")]
pub mod nccl_backend;

/// What a collective operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The requested backend was not compiled into this build.
    #[error("backend `{backend}` is not in this build: {detail}")]
    NotBuilt {
        /// The backend asked for.
        backend: Backend,
        /// How to get it.
        detail: &'static str,
    },
    /// MPI could not be started.
    #[error("cannot initialise MPI: {0}")]
    MpiInit(String),
    /// NCCL could not be started or an NCCL call failed.
    #[error("NCCL: {0}")]
    Nccl(String),
    /// A tensor of a kind the backend does not reduce.
    #[error("{op}: tensors of kind {kind:?} are not supported (f32, f64, i64, bf16 and f16 are)")]
    Kind {
        /// The operation.
        op: &'static str,
        /// The tensor's kind.
        kind: Kind,
    },
    /// Ranks disagree on a length that must be equal.
    #[error("{op}: rank {rank} holds {got} elements, but rank 0 holds {expected}")]
    Length {
        /// The operation.
        op: &'static str,
        /// The first rank that differs from rank 0.
        rank: usize,
        /// Elements here.
        got: usize,
        /// Elements on rank 0.
        expected: usize,
    },
    /// A root rank outside the world.
    #[error("{op}: root rank {root} is outside the world of {world_size} rank(s)")]
    Root {
        /// The operation.
        op: &'static str,
        /// The root asked for.
        root: usize,
        /// The world size.
        world_size: usize,
    },
}

/// Which engine moves the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One process; nothing to move.
    Single,
    /// MPI processes.
    Mpi,
    /// NCCL on CUDA devices (MPI for the rest).
    Nccl,
}

impl Backend {
    /// The name configs and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Single => "single",
            Backend::Mpi => "mpi",
            Backend::Nccl => "nccl",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// MPI when an MPI launcher started this process ([`launched_by_mpi`]), else one process.
    #[default]
    Auto,
    /// One process, even under a launcher (each rank then trains alone: rarely what is meant).
    Single,
    /// MPI (a world of one when started without a launcher).
    Mpi,
    /// NCCL for CUDA tensors, MPI for the rest; needs a CUDA device per rank.
    Nccl,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "single" => Ok(Self::Single),
            "mpi" => Ok(Self::Mpi),
            "nccl" => Ok(Self::Nccl),
            other => Err(format!(
                "unknown backend {other:?}: allowed are auto, single, mpi, nccl"
            )),
        }
    }
}

/// The environment variables by which MPI launchers tell a process it is one rank of a job: Open MPI's
/// `mpirun` (`OMPI_COMM_WORLD_SIZE`), PMIx launchers such as Slurm's `srun --mpi=pmix` (`PMIX_RANK`), and
/// MPICH's Hydra or PMI-1/2 (`PMI_SIZE`).
pub const LAUNCHER_VARIABLES: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"];

/// Whether an MPI launcher started this process.
pub fn launched_by_mpi() -> bool {
    LAUNCHER_VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
}

/// The collectives of one rank of a data-parallel job. Every rank must call the same collectives in the same
/// order with tensors of the same kind and length; the tensors may live on the CPU or a CUDA device.
pub trait Collective {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// This rank's index among the ranks on its node (the CUDA device a rank takes).
    fn local_rank(&self) -> usize;

    /// The engine moving the data.
    fn backend(&self) -> Backend;

    /// Replaces `tensor` on every rank by the element-wise sum over ranks.
    fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<(), CollectiveError>;

    /// Replaces `tensor` on every rank by the element-wise mean over ranks (the sum divided by the world
    /// size: the full-batch gradient from equal shards' mean gradients).
    fn all_reduce_mean(&self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        self.all_reduce_sum(tensor)?;
        if self.world_size() > 1 {
            let _ = tensor.g_div_scalar_(self.world_size() as f64);
        }
        Ok(())
    }

    /// Overwrites `tensor` on every rank with rank `root`'s.
    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), CollectiveError>;

    /// Every rank's flattened `tensor`, concatenated in rank order (a 1-D tensor on `tensor`'s device).
    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError>;

    /// Overwrites `bytes` on every rank with rank `root`'s (lengths may differ before the call).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), CollectiveError>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), CollectiveError>;

    /// Ends the whole job at once with `code` (the launcher stops the other ranks).
    fn abort(&self, code: i32) -> !;
}

/// One process: rank 0 of a world of one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn local_rank(&self) -> usize {
        0
    }

    fn backend(&self) -> Backend {
        Backend::Single
    }

    fn all_reduce_sum(&self, _: &mut Tensor) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn broadcast(&self, _: &mut Tensor, root: usize) -> Result<(), CollectiveError> {
        check_root("broadcast", root, 1)
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError> {
        Ok(tensor.flatten(0, -1).copy())
    }

    fn broadcast_bytes(&self, _: &mut Vec<u8>, root: usize) -> Result<(), CollectiveError> {
        check_root("broadcast_bytes", root, 1)
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Refuses a root outside `0..world_size`.
pub fn check_root(op: &'static str, root: usize, world_size: usize) -> Result<(), CollectiveError> {
    if root < world_size {
        Ok(())
    } else {
        Err(CollectiveError::Root { op, root, world_size })
    }
}

/// The collectives `choice` names for this process: MPI when asked for, or under `Auto` when an MPI launcher
/// started the process; NCCL only when asked for. A backend this build lacks is an error naming the cargo
/// feature, never a silent fall back to one process.
pub fn init(choice: BackendChoice) -> Result<Box<dyn Collective>, CollectiveError> {
    match choice {
        BackendChoice::Single => Ok(Box::new(Single)),
        BackendChoice::Auto if !launched_by_mpi() => Ok(Box::new(Single)),
        BackendChoice::Auto | BackendChoice::Mpi => init_mpi(),
        BackendChoice::Nccl => init_nccl(),
    }
}

#[cfg(feature = "mpi")]
fn init_mpi() -> Result<Box<dyn Collective>, CollectiveError> {
    Ok(Box::new(mpi_backend::Mpi::init()?))
}

#[cfg(not(feature = "mpi"))]
fn init_mpi() -> Result<Box<dyn Collective>, CollectiveError> {
    Err(CollectiveError::NotBuilt {
        backend: Backend::Mpi,
        detail: "an MPI launcher started this process, but ferroflow was built without its `mpi` feature; \
                 build with the default features (Open MPI's libopenmpi-dev and libclang-dev, installed by \
                 `cargo xtask setup`), or run without mpirun",
    })
}

#[cfg(feature = "nccl")]
fn init_nccl() -> Result<Box<dyn Collective>, CollectiveError> {
    Ok(Box::new(nccl_backend::Nccl::init()?))
}

#[cfg(not(feature = "nccl"))]
fn init_nccl() -> Result<Box<dyn Collective>, CollectiveError> {
    Err(CollectiveError::NotBuilt {
        backend: Backend::Nccl,
        detail: "build ferroflow with `--features nccl` on a machine with CUDA (see docs/distributed.md)",
    })
}

/// A tensor's elements as a host vector of `T` (any device, any layout).
pub fn to_host<T: tch::kind::Element>(tensor: &Tensor) -> Vec<T> {
    let flat = tensor.to_device(Device::Cpu).contiguous().view(-1);
    let mut out = vec![T::ZERO; flat.numel()];
    let len = out.len();
    flat.copy_data(&mut out, len);
    out
}

/// Copies host values back into `tensor` (same number of elements), on its device and in its kind.
pub fn from_host<T: tch::kind::Element>(tensor: &mut Tensor, values: &[T]) {
    let source = Tensor::from_slice(values)
        .view(tensor.size().as_slice())
        .to_device(tensor.device())
        .to_kind(tensor.kind());
    let _guard = tch::no_grad_guard();
    tensor.copy_(&source);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_leaves_tensors_unchanged() {
        let comm = Single;
        let mut t = Tensor::from_slice(&[1.0f32, -2.5, 3.0]);
        comm.all_reduce_mean(&mut t).unwrap();
        assert_eq!(to_host::<f32>(&t), vec![1.0, -2.5, 3.0]);
        comm.broadcast(&mut t, 0).unwrap();
        assert!(matches!(
            comm.broadcast(&mut t, 1),
            Err(CollectiveError::Root { root: 1, .. })
        ));
        let gathered = comm.all_gather(&t.view([3, 1])).unwrap();
        assert_eq!(gathered.size(), vec![3]);
        let mut bytes = b"config".to_vec();
        comm.broadcast_bytes(&mut bytes, 0).unwrap();
        assert_eq!(bytes, b"config");
    }

    #[test]
    fn choices_parse_by_name() {
        assert_eq!("mpi".parse::<BackendChoice>(), Ok(BackendChoice::Mpi));
        assert_eq!("auto".parse::<BackendChoice>(), Ok(BackendChoice::Auto));
        let err = "gloo".parse::<BackendChoice>().unwrap_err();
        assert!(err.contains("gloo") && err.contains("nccl"), "{err}");
    }

    #[test]
    fn host_round_trip_keeps_kind_and_shape() {
        let mut t = Tensor::from_slice(&[1i64, 2, 3, 4]).view([2, 2]);
        let values = to_host::<i64>(&t);
        from_host(&mut t, &values.iter().map(|v| v * 10).collect::<Vec<_>>());
        assert_eq!(t.size(), vec![2, 2]);
        assert_eq!(t.kind(), Kind::Int64);
        assert_eq!(to_host::<i64>(&t), vec![10, 20, 30, 40]);
    }
}
