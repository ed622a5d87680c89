//! Entropic optimal transport by Sinkhorn iterations, stabilised in the log domain.
//!
//! Problem (Cuturi 2013; Peyre and Cuturi, *Computational Optimal Transport*, 2019, ch. 4):
//! `OT_eps(a, b) = min_P <P, C> + eps KL(P | a b^T)` over plans with marginals `a`, `b`. Its solution is
//! `P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)` for dual potentials `f`, `g`, and at the optimum
//! `OT_eps(a, b) = <a, f> + <b, g>` (Feydy et al. 2019, "Interpolating between optimal transport and MMD
//! using Sinkhorn divergences", AISTATS, eq. 7; this is the convention of the Sinkhorn divergence).
//!
//! Numerics (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy regularized transport
//! problems", SIAM J. Sci. Comput.): the plan is kept as `diag(u) K diag(v)` with an absorbed kernel
//! `K_ij = exp((alpha_i + beta_j - C_ij) / eps)`. Iterations are plain matrix-vector scalings
//! (`u = a / K v`, `v = b / K^T u`, both from one pass over `K`, row by row); whenever `u` or `v` leave
//! `[1e-50, 1e50]` or a sum underflows, they are absorbed into `alpha`, `beta` and `K` is rebuilt by an exact
//! log-domain half-step (`alpha_i = eps ln a_i - eps LSE_j((beta_j - C_ij)/eps)`), so no entry overflows
//! and no row of `K` is all zero, even for `eps = 1e-3` on costs of order 1. `K` is stored in `f32`, which
//! halves the memory traffic of the passes (at n = 4096 it is 64 MiB, read once per iteration); every sum is
//! accumulated in `f64`. Its entries come from a polynomial `exp` accurate to `6e-9` relative, below `f32`'s
//! rounding. Epsilon scaling (geometric from `range(C)` to `reg`, ratios of at least 4) warm-starts each
//! regularisation from the previous one's potentials; it runs only when `range(C) / reg > 128`, because below
//! that going straight to `reg` took fewer passes (see `SCALING_MIN_RATIO`).
//! Convergence is measured after each row update, when the row marginal is exact, by the L1 error of the
//! column marginal; the column update then makes the columns exact. POT's `ot.sinkhorn` measures the same
//! quantity in the L2 norm every 10 iterations (`stopThr = 1e-9`); in L1 our default `1e-6` is comparable
//! for n in the thousands. Every loop is bounded by `max_iterations`. The hot loops use AVX-512, or else AVX2,
//! with FMA where the CPU has them (chosen at run time); results differ from the plain x86-64 build by
//! rounding only (the two vector builds sum in the same lanes and order and agree exactly).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

use crate::cost::check_finite;
use crate::error::{CouplingError, Result};
use crate::fastexp::{exp, exp_for_f32};
use crate::simd::madd;

/// Matrix size (`rows * cols`) from which the passes over the kernel run on rayon's pool. A pass over 256 x 256
/// entries takes about 20 us on one core, no more than handing it to the pool and waking its workers; on
/// `bench_ot` (2 cores, idle) the parallel passes were no faster at n = 256 and 384 and twice as fast from 512
/// on. Below it nothing wakes the pool, which matters on the training producer thread: SB-CFM's 256 x 256
/// Sinkhorn there shared the cores with the trainer and spent a quarter of its time in thread hand-offs
/// when the threshold was 2^15.
const PARALLEL_ENTRIES: usize = 1 << 18;
/// Scalings outside `[1/ABSORB, ABSORB]` are absorbed into the potentials.
const ABSORB: f64 = 1e50;
/// Ratio of consecutive regularisations in the epsilon-scaling schedule (each stage rebuilds `K`, which
/// costs about 10 iterations, so few stages with few iterations each won in `bench_ot`).
const EPS_RATIO: f64 = 0.25;
/// Iterations per intermediate regularisation of the epsilon-scaling schedule.
const STAGE_ITERATIONS: usize = 8;
/// Largest `range(C) / reg` solved without epsilon scaling. In `bench_ot` (n = 1024 and 4096, costs scaled to
/// `[0, 1]`) going straight to `reg` took fewer passes over `K` up to `range / reg` of about 150: at 20 (reg
/// 0.05) 14 passes against 3 rebuilds and 29 passes, at 100 69 against 4 rebuilds and 80; at 250 the stages
/// paid off slightly (rebuilds plus 151 passes against 166), at 1000 clearly (593 against 733).
const SCALING_MIN_RATIO: f64 = 128.0;

/// Settings of the Sinkhorn solver.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkhornConfig {
    /// Entropic regularisation `eps` (> 0), in the units of the cost.
    pub reg: f64,
    /// Cap on iterations at the final `reg` (each iteration is one pass over the kernel).
    pub max_iterations: usize,
    /// Stop when the L1 error of the column marginal, measured after a row update, falls below this (> 0).
    pub tolerance: f64,
}

impl Default for SinkhornConfig {
    /// `reg = 0.05` (torchcfm's default), 1000 iterations, tolerance `1e-6`.
    fn default() -> Self {
        SinkhornConfig {
            reg: 0.05,
            max_iterations: 1000,
            tolerance: 1e-6,
        }
    }
}

impl SinkhornConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.reg > 0.0 && self.reg.is_finite()) {
            return Err(CouplingError::InvalidParameter {
                name: "reg",
                value: self.reg,
                allowed: "finite and > 0",
            });
        }
        if !(self.tolerance > 0.0 && self.tolerance.is_finite()) {
            return Err(CouplingError::InvalidParameter {
                name: "tolerance",
                value: self.tolerance,
                allowed: "finite and > 0",
            });
        }
        if self.max_iterations == 0 {
            return Err(CouplingError::InvalidParameter {
                name: "max_iterations",
                value: 0.0,
                allowed: ">= 1",
            });
        }
        Ok(())
    }
}

/// The entropic plan and its dual potentials.
#[derive(Debug, Clone)]
pub struct SinkhornSolution {
    /// The transport plan `P` (sums to 1, marginals `a` and `b` up to `marginal_error`).
    pub plan: Array2<f64>,
    /// Row potential `f` (`P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)`).
    pub f: Array1<f64>,
    /// Column potential `g`.
    pub g: Array1<f64>,
    /// Iterations at the final regularisation.
    pub iterations: usize,
    /// L1 error of the column marginal at the last check (after the row update; see the module docs).
    pub marginal_error: f64,
    /// Whether `marginal_error <= tolerance`.
    pub converged: bool,
}

impl SinkhornSolution {
    /// The dual value `<a, f> + <b, g>`, equal to `OT_eps(a, b)` at convergence.
    pub fn dual_value(&self, a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
        a.dot(&self.f) + b.dot(&self.g)
    }

    /// The transport cost `<P, C>` of the plan (no entropy term).
    pub fn transport_cost(&self, cost: ArrayView2<f64>) -> f64 {
        ndarray::Zip::from(&self.plan)
            .and(cost)
            .fold(0.0, |acc, &p, &c| acc + p * c)
    }
}

/// Sinkhorn with uniform marginals `a = 1/n`, `b = 1/m`.
pub fn sinkhorn(cost: ArrayView2<f64>, config: &SinkhornConfig) -> Result<SinkhornSolution> {
    let (rows, cols) = cost.dim();
    let a = Array1::from_elem(rows, 1.0 / rows.max(1) as f64);
    let b = Array1::from_elem(cols, 1.0 / cols.max(1) as f64);
    sinkhorn_weighted(cost, a.view(), b.view(), config)
}

/// The uniform weights `1/n` of `n` points.
pub fn uniform(n: usize) -> Array1<f64> {
    Array1::from_elem(n, 1.0 / n as f64)
}

fn validate_weights(w: ArrayView1<f64>, what: &'static str) -> Result<()> {
    let sum = w.sum();
    if !w.iter().all(|&x| x > 0.0 && x.is_finite()) || (sum - 1.0).abs() > 1e-9 {
        return Err(CouplingError::InvalidWeights { what, sum });
    }
    Ok(())
}

/// Sinkhorn with marginals `a` (rows) and `b` (columns): positive, each summing to 1.
pub fn sinkhorn_weighted(
    cost: ArrayView2<f64>,
    a: ArrayView1<f64>,
    b: ArrayView1<f64>,
    config: &SinkhornConfig,
) -> Result<SinkhornSolution> {
    config.validate()?;
    let (rows, cols) = cost.dim();
    if rows == 0 || cols == 0 {
        return Err(CouplingError::Empty {
            what: "cost matrix",
            rows,
            cols,
        });
    }
    if a.len() != rows {
        return Err(CouplingError::SizeMismatch {
            what: "source weights",
            expected: rows,
            found: a.len(),
        });
    }
    if b.len() != cols {
        return Err(CouplingError::SizeMismatch {
            what: "target weights",
            expected: cols,
            found: b.len(),
        });
    }
    validate_weights(a, "source")?;
    validate_weights(b, "target")?;
    let cost = cost.as_standard_layout();
    let c = cost.as_slice().expect("standard layout");
    let Some((lo, hi)) = finite_range(c) else {
        check_finite(cost.view(), "cost matrix")?;
        unreachable!("finite_range fails only on a non-finite entry")
    };
    let mut state = State::new(
        c,
        rows,
        cols,
        a.as_slice().map_or_else(|| a.to_vec(), <[f64]>::to_vec),
        b.to_vec(),
    );

    // Epsilon scaling from the cost range down to `reg` in `k = floor(log_4(range / reg))` equal ratios
    // (at least 4 each), so that no stage is a rebuild for a tiny change of `eps`; none at all when
    // `range / reg <= SCALING_MIN_RATIO`.
    let range = (hi - lo).max(config.reg);
    let stages = if range / config.reg <= SCALING_MIN_RATIO {
        0
    } else {
        ((range / config.reg).ln() / EPS_RATIO.recip().ln())
            .floor()
            .max(0.0) as usize
    };
    let ratio = if stages > 0 {
        (config.reg / range).powf(1.0 / stages as f64)
    } else {
        1.0
    };
    for stage in 0..=stages {
        let last = stage == stages;
        let eps_now = if last {
            config.reg
        } else {
            range * ratio.powi(stage as i32)
        };
        state.set_eps(eps_now, stage == 0);
        let budget = if last {
            config.max_iterations
        } else {
            STAGE_ITERATIONS
        };
        let tol = if last {
            config.tolerance
        } else {
            config.tolerance.max(1e-2)
        };
        let (iterations, error) = state.iterate(budget, tol);
        if last {
            let (plan, f, g) = state.finish();
            return Ok(SinkhornSolution {
                plan,
                f,
                g,
                iterations,
                marginal_error: error,
                converged: error <= config.tolerance,
            });
        }
    }
    unreachable!("the last stage returns")
}

/// `(min, max)` of a non-empty slice in one pass (on rayon's pool for large slices), or `None` if an entry
/// is NaN or infinite (`x * 0` is NaN exactly then, and the sum of those products stays NaN).
fn finite_range(c: &[f64]) -> Option<(f64, f64)> {
    let chunk = |c: &[f64]| {
        let (lo, hi) = crate::assignment::min_max_slice(c);
        // Independent lanes: a single running sum would be one add at a time.
        let mut nan = [0.0; LANES];
        let chunks = c.chunks_exact(LANES);
        let rest: f64 = chunks.remainder().iter().map(|&x| x * 0.0).sum();
        for x in chunks {
            for lane in 0..LANES {
                nan[lane] += x[lane] * 0.0;
            }
        }
        (lo, hi, nan.iter().sum::<f64>() + rest)
    };
    let merge = |x: (f64, f64, f64), y: (f64, f64, f64)| (x.0.min(y.0), x.1.max(y.1), x.2 + y.2);
    let (lo, hi, nan) = if c.len() >= PARALLEL_ENTRIES {
        c.par_chunks(PARALLEL_ENTRIES / 4)
            .map(chunk)
            .reduce(|| (f64::INFINITY, f64::NEG_INFINITY, 0.0), merge)
    } else {
        chunk(c)
    };
    (nan == 0.0).then_some((lo, hi))
}

/// One row of the kernel rebuild: (kernel row, cost row), (alpha_i, (u_i, a_i)).
type RowItem<'a> = ((&'a mut [f32], &'a [f64]), (&'a mut f64, (&'a mut f64, &'a f64)));

/// Iteration state: `P = diag(u) K diag(v)`, `K_ij = exp((alpha_i + beta_j - C_ij)/eps)`.
struct State<'c> {
    c: &'c [f64],
    rows: usize,
    cols: usize,
    a: Vec<f64>,
    b: Vec<f64>,
    ln_a: Vec<f64>,
    ln_b: Vec<f64>,
    eps: f64,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    u: Vec<f64>,
    v: Vec<f64>,
    /// Single precision: it halves the memory traffic of each pass; sums are accumulated in `f64`.
    kernel: Vec<f32>,
    col_acc: Vec<f64>,
}

impl<'c> State<'c> {
    fn new(c: &'c [f64], rows: usize, cols: usize, a: Vec<f64>, b: Vec<f64>) -> Self {
        State {
            c,
            rows,
            cols,
            ln_a: a.iter().map(|x| x.ln()).collect(),
            ln_b: b.iter().map(|x| x.ln()).collect(),
            a,
            b,
            eps: 1.0,
            alpha: vec![0.0; rows],
            beta: vec![0.0; cols],
            u: vec![1.0; rows],
            v: vec![1.0; cols],
            kernel: vec![0.0f32; rows * cols],
            col_acc: vec![0.0; cols],
        }
    }

    fn parallel(&self) -> bool {
        self.rows * self.cols >= PARALLEL_ENTRIES
    }

    /// Switches to a new `eps`, keeping the potentials: absorbs the scalings and rebuilds `K`.
    fn set_eps(&mut self, eps: f64, first: bool) {
        if !first {
            self.absorb();
        }
        self.eps = eps;
        self.rebuild();
    }

    /// Moves `eps ln u`, `eps ln v` into `alpha`, `beta`. Columns whose `v` is not a positive finite number
    /// (their sum underflowed) get an exact log-domain column update instead.
    fn absorb(&mut self) {
        let eps = self.eps;
        for (al, &u) in self.alpha.iter_mut().zip(&self.u) {
            if u > 0.0 && u.is_finite() {
                *al += eps * u.ln();
            }
        }
        for j in 0..self.cols {
            let v = self.v[j];
            if v > 0.0 && v.is_finite() {
                self.beta[j] += eps * v.ln();
            } else {
                // beta_j = eps ln b_j - eps LSE_i((alpha_i - C_ij)/eps).
                let t = |i: usize| (self.alpha[i] - self.c[i * self.cols + j]) / eps;
                let m = (0..self.rows).map(t).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..self.rows).map(|i| exp(t(i) - m)).sum();
                self.beta[j] = eps * self.ln_b[j] - eps * (m + s.ln());
            }
        }
        self.u.fill(1.0);
        self.v.fill(1.0);
    }

    /// Exact row half-step in the log domain, `alpha_i = eps ln a_i - eps LSE_j((beta_j - C_ij)/eps)`,
    /// writing `K` at the same time with one `exp` per entry: `alpha_i` is set to the row's shift
    /// `-max_j (beta_j - C_ij)`, so each row of `K` has largest entry 1, and the normalisation
    /// `a_i / sum_j K_ij` goes into `u_i`. Afterwards `diag(u) K` has row sums `a_i` exactly.
    fn rebuild(&mut self) {
        let (eps, cols, parallel) = (self.eps, self.cols, self.parallel());
        let inv_eps = 1.0 / eps;
        let (beta, c, a) = (&self.beta, self.c, &self.a);
        let row_update = |((krow, crow), (alpha, (u, &a_i))): RowItem<'_>| {
            let m = max_difference(beta, crow);
            let s = exp_row(beta, crow, m, inv_eps, krow);
            *alpha = -m;
            *u = a_i / s;
        };
        if parallel {
            self.kernel
                .par_chunks_mut(cols)
                .zip(c.par_chunks(cols))
                .zip(
                    self.alpha
                        .par_iter_mut()
                        .zip(self.u.par_iter_mut().zip(a.par_iter())),
                )
                .for_each(row_update);
        } else {
            let kernel = self.kernel.chunks_mut(cols).zip(c.chunks(cols));
            kernel
                .zip(self.alpha.iter_mut().zip(self.u.iter_mut().zip(a.iter())))
                .for_each(row_update);
        }
        self.v.fill(1.0);
    }

    /// Up to `budget` iterations; returns the iterations done and the last column-marginal L1 error.
    fn iterate(&mut self, budget: usize, tolerance: f64) -> (usize, f64) {
        let mut error = f64::INFINITY;
        for iteration in 1..=budget {
            self.one_pass();
            // After the row update the rows are exact; the column marginal of diag(u) K diag(v) measures
            // convergence. Then the column update and the stability check.
            let mut stable = true;
            error = 0.0;
            for ((v, &acc), &b) in self.v.iter_mut().zip(&self.col_acc).zip(&self.b) {
                error += (*v * acc - b).abs();
                *v = b / acc;
                stable &= *v > 1.0 / ABSORB && *v < ABSORB;
            }
            if !error.is_finite() {
                error = f64::INFINITY;
            }
            stable &= self.u.iter().all(|&u| u > 1.0 / ABSORB && u < ABSORB);
            if !stable {
                // The measured error belongs to the state before absorption; measure again next pass.
                self.absorb();
                self.rebuild();
                continue;
            }
            if error <= tolerance {
                return (iteration, error);
            }
        }
        (budget, error)
    }

    /// One pass over `K`: for each row, `s_i = (K v)_i`, the new `u_i = a_i / s_i`, and the accumulation of
    /// `K^T u` into `col_acc` while the row is in cache.
    fn one_pass(&mut self) {
        let cols = self.cols;
        let (v, a) = (&self.v, &self.a);
        let row_work = |acc: &mut [f64], krow: &[f32], u: &mut f64, a_i: f64| {
            let s = dot(krow, v);
            *u = a_i / s;
            let ui = *u;
            if ui.is_finite() {
                axpy(acc, krow, ui);
            }
        };
        if self.parallel() {
            let rows_per_task = (self.rows / (4 * rayon::current_num_threads())).max(8);
            let acc = self
                .kernel
                .par_chunks(cols * rows_per_task)
                .zip(self.u.par_chunks_mut(rows_per_task))
                .zip(a.par_chunks(rows_per_task))
                .fold(
                    || vec![0.0; cols],
                    |mut acc, ((kblock, ublock), ablock)| {
                        for ((krow, u), &a_i) in kblock.chunks(cols).zip(ublock.iter_mut()).zip(ablock) {
                            row_work(&mut acc, krow, u, a_i);
                        }
                        acc
                    },
                )
                .reduce(
                    || vec![0.0; cols],
                    |mut x, y| {
                        x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
                        x
                    },
                );
            self.col_acc = acc;
        } else {
            self.col_acc.fill(0.0);
            let mut acc = std::mem::take(&mut self.col_acc);
            for ((krow, u), &a_i) in self.kernel.chunks(cols).zip(self.u.iter_mut()).zip(a) {
                row_work(&mut acc, krow, u, a_i);
            }
            self.col_acc = acc;
        }
    }

    /// The plan `u_i K_ij v_j` (in the kernel's buffer) and the potentials in Feydy's convention.
    fn finish(self) -> (Array2<f64>, Array1<f64>, Array1<f64>) {
        let (u, v, cols) = (&self.u, &self.v, self.cols);
        let mut plan = Array2::zeros((self.rows, cols));
        let fill = |((mut prow, krow), &ui): ((ndarray::ArrayViewMut1<f64>, &[f32]), &f64)| {
            prow.iter_mut()
                .zip(krow)
                .zip(v)
                .for_each(|((p, &k), &vj)| *p = f64::from(k) * ui * vj);
        };
        if self.parallel() {
            // Parallel also spreads the first-touch page faults of the new buffer.
            plan.axis_iter_mut(ndarray::Axis(0))
                .into_par_iter()
                .zip(self.kernel.par_chunks(cols))
                .zip(u.par_iter())
                .for_each(fill);
        } else {
            plan.rows_mut()
                .into_iter()
                .zip(self.kernel.chunks(cols))
                .zip(u)
                .for_each(fill);
        }
        let eps = self.eps;
        let f = (0..self.rows)
            .map(|i| self.alpha[i] + eps * self.u[i].ln() - eps * self.ln_a[i])
            .collect();
        let g = (0..self.cols)
            .map(|j| self.beta[j] + eps * self.v[j].ln() - eps * self.ln_b[j])
            .collect();
        (plan, f, g)
    }
}

/// Lanes of the manually split reductions: floating-point sums are not reassociated by the compiler, so a
/// plain `.sum()` runs one add at a time; independent lanes let it vectorise and pipeline (16 `f64` lanes are
/// four AVX2 registers, enough to hide the latency of the fused multiply-add).
const LANES: usize = 16;

/// `max_j (beta_j - c_j)`.
fn max_difference(beta: &[f64], crow: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(result) = avx2::max_difference(beta, crow) {
        return result;
    }
    max_difference_generic(beta, crow)
}

#[inline(always)]
fn max_difference_generic(beta: &[f64], crow: &[f64]) -> f64 {
    let mut m = [f64::NEG_INFINITY; LANES];
    let (b_chunks, c_chunks) = (beta.chunks_exact(LANES), crow.chunks_exact(LANES));
    let (b_rest, c_rest) = (b_chunks.remainder(), c_chunks.remainder());
    for (b, c) in b_chunks.zip(c_chunks) {
        for lane in 0..LANES {
            let t = b[lane] - c[lane];
            m[lane] = if t > m[lane] { t } else { m[lane] };
        }
    }
    let mut best = m.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    for (b, c) in b_rest.iter().zip(c_rest) {
        best = best.max(b - c);
    }
    best
}

/// Writes `k_j = exp((beta_j - c_j - shift) * inv_eps)` (as `f32`) and returns their sum (in `f64`).
fn exp_row(beta: &[f64], crow: &[f64], shift: f64, inv_eps: f64, krow: &mut [f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(result) = avx2::exp_row(beta, crow, shift, inv_eps, krow) {
        return result;
    }
    exp_row_generic::<false>(beta, crow, shift, inv_eps, krow)
}

/// Two plain loops on purpose: the `exp` loop vectorises only without a reduction in its body. The entries
/// are stored as `f32`, so the `exp` needs only `f32` accuracy ([`exp_for_f32`]).
#[inline(always)]
fn exp_row_generic<const FMA: bool>(
    beta: &[f64],
    crow: &[f64],
    shift: f64,
    inv_eps: f64,
    krow: &mut [f32],
) -> f64 {
    for ((k, &b), &c) in krow.iter_mut().zip(beta).zip(crow) {
        *k = exp_for_f32::<FMA>((b - c - shift) * inv_eps) as f32;
    }
    let mut s = [0.0; LANES];
    let chunks = krow.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|&k| f64::from(k)).sum();
    for kc in chunks {
        for lane in 0..LANES {
            s[lane] += f64::from(kc[lane]);
        }
    }
    s.iter().sum::<f64>() + rest
}

/// `sum_j k_j v_j` with `f32` kernel entries, accumulated in `f64`.
fn dot(k: &[f32], v: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(result) = avx2::dot(k, v) {
        return result;
    }
    dot_generic::<false>(k, v)
}

#[inline(always)]
fn dot_generic<const FMA: bool>(k: &[f32], v: &[f64]) -> f64 {
    let mut s = [0.0; LANES];
    let (k_chunks, v_chunks) = (k.chunks_exact(LANES), v.chunks_exact(LANES));
    let (k_rest, v_rest) = (k_chunks.remainder(), v_chunks.remainder());
    for (kc, vc) in k_chunks.zip(v_chunks) {
        for lane in 0..LANES {
            s[lane] = madd::<FMA>(f64::from(kc[lane]), vc[lane], s[lane]);
        }
    }
    let mut total: f64 = s.iter().sum();
    for (&kj, &vj) in k_rest.iter().zip(v_rest) {
        total = madd::<FMA>(f64::from(kj), vj, total);
    }
    total
}

/// `acc_j += k_j * x` with `f32` kernel entries.
fn axpy(acc: &mut [f64], k: &[f32], x: f64) {
    #[cfg(target_arch = "x86_64")]
    if avx2::axpy(acc, k, x).is_some() {
        return;
    }
    axpy_generic::<false>(acc, k, x);
}

#[inline(always)]
fn axpy_generic<const FMA: bool>(acc: &mut [f64], k: &[f32], x: f64) {
    for (a, &kj) in acc.iter_mut().zip(k) {
        *a = madd::<FMA>(f64::from(kj), x, *a);
    }
}

/// The loops above compiled for AVX-512 (16 `f64` lanes are two 512-bit registers) where the CPU has it, else
/// for AVX2 + FMA; each entry point returns `None` where the CPU has neither. Both sum in the same lanes and
/// order with fused multiply-adds, so they give the same results.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use crate::simd::{avx2_fma, avx512};

    /// Wraps each generic loop in one function per instruction set.
    macro_rules! compiled_for {
        ($features:literal, $name:ident) => {
            mod $name {
                #[target_feature(enable = $features)]
                pub(super) fn max_difference(beta: &[f64], crow: &[f64]) -> f64 {
                    super::super::max_difference_generic(beta, crow)
                }

                #[target_feature(enable = $features)]
                pub(super) fn exp_row(
                    beta: &[f64],
                    crow: &[f64],
                    shift: f64,
                    inv_eps: f64,
                    krow: &mut [f32],
                ) -> f64 {
                    super::super::exp_row_generic::<true>(beta, crow, shift, inv_eps, krow)
                }

                #[target_feature(enable = $features)]
                pub(super) fn dot(k: &[f32], v: &[f64]) -> f64 {
                    super::super::dot_generic::<true>(k, v)
                }

                #[target_feature(enable = $features)]
                pub(super) fn axpy(acc: &mut [f64], k: &[f32], x: f64) {
                    super::super::axpy_generic::<true>(acc, k, x);
                }
            }
        };
    }
    compiled_for!("avx2,fma", with_avx2);
    compiled_for!("avx512f,avx2,fma", with_avx512);

    /// Calls `$f` of the AVX-512 build where the CPU has AVX-512, else of the AVX2 + FMA build where it has
    /// those, else returns `None`.
    macro_rules! dispatch {
        ($f:ident($($arg:expr),*)) => {
            if avx512() {
                // SAFETY: compiled for AVX-512F, AVX2 and FMA, which `avx512()` confirmed this CPU has.
                Some(unsafe { with_avx512::$f($($arg),*) })
            } else {
                // SAFETY: compiled for AVX2 + FMA, which `avx2_fma()` confirmed this CPU has.
                avx2_fma().then(|| unsafe { with_avx2::$f($($arg),*) })
            }
        };
    }

    pub(super) fn max_difference(beta: &[f64], crow: &[f64]) -> Option<f64> {
        dispatch!(max_difference(beta, crow))
    }

    pub(super) fn exp_row(
        beta: &[f64],
        crow: &[f64],
        shift: f64,
        inv_eps: f64,
        krow: &mut [f32],
    ) -> Option<f64> {
        dispatch!(exp_row(beta, crow, shift, inv_eps, krow))
    }

    pub(super) fn dot(k: &[f32], v: &[f64]) -> Option<f64> {
        dispatch!(dot(k, v))
    }

    pub(super) fn axpy(acc: &mut [f64], k: &[f32], x: f64) -> Option<()> {
        dispatch!(axpy(acc, k, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in `[0, 1)` (a linear congruential generator; no `rand` needed here).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    }

    /// The dispatched loops (AVX2 + FMA on CPUs that have them) against the plain build, on lengths that
    /// leave remainders: equal up to the rounding that fusing removes.
    #[test]
    fn dispatched_loops_match_the_plain_ones() {
        for n in [1, 7, 16, 33, 1000] {
            let beta = values(n, 1);
            let crow = values(n, 2);
            let eps = 0.05;
            let shift = max_difference_generic(&beta, &crow);
            assert_eq!(max_difference(&beta, &crow), shift);
            let (mut k_plain, mut k_fast) = (vec![0.0f32; n], vec![0.0f32; n]);
            let s_plain = exp_row_generic::<false>(&beta, &crow, shift, 1.0 / eps, &mut k_plain);
            let s_fast = exp_row(&beta, &crow, shift, 1.0 / eps, &mut k_fast);
            assert!(
                (s_plain - s_fast).abs() <= 1e-6 * s_plain,
                "{s_plain} vs {s_fast}"
            );
            for (j, (&p, &f)) in k_plain.iter().zip(&k_fast).enumerate() {
                let exact = ((beta[j] - crow[j] - shift) / eps).exp();
                assert!((f64::from(f) - exact).abs() <= 1.2e-7 * exact, "{f} vs {exact}");
                assert!((p - f).abs() <= 1.2e-7 * p, "{p} vs {f}");
            }
            let v = values(n, 3);
            let d_plain = dot_generic::<false>(&k_plain, &v);
            assert!((dot(&k_plain, &v) - d_plain).abs() <= 1e-14 * d_plain.max(1e-300));
            let (mut acc_plain, mut acc_fast) = (values(n, 4), values(n, 4));
            axpy_generic::<false>(&mut acc_plain, &k_plain, 0.3);
            axpy(&mut acc_fast, &k_plain, 0.3);
            for (p, f) in acc_plain.iter().zip(&acc_fast) {
                assert!((p - f).abs() <= 1e-15 * p.abs().max(1.0));
            }
        }
    }

    #[test]
    fn finite_range_finds_extremes_and_refuses_non_finite() {
        let big: Vec<f64> = values(PARALLEL_ENTRIES * 3 + 5, 9)
            .iter()
            .map(|x| x - 0.5)
            .collect();
        let (lo, hi) = finite_range(&big).expect("finite");
        assert_eq!(lo, big.iter().copied().fold(f64::INFINITY, f64::min));
        assert_eq!(hi, big.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut small = values(10, 5);
            small[7] = bad;
            assert_eq!(finite_range(&small), None);
            let mut large = big.clone();
            large[PARALLEL_ENTRIES + 1] = bad;
            assert_eq!(finite_range(&large), None);
        }
    }
}
