//! A fused CPU kernel for evaluating a trained [`Mlp`]: the velocity, and the velocity with its divergence in
//! forward mode (exact, or Hutchinson's estimate), on plain `f32` slices, for sampling and likelihoods.
//!
//! Why beside libtorch: on this project's machines a 2D MLP of width 64 spends most of its time in
//! libtorch's element-wise passes (SELU alone costs more than the layer's matrix product), each a trip
//! through memory with its own allocation. Here the batch is cut into tiles of [`TILE`] rows that stay in
//! the core's cache through every layer: one matrix product per layer, its bias, activation and derivative
//! (a register-blocked AVX-512 product with all of that in its epilogue where the CPU has AVX-512F and the
//! width is a multiple of 16; else `ndarray`'s product, which is `matrixmultiply`'s runtime-dispatched
//! AVX2/FMA kernels, and one element-wise pass), with a branch-free `exp`. [`MlpKernel::integrate`] runs a
//! whole fixed-step solve tile by tile, so sampling keeps each tile in cache for every step. The tangents of the forward mode ride in the same product as the values
//! (the tile's buffer stacks `[values; tangent 1; ...; tangent M]`), so an exact 2D divergence is one product
//! of three times the rows per layer. Tiles run on rayon's pool when more than one thread is asked for.
//!
//! The kernel reads the weights once ([`MlpKernel::new`]) and declines (returns `None`) what it does not
//! cover: angle columns, the GELU activation, weights off the CPU or not `f32`. Results agree with the
//! libtorch forward pass to float rounding (the products sum in another order, `exp` is a polynomial), which
//! the tests check against it and against autograd.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::mlp::{Activation, Mlp, TimeEmbedding};

/// Rows of a tile: small enough that a tile's buffers (values and tangents of width 64) stay in L2.
pub const TILE: usize = 256;

const SELU_SCALE: f32 = 1.050_701;
const SELU_ALPHA: f32 = 1.673_263_2;

/// A dense layer with its weights transposed to `[fan_in, fan_out]`, row-major.
#[derive(Clone, Debug)]
struct Layer {
    weight: Vec<f32>,
    /// The weights as stored, `[fan_out, fan_in]`, for a layer narrower than a register (the output
    /// layer of a low-dimensional flow), whose outputs are dot products; empty otherwise.
    by_output: Vec<f32>,
    bias: Vec<f32>,
    fan_in: usize,
    fan_out: usize,
}

/// A trained MLP's weights laid out for [`Self::velocity`] and [`Self::velocity_divergence`].
#[derive(Clone, Debug)]
pub struct MlpKernel {
    dim: usize,
    activation: Activation,
    time_embedding: TimeEmbedding,
    layers: Vec<Layer>,
}

/// What a tile's evaluation should also compute.
#[derive(Clone, Copy)]
enum Tangents<'a> {
    /// Only the velocity.
    None,
    /// One tangent per coordinate: the exact divergence.
    Exact,
    /// Hutchinson's probes, `[K, n, dim]`.
    Probes(&'a [f32], usize),
}

impl<'a> Tangents<'a> {
    /// The exact divergence without `probes`, else Hutchinson's with the probes `[K, n, dim]` of points
    /// `x` holding `x_len` numbers.
    fn of(probes: Option<&'a [f32]>, x_len: usize) -> Self {
        match probes {
            None => Tangents::Exact,
            Some(probes) => Tangents::Probes(probes, probes.len() / x_len.max(1)),
        }
    }
}

/// `values` (one number per point) cut into the tiles' parts, or an empty part per tile of `n` points when
/// nothing per point is computed.
fn per_tile(values: &mut [f32], wanted: bool, n: usize) -> Vec<&mut [f32]> {
    if wanted {
        values.chunks_mut(TILE).collect()
    } else {
        (0..n.div_ceil(TILE)).map(|_| <&mut [f32]>::default()).collect()
    }
}

impl MlpKernel {
    /// The kernel of `mlp` with the weights `params` (views from [`crate::ParamStore::views_of`]); `None`
    /// where the kernel does not apply (angle columns, GELU, weights not `f32` on the CPU).
    pub fn new(mlp: &Mlp, params: &[Tensor]) -> Option<Self> {
        let config = mlp.config();
        if !config.angle_columns.is_empty() || config.activation == Activation::Gelu {
            return None;
        }
        let mut layers = Vec::new();
        for &(w, b) in mlp.layer_ids() {
            let (weight, bias) = (&params[w.0], &params[b.0]);
            if weight.device() != Device::Cpu || weight.kind() != Kind::Float || bias.kind() != Kind::Float {
                return None;
            }
            let size = weight.size();
            let (fan_out, fan_in) = (size[0] as usize, size[1] as usize);
            let transposed = weight.detach().transpose(0, 1).contiguous();
            let weight = Vec::<f32>::try_from(transposed.view([-1])).ok()?;
            let bias = Vec::<f32>::try_from(bias.detach().contiguous().view([-1])).ok()?;
            let by_output = if fan_out < 16 {
                Vec::<f32>::try_from(params[w.0].detach().contiguous().view([-1])).ok()?
            } else {
                Vec::new()
            };
            layers.push(Layer {
                weight,
                by_output,
                bias,
                fan_in,
                fan_out,
            });
        }
        Some(Self {
            dim: config.dim,
            activation: config.activation,
            time_embedding: config.time_embedding,
            layers,
        })
    }

    /// The dimension of a point.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `v(x, t)` of the `n = x.len() / dim` points of `x` (row-major `[n, dim]`) into `out` (the same shape),
    /// on `threads` threads (more than one: rayon's pool).
    pub fn velocity(&self, x: &[f32], t: f32, out: &mut [f32], threads: usize) {
        self.run(x, t, Tangents::None, out, &mut [], threads);
    }

    /// `v(x, t)` into `out` and its divergence into `divergence` (`[n]`): exact without `probes`, else
    /// Hutchinson's `mean_k e_k^T J e_k` with `probes` `[K, n, dim]` row-major (`K = probes.len() / x.len()`).
    pub fn velocity_divergence(
        &self,
        x: &[f32],
        t: f32,
        probes: Option<&[f32]>,
        out: &mut [f32],
        divergence: &mut [f32],
        threads: usize,
    ) {
        let tangents = Tangents::of(probes, x.len());
        self.run(x, t, tangents, out, divergence, threads);
    }

    /// Integrates `dx/dt = v(x, t)` from the points `x` (row-major `[n, dim]`, overwritten with the result)
    /// with an explicit Runge-Kutta method over a fixed grid of times, tile by tile: a tile of [`TILE`]
    /// points runs every step while its state, its stages and the network's buffers stay in the core's
    /// cache, and the tiles share out over `threads` threads once for the whole solve (not once per step).
    /// The arithmetic is that of a step-by-step solve through [`Self::velocity`]: each stage's input is
    /// `y + sum_j (h a_ij) k_j` and the new state `y + sum_i (h b_i) k_i`, in `f32`, in that order, with the
    /// weights rounded to `f32` first, so both give the same numbers. Returns the first step after which a
    /// state is not finite, if any (every tile stops at its own first such step).
    pub fn integrate(&self, x: &mut [f32], method: &FixedSteps<'_>, threads: usize) -> Result<(), NonFinite> {
        self.integrate_tiles(x, None, method, threads)
    }

    /// [`Self::integrate`] of the augmented state `(x, l)` with `dl/dt = div v(x, t)`: `integral` (`[n]`)
    /// gains the integral of the divergence along each trajectory, exact without `probes`, else Hutchinson's
    /// estimate with the probes `[K, n, dim]` kept for the whole solve (each stage's divergence adds into
    /// `l` with the weights of the method, as the velocity into `x`). The likelihood's backward solve is a
    /// grid from 1 to 0.
    pub fn integrate_with_divergence(
        &self,
        x: &mut [f32],
        integral: &mut [f32],
        probes: Option<&[f32]>,
        method: &FixedSteps<'_>,
        threads: usize,
    ) -> Result<(), NonFinite> {
        assert_eq!(integral.len() * self.dim, x.len(), "one integral per point");
        let tangents = Tangents::of(probes, x.len());
        self.integrate_tiles(x, Some((integral, tangents)), method, threads)
    }

    fn integrate_tiles(
        &self,
        x: &mut [f32],
        divergence: Option<(&mut [f32], Tangents<'_>)>,
        method: &FixedSteps<'_>,
        threads: usize,
    ) -> Result<(), NonFinite> {
        let dim = self.dim;
        assert_eq!(x.len() % dim, 0, "x must be [n, dim]");
        let n = x.len() / dim;
        let (integral, tangents) = match divergence {
            Some((integral, tangents)) => (integral, tangents),
            None => (&mut [][..], Tangents::None),
        };
        let with_divergence = !matches!(tangents, Tangents::None);
        let stages = method.b.len();
        let run_tile =
            |scratch: &mut IntegrationScratch, index: usize, tile: &mut [f32], integral: &mut [f32]| {
                let rows = tile.len() / dim;
                grow(&mut scratch.stage, tile.len());
                grow(&mut scratch.k, stages * tile.len());
                grow(&mut scratch.div, if with_divergence { stages * rows } else { 0 });
                let stage = &mut scratch.stage[..tile.len()];
                let k = &mut scratch.k[..stages * tile.len()];
                let div = &mut scratch.div[..if with_divergence { stages * rows } else { 0 }];
                for (step, pair) in method.times.windows(2).enumerate() {
                    let (t, t_new) = (pair[0], pair[1]);
                    let h = t_new - t;
                    for s in 0..stages {
                        let (done, rest) = k.split_at_mut(s * tile.len());
                        let k_s = &mut rest[..tile.len()];
                        let div_s = if with_divergence {
                            &mut div[s * rows..(s + 1) * rows]
                        } else {
                            &mut [][..]
                        };
                        // As the solver does: the first stage at t, a node of 1 at exactly t_new.
                        let c = method.c[s];
                        let t_stage = if s == 0 {
                            t
                        } else if c == 1.0 {
                            t_new
                        } else {
                            t + c * h
                        };
                        let embedding = self.time_features(t_stage as f32);
                        let input: &[f32] = if s == 0 {
                            tile
                        } else {
                            stage.copy_from_slice(tile);
                            for (j, &a) in method.a[s].iter().enumerate() {
                                if a != 0.0 {
                                    add_scaled(
                                        stage,
                                        (h * a) as f32,
                                        &done[j * tile.len()..(j + 1) * tile.len()],
                                    );
                                }
                            }
                            stage
                        };
                        let first = index * TILE;
                        self.tile(
                            input,
                            first,
                            n,
                            &embedding,
                            tangents,
                            &mut scratch.net,
                            k_s,
                            div_s,
                        );
                    }
                    for (s, &b) in method.b.iter().enumerate() {
                        if b != 0.0 {
                            add_scaled(tile, (h * b) as f32, &k[s * tile.len()..(s + 1) * tile.len()]);
                            if with_divergence {
                                add_scaled(integral, (h * b) as f32, &div[s * rows..(s + 1) * rows]);
                            }
                        }
                    }
                    if !tile.iter().chain(integral.iter()).all(|v| v.is_finite()) {
                        return Some(step);
                    }
                }
                None
            };
        let mut integral_chunks = per_tile(integral, with_divergence, n);
        let first_bad = if threads <= 1 {
            let mut scratch = IntegrationScratch::default();
            x.chunks_mut(TILE * dim)
                .zip(integral_chunks.iter_mut())
                .enumerate()
                .filter_map(|(index, (tile, integral))| run_tile(&mut scratch, index, tile, integral))
                .min()
        } else {
            x.par_chunks_mut(TILE * dim)
                .zip(integral_chunks.par_iter_mut())
                .enumerate()
                .map_init(
                    IntegrationScratch::default,
                    |scratch, (index, (tile, integral))| run_tile(scratch, index, tile, integral),
                )
                .flatten()
                .min()
        };
        match first_bad {
            Some(step) => Err(NonFinite { step }),
            None => Ok(()),
        }
    }

    fn run(
        &self,
        x: &[f32],
        t: f32,
        tangents: Tangents<'_>,
        out: &mut [f32],
        divergence: &mut [f32],
        threads: usize,
    ) {
        let dim = self.dim;
        let n = x.len() / dim;
        assert_eq!(out.len(), x.len(), "out must be shaped like x");
        let with_divergence = !matches!(tangents, Tangents::None);
        if with_divergence {
            assert_eq!(divergence.len(), n, "one divergence per point");
        }
        let embedding = self.time_features(t);
        let tile_job = |scratch: &mut Scratch, tile: usize, out: &mut [f32], divergence: &mut [f32]| {
            let first = tile * TILE;
            let rows = out.len() / dim;
            self.tile(
                &x[first * dim..(first + rows) * dim],
                first,
                n,
                &embedding,
                tangents,
                scratch,
                out,
                divergence,
            );
        };
        let mut divergence_chunks = per_tile(divergence, with_divergence, n);
        if threads <= 1 {
            let mut scratch = Scratch::default();
            for (tile, (out, divergence)) in out
                .chunks_mut(TILE * dim)
                .zip(divergence_chunks.iter_mut())
                .enumerate()
            {
                tile_job(&mut scratch, tile, out, divergence);
            }
        } else {
            out.par_chunks_mut(TILE * dim)
                .zip(divergence_chunks.par_iter_mut())
                .enumerate()
                .for_each_init(Scratch::default, |scratch, (tile, (out, divergence))| {
                    tile_job(scratch, tile, out, divergence)
                });
        }
    }

    /// The time features appended to every point's coordinates.
    fn time_features(&self, t: f32) -> Vec<f32> {
        match self.time_embedding {
            TimeEmbedding::Concat {} => vec![t],
            TimeEmbedding::Fourier { n_freq } => {
                let angles: Vec<f32> = (0..n_freq)
                    .map(|k| t * 2.0 * std::f32::consts::PI * 2f32.powi(k as i32))
                    .collect();
                angles
                    .iter()
                    .map(|a| a.sin())
                    .chain(angles.iter().map(|a| a.cos()))
                    .collect()
            }
        }
    }

    /// One tile of `rows` points starting at point `first` of `n`: compiled for AVX2 and FMA when the CPU
    /// has them (checked once, at run time), for plain x86-64 otherwise.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        x: &[f32],
        first: usize,
        n: usize,
        embedding: &[f32],
        tangents: Tangents<'_>,
        scratch: &mut Scratch,
        out: &mut [f32],
        divergence: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            avx2::tile(self, x, first, n, embedding, tangents, scratch, out, divergence);
            return;
        }
        self.tile_inline(x, first, n, embedding, tangents, scratch, out, divergence);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn tile_inline(
        &self,
        x: &[f32],
        first: usize,
        n: usize,
        embedding: &[f32],
        tangents: Tangents<'_>,
        scratch: &mut Scratch,
        out: &mut [f32],
        divergence: &mut [f32],
    ) {
        let dim = self.dim;
        let rows = x.len() / dim;
        let n_tangents = match tangents {
            Tangents::None => 0,
            Tangents::Exact => dim,
            Tangents::Probes(_, k) => k,
        };
        let stacked = rows * (1 + n_tangents);
        let first_layer = &self.layers[0];
        // The first layer: values from [x, time features], tangents from W restricted to x's columns.
        let (input, current, next, slope) = scratch.parts(
            rows * first_layer.fan_in,
            stacked * self.widest(),
            rows * self.widest(),
        );
        for (row, features) in input.chunks_mut(first_layer.fan_in).enumerate() {
            features[..dim].copy_from_slice(&x[row * dim..(row + 1) * dim]);
            features[dim..].copy_from_slice(embedding);
        }
        let last = self.layers.len() - 1;
        let activation_of = |idx: usize| (idx < last).then_some(self.activation);
        // The first layer's values (activated, their slopes kept), then its tangents, times those slopes.
        let width = first_layer.fan_out;
        layer_forward(
            input,
            rows,
            rows,
            first_layer,
            &mut current[..rows * width],
            activation_of(0),
            slope,
        );
        match tangents {
            Tangents::None => {}
            Tangents::Exact => {
                for i in 0..dim {
                    let weight_row = &first_layer.weight[i * width..(i + 1) * width];
                    for row in 0..rows {
                        let at = (rows * (1 + i) + row) * width;
                        current[at..at + width].copy_from_slice(weight_row);
                    }
                }
            }
            Tangents::Probes(probes, k) => {
                // Tangent k of point p: e_k(p) W_x, a [rows, dim] x [dim, width] product per probe.
                let w_x = ArrayView2::from_shape((dim, width), &first_layer.weight[..dim * width])
                    .expect("the first layer holds dim rows of x");
                for probe in 0..k {
                    let start = (probe * n + first) * dim;
                    let e = ArrayView2::from_shape((rows, dim), &probes[start..start + rows * dim])
                        .expect("probes are [K, n, dim]");
                    let at = rows * (1 + probe) * width;
                    let mut c = ArrayViewMut2::from_shape((rows, width), &mut current[at..at + rows * width])
                        .expect("the tangent block fits");
                    general_mat_mul(1.0, &e, &w_x, 0.0, &mut c);
                }
            }
        }
        if last > 0 {
            scale_tangents(&mut current[..stacked * width], rows * width, slope);
        }
        for (idx, layer) in self.layers.iter().enumerate().skip(1) {
            layer_forward(
                &current[..stacked * layer.fan_in],
                stacked,
                rows,
                layer,
                &mut next[..stacked * layer.fan_out],
                activation_of(idx),
                slope,
            );
            std::mem::swap(current, next);
        }
        out.copy_from_slice(&current[..rows * dim]);
        match tangents {
            Tangents::None => {}
            Tangents::Exact => {
                for (row, div) in divergence.iter_mut().enumerate() {
                    *div = (0..dim).map(|i| current[(rows * (1 + i) + row) * dim + i]).sum();
                }
            }
            Tangents::Probes(probes, k) => {
                for (row, div) in divergence.iter_mut().enumerate() {
                    let mut sum = 0.0;
                    for probe in 0..k {
                        let tangent = &current[(rows * (1 + probe) + row) * dim..][..dim];
                        let e = &probes[((probe * n) + first + row) * dim..][..dim];
                        sum += tangent.iter().zip(e).map(|(a, b)| a * b).sum::<f32>();
                    }
                    *div = sum / k as f32;
                }
            }
        }
    }

    fn widest(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.fan_out.max(l.fan_in))
            .max()
            .unwrap_or(1)
    }
}

/// The tile loop compiled with AVX2 and FMA enabled, so the element-wise passes (activation, slope,
/// tangents) run eight lanes wide; the matrix products dispatch on their own.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{MlpKernel, Scratch, Tangents};

    /// Whether this CPU has AVX2 and FMA (cached by the standard library).
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile(
        kernel: &MlpKernel,
        x: &[f32],
        first: usize,
        n: usize,
        embedding: &[f32],
        tangents: Tangents<'_>,
        scratch: &mut Scratch,
        out: &mut [f32],
        divergence: &mut [f32],
    ) {
        assert!(available(), "the caller checks for AVX2 and FMA");
        // SAFETY: the features the function is compiled for are present (asserted above); it is otherwise
        // ordinary safe code.
        unsafe { tile_avx2(kernel, x, first, n, embedding, tangents, scratch, out, divergence) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx2(
        kernel: &MlpKernel,
        x: &[f32],
        first: usize,
        n: usize,
        embedding: &[f32],
        tangents: Tangents<'_>,
        scratch: &mut Scratch,
        out: &mut [f32],
        divergence: &mut [f32],
    ) {
        kernel.tile_inline(x, first, n, embedding, tangents, scratch, out, divergence);
    }
}

/// One layer on a tile's stacked rows `a` (`[stacked, fan_in]`: `rows` values, then tangent blocks of
/// `rows` each) into `c` (`[stacked, fan_out]`): the values become `act(a W + b)` with `act'` written into
/// `slope` (`[rows, fan_out]`), the tangents `(a W) * act'` of their point; without an activation (the
/// output layer) `a W + b` and `a W`. AVX-512's register-blocked product with all of that in its epilogue
/// where the CPU has AVX-512F and the width is a multiple of 16; else `matrixmultiply`'s product and
/// element-wise passes.
#[inline(always)]
fn layer_forward(
    a: &[f32],
    stacked: usize,
    rows: usize,
    layer: &Layer,
    c: &mut [f32],
    activation: Option<Activation>,
    slope: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::layer_forward(a, stacked, rows, layer, c, activation, slope) {
        return;
    }
    layer_forward_portable(a, stacked, rows, layer, c, activation, slope);
}

#[inline(always)]
fn layer_forward_portable(
    a: &[f32],
    stacked: usize,
    rows: usize,
    layer: &Layer,
    c: &mut [f32],
    activation: Option<Activation>,
    slope: &mut [f32],
) {
    let width = layer.fan_out;
    let av = ArrayView2::from_shape((stacked, layer.fan_in), a).expect("a is [stacked, fan_in]");
    let w = ArrayView2::from_shape((layer.fan_in, width), &layer.weight).expect("W is [in, out]");
    let mut cv = ArrayViewMut2::from_shape((stacked, width), &mut *c).expect("c is [stacked, fan_out]");
    general_mat_mul(1.0, &av, &w, 0.0, &mut cv);
    for row in c[..rows * width].chunks_mut(width) {
        for (z, b) in row.iter_mut().zip(&layer.bias) {
            *z += b;
        }
    }
    if let Some(activation) = activation {
        activation.apply_in_place(&mut c[..rows * width], &mut slope[..rows * width]);
        scale_tangents(&mut c[..stacked * width], rows * width, slope);
    }
}

/// Multiplies every tangent block of `stacked` (the blocks after the first `block` entries, the values) by
/// the slopes of their points.
#[inline(always)]
fn scale_tangents(stacked: &mut [f32], block: usize, slope: &[f32]) {
    for tangents in stacked[block..].chunks_mut(block) {
        for (t, s) in tangents.iter_mut().zip(&slope[..block]) {
            *t *= s;
        }
    }
}

/// The layer with AVX-512 (`avx512f`): rows in blocks of [`avx512::ROWS`], columns in blocks of 64 (four
/// 16-lane registers), so each block keeps 24 accumulators in registers, reads each weight row once per block
/// and broadcasts each input once per register row, and the fused multiply-adds issue back to back (a general
/// product spends much of its time packing these small matrices). The bias starts the values' accumulators;
/// the activation, its slope and the tangents' product with it run on the registers before they are stored,
/// with a 16-lane `exp` of the scalar one's construction.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _CMP_GT_OQ, _CMP_LT_OQ, _mm512_add_epi32, _mm512_add_ps, _mm512_castps_si512,
        _mm512_castsi512_ps, _mm512_cmp_ps_mask, _mm512_div_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps,
        _mm512_loadu_ps, _mm512_mask_blend_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_min_ps,
        _mm512_mul_ps, _mm512_reduce_add_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_slli_epi32, _mm512_storeu_ps, _mm512_sub_epi32, _mm512_sub_ps,
    };

    use super::{Activation, Layer, SELU_ALPHA, SELU_SCALE};

    /// Rows of a register block.
    pub(super) const ROWS: usize = 6;
    /// Lanes of a register.
    const LANES: usize = 16;

    /// Whether this CPU has AVX-512F (cached by the standard library).
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// What a block does with its accumulators.
    #[derive(Clone, Copy)]
    enum Epilogue {
        /// Store them.
        Store,
        /// Store `act(z)` and write `act'(z)` at the pointer (row stride `n`).
        Activate(Activation, *mut f32),
        /// Store `z` times the slopes at the pointer (row stride `n`).
        Scale(*const f32),
    }

    /// [`super::layer_forward`]; `false` (and nothing written) where it does not apply.
    pub(super) fn layer_forward(
        a: &[f32],
        stacked: usize,
        rows: usize,
        layer: &Layer,
        c: &mut [f32],
        activation: Option<Activation>,
        slope: &mut [f32],
    ) -> bool {
        let (k, n) = (layer.fan_in, layer.fan_out);
        if !available() {
            return false;
        }
        if n < LANES && activation.is_none() && layer.by_output.len() == n * k {
            assert!(a.len() >= stacked * k && c.len() >= stacked * n && rows <= stacked);
            assert!(layer.bias.len() == n);
            // SAFETY: AVX-512F is present; the loads stay inside `a[..stacked * k]` and `by_output[..n * k]`
            // (asserted above), the stores inside `c[..stacked * n]`.
            unsafe { narrow_avx512(a, stacked, rows, layer, c) };
            return true;
        }
        if n % LANES != 0 || activation == Some(Activation::Gelu) {
            return false;
        }
        assert!(a.len() >= stacked * k && c.len() >= stacked * n && rows <= stacked);
        assert!(rows > 0 || stacked == 0);
        assert!(layer.weight.len() == k * n && layer.bias.len() == n);
        assert!(activation.is_none() || slope.len() >= rows * n);
        // SAFETY: AVX-512F is present (checked above) and every access stays inside `a[..stacked * k]`,
        // `W[..k * n]`, `b[..n]`, `c[..stacked * n]` and `slope[..rows * n]` (asserted above): a block reads
        // rows `r..r + R` of `a`, writes the same rows of `c`, and reads or writes the slopes of the same
        // points (`r mod rows`, never past a block of `rows`), columns `j..j + 16 V` with `j + 16 V <= n`.
        unsafe { layer_avx512(a, stacked, rows, layer, c, activation, slope) };
        true
    }

    /// A layer narrower than a register, without activation: each output a dot product of the input row
    /// with the output's weights, 16 products per instruction, summed across the lanes at the end.
    #[target_feature(enable = "avx512f")]
    unsafe fn narrow_avx512(a: &[f32], stacked: usize, rows: usize, layer: &Layer, c: &mut [f32]) {
        let (k, n) = (layer.fan_in, layer.fan_out);
        let full = k / LANES * LANES;
        let tail = ((1u32 << (k - full)) - 1) as u16;
        for r in 0..stacked {
            // SAFETY: row r of `a` and of `c`, output o's weights: inside the slices (the caller's checks);
            // the masked loads read only the `k - full` entries left in a row.
            unsafe {
                let row = a.as_ptr().add(r * k);
                for o in 0..n {
                    let weights = layer.by_output.as_ptr().add(o * k);
                    let mut acc = _mm512_setzero_ps();
                    let mut p = 0;
                    while p < full {
                        acc = _mm512_fmadd_ps(
                            _mm512_loadu_ps(row.add(p)),
                            _mm512_loadu_ps(weights.add(p)),
                            acc,
                        );
                        p += LANES;
                    }
                    if tail != 0 {
                        let x = _mm512_maskz_loadu_ps(tail, row.add(full));
                        acc = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(tail, weights.add(full)), acc);
                    }
                    let bias = if r < rows { layer.bias[o] } else { 0.0 };
                    c[r * n + o] = _mm512_reduce_add_ps(acc) + bias;
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn layer_avx512(
        a: &[f32],
        stacked: usize,
        rows: usize,
        layer: &Layer,
        c: &mut [f32],
        activation: Option<Activation>,
        slope: &mut [f32],
    ) {
        let (k, n) = (layer.fan_in, layer.fan_out);
        let (a, w, b, c) = (
            a.as_ptr(),
            layer.weight.as_ptr(),
            layer.bias.as_ptr(),
            c.as_mut_ptr(),
        );
        let slope = slope.as_mut_ptr();
        let mut j = 0;
        while j < n {
            let wide = if n - j >= 4 * LANES { 4 } else { 1 };
            let mut r = 0;
            while r < stacked {
                // A block stays inside the values or inside one tangent block: its rows are those of the
                // same points.
                let point = r % rows;
                let block = (stacked - r).min(ROWS).min(rows - point);
                // SAFETY: as in `layer_forward`: rows r..r + block, their points point..point + block,
                // columns j..j + 16 wide.
                unsafe {
                    let at_slope = slope.add(point * n + j);
                    let (bias, epilogue) = match (r < rows, activation) {
                        (true, Some(activation)) => {
                            (Some(b.add(j)), Epilogue::Activate(activation, at_slope))
                        }
                        (true, None) => (Some(b.add(j)), Epilogue::Store),
                        (false, Some(_)) => (None, Epilogue::Scale(at_slope)),
                        (false, None) => (None, Epilogue::Store),
                    };
                    let (a, c) = (a.add(r * k), c.add(r * n + j));
                    let w = w.add(j);
                    match (wide, block) {
                        (4, 6) => block_kernel::<6, 4>(a, k, w, n, bias, c, epilogue),
                        (4, 5) => block_kernel::<5, 4>(a, k, w, n, bias, c, epilogue),
                        (4, 4) => block_kernel::<4, 4>(a, k, w, n, bias, c, epilogue),
                        (4, 3) => block_kernel::<3, 4>(a, k, w, n, bias, c, epilogue),
                        (4, 2) => block_kernel::<2, 4>(a, k, w, n, bias, c, epilogue),
                        (4, _) => block_kernel::<1, 4>(a, k, w, n, bias, c, epilogue),
                        (_, 6) => block_kernel::<6, 1>(a, k, w, n, bias, c, epilogue),
                        (_, 5) => block_kernel::<5, 1>(a, k, w, n, bias, c, epilogue),
                        (_, 4) => block_kernel::<4, 1>(a, k, w, n, bias, c, epilogue),
                        (_, 3) => block_kernel::<3, 1>(a, k, w, n, bias, c, epilogue),
                        (_, 2) => block_kernel::<2, 1>(a, k, w, n, bias, c, epilogue),
                        (_, _) => block_kernel::<1, 1>(a, k, w, n, bias, c, epilogue),
                    }
                }
                r += block;
            }
            j += wide * LANES;
        }
    }

    /// `R` rows by `16 V` columns of `c` (row stride `n`) from `a` (row stride `k`) and `W` (row stride
    /// `n`), started from the bias or from zero, finished by `epilogue`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block_kernel<const R: usize, const V: usize>(
        a: *const f32,
        k: usize,
        w: *const f32,
        n: usize,
        bias: Option<*const f32>,
        c: *mut f32,
        epilogue: Epilogue,
    ) {
        // SAFETY (whole body): the caller guarantees the block's rows and columns are in bounds.
        unsafe {
            let mut start = [_mm512_setzero_ps(); V];
            if let Some(bias) = bias {
                for (v, lane) in start.iter_mut().enumerate() {
                    *lane = _mm512_loadu_ps(bias.add(v * LANES));
                }
            }
            let mut acc: [[__m512; V]; R] = [start; R];
            for p in 0..k {
                let mut wv = [_mm512_setzero_ps(); V];
                for (v, lane) in wv.iter_mut().enumerate() {
                    *lane = _mm512_loadu_ps(w.add(p * n + v * LANES));
                }
                for (row, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(row * k + p));
                    for (lane, wv) in acc.iter_mut().zip(&wv) {
                        *lane = _mm512_fmadd_ps(x, *wv, *lane);
                    }
                }
            }
            for (row, acc) in acc.iter().enumerate() {
                for (v, lane) in acc.iter().enumerate() {
                    _mm512_storeu_ps(c.add(row * n + v * LANES), *lane);
                }
            }
            // The epilogue reads the block back from L1 in a loop of its own: inside the unrolled loop above,
            // its code would push the accumulators out of the registers.
            finish(c, n, R * V, V, epilogue);
        }
    }

    /// The epilogue of a block of `count` registers, `per_row` to a row of `c` (row stride `n`).
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn finish(c: *mut f32, n: usize, count: usize, per_row: usize, epilogue: Epilogue) {
        // SAFETY (whole body): the block's registers lie inside `c` and the slopes (the caller's bounds).
        unsafe {
            match epilogue {
                Epilogue::Store => {}
                Epilogue::Activate(activation, slope) => {
                    for i in 0..count {
                        let at = (i / per_row) * n + (i % per_row) * LANES;
                        let (value, derivative) = activate(activation, _mm512_loadu_ps(c.add(at)));
                        _mm512_storeu_ps(slope.add(at), derivative);
                        _mm512_storeu_ps(c.add(at), value);
                    }
                }
                Epilogue::Scale(slope) => {
                    for i in 0..count {
                        let at = (i / per_row) * n + (i % per_row) * LANES;
                        let z = _mm512_mul_ps(_mm512_loadu_ps(c.add(at)), _mm512_loadu_ps(slope.add(at)));
                        _mm512_storeu_ps(c.add(at), z);
                    }
                }
            }
        }
    }

    /// `(act(z), act'(z))` lane by lane, by the formulas of [`Activation::apply_in_place`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn activate(activation: Activation, z: __m512) -> (__m512, __m512) {
        let zero = _mm512_setzero_ps();
        let one = _mm512_set1_ps(1.0);
        let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(z, zero);
        match activation {
            Activation::Selu | Activation::Elu => {
                let (scale, alpha) = match activation {
                    Activation::Selu => (SELU_SCALE, SELU_ALPHA),
                    _ => (1.0, 1.0),
                };
                let scale_alpha = _mm512_set1_ps(scale * alpha);
                let negative = _mm512_mul_ps(scale_alpha, _mm512_sub_ps(exp(_mm512_min_ps(z, zero)), one));
                let scale = _mm512_set1_ps(scale);
                (
                    _mm512_mask_blend_ps(positive, negative, _mm512_mul_ps(scale, z)),
                    _mm512_mask_blend_ps(positive, _mm512_add_ps(negative, scale_alpha), scale),
                )
            }
            Activation::Relu => (_mm512_max_ps(z, zero), _mm512_mask_blend_ps(positive, zero, one)),
            Activation::Silu => {
                let sigmoid = _mm512_div_ps(one, _mm512_add_ps(one, exp(_mm512_sub_ps(zero, z))));
                let slope = _mm512_mul_ps(sigmoid, _mm512_fmadd_ps(z, _mm512_sub_ps(one, sigmoid), one));
                (_mm512_mul_ps(z, sigmoid), slope)
            }
            Activation::Tanh => {
                let two = _mm512_set1_ps(2.0);
                let h = _mm512_sub_ps(
                    one,
                    _mm512_div_ps(two, _mm512_add_ps(exp(_mm512_mul_ps(two, z)), one)),
                );
                (h, _mm512_fnmadd_ps(h, h, one))
            }
            Activation::Gelu => unreachable!("layer_forward declines GELU"),
        }
    }

    /// [`super::exp`] on 16 lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exp(x: __m512) -> __m512 {
        const SHIFT: f32 = 12_582_912.0;
        let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
        let shifted = _mm512_fmadd_ps(
            xc,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
            _mm512_set1_ps(SHIFT),
        );
        let k = _mm512_sub_ps(shifted, _mm512_set1_ps(SHIFT));
        let k_bits = _mm512_sub_epi32(
            _mm512_castps_si512(shifted),
            _mm512_set1_epi32(SHIFT.to_bits() as i32),
        );
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693_145_75), xc);
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 5_040.0);
        for coefficient in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(coefficient));
        }
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            k_bits,
            _mm512_set1_epi32(127),
        )));
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.0));
        _mm512_mask_blend_ps(below, _mm512_mul_ps(p, scale), _mm512_setzero_ps())
    }
}

/// An explicit Runge-Kutta method on a fixed grid of times, for [`MlpKernel::integrate`]: the Butcher
/// tableau's nodes `c`, its strictly lower-triangular `a` (row `i` has `i` entries) and weights `b`.
#[derive(Clone, Copy, Debug)]
pub struct FixedSteps<'a> {
    /// The grid `t_0, ..., t_N` (N steps).
    pub times: &'a [f64],
    /// Nodes, one per stage (`c_0 = 0`).
    pub c: &'a [f64],
    /// Stage coefficients.
    pub a: &'a [&'a [f64]],
    /// Weights of the new state.
    pub b: &'a [f64],
}

/// An integration whose state stopped being finite: after step `step` (0-based) of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonFinite {
    /// The first step whose new state holds a NaN or an infinity.
    pub step: usize,
}

/// `y += w x`, rounding the product and then the sum (as a tensor's `y += x * w` does).
#[inline]
fn add_scaled(y: &mut [f32], w: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        let product = x * w;
        *y += product;
    }
}

/// A worker's buffers for [`MlpKernel::integrate`]: a stage's input, the stage derivatives, the network's.
#[derive(Default)]
struct IntegrationScratch {
    stage: Vec<f32>,
    k: Vec<f32>,
    div: Vec<f32>,
    net: Scratch,
}

/// A worker's buffers, grown to the largest tile it has seen and reused.
#[derive(Default)]
struct Scratch {
    input: Vec<f32>,
    current: Vec<f32>,
    next: Vec<f32>,
    slope: Vec<f32>,
}

/// The buffers of one tile: its input, the stacked values and tangents before and after a layer, the slopes.
type Parts<'a> = (
    &'a mut [f32],
    &'a mut Vec<f32>,
    &'a mut Vec<f32>,
    &'a mut Vec<f32>,
);

impl Scratch {
    fn parts(&mut self, input_len: usize, len: usize, slope_len: usize) -> Parts<'_> {
        grow(&mut self.input, input_len);
        grow(&mut self.current, len);
        grow(&mut self.next, len);
        grow(&mut self.slope, slope_len);
        (
            &mut self.input[..input_len],
            &mut self.current,
            &mut self.next,
            &mut self.slope,
        )
    }
}

fn grow(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
}

impl Activation {
    /// Replaces every `z` of `values` by `act(z)` and writes `act'(z)` into `slope`, in one pass.
    /// Panics for GELU, which [`MlpKernel::new`] declines.
    #[inline(always)]
    fn apply_in_place(self, values: &mut [f32], slope: &mut [f32]) {
        let pairs = values.iter_mut().zip(slope.iter_mut());
        match self {
            Activation::Selu => pairs.for_each(|(z, s)| {
                let negative = SELU_SCALE * SELU_ALPHA * (exp(z.min(0.0)) - 1.0);
                let positive = *z > 0.0;
                *s = if positive {
                    SELU_SCALE
                } else {
                    negative + SELU_SCALE * SELU_ALPHA
                };
                *z = if positive { SELU_SCALE * *z } else { negative };
            }),
            Activation::Elu => pairs.for_each(|(z, s)| {
                let negative = exp(z.min(0.0)) - 1.0;
                let positive = *z > 0.0;
                *s = if positive { 1.0 } else { negative + 1.0 };
                *z = if positive { *z } else { negative };
            }),
            Activation::Relu => pairs.for_each(|(z, s)| {
                let positive = *z > 0.0;
                *s = if positive { 1.0 } else { 0.0 };
                *z = if positive { *z } else { 0.0 };
            }),
            Activation::Silu => pairs.for_each(|(z, s)| {
                let sigmoid = 1.0 / (1.0 + exp(-*z));
                *s = sigmoid * (1.0 + *z * (1.0 - sigmoid));
                *z *= sigmoid;
            }),
            Activation::Tanh => pairs.for_each(|(z, s)| {
                // tanh z = 1 - 2 / (e^{2z} + 1), saturating correctly at both ends.
                let h = 1.0 - 2.0 / (exp(2.0 * *z) + 1.0);
                *s = 1.0 - h * h;
                *z = h;
            }),
            Activation::Gelu => unreachable!("MlpKernel::new declines GELU"),
        }
    }
}

/// `e^x` in `f32` to about 2 ulp on `[-87, 88]` (0 below, `e^88` above), branch-free so the loops above
/// vectorise: `2^k e^r` with `k = round(x / ln 2)`, `|r| <= ln(2) / 2`, `e^r` by its Taylor polynomial of
/// degree 7 (truncation below `(ln 2 / 2)^8 / 8! < 6e-9` relative).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let xc = x.clamp(-87.0, 88.0);
    let shifted = xc * LOG2_E + SHIFT;
    let k = shifted - SHIFT;
    let k_bits = (shifted.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let scale = f32::from_bits(((k_bits + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst: f64 = 0.0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max((super::exp(x) as f64 - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(super::exp(-100.0), 0.0);
        assert_eq!(super::exp(0.0), 1.0);
    }

    /// The AVX-512 layer against the portable one (`matrixmultiply`'s product, element-wise passes): widths
    /// with and without a 64-column block, row counts around the register block, tangent blocks below the
    /// values, every activation and none.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_layer_matches_the_portable_one() {
        use crate::mlp::Activation;
        if !super::avx512::available() {
            eprintln!("no AVX-512 on this CPU: the portable layer is the only one");
            return;
        }
        let mut state = 12345u32;
        let mut draw = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let activations = [
            None,
            Some(Activation::Selu),
            Some(Activation::Elu),
            Some(Activation::Relu),
            Some(Activation::Silu),
            Some(Activation::Tanh),
        ];
        for (fan_in, fan_out) in [
            (3, 64),
            (64, 64),
            (64, 16),
            (17, 80),
            (64, 128),
            (5, 2),
            (64, 2),
            (40, 3),
        ] {
            let weight: Vec<f32> = (0..fan_in * fan_out).map(|_| 4.0 * draw()).collect();
            let by_output = if fan_out < 16 {
                (0..fan_out * fan_in)
                    .map(|i| weight[(i % fan_in) * fan_out + i / fan_in])
                    .collect()
            } else {
                Vec::new()
            };
            let layer = super::Layer {
                weight,
                by_output,
                bias: (0..fan_out).map(|_| draw()).collect(),
                fan_in,
                fan_out,
            };
            for (stacked, rows) in [(1, 1), (6, 6), (7, 7), (21, 7), (23, 23), (768, 256)] {
                let a: Vec<f32> = (0..stacked * fan_in).map(|_| draw()).collect();
                for activation in activations {
                    let (mut want, mut want_slope) =
                        (vec![0.0; stacked * fan_out], vec![0.0; rows * fan_out]);
                    super::layer_forward_portable(
                        &a,
                        stacked,
                        rows,
                        &layer,
                        &mut want,
                        activation,
                        &mut want_slope,
                    );
                    let (mut got, mut got_slope) =
                        (vec![f32::NAN; stacked * fan_out], vec![f32::NAN; rows * fan_out]);
                    let applied = super::avx512::layer_forward(
                        &a,
                        stacked,
                        rows,
                        &layer,
                        &mut got,
                        activation,
                        &mut got_slope,
                    );
                    let narrow = fan_out < 16 && activation.is_none();
                    assert_eq!(applied, fan_out % 16 == 0 || narrow, "{fan_in} x {fan_out}");
                    if !applied {
                        continue;
                    }
                    let pairs = got.iter().zip(&want);
                    let slopes = got_slope.iter().zip(&want_slope).filter(|_| activation.is_some());
                    for (i, (g, w)) in pairs.chain(slopes).enumerate() {
                        assert!(
                            (g - w).abs() <= 2e-5 * (1.0 + w.abs()),
                            "{activation:?}, {fan_in} x {fan_out}, {stacked} rows ({rows} values), entry {i}: \
                             {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
