//! [`Jv`]: a Jonker-Volgenant linear assignment solver on `f64` costs.
//!
//! R. Jonker and A. Volgenant, "A shortest augmenting path algorithm for dense and sparse linear assignment
//! problems", Computing 38 (1987) 325-340. Column prices `v_j` are kept so that every assigned row `i`
//! sits on a column minimising its reduced cost `C_ij - v_j`; a free row is then matched along a shortest
//! augmenting path in reduced costs (Dijkstra, all reduced costs non-negative). Square problems are
//! initialised as in the paper:
//! 1. column reduction: `v_j = min_i C_ij`, each column's arg-min row takes it if still free;
//! 2. reduction transfer: a row holding one column lowers that column's price by the row's second-smallest
//!    reduced cost, which keeps it optimal for the row and makes it cheaper for others;
//! 3. augmenting row reduction (two passes): a free row takes its best column and lowers its price down to
//!    the row's second-best reduced cost, evicting the previous owner, who bids in turn. This step can cycle
//!    with tiny decrements on floating-point ties, so it runs under a work budget of
//!    `ARR_BUDGET_PER_ROW * n` bids; stopping it early is always sound, the shortest-path phase finishes.
//! 4. shortest augmenting paths from each remaining free row (Dijkstra on reduced costs), then updating the
//!    prices of the reached columns by `v_j += d_j - d_min`. The paper walks a list of the columns not yet
//!    reached (`collist`, with its `todo`/`ready` split); here each step is one branch-free pass over all
//!    columns, reached ones masked by an infinite offset, which relaxes the distances and finds the next
//!    closest column together in 8 (AVX-512) or 4 (AVX2) lanes. On `bench_ot --minibatch` (n = 256) that
//!    made this phase about 6x faster than the list walk, whose indirect loads and data-dependent branches
//!    did not vectorise.
//!
//! Rectangular problems (`rows < cols`) skip the initialisation and run step 4 from `v = 0`: prices then only
//! decrease on assigned columns, so unassigned columns keep `v_j = 0`, the complementary-slackness condition of
//! the rectangular problem (its dual has `v_j <= 0`), and the result is optimal.
//!
//! Buffers are flat `Vec`s in a reusable [`JvWorkspace`]; the search loops allocate nothing. Each phase
//! terminates: step 3 by its budget, step 4 after at most `n_cols` column scans per free row.

use std::sync::Mutex;

use ndarray::ArrayView2;

use super::{Assignment, AssignmentSolver, validate_cost};
use crate::error::{CouplingError, Result};

const NONE: usize = usize::MAX;

/// Bids per row the augmenting row reduction may spend before handing over to shortest paths.
const ARR_BUDGET_PER_ROW: usize = 16;

/// Reusable buffers of [`Jv`]: pass one to [`Jv::solve_with`] to solve many problems without allocation.
#[derive(Debug, Default, Clone)]
pub struct JvWorkspace {
    cost: Vec<f64>,
    v: Vec<f64>,
    dist: Vec<f64>,
    pred: Vec<usize>,
    reached: Vec<usize>,
    row_sol: Vec<usize>,
    col_sol: Vec<usize>,
    free: Vec<usize>,
    matches: Vec<u32>,
    col_min: Vec<f64>,
    col_argmin: Vec<usize>,
    blocked: Vec<f64>,
    auction: super::auction::AuctionState,
}

impl JvWorkspace {
    fn reset(&mut self, rows: usize, cols: usize) {
        self.v.clear();
        self.v.resize(cols, 0.0);
        self.dist.resize(cols, 0.0);
        self.pred.resize(cols, NONE);
        self.reached.resize(cols, 0);
        self.row_sol.clear();
        self.row_sol.resize(rows, NONE);
        self.col_sol.clear();
        self.col_sol.resize(cols, NONE);
        self.free.clear();
    }
}

/// How [`Jv`] finds its first prices and assignment on square problems.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JvInit {
    /// The paper's column reduction, reduction transfer and augmenting row reduction.
    Classic,
    /// Epsilon-scaled auction prices (single precision), then exact tightness in `f64`: on geometric
    /// costs with large displacements (noise to 8gaussians) the classic initialisation leaves most rows
    /// free and this one few, which made it 5-10x faster in `bench_ot`.
    #[default]
    Auction,
}

/// Settings of [`Jv`]; the auction fields apply to [`JvInit::Auction`] only.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JvConfig {
    /// Initialisation of square problems.
    pub init: JvInit,
    /// First auction epsilon, as a fraction of the cost range.
    pub eps_start: f64,
    /// Last auction epsilon, as a fraction of `range / n`.
    pub eps_end: f64,
    /// Ratio between consecutive epsilons (> 1).
    pub eps_ratio: f64,
    /// Bids per row each auction phase may spend.
    pub bids_per_row: usize,
}

impl Default for JvConfig {
    /// Tuned on `bench_ot` (n = 256 and 1024, D = 2 and 784).
    fn default() -> Self {
        JvConfig {
            init: JvInit::Auction,
            eps_start: 0.1,
            eps_end: 0.05,
            eps_ratio: 4.0,
            bids_per_row: 64,
        }
    }
}

impl JvConfig {
    /// Checks the ranges of the auction settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, value: f64, allowed| Err(CouplingError::InvalidParameter { name, value, allowed });
        if !(self.eps_start > 0.0 && self.eps_start.is_finite()) {
            return bad("eps_start", self.eps_start, "finite and > 0");
        }
        if !(self.eps_end > 0.0 && self.eps_end.is_finite()) {
            return bad("eps_end", self.eps_end, "finite and > 0");
        }
        if !(self.eps_ratio > 1.0 && self.eps_ratio.is_finite()) {
            return bad("eps_ratio", self.eps_ratio, "finite and > 1");
        }
        if self.bids_per_row == 0 {
            return bad("bids_per_row", 0.0, ">= 1");
        }
        Ok(())
    }
}

/// Square problems below this size use the classic initialisation (the auction's phases cost more there).
const AUCTION_MIN_SIZE: usize = 24;

/// Jonker-Volgenant solver; keeps one workspace for reuse across calls (taken if no other thread holds it).
#[derive(Debug, Default)]
pub struct Jv {
    config: JvConfig,
    workspace: Mutex<JvWorkspace>,
}

impl Clone for Jv {
    fn clone(&self) -> Self {
        Jv {
            config: self.config,
            workspace: Mutex::default(),
        }
    }
}

impl Jv {
    /// A solver with the given settings, validated.
    pub fn new(config: JvConfig) -> Result<Self> {
        config.validate()?;
        Ok(Jv {
            config,
            workspace: Mutex::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &JvConfig {
        &self.config
    }

    /// Solves with the caller's workspace.
    pub fn solve_with(&self, cost: ArrayView2<f64>, workspace: &mut JvWorkspace) -> Result<Assignment> {
        validate_cost(cost)?;
        let (rows, cols) = cost.dim();
        let mut flat = std::mem::take(&mut workspace.cost);
        let c: &[f64] = match cost.as_slice() {
            Some(slice) => slice,
            None => {
                flat.clear();
                flat.extend(cost.iter().copied());
                &flat
            }
        };
        workspace.reset(rows, cols);
        if rows == cols && (self.config.init == JvInit::Classic || rows < AUCTION_MIN_SIZE) {
            init_square(c, rows, workspace);
        } else if rows == cols {
            init_auction(c, rows, &self.config, workspace);
        } else {
            workspace.free.extend(0..rows);
        }
        augment_free_rows(c, cols, workspace);
        let row_to_col = workspace.row_sol.clone();
        workspace.cost = flat;
        Ok(Assignment::from_cost(cost, row_to_col))
    }

    /// The column prices `v` of the last solve with `workspace` (dual variables; `u_i = C_{i, sigma(i)} - v_{sigma(i)}`).
    pub fn column_prices(workspace: &JvWorkspace) -> &[f64] {
        &workspace.v
    }
}

impl AssignmentSolver for Jv {
    fn solve(&self, cost: ArrayView2<f64>) -> Result<Assignment> {
        match self.workspace.try_lock() {
            Ok(mut workspace) => self.solve_with(cost, &mut workspace),
            Err(_) => self.solve_with(cost, &mut JvWorkspace::default()),
        }
    }

    fn name(&self) -> &'static str {
        "jv (f64)"
    }
}

/// Initialisation from auction prices: epsilon-scaled auction, then exact tightness restored in `f64`.
///
/// The auction leaves each row within `eps` of its best reduced cost. Raising the price `v_j` of a row's
/// column by that row's slack makes the row tight; it can only spoil rows already visited whose best
/// column was `j`, so two sweeps settle almost all rows, and a final check frees every row that is not
/// exactly tight. The shortest-path phase then needs the invariant only for assigned rows.
fn init_auction(c: &[f64], n: usize, config: &JvConfig, ws: &mut JvWorkspace) {
    let (lo, hi) = super::min_max_slice(c);
    let range = hi - lo;
    if range <= 0.0 {
        // All costs equal: every permutation is optimal.
        for i in 0..n {
            ws.row_sol[i] = i;
            ws.col_sol[i] = i;
        }
        return;
    }
    let mut st = std::mem::take(&mut ws.auction);
    st.run(
        c,
        n,
        lo,
        range * config.eps_start,
        range * config.eps_end / n as f64,
        config.eps_ratio,
        config.bids_per_row,
    );
    for (v, &p) in ws.v.iter_mut().zip(&st.price) {
        *v = -f64::from(p);
    }
    ws.row_sol.copy_from_slice(&st.row_sol);
    ws.col_sol.copy_from_slice(&st.col_sol);
    ws.auction = st;
    // Make every assigned row tight by raising its column's price v (lowering the auction price).
    for _ in 0..2 {
        for i in 0..n {
            let j = ws.row_sol[i];
            if j == NONE {
                continue;
            }
            let row = &c[i * n..(i + 1) * n];
            let m = min_reduced(row, &ws.v);
            if row[j] - ws.v[j] > m {
                ws.v[j] = row[j] - m;
            }
        }
    }
    ws.free.clear();
    for i in 0..n {
        let j = ws.row_sol[i];
        let row = &c[i * n..(i + 1) * n];
        let m = min_reduced(row, &ws.v);
        if j == NONE {
            ws.free.push(i);
        } else if row[j] - ws.v[j] > m {
            ws.col_sol[j] = NONE;
            ws.row_sol[i] = NONE;
            ws.free.push(i);
        }
    }
}

/// `min_j (row_j - v_j)`, the smallest reduced cost of a row, in independent lanes of plain selects (which
/// vectorise; `f64::min`'s NaN handling does not, and no entry is NaN here). Uses AVX2 where the CPU has it.
/// The minimum is exact, so every build returns the same value.
fn min_reduced(row: &[f64], v: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(m) = avx2::min_reduced(row, v) {
        return m;
    }
    min_reduced_generic(row, v)
}

#[inline(always)]
fn min_reduced_generic(row: &[f64], v: &[f64]) -> f64 {
    const LANES: usize = 16;
    let mut m = [f64::INFINITY; LANES];
    let (rows, vs) = (row.chunks_exact(LANES), v.chunks_exact(LANES));
    let (row_rest, v_rest) = (rows.remainder(), vs.remainder());
    for (r, p) in rows.zip(vs) {
        for lane in 0..LANES {
            let h = r[lane] - p[lane];
            m[lane] = if h < m[lane] { h } else { m[lane] };
        }
    }
    let mut best = f64::INFINITY;
    for (&r, &p) in row_rest.iter().zip(v_rest) {
        let h = r - p;
        best = if h < best { h } else { best };
    }
    m.iter().fold(best, |b, &x| if x < b { x } else { b })
}

/// [`min_reduced`] compiled for AVX2; `None` where the CPU lacks it.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{Frontier, Scan};

    #[target_feature(enable = "avx2")]
    fn min_reduced_impl(row: &[f64], v: &[f64]) -> f64 {
        super::min_reduced_generic(row, v)
    }

    pub(super) fn min_reduced(row: &[f64], v: &[f64]) -> Option<f64> {
        // SAFETY: the function is compiled for AVX2, which `avx2_fma()` confirmed this CPU has.
        crate::simd::avx2_fma().then(|| unsafe { min_reduced_impl(row, v) })
    }

    /// [`super::relax_generic`] with 256-bit vectors: the lane-wise minimum and its index are exact, and the
    /// lanes are merged by (value, index), so the result equals the plain loop's.
    #[target_feature(enable = "avx2")]
    fn relax_avx2(scan: Scan<'_>, frontier: &mut Frontier<'_>) -> (f64, usize) {
        use std::arch::x86_64::*;
        const W: usize = 4;
        let Scan { row, v, u1, floor, i } = scan;
        let Frontier { dist, pred, blocked } = frontier;
        let n = row.len();
        assert!(v.len() >= n && dist.len() >= n && pred.len() >= n && blocked.len() >= n);
        let full = n - n % W;
        let (vu1, vfloor) = (_mm256_set1_pd(u1), _mm256_set1_pd(floor));
        let vi = _mm256_castsi256_pd(_mm256_set1_epi64x(i as i64));
        let mut best = _mm256_set1_pd(f64::INFINITY);
        let mut arg = _mm256_setzero_pd();
        let mut index = _mm256_setr_epi64x(0, 1, 2, 3);
        let step = _mm256_set1_epi64x(W as i64);
        let mut j = 0;
        while j < full {
            // SAFETY: `j + W <= full <= n`, and every slice holds at least `n` elements (asserted above);
            // `usize` is 64 bits wide on x86-64, so `pred` is read and written as 64-bit lanes.
            unsafe {
                let h = _mm256_sub_pd(
                    _mm256_sub_pd(
                        _mm256_loadu_pd(row.as_ptr().add(j)),
                        _mm256_loadu_pd(v.as_ptr().add(j)),
                    ),
                    vu1,
                );
                let h = _mm256_max_pd(h, vfloor);
                let b = _mm256_loadu_pd(blocked.as_ptr().add(j));
                let d = _mm256_loadu_pd(dist.as_ptr().add(j));
                let better = _mm256_cmp_pd::<_CMP_LT_OQ>(_mm256_add_pd(h, b), d);
                let d = _mm256_blendv_pd(d, h, better);
                _mm256_storeu_pd(dist.as_mut_ptr().add(j), d);
                let p_ptr = pred.as_mut_ptr().add(j).cast::<f64>();
                _mm256_storeu_pd(p_ptr, _mm256_blendv_pd(_mm256_loadu_pd(p_ptr), vi, better));
                let key = _mm256_add_pd(d, b);
                let take = _mm256_cmp_pd::<_CMP_LT_OQ>(key, best);
                best = _mm256_blendv_pd(best, key, take);
                arg = _mm256_blendv_pd(arg, _mm256_castsi256_pd(index), take);
            }
            index = _mm256_add_epi64(index, step);
            j += W;
        }
        let (mut lanes, mut args) = ([0.0f64; W], [0u64; W]);
        // SAFETY: both arrays hold exactly one 256-bit vector.
        unsafe {
            _mm256_storeu_pd(lanes.as_mut_ptr(), best);
            _mm256_storeu_pd(args.as_mut_ptr().cast::<f64>(), arg);
        }
        super::finish_relax(&lanes, &args, scan, frontier, full)
    }

    /// [`relax_avx2`] with 512-bit vectors and mask registers (masked stores write only the improved lanes).
    #[target_feature(enable = "avx512f,avx2")]
    fn relax_avx512(scan: Scan<'_>, frontier: &mut Frontier<'_>) -> (f64, usize) {
        use std::arch::x86_64::*;
        const W: usize = 8;
        let Scan { row, v, u1, floor, i } = scan;
        let Frontier { dist, pred, blocked } = frontier;
        let n = row.len();
        assert!(v.len() >= n && dist.len() >= n && pred.len() >= n && blocked.len() >= n);
        let full = n - n % W;
        let (vu1, vfloor) = (_mm512_set1_pd(u1), _mm512_set1_pd(floor));
        let vi = _mm512_set1_epi64(i as i64);
        let mut best = _mm512_set1_pd(f64::INFINITY);
        let mut arg = _mm512_setzero_si512();
        let mut index = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
        let step = _mm512_set1_epi64(W as i64);
        let mut j = 0;
        while j < full {
            // SAFETY: as in `relax_avx2`, with 8 lanes.
            unsafe {
                let h = _mm512_sub_pd(
                    _mm512_sub_pd(
                        _mm512_loadu_pd(row.as_ptr().add(j)),
                        _mm512_loadu_pd(v.as_ptr().add(j)),
                    ),
                    vu1,
                );
                let h = _mm512_max_pd(h, vfloor);
                let b = _mm512_loadu_pd(blocked.as_ptr().add(j));
                let d = _mm512_loadu_pd(dist.as_ptr().add(j));
                let better = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_add_pd(h, b), d);
                _mm512_mask_storeu_pd(dist.as_mut_ptr().add(j), better, h);
                _mm512_mask_storeu_epi64(pred.as_mut_ptr().add(j).cast::<i64>(), better, vi);
                let key = _mm512_add_pd(_mm512_mask_blend_pd(better, d, h), b);
                let take = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(key, best);
                best = _mm512_mask_blend_pd(take, best, key);
                arg = _mm512_mask_blend_epi64(take, arg, index);
            }
            index = _mm512_add_epi64(index, step);
            j += W;
        }
        let (mut lanes, mut args) = ([0.0f64; W], [0u64; W]);
        // SAFETY: both arrays hold exactly one 512-bit vector.
        unsafe {
            _mm512_storeu_pd(lanes.as_mut_ptr(), best);
            _mm512_storeu_si512(args.as_mut_ptr().cast(), arg);
        }
        super::finish_relax(&lanes, &args, scan, frontier, full)
    }

    /// Each vector build that this CPU can run, for the test against the plain loop.
    #[cfg(test)]
    pub(super) fn relax_builds() -> Vec<(&'static str, RelaxFn)> {
        let mut builds: Vec<(&'static str, RelaxFn)> = Vec::new();
        if crate::simd::avx2_fma() {
            // SAFETY: only called where `avx2_fma()` holds.
            builds.push(("avx2", |scan, frontier| unsafe { relax_avx2(scan, frontier) }));
        }
        if crate::simd::avx512() {
            // SAFETY: only called where `avx512()` holds.
            builds.push(("avx512", |scan, frontier| unsafe { relax_avx512(scan, frontier) }));
        }
        builds
    }

    #[cfg(test)]
    pub(super) type RelaxFn = fn(Scan<'_>, &mut Frontier<'_>) -> (f64, usize);

    pub(super) fn relax(scan: Scan<'_>, frontier: &mut Frontier<'_>) -> Option<(f64, usize)> {
        if crate::simd::avx512() {
            // SAFETY: compiled for AVX-512F and AVX2, which `avx512()` confirmed this CPU has.
            return Some(unsafe { relax_avx512(scan, frontier) });
        }
        // SAFETY: compiled for AVX2, which `avx2_fma()` confirmed this CPU has.
        crate::simd::avx2_fma().then(|| unsafe { relax_avx2(scan, frontier) })
    }
}

/// Steps 1-3 on a square `n x n` matrix; leaves the free rows in `ws.free`.
fn init_square(c: &[f64], n: usize, ws: &mut JvWorkspace) {
    if n == 1 {
        ws.row_sol[0] = 0;
        ws.col_sol[0] = 0;
        ws.v[0] = c[0];
        return;
    }
    // 1. Column reduction, computed by row passes (contiguous) instead of strided column scans.
    ws.col_min.clear();
    ws.col_min.extend_from_slice(&c[..n]);
    ws.col_argmin.clear();
    ws.col_argmin.resize(n, 0);
    for (i, row) in c.chunks_exact(n).enumerate().skip(1) {
        for ((m, arg), &x) in ws.col_min.iter_mut().zip(ws.col_argmin.iter_mut()).zip(row) {
            if x < *m {
                *m = x;
                *arg = i;
            }
        }
    }
    ws.matches.clear();
    ws.matches.resize(n, 0);
    for j in (0..n).rev() {
        ws.v[j] = ws.col_min[j];
        let i = ws.col_argmin[j];
        ws.matches[i] += 1;
        if ws.matches[i] == 1 {
            ws.row_sol[i] = j;
            ws.col_sol[j] = i;
        } else {
            ws.col_sol[j] = NONE;
        }
    }
    // 2. Reduction transfer from rows holding exactly one column.
    ws.free.clear();
    for i in 0..n {
        match ws.matches[i] {
            0 => ws.free.push(i),
            1 => {
                let j1 = ws.row_sol[i];
                let row = &c[i * n..(i + 1) * n];
                let mut min = f64::INFINITY;
                for (j, (&cij, &vj)) in row.iter().zip(&ws.v).enumerate() {
                    let h = cij - vj;
                    if h < min && j != j1 {
                        min = h;
                    }
                }
                ws.v[j1] -= min;
            }
            _ => {}
        }
    }
    // 3. Augmenting row reduction, two passes, under a work budget.
    let mut budget = ARR_BUDGET_PER_ROW * n;
    for _pass in 0..2 {
        let mut k = 0;
        let previous_free = ws.free.len();
        let mut n_free = 0;
        while k < previous_free {
            let i = ws.free[k];
            k += 1;
            if budget == 0 {
                ws.free[n_free] = i;
                n_free += 1;
                continue;
            }
            budget -= 1;
            let row = &c[i * n..(i + 1) * n];
            let (mut umin, mut usubmin) = (f64::INFINITY, f64::INFINITY);
            let (mut j1, mut j2) = (0, 0);
            for (j, (&cij, &vj)) in row.iter().zip(&ws.v).enumerate() {
                let h = cij - vj;
                if h < usubmin {
                    if h >= umin {
                        usubmin = h;
                        j2 = j;
                    } else {
                        usubmin = umin;
                        umin = h;
                        j2 = j1;
                        j1 = j;
                    }
                }
            }
            let mut i0 = ws.col_sol[j1];
            if umin < usubmin {
                // Lower the price of j1 so that it stays best for row i with a tie at j2.
                ws.v[j1] -= usubmin - umin;
            } else if i0 != NONE {
                // A tie: take the second column instead, which may be free.
                j1 = j2;
                i0 = ws.col_sol[j2];
            }
            ws.row_sol[i] = j1;
            ws.col_sol[j1] = i;
            if i0 != NONE {
                ws.row_sol[i0] = NONE;
                if umin < usubmin {
                    // The evicted row bids again at once (the paper's `k := k - 1`).
                    k -= 1;
                    ws.free[k] = i0;
                } else {
                    ws.free[n_free] = i0;
                    n_free += 1;
                }
            }
        }
        ws.free.truncate(n_free);
    }
}

/// Step 4: shortest augmenting paths for every row in `ws.free`, on a matrix with `n_cols` columns.
///
/// Dijkstra on reduced costs over dense arrays: every step relaxes all columns from the row that owns the
/// column just reached and, in the same pass, finds the next closest column not yet reached ([`relax`]).
/// Reached columns carry `blocked = +inf`, so the pass is branch-free and vectorises (8 `f64` lanes with
/// AVX-512, 4 with AVX2) instead of walking a column list through indirect loads and unpredictable branches. A relaxed distance
/// below the current minimum (mathematically impossible, off by rounding) is raised to it, as the paper's
/// `h <= min` case does.
fn augment_free_rows(c: &[f64], n_cols: usize, ws: &mut JvWorkspace) {
    let JvWorkspace {
        v,
        dist,
        pred,
        reached,
        blocked,
        row_sol,
        col_sol,
        free,
        ..
    } = ws;
    blocked.resize(n_cols, 0.0);
    let (v, dist, pred, reached, blocked) = (
        &mut v[..n_cols],
        &mut dist[..n_cols],
        &mut pred[..n_cols],
        &mut reached[..n_cols],
        &mut blocked[..n_cols],
    );
    let col_sol = &mut col_sol[..n_cols];
    for &start in free.iter() {
        let start_row = &c[start * n_cols..(start + 1) * n_cols];
        dist.fill(f64::INFINITY);
        blocked.fill(0.0);
        let mut frontier = Frontier {
            dist: &mut *dist,
            pred: &mut *pred,
            blocked: &mut *blocked,
        };
        // From the start row: every column is relaxed from infinity.
        let from_start = Scan {
            row: start_row,
            v,
            u1: 0.0,
            floor: f64::NEG_INFINITY,
            i: start,
        };
        let (mut min, mut closest) = relax(from_start, &mut frontier);
        let mut n_reached = 0;
        while col_sol[closest] != NONE {
            frontier.blocked[closest] = f64::INFINITY;
            reached[n_reached] = closest;
            n_reached += 1;
            let i = col_sol[closest];
            let row = &c[i * n_cols..(i + 1) * n_cols];
            let u1 = row[closest] - v[closest] - min;
            (min, closest) = relax(
                Scan {
                    row,
                    v,
                    u1,
                    floor: min,
                    i,
                },
                &mut frontier,
            );
        }
        for &j in &reached[..n_reached] {
            v[j] += dist[j] - min;
        }
        let mut j = closest;
        loop {
            let i = pred[j];
            col_sol[j] = i;
            std::mem::swap(&mut row_sol[i], &mut j);
            if i == start {
                break;
            }
        }
    }
}

/// One step of [`augment_free_rows`]: relaxes every column from `row` (owned by row `i`), with reduced costs
/// `row_j - v_j - u1` raised to at least `floor`.
#[derive(Clone, Copy)]
struct Scan<'a> {
    row: &'a [f64],
    v: &'a [f64],
    u1: f64,
    floor: f64,
    i: usize,
}

/// The search over all columns: tentative distances, the row each was reached from, and `+inf` on the
/// columns already reached (`0` elsewhere).
struct Frontier<'a> {
    dist: &'a mut [f64],
    pred: &'a mut [usize],
    blocked: &'a mut [f64],
}

/// One Dijkstra step: for every column `j` not yet reached (`blocked_j = 0`) with
/// `h = max(row_j - v_j - u1, floor) < dist_j`, sets `dist_j = h` and `pred_j = i`; returns the smallest
/// `dist_j` over the columns not reached and its first index. Uses AVX-512 or AVX2 where the CPU has it;
/// every operation is exact (subtractions in the same order, comparisons, selects), so all builds agree.
fn relax(scan: Scan<'_>, frontier: &mut Frontier<'_>) -> (f64, usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(result) = avx2::relax(scan, frontier) {
        return result;
    }
    relax_generic(scan, frontier)
}

/// The plain loop of [`relax`] (see there), one column at a time.
fn relax_generic(scan: Scan<'_>, frontier: &mut Frontier<'_>) -> (f64, usize) {
    finish_relax(&[], &[], scan, frontier, 0)
}

/// Merges the vector lanes' minima `lanes` (at indices `args`) by (value, index) and runs [`relax`]'s step on
/// the columns from `from` on, one at a time. Without any finite key the result is `(inf, usize::MAX)`.
fn finish_relax(
    lanes: &[f64],
    args: &[u64],
    scan: Scan<'_>,
    frontier: &mut Frontier<'_>,
    from: usize,
) -> (f64, usize) {
    let Scan { row, v, u1, floor, i } = scan;
    let Frontier { dist, pred, blocked } = frontier;
    let (mut min, mut at) = (f64::INFINITY, usize::MAX);
    for (&value, &j) in lanes.iter().zip(args) {
        let j = j as usize;
        // Equal finite minima go to the first index; lanes that saw only infinite keys (blocked columns, or
        // none at all) never count, as in the plain loop, which returns `(inf, usize::MAX)` then.
        if value < min || (value == min && min < f64::INFINITY && j < at) {
            (min, at) = (value, j);
        }
    }
    for j in from..row.len() {
        let h = row[j] - v[j] - u1;
        let h = if h < floor { floor } else { h };
        if h + blocked[j] < dist[j] {
            dist[j] = h;
            pred[j] = i;
        }
        let key = dist[j] + blocked[j];
        if key < min {
            (min, at) = (key, j);
        }
    }
    (min, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_relaxations_match_the_plain_loop_with_ties_blocked_columns_and_remainders() {
        let mut state = 99u64;
        let mut next = move |levels: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Few distinct values, so that ties (also of the minimum and of the floor) are common.
            ((state >> 33) % levels) as f64 * 0.25
        };
        let builds = avx2::relax_builds();
        for n in [1, 3, 4, 7, 8, 9, 16, 31, 64, 257] {
            for _ in 0..40 {
                let row: Vec<f64> = (0..n).map(|_| next(9)).collect();
                let v: Vec<f64> = (0..n).map(|_| next(5)).collect();
                let blocked: Vec<f64> = (0..n)
                    .map(|_| if next(3) == 0.0 { f64::INFINITY } else { 0.0 })
                    .collect();
                let dist: Vec<f64> = (0..n)
                    .map(|_| if next(4) == 0.0 { f64::INFINITY } else { next(9) })
                    .collect();
                let pred: Vec<usize> = (0..n).map(|j| j * 7).collect();
                let (u1, floor) = (next(4) - 0.5, next(4) - 1.0);
                let scan = Scan {
                    row: &row,
                    v: &v,
                    u1,
                    floor,
                    i: 5,
                };
                let (mut d0, mut p0) = (dist.clone(), pred.clone());
                let mut b0 = blocked.clone();
                let expected = relax_generic(
                    scan,
                    &mut Frontier {
                        dist: &mut d0,
                        pred: &mut p0,
                        blocked: &mut b0,
                    },
                );
                for (name, build) in &builds {
                    let (mut d1, mut p1) = (dist.clone(), pred.clone());
                    let mut b1 = blocked.clone();
                    let got = build(
                        scan,
                        &mut Frontier {
                            dist: &mut d1,
                            pred: &mut p1,
                            blocked: &mut b1,
                        },
                    );
                    assert_eq!(got, expected, "{name}, n = {n}");
                    assert_eq!(d1, d0, "{name}, n = {n}");
                    assert_eq!(p1, p0, "{name}, n = {n}");
                }
            }
        }
    }
}
