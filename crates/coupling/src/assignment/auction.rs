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

/// Lane count of the branch-free two-smallest scan (two SSE registers of `f32`).
const LANES: usize = 8;

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
/// of `row[j] + price[j]`.
#[inline]
pub(crate) fn best_two(row: &[f32], price: &[f32]) -> (f32, usize, f32) {
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
    let mut w1 = f32::INFINITY;
    let mut w2 = f32::INFINITY;
    for lane in 0..LANES {
        w2 = fmin(fmin(w2, m2[lane]), fmax(w1, m1[lane]));
        w1 = fmin(w1, m1[lane]);
    }
    let j1 = row
        .iter()
        .zip(price)
        .position(|(&r, &p)| r + p == w1)
        .unwrap_or(0);
    (w1, j1, w2)
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
    /// Runs epsilon-scaled phases on the square `n x n` matrix `c` from `eps_start` down to `eps_end`,
    /// dividing by `theta`; each phase spends at most `bids_per_row * n` bids. Returns the bids spent.
    pub(crate) fn run(
        &mut self,
        c: &[f64],
        n: usize,
        eps_start: f64,
        eps_end: f64,
        theta: f64,
        bids_per_row: usize,
    ) -> usize {
        // Single precision halves the memory traffic and doubles the lanes of the bid scan; the prices only
        // need to be near-optimal because the caller restores exactness in f64.
        let lo = c.iter().fold(f64::INFINITY, |a, &x| a.min(x));
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
