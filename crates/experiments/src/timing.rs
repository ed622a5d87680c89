//! The one timing helper of the benchmarks: medians of wall time and of this process's on-CPU time over
//! repeated runs, and the machine's load, since these machines are shared and noisy (benchmarks report
//! medians and ratios measured in the same run, never single timings).

use std::time::Instant;

use anyhow::Result;

/// A timing: the medians over the repeats of the wall time and of this process's on-CPU time.
pub struct Timing {
    /// Median wall time, in seconds.
    pub wall_seconds: f64,
    /// `None` where `/proc` is not available.
    pub cpu_seconds: Option<f64>,
}

/// Times `repeats` runs (at least one) of `job`; returns the medians and the last run's result.
pub fn median_time<T, E>(repeats: usize, mut job: impl FnMut() -> Result<T, E>) -> Result<(Timing, T)>
where
    E: Into<anyhow::Error>,
{
    let mut wall = Vec::with_capacity(repeats);
    let mut cpu = Vec::with_capacity(repeats);
    let mut last = None;
    let repeats = repeats.max(1);
    for _ in 0..repeats {
        let cpu_before = process_cpu_seconds();
        let started = Instant::now();
        let result = job().map_err(Into::into)?;
        wall.push(started.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu_before, process_cpu_seconds()) {
            cpu.push(after - before);
        }
        last = Some(result);
    }
    let timing = Timing {
        wall_seconds: median(&mut wall),
        cpu_seconds: (cpu.len() == repeats).then(|| median(&mut cpu)),
    };
    Ok((timing, last.expect("at least one repeat")))
}

/// The machine's load averages (Linux `/proc/loadavg`): other work competing for the cores skews timings.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Seconds this process's threads have spent on a CPU (Linux `/proc/self/task/*/schedstat`, nanoseconds).
/// On a shared, loaded machine the wall time counts the waits for a core as well; this does not.
pub fn process_cpu_seconds() -> Option<f64> {
    let mut total_ns = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        // A thread that ended meanwhile has no file any more; its time is then simply not counted.
        let Ok(text) = std::fs::read_to_string(entry.ok()?.path().join("schedstat")) else {
            continue;
        };
        total_ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total_ns as f64 * 1e-9)
}

/// The median of `values` (the upper one of an even count); `values` is sorted in place.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
