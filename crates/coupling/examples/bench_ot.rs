//! Times the assignment solvers (and Sinkhorn) on squared-Euclidean costs between N(0, I) samples and
//! 8gaussians (D = 2) or a mixture of 10 random Gaussian blobs (D = 784), printing markdown tables.
//!
//! `cargo run --release -p ferroflow-coupling --example bench_ot [-- --quick] [--sinkhorn-only | --no-sinkhorn | --jv-only]
//! [--sizes N,N,..] [--regs R,R,..] [--reps R] [--tolerance T]` or
//! `-- --minibatch [--sizes N,..] [--sb-cap N] [--no-sinkhorn]`
//!
//! `--sizes` replaces the sizes of the tables that are printed (Sinkhorn's default is 1024,4096), `--regs` the
//! Sinkhorn regularisations (default 0.05,0.01,0.001), `--reps` the repetitions behind each median, `--tolerance` Sinkhorn's
//! stopping threshold on the L1 marginal error (default 1e-6; POT's default `stopThr = 1e-9` is an L2 threshold,
//! which at n = 4096 is met by an L1 error of at most 6.4e-8 when spread evenly). `--jv-only`
//! times only the default [`Jv`] on D = 2 (the OT-CFM minibatch case). `--minibatch` times, per fresh batch of
//! `bench train`'s setting (8gaussians -> moons, default n = 256), what a coupling costs the producer thread:
//! the cost matrix, the exact assignment (OT-CFM) and SB-CFM's Sinkhorn (raw cost, reg 0.02, tolerance
//! 1e-3, at most `--sb-cap` iterations, default 100, its marginal error printed; `--no-sinkhorn` skips it).
//! The first line gives rayon's thread count.
//!
//! The same sizes and distributions are timed for the Python peers by `crates/coupling/bench/peers_ot.py`;
//! compare ratios from runs made back to back on the same machine.

use std::time::Instant;

use ferroflow_coupling::{
    AssignmentSolver, Hungarian, Jv, JvConfig, JvInit, SinkhornConfig, sinkhorn, squared_euclidean,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn normal(n: usize, dim: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    Array2::from_shape_simple_fn((n, dim), || StandardNormal.sample(rng))
}

/// 8gaussians: centre 5 (cos(k pi/4), sin(k pi/4)), k uniform in 0..8, plus N(0, 0.1^(1/2) I) noise.
fn eight_gaussians(n: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    let std = 0.1f64.powf(0.25);
    let mut out = Array2::zeros((n, 2));
    for mut row in out.rows_mut() {
        let k = rng.random_range(0..8) as f64 * std::f64::consts::FRAC_PI_4;
        let (e0, e1): (f64, f64) = (StandardNormal.sample(rng), StandardNormal.sample(rng));
        row[0] = 5.0 * k.cos() + std * e0;
        row[1] = 5.0 * k.sin() + std * e1;
    }
    out
}

/// A mixture of 10 Gaussian blobs in `dim` dimensions: centres N(0, 4 I), unit noise.
fn blobs(n: usize, dim: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    let centres = normal(10, dim, rng) * 2.0;
    let mut out = normal(n, dim, rng);
    for mut row in out.rows_mut() {
        let k = rng.random_range(0..10);
        row += &centres.row(k);
    }
    out
}

struct Timing {
    median: f64,
    min: f64,
    max: f64,
}

fn time_ms(reps: usize, mut f: impl FnMut()) -> Timing {
    f(); // warm-up
    let mut samples: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Timing {
        median: samples[reps / 2],
        min: samples[0],
        max: samples[reps - 1],
    }
}

/// The value after `--name`, split at commas and parsed, if given.
fn list_arg<T: std::str::FromStr>(name: &str) -> Option<Vec<T>> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    let value = args.get(at + 1).unwrap_or_else(|| panic!("{name} needs a value"));
    Some(
        value
            .split(',')
            .map(|x| x.parse().unwrap_or_else(|_| panic!("bad value {x:?} for {name}")))
            .collect(),
    )
}

/// `--reps R` if given, else `default`.
fn reps_or(default: usize) -> usize {
    list_arg::<usize>("--reps").map_or(default, |r| r[0].max(1))
}

fn sinkhorn_table(quick: bool, rng: &mut ChaCha8Rng) {
    let tolerance = list_arg::<f64>("--tolerance").map_or(1e-6, |t| t[0]);
    println!("\n### Sinkhorn (log-domain stabilised), N(0, I) -> 8gaussians, cost / max(cost) (median ms)\n");
    println!("tolerance (L1 marginal error): {tolerance:e}\n");
    println!("| n | reg | cost matrix ms | sinkhorn ms [min-max] | iterations | marginal error |");
    println!("|---|---|---|---|---|---|");
    let sizes = list_arg::<usize>("--sizes").unwrap_or_else(|| vec![1024, 4096]);
    let regs = list_arg::<f64>("--regs").unwrap_or_else(|| vec![0.05, 0.01, 1e-3]);
    let reps = reps_or(if quick { 1 } else { 3 });
    for &n in &sizes {
        let x0 = normal(n, 2, rng);
        let x1 = eight_gaussians(n, rng);
        let tc = time_ms(reps, || {
            std::hint::black_box(squared_euclidean(x0.view(), x1.view()).expect("finite"));
        });
        let mut cost = squared_euclidean(x0.view(), x1.view()).expect("finite");
        let max = cost.fold(0.0f64, |m, &c| m.max(c));
        cost /= max;
        for &reg in &regs {
            let config = SinkhornConfig {
                reg,
                max_iterations: 2000,
                tolerance,
            };
            let t = time_ms(reps, || {
                std::hint::black_box(sinkhorn(cost.view(), &config).expect("valid"));
            });
            let sol = sinkhorn(cost.view(), &config).expect("valid");
            println!(
                "| {n} | {reg} | {:.1} | {:.1} [{:.1}-{:.1}] | {} | {:.1e} |",
                tc.median, t.median, t.min, t.max, sol.iterations, sol.marginal_error
            );
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let default_sizes: &[usize] = if quick {
        &[64, 256, 1024]
    } else {
        &[64, 128, 256, 512, 1024, 2048]
    };
    let sizes = list_arg::<usize>("--sizes").unwrap_or_else(|| default_sizes.to_vec());
    println!("rayon threads: {}", rayon::current_num_threads());
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    if std::env::args().any(|a| a == "--sinkhorn-only") {
        sinkhorn_table(quick, &mut rng);
        return;
    }
    if std::env::args().any(|a| a == "--minibatch") {
        minibatch_table(
            &list_arg::<usize>("--sizes").unwrap_or_else(|| vec![256]),
            quick,
            &mut rng,
        );
        return;
    }
    if std::env::args().any(|a| a == "--jv-only") {
        jv_table(&sizes, quick, &mut rng);
        return;
    }
    let jv = Jv::default();
    let classic = Jv::new(JvConfig {
        init: JvInit::Classic,
        ..JvConfig::default()
    })
    .expect("valid config");
    for &dim in &[2usize, 784] {
        let target = if dim == 2 {
            "8gaussians"
        } else {
            "10 Gaussian blobs"
        };
        println!(
            "\n### exact assignment, squared-Euclidean cost, N(0, I) -> {target}, D = {dim}: median ms [min-max]\n"
        );
        println!(
            "| n | jv (auction init, default) | jv (classic LAPJV init) | hungarian (pathfinding, i64) | cost matrix | all agree |"
        );
        println!("|---|---|---|---|---|---|");
        for &n in &sizes {
            let x0 = normal(n, dim, &mut rng);
            let x1 = if dim == 2 {
                eight_gaussians(n, &mut rng)
            } else {
                blobs(n, dim, &mut rng)
            };
            let reps = reps_or(if quick { 3 } else { (4096 / n).clamp(5, 31) });
            let tc = time_ms(reps, || {
                std::hint::black_box(squared_euclidean(x0.view(), x1.view()).expect("finite samples"));
            });
            let cost = squared_euclidean(x0.view(), x1.view()).expect("finite samples");
            let t = time_ms(reps, || {
                std::hint::black_box(jv.solve(cost.view()).expect("valid cost"));
            });
            let reference = jv.solve(cost.view()).expect("valid cost").total_cost;
            let agrees = |c: f64| ((c - reference) / reference.abs()).abs() < 1e-9;
            let mut all_agree = true;
            let tcl = time_ms(if n >= 1024 { 3 } else { reps }, || {
                std::hint::black_box(classic.solve(cost.view()).expect("valid cost"));
            });
            all_agree &= agrees(classic.solve(cost.view()).expect("valid cost").total_cost);
            let hung = if n <= 512 && !(quick && n > 256) {
                let h = time_ms(if n >= 256 { 3 } else { reps }, || {
                    std::hint::black_box(Hungarian.solve(cost.view()).expect("valid cost"));
                });
                all_agree &= agrees(Hungarian.solve(cost.view()).expect("valid cost").total_cost);
                fmt(&h)
            } else {
                "-".into()
            };
            println!(
                "| {n} | {} | {} | {hung} | {:.3} | {all_agree} |",
                fmt(&t),
                fmt(&tcl),
                tc.median
            );
        }
    }
    if !std::env::args().any(|a| a == "--no-sinkhorn") {
        sinkhorn_table(quick, &mut rng);
    }
}

/// The default [`Jv`] alone on N(0, I) -> 8gaussians (D = 2), one fresh batch per repetition as in OT-CFM
/// training; the time includes nothing but the solve (the cost matrix is built before).
fn jv_table(sizes: &[usize], quick: bool, rng: &mut ChaCha8Rng) {
    println!(
        "\n### jv (default), squared-Euclidean cost, N(0, I) -> 8gaussians, D = 2, fresh batch each rep: ms\n"
    );
    println!("| n | batches | median | min | max |");
    println!("|---|---|---|---|---|");
    let jv = Jv::default();
    for &n in sizes {
        let batches = reps_or(if quick { 51 } else { 401 });
        let costs: Vec<Array2<f64>> = (0..batches)
            .map(|_| {
                let (x0, x1) = (normal(n, 2, rng), eight_gaussians(n, rng));
                squared_euclidean(x0.view(), x1.view()).expect("finite samples")
            })
            .collect();
        std::hint::black_box(jv.solve(costs[0].view()).expect("valid cost"));
        let mut samples: Vec<f64> = costs
            .iter()
            .map(|cost| {
                let t = Instant::now();
                std::hint::black_box(jv.solve(cost.view()).expect("valid cost"));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        println!(
            "| {n} | {batches} | {:.4} | {:.4} | {:.4} |",
            samples[batches / 2],
            samples[0],
            samples[batches - 1]
        );
    }
}

/// Moons as the data module draws them: two half circles with N(0, 0.1^2) noise, scaled by 3 and shifted by -1.
fn moons(n: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    let mut out = Array2::zeros((n, 2));
    for (i, mut row) in out.rows_mut().into_iter().enumerate() {
        let a = rng.random_range(0.0..std::f64::consts::PI);
        let (x, y) = if i % 2 == 0 {
            (a.cos(), a.sin())
        } else {
            (1.0 - a.cos(), 0.5 - a.sin())
        };
        let (e0, e1): (f64, f64) = (StandardNormal.sample(rng), StandardNormal.sample(rng));
        row[0] = 3.0 * (x + 0.1 * e0) - 1.0;
        row[1] = 3.0 * (y + 0.1 * e1) - 1.0;
    }
    out
}

/// Per fresh 8gaussians -> moons batch: cost matrix, exact assignment, SB-CFM's Sinkhorn (ms per batch).
fn minibatch_table(sizes: &[usize], quick: bool, rng: &mut ChaCha8Rng) {
    let jv = Jv::default();
    let sb = SinkhornConfig {
        reg: 0.02,
        max_iterations: list_arg::<usize>("--sb-cap").map_or(100, |c| c[0]),
        tolerance: 1e-3,
    };
    println!(
        "\n### one coupling per fresh batch, 8gaussians -> moons (bench train's setting): ms per batch\n"
    );
    println!(
        "| n | batches | cost matrix | jv | SB-CFM sinkhorn (reg 0.02, tol 1e-3, cap {}) | its iterations (median, max) | its marginal error (median) |",
        sb.max_iterations
    );
    println!("|---|---|---|---|---|---|---|");
    let no_sinkhorn = std::env::args().any(|a| a == "--no-sinkhorn");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for &n in sizes {
        let batches = reps_or(if quick { 51 } else { 301 });
        let pairs: Vec<_> = (0..batches)
            .map(|_| (eight_gaussians(n, rng), moons(n, rng)))
            .collect();
        let (mut tc, mut tj, mut ts, mut its, mut errors) = (vec![], vec![], vec![], vec![], vec![]);
        for (x0, x1) in &pairs {
            let t = Instant::now();
            let cost = std::hint::black_box(squared_euclidean(x0.view(), x1.view()).expect("finite"));
            tc.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            std::hint::black_box(jv.solve(cost.view()).expect("valid cost"));
            tj.push(t.elapsed().as_secs_f64() * 1e3);
            if no_sinkhorn {
                continue;
            }
            let t = Instant::now();
            let sol = std::hint::black_box(sinkhorn(cost.view(), &sb).expect("valid cost"));
            ts.push(t.elapsed().as_secs_f64() * 1e3);
            its.push(sol.iterations as f64);
            errors.push(sol.marginal_error);
        }
        if no_sinkhorn {
            (ts, its, errors) = (vec![f64::NAN], vec![f64::NAN], vec![f64::NAN]);
        }
        let max_its = its.iter().copied().fold(0.0, f64::max);
        println!(
            "| {n} | {batches} | {:.4} | {:.4} | {:.4} | {}, {} | {:.1e} |",
            median(tc),
            median(tj),
            median(ts),
            median(its),
            max_its,
            median(errors)
        );
    }
}

fn fmt(t: &Timing) -> String {
    format!("{:.3} [{:.3}-{:.3}]", t.median, t.min, t.max)
}
