//! Data-parallel training on the collective seam of `ferroflow-distributed`: what a launch is ([`Launch`]),
//! which rows of the global batch a rank trains on ([`shard`]), how ranks agree that a step that only some of
//! them take (opening the run folder, loading a checkpoint) worked everywhere ([`agree`]), how rank 0's
//! training state reaches the others ([`broadcast_state`]), and the replica check ([`ReplicaCheck`]).
//!
//! The batch of step k is a pure function of `(seed, k)` ([`crate::batch`]), so every rank builds the same
//! global batch, exact OT coupling included, on its own producer thread and trains on its slice: the coupling
//! is global (not per rank, as torchcfm's under DDP), nothing but the gradient crosses the network, and the
//! producer hides the assignment as it does in one process.

use ferroflow_distributed::{Collective, Single, to_host};
use ferroflow_models::optim::{Ema, FlatAdam};
use ferroflow_models::params::ParamStore;
use tch::Tensor;

use crate::error::TrainError;
use crate::train::{Journal, Observer, StepInfo, TrainState};

/// The ranks a run trains on, and whether to check every step that their weights agree.
#[derive(Clone, Copy)]
pub struct Launch<'a> {
    /// This rank's collectives.
    pub comm: &'a dyn Collective,
    /// After every step, compare a checksum of every rank's weights and stop if they differ.
    pub check_replicas: bool,
}

static SINGLE: Single = Single;

impl Launch<'static> {
    /// One process.
    pub fn single() -> Self {
        Launch {
            comm: &SINGLE,
            check_replicas: false,
        }
    }
}

impl<'a> Launch<'a> {
    /// A launch on `comm`.
    pub fn on(comm: &'a dyn Collective) -> Self {
        Launch {
            comm,
            check_replicas: false,
        }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// Whether this rank writes the run folder (rank 0).
    pub fn is_root(&self) -> bool {
        self.comm.rank() == 0
    }
}

/// The rows `lo..hi` of a global batch of `batch_size` that `rank` of `world_size` trains on; the world size
/// must divide the batch (every shard's mean loss then weighs the same, and the mean of the shards'
/// gradients is the full batch's).
pub fn shard(batch_size: usize, rank: usize, world_size: usize) -> Result<(usize, usize), TrainError> {
    if world_size == 0 || !batch_size.is_multiple_of(world_size) {
        return Err(TrainError::Launch(format!(
            "train.batch_size = {batch_size} is the global batch and must be a multiple of the world size \
             ({world_size} ranks): choose a batch of {} or {}, or another number of ranks",
            batch_size / world_size.max(1) * world_size.max(1),
            (batch_size / world_size.max(1) + 1) * world_size.max(1)
        )));
    }
    let per_rank = batch_size / world_size;
    Ok((rank * per_rank, (rank + 1) * per_rank))
}

/// Makes every rank's outcome of a step known to all: when any rank failed, each returns an error (its own,
/// or [`TrainError::OtherRank`] with the first failing rank's message), so no rank goes on into a collective
/// that another never reaches.
pub fn agree<T>(comm: &dyn Collective, outcome: Result<T, TrainError>) -> Result<T, TrainError> {
    if comm.world_size() == 1 {
        return outcome;
    }
    let failed = f64::from(u8::from(outcome.is_err()));
    let mut flags = comm.all_gather(&Tensor::from_slice(&[failed]))?;
    let flags = to_host::<f64>(&std::mem::replace(&mut flags, Tensor::new()));
    let Some(first) = flags.iter().position(|&f| f > 0.0) else {
        return outcome;
    };
    let mut message = match &outcome {
        Err(err) if comm.rank() == first => err.to_string().into_bytes(),
        _ => Vec::new(),
    };
    comm.broadcast_bytes(&mut message, first)?;
    match outcome {
        Err(err) => Err(err),
        Ok(_) => Err(TrainError::OtherRank {
            rank: first,
            message: String::from_utf8_lossy(&message).into_owned(),
        }),
    }
}

/// [`agree`] for a `Result` whose error is any displayable type (anyhow in the run module).
pub fn agree_any<T, E: std::fmt::Display>(
    comm: &dyn Collective,
    outcome: Result<T, E>,
) -> Result<Result<T, E>, TrainError> {
    if comm.world_size() == 1 {
        return Ok(outcome);
    }
    let probe = match &outcome {
        Ok(_) => Ok(()),
        Err(err) => Err(TrainError::Launch(err.to_string())),
    };
    match agree(comm, probe) {
        Ok(()) => Ok(outcome),
        // This rank failed itself: hand back its own error untouched.
        Err(TrainError::Launch(_)) if outcome.is_err() => Ok(outcome),
        Err(err) => Err(err),
    }
}

/// Overwrites every rank's weights, EMA, Adam moments and step with rank 0's, so the replicas start
/// identical whatever each rank initialised or loaded.
pub fn broadcast_state(
    comm: &dyn Collective,
    params: &ParamStore,
    adam: &mut FlatAdam,
    ema: Option<&mut Ema>,
) -> Result<(), TrainError> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let _guard = tch::no_grad_guard();
    let mut weights = params.flat().shallow_clone();
    comm.broadcast(&mut weights, 0)?;
    comm.broadcast(&mut adam.exp_avg, 0)?;
    comm.broadcast(&mut adam.exp_avg_sq, 0)?;
    if let Some(ema) = ema {
        comm.broadcast(&mut ema.weights, 0)?;
    }
    let mut step = Tensor::from_slice(&[adam.step as i64]);
    comm.broadcast(&mut step, 0)?;
    adam.step = to_host::<i64>(&step)[0] as usize;
    Ok(())
}

/// A checksum of a tensor's bits (FNV-1a over its f32 words): equal on two ranks only if their weights are
/// bit-identical, up to a collision.
pub fn checksum(tensor: &Tensor) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for value in to_host::<f32>(&tensor.to_kind(tch::Kind::Float)) {
        for byte in value.to_bits().to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash as i64
}

/// After every step, gathers every rank's weight checksum and stops the run when they differ: the replicas
/// of a data-parallel run must stay bit-identical (same reduced gradient, same update).
pub struct ReplicaCheck<'a> {
    comm: &'a dyn Collective,
}

impl<'a> ReplicaCheck<'a> {
    /// Checks on `comm`.
    pub fn new(comm: &'a dyn Collective) -> Self {
        Self { comm }
    }
}

impl<M: TrainState> Observer<M> for ReplicaCheck<'_> {
    fn on_step(&mut self, model: &M, info: &StepInfo, _: &mut Journal) -> Result<(), TrainError> {
        let (params, adam, ema) = model.state();
        let mut sums = vec![checksum(params.flat()), checksum(&adam.exp_avg)];
        if let Some(ema) = ema {
            sums.push(checksum(&ema.weights));
        }
        let gathered = to_host::<i64>(&self.comm.all_gather(&Tensor::from_slice(&sums))?);
        let per_rank: Vec<&[i64]> = gathered.chunks(sums.len()).collect();
        if per_rank.iter().all(|r| *r == per_rank[0]) {
            return Ok(());
        }
        let detail = per_rank
            .iter()
            .enumerate()
            .map(|(rank, sums)| format!("rank {rank}: {sums:x?}"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(TrainError::ReplicasDiverged {
            step: info.step,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_batch() {
        assert_eq!(shard(256, 0, 1).unwrap(), (0, 256));
        assert_eq!(shard(256, 1, 2).unwrap(), (128, 256));
        assert_eq!(shard(12, 2, 3).unwrap(), (8, 12));
        let err = shard(10, 0, 4).unwrap_err().to_string();
        assert!(
            err.contains("train.batch_size = 10") && err.contains("4 ranks"),
            "{err}"
        );
        assert!(err.contains("8 or 12"), "{err}");
    }

    #[test]
    fn checksum_sees_one_bit() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let b = Tensor::from_slice(&[1.0f32, 2.0, f32::from_bits(3.0f32.to_bits() + 1)]);
        assert_eq!(checksum(&a), checksum(&a.copy()));
        assert_ne!(checksum(&a), checksum(&b));
    }

    #[test]
    fn one_process_agrees_with_itself() {
        let comm = Single;
        assert_eq!(agree(&comm, Ok::<_, TrainError>(3)).unwrap(), 3);
        let err = agree::<()>(&comm, Err(TrainError::Launch("x".into()))).unwrap_err();
        assert!(matches!(err, TrainError::Launch(_)));
    }
}
