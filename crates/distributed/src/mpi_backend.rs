//! The MPI backend: ranks are the processes of `MPI_COMM_WORLD` (Open MPI's `mpirun`, Slurm's `srun`), and
//! every collective goes through the host: a CUDA tensor is copied to host memory, reduced there and copied
//! back. MPI is initialised with `MPI_THREAD_FUNNELED`: only the thread that initialised it calls MPI (the
//! training thread); libtorch's and the batch producer's threads never do.

use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use tch::{Kind, Tensor};

use crate::{Backend, Collective, CollectiveError, check_root, from_host, to_host};

/// One rank of an MPI job. Dropping it finalises MPI.
pub struct Mpi {
    world: SimpleCommunicator,
    local_rank: usize,
    // Dropped last: finalises MPI after the communicators are gone.
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI (once per process) and joins `MPI_COMM_WORLD`.
    pub fn init() -> Result<Self, CollectiveError> {
        if mpi::environment::is_initialized() {
            return Err(CollectiveError::MpiInit(
                "MPI is already initialised in this process (one backend per process)".into(),
            ));
        }
        let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| CollectiveError::MpiInit("MPI_Init_thread failed".into()))?;
        if threading < Threading::Funneled {
            return Err(CollectiveError::MpiInit(format!(
                "this MPI library offers {threading:?} threading; ferroflow needs Funneled (libtorch and the \
                 batch producer run threads that never call MPI)"
            )));
        }
        let world = universe.world();
        // The ranks sharing this node's memory, numbered by world rank: the local rank picks the CUDA device.
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(Self {
            world,
            local_rank,
            _universe: universe,
        })
    }

    fn reduce_host<T>(&self, values: Vec<T>) -> Vec<T>
    where
        T: mpi::datatype::Equivalence + Copy + Default,
    {
        let mut out = vec![T::default(); values.len()];
        self.world
            .all_reduce_into(&values[..], &mut out[..], SystemOperation::sum());
        out
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn backend(&self) -> Backend {
        Backend::Mpi
    }

    fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        if self.world_size() == 1 {
            return Ok(());
        }
        match tensor.kind() {
            Kind::Float => {
                let sum = self.reduce_host(to_host::<f32>(tensor));
                from_host(tensor, &sum);
            }
            Kind::Double => {
                let sum = self.reduce_host(to_host::<f64>(tensor));
                from_host(tensor, &sum);
            }
            Kind::Int64 => {
                let sum = self.reduce_host(to_host::<i64>(tensor));
                from_host(tensor, &sum);
            }
            // Half precisions are summed in f32 on the host and rounded once.
            Kind::BFloat16 | Kind::Half => {
                let sum = self.reduce_host(to_host::<f32>(&tensor.to_kind(Kind::Float)));
                from_host(tensor, &sum);
            }
            kind => {
                return Err(CollectiveError::Kind {
                    op: "all_reduce",
                    kind,
                });
            }
        }
        Ok(())
    }

    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), CollectiveError> {
        check_root("broadcast", root, self.world_size())?;
        if self.world_size() == 1 {
            return Ok(());
        }
        let process = self.world.process_at_rank(root as i32);
        match tensor.kind() {
            Kind::Float | Kind::BFloat16 | Kind::Half => {
                let mut values = to_host::<f32>(&tensor.to_kind(Kind::Float));
                process.broadcast_into(&mut values[..]);
                from_host(tensor, &values);
            }
            Kind::Double => {
                let mut values = to_host::<f64>(tensor);
                process.broadcast_into(&mut values[..]);
                from_host(tensor, &values);
            }
            Kind::Int64 => {
                let mut values = to_host::<i64>(tensor);
                process.broadcast_into(&mut values[..]);
                from_host(tensor, &values);
            }
            kind => {
                return Err(CollectiveError::Kind {
                    op: "broadcast",
                    kind,
                });
            }
        }
        Ok(())
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError> {
        let n = tensor.numel();
        // Every rank must send as many elements: all ranks compare their lengths first and refuse together,
        // so no rank is left waiting in a gather the others skipped.
        let mut lengths = vec![0u64; self.world_size()];
        self.world.all_gather_into(&(n as u64), &mut lengths[..]);
        if let Some(rank) = lengths.iter().position(|&len| len != lengths[0]) {
            return Err(CollectiveError::Length {
                op: "all_gather",
                rank,
                got: lengths[rank] as usize,
                expected: lengths[0] as usize,
            });
        }
        let world = self.world_size();
        let gathered = match tensor.kind() {
            Kind::Float => {
                let mut out = vec![0f32; n * world];
                self.world
                    .all_gather_into(&to_host::<f32>(tensor)[..], &mut out[..]);
                Tensor::from_slice(&out)
            }
            Kind::Double => {
                let mut out = vec![0f64; n * world];
                self.world
                    .all_gather_into(&to_host::<f64>(tensor)[..], &mut out[..]);
                Tensor::from_slice(&out)
            }
            Kind::Int64 => {
                let mut out = vec![0i64; n * world];
                self.world
                    .all_gather_into(&to_host::<i64>(tensor)[..], &mut out[..]);
                Tensor::from_slice(&out)
            }
            kind => {
                return Err(CollectiveError::Kind {
                    op: "all_gather",
                    kind,
                });
            }
        };
        Ok(gathered.to_device(tensor.device()))
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), CollectiveError> {
        check_root("broadcast_bytes", root, self.world_size())?;
        let process = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        process.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        process.broadcast_into(&mut bytes[..]);
        Ok(())
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
