//! The roofline of the benchmarks: this machine's sustained f32 matrix-multiply rate through libtorch, and
//! the share of it a benchmark's arithmetic reached.
//!
//! The rate is the best over repeats of `[2048, 512] x [512, 512]` products (large enough to run at the
//! library's peak, small enough to stay in this machine's caches), for each thread count asked for. A
//! benchmark counts its floating-point operations from the network ([`VelocityNet::flops_per_sample`]: two
//! per weight per sample for an MLP) times the passes it makes (a forward pass, a forward-mode tangent or a
//! backward pass through the input each count as one forward's worth; a backward pass that also forms the
//! weights' gradients as two), divides by its wall time and by the rate at its thread count. Activations,
//! biases and solver arithmetic are left out, so the share is a lower bound on how busy the cores were.

use std::collections::BTreeMap;

use ferroflow_models::VelocityNet;
use tch::{Device, Kind, Tensor};

const ROWS: i64 = 2048;
const INNER: i64 = 512;

/// The measured matrix-multiply rates, GFLOP/s by thread count.
#[derive(Clone, Debug, Default)]
pub struct Roofline {
    rates: BTreeMap<usize, f64>,
}

impl Roofline {
    /// Measures the rate at each of `threads` (0: libtorch's default count), `repeats` times each, and
    /// restores libtorch's thread count afterwards.
    pub fn measure(threads: &[usize], repeats: usize) -> Self {
        let before = tch::get_num_threads();
        let a = Tensor::randn([ROWS, INNER], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([INNER, INNER], (Kind::Float, Device::Cpu));
        let flops = 2.0 * (ROWS * INNER * INNER) as f64;
        let mut rates = BTreeMap::new();
        for &n in threads {
            let count = if n == 0 { before.max(1) as usize } else { n };
            tch::set_num_threads(count as i32);
            let _ = a.matmul(&b);
            let samples: Vec<f64> = (0..repeats.max(1))
                .map(|_| {
                    let started = std::time::Instant::now();
                    for _ in 0..8 {
                        let _ = a.matmul(&b);
                    }
                    8.0 * flops / started.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            // The best repeat, not the median: on a shared machine noise only slows a repeat down, and a
            // median taken in a slow moment put later benchmarks above 100 % of it.
            rates.insert(count, samples.iter().copied().fold(0.0, f64::max));
        }
        tch::set_num_threads(before);
        Self { rates }
    }

    /// The rate at `threads`, GFLOP/s (`None` when not measured).
    pub fn rate(&self, threads: usize) -> Option<f64> {
        self.rates.get(&threads).copied()
    }

    /// `(threads, GFLOP/s)` in increasing thread count.
    pub fn rates(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.rates.iter().map(|(&n, &rate)| (n, rate))
    }

    /// The achieved rate (GFLOP/s) of `flops` in `seconds` and its share of the rate at `threads`, as table
    /// cells: `"12.3"` and `"17 %"` (`"-"` where the rate was not measured).
    pub fn cells(&self, flops: f64, seconds: f64, threads: usize) -> (String, String) {
        let achieved = flops / seconds / 1e9;
        let share = self
            .rate(threads)
            .map_or("-".into(), |peak| format!("{:.0} %", 100.0 * achieved / peak));
        (format!("{achieved:.1}"), share)
    }

    /// One markdown line with the measured rates.
    pub fn summary(&self) -> String {
        let rates: Vec<String> = self
            .rates()
            .map(|(n, rate)| format!("{rate:.1} GFLOP/s on {n} thread(s)"))
            .collect();
        format!(
            "Roofline: sustained f32 matrix multiply through libtorch ([{ROWS}, {INNER}] x [{INNER}, {INNER}], \
             best of repeats): {}.",
            rates.join(", ")
        )
    }
}

/// Floating-point operations of `passes` forward-pass equivalents of `net` on `samples` samples.
pub fn network_flops(net: &dyn VelocityNet, samples: usize, passes: f64) -> f64 {
    net.flops_per_sample() * samples as f64 * passes
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroflow_models::{Mlp, MlpConfig};

    #[test]
    fn an_mlp_counts_two_flops_per_weight_and_shares_follow_the_rate() {
        let net = Mlp::new(MlpConfig::benchmark(2), Device::Cpu).unwrap();
        // 3 -> 64 -> 64 -> 64 -> 2 with biases: 3 x 64 + 64 + 2 (64 x 64 + 64) + 64 x 2 + 2 = 8,706 parameters.
        assert_eq!(network_flops(&net, 10, 1.0), 2.0 * 8_706.0 * 10.0);
        let roofline = Roofline {
            rates: BTreeMap::from([(1, 50.0)]),
        };
        assert_eq!(roofline.cells(5e9, 0.5, 1), ("10.0".into(), "20 %".into()));
        assert_eq!(roofline.cells(5e9, 0.5, 2).1, "-");
    }
}
