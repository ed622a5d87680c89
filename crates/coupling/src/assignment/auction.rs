//! Forward auction with epsilon scaling (Bertsekas), used to find near-optimal column prices fast.
//!
//! D. P. Bertsekas, "The auction algorithm: a distributed relaxation method for the assignment problem",
//! Annals of Operations Research 14 (1988) 105-123; epsilon scaling: Bertsekas and Eckstein (1988).
//! In minimisation form a free row `i` bids for the column `j1` minimising `C_ij + p_j`, raising its
//! price by `w2 - w1 + eps` (`w1`, `w2` the best and second-best values); the previous owner becomes free.
//! Every bid keeps eps-complementary slackness, `C_{i sigma(i)} + p_{sigma(i)} <= min_j (C_ij + p_j) + eps`,
//! so a complete assignment is within `n eps` of optimal. Epsilon scaling runs phases with
//! `eps_k = eps_0 / theta^k`, each starting from the previous prices.
//!
//! Here the auction only provides prices and a near-optimal assignment; [`super::Jv`] then restores exact
//! complementary slackness and finishes with shortest augmenting paths, so the result is exactly optimal.
//! Each phase stops after a budget of bids (a guard against price wars), which is always safe for the same
//! reason.

const NONE: usize = usize::MAX;

/// Lane count of the branch-free two-smallest scan: four AVX2 registers of `f32` (eight SSE registers), so
/// that four independent min/max chains hide their latency.
const LANES: usize = 32;

/// `min` as a plain select (maps to one `minps`; inputs are never NaN here).
#[inline(always)]
fn fmin(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// `max` as a plain select (maps to one `maxps`).
#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// The smallest value `w1`, its first index `j1`, and the second-smallest value `w2` (over other indices)
/// of `row[j] + price[j]`. Runs the AVX2 build where the CPU has it; min and max are exact, so both builds
/// return the same values.
pub(crate) fn best_two(row: &[f32], price: &[f32]) -> (f32, usize, f32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(result) = avx2::best_two(row, price) {
        return result;
    }
    best_two_generic(row, price)
}

/// The loop of [`best_two`] compiled for AVX-512 (the 32 lanes are two registers) or else AVX2; `None` where
/// the CPU has neither.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    #[target_feature(enable = "avx2")]
    fn best_two_impl(row: &[f32], price: &[f32]) -> (f32, usize, f32) {
        super::best_two_generic(row, price)
    }

    #[target_feature(enable = "avx512f,avx2")]
    fn best_two_avx512(row: &[f32], price: &[f32]) -> (f32, usize, f32) {
        super::best_two_generic(row, price)
    }

    pub(super) fn best_two(row: &[f32], price: &[f32]) -> Option<(f32, usize, f32)> {
        if crate::simd::avx512() {
            // SAFETY: compiled for AVX-512F and AVX2, which `avx512()` confirmed this CPU has.
            return Some(unsafe { best_two_avx512(row, price) });
        }
        // SAFETY: the function is compiled for AVX2, which `avx2_fma()` confirmed this CPU has.
        crate::simd::avx2_fma().then(|| unsafe { best_two_impl(row, price) })
    }
}

#[inline(always)]
fn best_two_generic(row: &[f32], price: &[f32]) -> (f32, usize, f32) {
    let mut m1 = [f32::INFINITY; LANES];
    let mut m2 = [f32::INFINITY; LANES];
    let mut rows = row.chunks_exact(LANES);
    let mut prices = price.chunks_exact(LANES);
    for (r, p) in (&mut rows).zip(&mut prices) {
        for lane in 0..LANES {
            let x = r[lane] + p[lane];
            // Branch-free update of the two smallest seen in this lane.
            m2[lane] = fmin(m2[lane], fmax(m1[lane], x));
            m1[lane] = fmin(m1[lane], x);
        }
    }
    for (&r, &p) in rows.remainder().iter().zip(prices.remainder()) {
        let x = r + p;
        m2[0] = fmin(m2[0], fmax(m1[0], x));
        m1[0] = fmin(m1[0], x);
    }
    // Merge the lanes pairwise, halving their number (vector operations), then the last eight one by one.
    let mut width = LANES / 2;
    while width >= 8 {
        for lane in 0..width {
            let (a1, b1) = (m1[lane], m1[lane + width]);
            m2[lane] = fmin(fmin(m2[lane], m2[lane + width]), fmax(a1, b1));
            m1[lane] = fmin(a1, b1);
        }
        width /= 2;
    }
    let mut w1 = f32::INFINITY;
    let mut w2 = f32::INFINITY;
    for lane in 0..LANES.min(8) {
        w2 = fmin(fmin(w2, m2[lane]), fmax(w1, m1[lane]));
        w1 = fmin(w1, m1[lane]);
    }
    let j1 = first_index_of(row, price, w1);
    (w1, j1, w2)
}

/// The first `j` with `row[j] + price[j] == w` (0 if none), testing eight entries per step (one vector
/// compare) before looking inside the block that holds it.
#[inline(always)]
fn first_index_of(row: &[f32], price: &[f32], w: f32) -> usize {
    const BLOCK: usize = 8;
    let (rows, prices) = (row.chunks_exact(BLOCK), price.chunks_exact(BLOCK));
    let (row_rest, price_rest) = (rows.remainder(), prices.remainder());
    for (block, (r, p)) in rows.zip(prices).enumerate() {
        let mut hit = false;
        for lane in 0..BLOCK {
            hit |= r[lane] + p[lane] == w;
        }
        if hit {
            let within = r.iter().zip(p).position(|(&r, &p)| r + p == w).unwrap_or(0);
            return block * BLOCK + within;
        }
    }
    let start = row.len() - row_rest.len();
    row_rest
        .iter()
        .zip(price_rest)
        .position(|(&r, &p)| r + p == w)
        .map_or(0, |within| start + within)
}

/// Buffers and state of the auction.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuctionState {
    pub(crate) price: Vec<f32>,
    cost: Vec<f32>,
    pub(crate) row_sol: Vec<usize>,
    pub(crate) col_sol: Vec<usize>,
    queue: Vec<usize>,
}

impl AuctionState {
    /// Runs epsilon-scaled phases on the square `n x n` matrix `c` (smallest entry `lo`, subtracted before the
    /// conversion to `f32`) from `eps_start` down to `eps_end`,
    /// dividing by `theta`; each phase spends at most `bids_per_row * n` bids. Returns the bids spent.
    // Crate-internal, called once; the settings are separate scalars of `JvConfig` scaled by the caller.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &mut self,
        c: &[f64],
        n: usize,
        lo: f64,
        eps_start: f64,
        eps_end: f64,
        theta: f64,
        bids_per_row: usize,
    ) -> usize {
        // Single precision halves the memory traffic and doubles the lanes of the bid scan; the prices only
        // need to be near-optimal because the caller restores exactness in f64.
        self.cost.clear();
        self.cost.extend(c.iter().map(|&x| (x - lo) as f32));
        let cost = std::mem::take(&mut self.cost);
        self.price.clear();
        self.price.resize(n, 0.0);
        self.row_sol.resize(n, NONE);
        self.col_sol.resize(n, NONE);
        let mut eps = eps_start;
        let mut total = 0;
        loop {
            eps = eps.max(eps_end);
            total += self.phase(&cost, n, eps as f32, bids_per_row * n);
            if eps <= eps_end {
                self.cost = cost;
                return total;
            }
            eps /= theta;
        }
    }

    fn phase(&mut self, c: &[f32], n: usize, eps: f32, budget: usize) -> usize {
        self.row_sol.fill(NONE);
        self.col_sol.fill(NONE);
        self.queue.clear();
        self.queue.extend((0..n).rev());
        let mut bids = 0;
        while let Some(i) = self.queue.pop() {
            if bids == budget {
                self.queue.push(i);
                break;
            }
            bids += 1;
            let row = &c[i * n..(i + 1) * n];
            let (w1, j1, w2) = best_two(row, &self.price);
            // With a single column w2 is infinite; any finite raise works.
            let raise = if w2.is_finite() { w2 - w1 + eps } else { eps };
            self.price[j1] += raise;
            let previous = self.col_sol[j1];
            self.col_sol[j1] = i;
            self.row_sol[i] = j1;
            if previous != NONE {
                self.row_sol[previous] = NONE;
                self.queue.push(previous);
            }
        }
        bids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive reference: smallest value, its first index, second smallest over the other indices.
    fn naive(row: &[f32], price: &[f32]) -> (f32, usize, f32) {
        let sums: Vec<f32> = row.iter().zip(price).map(|(&r, &p)| r + p).collect();
        let (j1, &w1) =
            sums.iter().enumerate().fold(
                (0, &f32::INFINITY),
                |best, (j, x)| if *x < *best.1 { (j, x) } else { best },
            );
        let w2 = sums
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != j1)
            .fold(f32::INFINITY, |m, (_, &x)| m.min(x));
        (w1, j1, w2)
    }

    #[test]
    fn best_two_matches_the_naive_scan_with_ties_and_remainders() {
        let mut state = 12_345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Few distinct values, so that ties (also of the minimum) are common.
            ((state >> 33) % 7) as f32 * 0.5
        };
        for n in [1, 2, 5, 8, 9, 31, 32, 33, 70, 256, 300] {
            for _ in 0..50 {
                let row: Vec<f32> = (0..n).map(|_| next()).collect();
                let price: Vec<f32> = (0..n).map(|_| next()).collect();
                let expected = naive(&row, &price);
                assert_eq!(best_two(&row, &price), expected, "n = {n}");
                assert_eq!(best_two_generic(&row, &price), expected, "n = {n}");
            }
        }
    }
}
