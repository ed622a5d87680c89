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
//! 4. shortest augmenting paths from each remaining free row, scanning all columns at the current minimal
//!    distance at once (the paper's `collist` with its `todo`/`ready` split), then updating the prices of
//!    scanned columns by `v_j += d_j - d_min`.
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
    collist: Vec<usize>,
    row_sol: Vec<usize>,
    col_sol: Vec<usize>,
    free: Vec<usize>,
    matches: Vec<u32>,
    col_min: Vec<f64>,
    col_argmin: Vec<usize>,
    auction: super::auction::AuctionState,
}

impl JvWorkspace {
    fn reset(&mut self, rows: usize, cols: usize) {
        self.v.clear();
        self.v.resize(cols, 0.0);
        self.dist.resize(cols, 0.0);
        self.pred.resize(cols, NONE);
        self.collist.resize(cols, 0);
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
    #[target_feature(enable = "avx2")]
    fn min_reduced_impl(row: &[f64], v: &[f64]) -> f64 {
        super::min_reduced_generic(row, v)
    }

    pub(super) fn min_reduced(row: &[f64], v: &[f64]) -> Option<f64> {
        // SAFETY: the function is compiled for AVX2, which `avx2_fma()` confirmed this CPU has.
        crate::simd::avx2_fma().then(|| unsafe { min_reduced_impl(row, v) })
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

// The scans run `k` over the columns not yet reached when they start while `up` grows inside the loop:
// that is the algorithm (columns moved to the `todo` block were already examined), so the fixed range is meant.
#[allow(clippy::mut_range_bound)]
/// Step 4: shortest augmenting paths for every row in `ws.free`, on a matrix with `n_cols` columns.
fn augment_free_rows(c: &[f64], n_cols: usize, ws: &mut JvWorkspace) {
    let JvWorkspace {
        v,
        dist,
        pred,
        collist,
        row_sol,
        col_sol,
        free,
        ..
    } = ws;
    let (v, dist, pred, collist) = (
        &mut v[..n_cols],
        &mut dist[..n_cols],
        &mut pred[..n_cols],
        &mut collist[..n_cols],
    );
    let col_sol = &mut col_sol[..n_cols];
    for &start in free.iter() {
        let start_row = &c[start * n_cols..(start + 1) * n_cols];
        for (j, ((d, p), (l, (&cij, &vj)))) in dist
            .iter_mut()
            .zip(pred.iter_mut())
            .zip(collist.iter_mut().zip(start_row.iter().zip(v.iter())))
            .enumerate()
        {
            *d = cij - vj;
            *p = start;
            *l = j;
        }
        // collist[..low] were scanned ("ready"), collist[low..up] sit at the current minimum ("todo"),
        // collist[up..] are still to be reached.
        let mut low = 0;
        let mut up = 0;
        let mut last = 0;
        let mut min = 0.0;
        let end_col = 'search: loop {
            if up == low {
                last = low;
                min = dist[collist[up]];
                up += 1;
                for k in up..n_cols {
                    let j = collist[k];
                    let h = dist[j];
                    if h <= min {
                        if h < min {
                            up = low;
                            min = h;
                        }
                        collist[k] = collist[up];
                        collist[up] = j;
                        up += 1;
                    }
                }
                for &j in &collist[low..up] {
                    if col_sol[j] == NONE {
                        break 'search j;
                    }
                }
            }
            let j1 = collist[low];
            low += 1;
            let i = col_sol[j1];
            let row = &c[i * n_cols..(i + 1) * n_cols];
            let u1 = row[j1] - v[j1] - min;
            for k in up..n_cols {
                let j = collist[k];
                let h = row[j] - v[j] - u1;
                if h < dist[j] {
                    pred[j] = i;
                    if h <= min {
                        // Mathematically h >= min; `<=` also absorbs a rounding error of an ulp below it.
                        dist[j] = min;
                        if col_sol[j] == NONE {
                            break 'search j;
                        }
                        collist[k] = collist[up];
                        collist[up] = j;
                        up += 1;
                    } else {
                        dist[j] = h;
                    }
                }
            }
        };
        for &j in &collist[..last] {
            v[j] += dist[j] - min;
        }
        let mut j = end_col;
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
