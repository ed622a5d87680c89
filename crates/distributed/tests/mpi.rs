//! The MPI backend across two real processes: this test binary starts itself under `mpirun -np 2`, and the
//! ignored `worker` test, run in each rank, checks every collective against its closed form.
#![cfg(feature = "mpi")]

use std::process::Command;

use ferroflow_distributed::{Backend, BackendChoice, CollectiveError, init, to_host};
use tch::{Kind, Tensor};

/// Set in the ranks started by [`two_ranks_agree_on_every_collective`].
const WORKER_VAR: &str = "FERROFLOW_MPI_TEST_WORKER";

fn mpirun() -> Command {
    let mut command = Command::new("mpirun");
    command.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"]);
    command
}

#[test]
fn two_ranks_agree_on_every_collective() {
    let exe = std::env::current_exe().unwrap();
    let output = mpirun()
        .arg(exe)
        .args([
            "worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_VAR, "1")
        .output()
        .expect("mpirun runs (Open MPI from `cargo xtask setup`)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mpirun failed\n{stdout}\n{stderr}");
    // Both ranks ran the worker and reached its end.
    for rank in 0..2 {
        assert!(
            stdout.contains(&format!("rank {rank} of 2: all collectives checked")),
            "{stdout}\n{stderr}"
        );
    }
}

#[test]
#[ignore = "runs inside the ranks started by two_ranks_agree_on_every_collective"]
fn worker() {
    assert_eq!(
        std::env::var(WORKER_VAR).as_deref(),
        Ok("1"),
        "start it through mpirun"
    );
    let comm = init(BackendChoice::Auto).unwrap();
    assert_eq!(comm.backend(), Backend::Mpi);
    let (rank, world) = (comm.rank(), comm.world_size());
    assert_eq!(world, 2);
    assert!(comm.local_rank() < 2);
    let r = rank as f32;

    // Sum and mean of rank-dependent values: closed forms 1 + 2 = 3 and mean 1.5 etc.
    let mut t = Tensor::from_slice(&[r + 1.0, 10.0 * r, -r]);
    comm.all_reduce_sum(&mut t).unwrap();
    assert_eq!(to_host::<f32>(&t), vec![3.0, 10.0, -1.0]);
    let mut t = Tensor::from_slice(&[r + 1.0, 10.0 * r]).view([1, 2]);
    comm.all_reduce_mean(&mut t).unwrap();
    assert_eq!(t.size(), vec![1, 2]);
    assert_eq!(to_host::<f32>(&t), vec![1.5, 5.0]);
    let mut d = Tensor::from_slice(&[0.1f64 * (rank as f64 + 1.0)]);
    comm.all_reduce_sum(&mut d).unwrap();
    assert!((to_host::<f64>(&d)[0] - 0.3).abs() < 1e-15);
    let mut i = Tensor::from_slice(&[rank as i64 + 1]);
    comm.all_reduce_sum(&mut i).unwrap();
    assert_eq!(to_host::<i64>(&i), vec![3]);
    let mut h = Tensor::from_slice(&[r + 0.5]).to_kind(Kind::BFloat16);
    comm.all_reduce_sum(&mut h).unwrap();
    assert_eq!(h.kind(), Kind::BFloat16);
    assert_eq!(to_host::<f32>(&h.to_kind(Kind::Float)), vec![2.0]);

    // Broadcast from each root.
    for root in 0..world {
        let mut b = Tensor::from_slice(&[r, r * 2.0]);
        comm.broadcast(&mut b, root).unwrap();
        assert_eq!(to_host::<f32>(&b), vec![root as f32, root as f32 * 2.0]);
    }
    assert!(matches!(
        comm.broadcast(&mut Tensor::from_slice(&[1.0f32]), 2),
        Err(CollectiveError::Root { root: 2, .. })
    ));

    // All-gather in rank order.
    let g = comm
        .all_gather(&Tensor::from_slice(&[rank as i64, 7]).view([1, 2]))
        .unwrap();
    assert_eq!(to_host::<i64>(&g), vec![0, 7, 1, 7]);
    // Unequal lengths are refused on every rank, naming the one that differs, before any data moves.
    let unequal = comm.all_gather(&Tensor::zeros([rank as i64 + 1], (Kind::Float, tch::Device::Cpu)));
    assert!(
        matches!(
            unequal,
            Err(CollectiveError::Length {
                rank: 1,
                got: 2,
                expected: 1,
                ..
            })
        ),
        "rank {rank}: {unequal:?}"
    );

    // Bytes of different lengths: everyone ends with the root's.
    let mut bytes = if rank == 0 {
        b"[run]\nname = \"x\"\n".to_vec()
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(bytes, b"[run]\nname = \"x\"\n");
    comm.barrier().unwrap();
    println!("rank {rank} of {world}: all collectives checked");
}
