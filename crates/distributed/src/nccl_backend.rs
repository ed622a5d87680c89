//! The NCCL backend: CUDA tensors are reduced, broadcast and gathered on the GPUs by NCCL (loaded at run
//! time through `cudarc`; libnccl comes with the PyTorch wheel's `nvidia-nccl`), one GPU per rank, the
//! rank's local index choosing it. Rank 0's NCCL unique id travels over MPI, as in NCCL's own examples, and
//! everything that is not a CUDA tensor (bytes, CPU tensors) goes over MPI too.
//!
//! NCCL works on raw device pointers: each call hands it a libtorch tensor's storage, contiguous and of a
//! kind NCCL knows, on the legacy default stream that libtorch computes on, and waits for the device before
//! returning, so the tensor is never read while NCCL writes it.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::Arc;

use cudarc::driver::CudaContext;
use cudarc::nccl::{result, sys};
use tch::{Device, Kind, Tensor};

use crate::mpi_backend::Mpi;
use crate::{Backend, Collective, CollectiveError, check_root};

/// One rank of an NCCL job (with its MPI communicator for the rest).
pub struct Nccl {
    comm: sys::ncclComm_t,
    device: usize,
    _context: Arc<CudaContext>,
    mpi: Mpi,
}

fn nccl_error(what: &str, err: result::NcclError) -> CollectiveError {
    CollectiveError::Nccl(format!("{what}: {:?}", err.0))
}

impl Nccl {
    /// Starts MPI, binds this rank to the CUDA device of its local rank and joins rank 0's NCCL
    /// communicator. Without a CUDA device this is an error (never a fall back to MPI).
    pub fn init() -> Result<Self, CollectiveError> {
        if !tch::Cuda::is_available() {
            return Err(CollectiveError::Nccl(
                "NCCL needs CUDA, and libtorch sees no CUDA device here (a CPU build of libtorch, or no \
                 GPU): run `cargo xtask setup --cuda` on a GPU machine, or use --backend mpi"
                    .into(),
            ));
        }
        let mpi = Mpi::init()?;
        let device = mpi.local_rank();
        let count = tch::Cuda::device_count() as usize;
        if device >= count {
            return Err(CollectiveError::Nccl(format!(
                "rank {} is local rank {device} on its node, which has {count} CUDA device(s); NCCL takes one \
                 GPU per rank (it refuses two ranks on one GPU): start at most {count} ranks per node",
                mpi.rank()
            )));
        }
        let context = CudaContext::new(device)
            .map_err(|e| CollectiveError::Nccl(format!("cannot open CUDA device {device}: {e:?}")))?;
        context
            .bind_to_thread()
            .map_err(|e| CollectiveError::Nccl(format!("cannot bind CUDA device {device}: {e:?}")))?;
        let mut id_bytes = if mpi.rank() == 0 {
            let id = result::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
            id.internal.iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        mpi.broadcast_bytes(&mut id_bytes, 0)?;
        let mut id = sys::ncclUniqueId { internal: [0; 128] };
        if id_bytes.len() != id.internal.len() {
            return Err(CollectiveError::Nccl(format!(
                "rank 0 sent an NCCL id of {} bytes, not 128",
                id_bytes.len()
            )));
        }
        for (slot, byte) in id.internal.iter_mut().zip(&id_bytes) {
            *slot = *byte as ::core::ffi::c_char;
        }
        let mut comm = MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL before it is read; the id is the 128 bytes rank 0 made.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), mpi.world_size() as i32, id, mpi.rank() as i32)
                .map_err(|e| nccl_error("ncclCommInitRank", e))?;
            comm.assume_init()
        };
        Ok(Self {
            comm,
            device,
            _context: context,
            mpi,
        })
    }

    /// NCCL's type for a tensor kind.
    fn data_type(op: &'static str, kind: Kind) -> Result<sys::ncclDataType_t, CollectiveError> {
        Ok(match kind {
            Kind::Float => sys::ncclDataType_t::ncclFloat32,
            Kind::Double => sys::ncclDataType_t::ncclFloat64,
            Kind::Int64 => sys::ncclDataType_t::ncclInt64,
            Kind::Half => sys::ncclDataType_t::ncclFloat16,
            Kind::BFloat16 => sys::ncclDataType_t::ncclBfloat16,
            kind => return Err(CollectiveError::Kind { op, kind }),
        })
    }

    fn on_gpu(&self, tensor: &Tensor) -> bool {
        tensor.device() == Device::Cuda(self.device)
    }

    /// Runs `call` on a contiguous tensor of `tensor`'s values and copies the result back when a contiguous
    /// copy had to be made; waits for the device afterwards.
    fn in_place(
        &self,
        tensor: &mut Tensor,
        call: impl FnOnce(&Tensor) -> Result<(), CollectiveError>,
    ) -> Result<(), CollectiveError> {
        let work = tensor.contiguous();
        call(&work)?;
        tch::Cuda::synchronize(self.device as i64);
        if work.data_ptr() != tensor.data_ptr() {
            let _guard = tch::no_grad_guard();
            tensor.copy_(&work);
        }
        Ok(())
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: the communicator was made by ncclCommInitRank and is destroyed once.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }

    fn local_rank(&self) -> usize {
        self.device
    }

    fn backend(&self) -> Backend {
        Backend::Nccl
    }

    fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        if !self.on_gpu(tensor) {
            return self.mpi.all_reduce_sum(tensor);
        }
        let data_type = Self::data_type("all_reduce", tensor.kind())?;
        let comm = self.comm;
        self.in_place(tensor, |work| {
            let ptr = work.data_ptr();
            // SAFETY: `ptr` is the storage of the contiguous tensor `work` of `numel` elements of
            // `data_type` on this rank's device, alive until the synchronisation after this call.
            unsafe {
                result::all_reduce(
                    ptr,
                    ptr,
                    work.numel(),
                    data_type,
                    sys::ncclRedOp_t::ncclSum,
                    comm,
                    std::ptr::null_mut(),
                )
            }
            .map(|_| ())
            .map_err(|e| nccl_error("ncclAllReduce", e))
        })
    }

    fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), CollectiveError> {
        check_root("broadcast", root, self.world_size())?;
        if !self.on_gpu(tensor) {
            return self.mpi.broadcast(tensor, root);
        }
        let data_type = Self::data_type("broadcast", tensor.kind())?;
        let comm = self.comm;
        self.in_place(tensor, |work| {
            let ptr = work.data_ptr();
            // SAFETY: as in all_reduce_sum.
            unsafe {
                result::broadcast(
                    ptr,
                    ptr,
                    work.numel(),
                    data_type,
                    root as i32,
                    comm,
                    std::ptr::null_mut(),
                )
            }
            .map(|_| ())
            .map_err(|e| nccl_error("ncclBroadcast", e))
        })
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor, CollectiveError> {
        if !self.on_gpu(tensor) {
            return self.mpi.all_gather(tensor);
        }
        // Lengths are compared over MPI first, so no rank is left in a gather the others refused.
        let lengths = self
            .mpi
            .all_gather(&Tensor::from_slice(&[tensor.numel() as i64]))?;
        let lengths = crate::to_host::<i64>(&lengths);
        if let Some(rank) = lengths.iter().position(|&len| len != lengths[0]) {
            return Err(CollectiveError::Length {
                op: "all_gather",
                rank,
                got: lengths[rank] as usize,
                expected: lengths[0] as usize,
            });
        }
        let data_type = Self::data_type("all_gather", tensor.kind())?;
        let send = tensor.contiguous().view(-1);
        let out = Tensor::empty(
            [send.numel() as i64 * self.world_size() as i64],
            (tensor.kind(), tensor.device()),
        );
        // SAFETY: `send` and `out` are contiguous device tensors of `numel` and `world * numel` elements
        // of `data_type`, alive until the synchronisation below.
        unsafe {
            result::all_gather(
                send.data_ptr(),
                out.data_ptr(),
                send.numel(),
                data_type,
                self.comm,
                std::ptr::null_mut(),
            )
        }
        .map_err(|e| nccl_error("ncclAllGather", e))?;
        tch::Cuda::synchronize(self.device as i64);
        Ok(out)
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), CollectiveError> {
        self.mpi.broadcast_bytes(bytes, root)
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.mpi.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        // SAFETY: the communicator is valid; aborting it unblocks NCCL calls in flight on other threads.
        let _ = unsafe { result::comm_abort(self.comm) };
        self.mpi.abort(code)
    }
}
