//! The NCCL backend (feature `nccl`). Without a CUDA device it must refuse to start, naming CUDA (never a
//! fall back to MPI); with one, the ignored checks run by `scripts/gpu-check.sh` verify that a one-rank NCCL
//! all-reduce, broadcast and all-gather of CUDA tensors leave them unchanged in f32 and bf16.
#![cfg(feature = "nccl")]

use ferroflow_distributed::{Backend, BackendChoice, init, to_host};
use tch::{Device, Kind, Tensor};

#[test]
fn nccl_starts_only_where_cuda_is() {
    match init(BackendChoice::Nccl) {
        Ok(comm) => {
            assert!(tch::Cuda::is_available(), "NCCL started without CUDA");
            assert_eq!(comm.backend(), Backend::Nccl);
        }
        Err(err) => {
            assert!(!tch::Cuda::is_available(), "NCCL failed on a CUDA machine: {err}");
            assert!(err.to_string().contains("NCCL needs CUDA"), "{err}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU and libnccl: run by scripts/gpu-check.sh"]
fn one_rank_nccl_collectives_leave_cuda_tensors_unchanged() {
    let comm = init(BackendChoice::Nccl).expect("NCCL on this GPU machine");
    assert_eq!((comm.rank(), comm.world_size()), (0, 1));
    let device = Device::Cuda(comm.local_rank());
    for kind in [Kind::Float, Kind::BFloat16] {
        let values = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 1e-3]);
        let mut t = values.to_kind(kind).to_device(device);
        let before = to_host::<f32>(&t.to_kind(Kind::Float));
        comm.all_reduce_sum(&mut t).unwrap();
        comm.all_reduce_mean(&mut t).unwrap();
        comm.broadcast(&mut t, 0).unwrap();
        assert_eq!(t.kind(), kind);
        assert_eq!(t.device(), device);
        assert_eq!(to_host::<f32>(&t.to_kind(Kind::Float)), before, "{kind:?}");
        let gathered = comm.all_gather(&t).unwrap();
        assert_eq!(to_host::<f32>(&gathered.to_kind(Kind::Float)), before, "{kind:?}");
    }
    println!("NCCL one-rank checks passed on {device:?}");
}
