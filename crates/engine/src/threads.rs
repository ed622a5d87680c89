//! How many libtorch intra-op threads an inference computation (sampling, likelihood) gets: a fixed count the
//! caller asked for, or one chosen by the size of the work, so a large batch uses every core and a small one
//! does not pay for waking threads that have little to do.
//!
//! Training keeps its own setting (`run.threads`, one by default: its small batches are fastest on one
//! thread); a trained flow samples and measures likelihoods with [`Threads::Auto`] unless told otherwise.
//! libtorch's thread count is process-wide, so it is set at the start of each computation.

/// Arithmetic per network evaluation (floating-point operations) from which every core is used: about
/// 3,000 points through the 2D benchmark MLP (17,000 FLOPs per point). Measured by `ferroflow bench
/// likelihood`, whose thread-count rows show where two threads start to pay on this kind of machine.
pub const PARALLEL_FLOPS: f64 = 5.0e7;

/// The thread count of a computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Threads {
    /// Every core when one network evaluation does at least [`PARALLEL_FLOPS`], else one.
    #[default]
    Auto,
    /// Exactly this many (at least one).
    Fixed(usize),
}

impl Threads {
    /// The thread count for evaluations of `flops_per_eval` each.
    pub fn count(self, flops_per_eval: f64) -> usize {
        match self {
            Threads::Fixed(n) => n.max(1),
            Threads::Auto if flops_per_eval >= PARALLEL_FLOPS => cores(),
            Threads::Auto => 1,
        }
    }

    /// Sets libtorch's thread count for evaluations of `flops_per_eval` each and returns it.
    pub fn apply(self, flops_per_eval: f64) -> usize {
        let n = self.count(flops_per_eval);
        if tch::get_num_threads() != n as i32 {
            tch::set_num_threads(n as i32);
        }
        n
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_uses_every_core_only_for_large_work() {
        assert_eq!(Threads::Auto.count(PARALLEL_FLOPS / 2.0), 1);
        assert_eq!(Threads::Auto.count(PARALLEL_FLOPS), cores());
        assert_eq!(Threads::Fixed(3).count(1.0), 3);
        assert_eq!(Threads::Fixed(0).count(1e12), 1);
    }
}
