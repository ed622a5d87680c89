//! A fused CPU kernel for evaluating a trained [`Mlp`]: the velocity, and the velocity with its divergence in
//! forward mode (exact, or Hutchinson's estimate), on plain `f32` slices, for sampling and likelihoods.
//!
//! Why beside libtorch: on this project's machines a 2D MLP of width 64 spends most of its time in
//! libtorch's element-wise passes (SELU alone costs more than the layer's matrix product), each a trip
//! through memory with its own allocation. Here the batch is cut into tiles of [`TILE`] rows that stay in
//! the core's cache through every layer: one matrix product per layer with its bias (a register-blocked
//! AVX-512 product where the CPU has AVX-512F and the width is a multiple of 16, else `ndarray`'s, which
//! is `matrixmultiply`'s runtime-dispatched AVX2/FMA kernels), then activation and its derivative in one
//! pass with a branch-free `exp`. The tangents of the forward mode ride in the same product as the values
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
            layers.push(Layer {
                weight,
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
        let tangents = match probes {
            None => Tangents::Exact,
            Some(probes) => Tangents::Probes(probes, probes.len() / x.len().max(1)),
        };
        self.run(x, t, tangents, out, divergence, threads);
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
        let mut divergence_chunks: Vec<&mut [f32]> = if with_divergence {
            divergence.chunks_mut(TILE).collect()
        } else {
            (0..n.div_ceil(TILE)).map(|_| <&mut [f32]>::default()).collect()
        };
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
        let width = first_layer.fan_out;
        affine(input, rows, rows, first_layer, &mut current[..rows * width]);
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
        let last = self.layers.len() - 1;
        let mut width = width;
        for (idx, layer) in self.layers.iter().enumerate() {
            if idx > 0 {
                affine(
                    &current[..stacked * layer.fan_in],
                    stacked,
                    rows,
                    layer,
                    &mut next[..stacked * layer.fan_out],
                );
                std::mem::swap(current, next);
                width = layer.fan_out;
            }
            // Values (their bias is in): the activation and its slope (hidden layers).
            let values = &mut current[..rows * width];
            if idx == last {
                break;
            }
            let slope = &mut slope[..rows * width];
            self.activation.apply_in_place(values, slope);
            // Tangents: times the slope of their point.
            for block in current[rows * width..stacked * width].chunks_mut(rows * width) {
                for (t, s) in block.iter_mut().zip(slope.iter()) {
                    *t *= s;
                }
            }
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

/// `c = a W + b` for `a` `[rows, fan_in]`, the bias `b` added to the first `bias_rows` rows only (the values;
/// the tangent rows below them take no bias). AVX-512's register-blocked product where the CPU has it and
/// the layer's width is a multiple of 16, else `matrixmultiply`'s product and a pass for the bias.
fn affine(a: &[f32], rows: usize, bias_rows: usize, layer: &Layer, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::affine(a, rows, bias_rows, layer, c) {
        return;
    }
    affine_portable(a, rows, bias_rows, layer, c);
}

fn affine_portable(a: &[f32], rows: usize, bias_rows: usize, layer: &Layer, c: &mut [f32]) {
    let av = ArrayView2::from_shape((rows, layer.fan_in), a).expect("a is [rows, fan_in]");
    let w = ArrayView2::from_shape((layer.fan_in, layer.fan_out), &layer.weight).expect("W is [in, out]");
    let mut cv = ArrayViewMut2::from_shape((rows, layer.fan_out), &mut *c).expect("c is [rows, fan_out]");
    general_mat_mul(1.0, &av, &w, 0.0, &mut cv);
    for row in c[..bias_rows * layer.fan_out].chunks_mut(layer.fan_out) {
        for (z, b) in row.iter_mut().zip(&layer.bias) {
            *z += b;
        }
    }
}

/// The layer product `c = a W (+ b)` with AVX-512 (`avx512f`): rows in blocks of [`avx512::ROWS`], columns
/// in blocks of 64 (four 16-lane registers), so each block keeps 24 accumulators in registers, reads each
/// weight row once per block and broadcasts each input once per register row: the fused multiply-adds issue
/// back to back, where a general product spends much of its time packing small matrices.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::Layer;

    /// Rows of a register block.
    pub(super) const ROWS: usize = 6;
    /// Lanes of a register.
    const LANES: usize = 16;

    /// Whether this CPU has AVX-512F (cached by the standard library).
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// `c = a W (+ b on the first bias_rows rows)`; `false` (and nothing written) where it does not apply.
    pub(super) fn affine(a: &[f32], rows: usize, bias_rows: usize, layer: &Layer, c: &mut [f32]) -> bool {
        let (k, n) = (layer.fan_in, layer.fan_out);
        if n % LANES != 0 || !available() {
            return false;
        }
        assert!(a.len() >= rows * k && c.len() >= rows * n && bias_rows <= rows);
        assert!(layer.weight.len() == k * n && layer.bias.len() == n);
        // SAFETY: AVX-512F is present (checked above) and every access below stays inside `a[..rows * k]`,
        // `W[..k * n]`, `b[..n]` and `c[..rows * n]` (asserted above): a block reads rows `r..r + R` of `a`
        // and writes the same rows of `c`, columns `j..j + 16 V` with `j + 16 V <= n`.
        unsafe { affine_avx512(a, rows, bias_rows, layer, c) };
        true
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn affine_avx512(a: &[f32], rows: usize, bias_rows: usize, layer: &Layer, c: &mut [f32]) {
        let (k, n) = (layer.fan_in, layer.fan_out);
        let (a, w, b, c) = (
            a.as_ptr(),
            layer.weight.as_ptr(),
            layer.bias.as_ptr(),
            c.as_mut_ptr(),
        );
        let mut j = 0;
        while j < n {
            let wide = if n - j >= 4 * LANES { 4 } else { 1 };
            let mut r = 0;
            while r < rows {
                let block = (rows - r).min(ROWS);
                // Bias rows and tangent rows never share a block: the first block of tangents starts
                // at bias_rows.
                let block = if r < bias_rows {
                    block.min(bias_rows - r)
                } else {
                    block
                };
                // SAFETY: as in `affine`: rows r..r + block, columns j..j + 16 wide.
                unsafe {
                    let bias = if r < bias_rows { Some(b.add(j)) } else { None };
                    let (a, c) = (a.add(r * k), c.add(r * n + j));
                    let w = w.add(j);
                    match (wide, block) {
                        (4, 6) => block_kernel::<6, 4>(a, k, w, n, bias, c),
                        (4, 5) => block_kernel::<5, 4>(a, k, w, n, bias, c),
                        (4, 4) => block_kernel::<4, 4>(a, k, w, n, bias, c),
                        (4, 3) => block_kernel::<3, 4>(a, k, w, n, bias, c),
                        (4, 2) => block_kernel::<2, 4>(a, k, w, n, bias, c),
                        (4, _) => block_kernel::<1, 4>(a, k, w, n, bias, c),
                        (_, 6) => block_kernel::<6, 1>(a, k, w, n, bias, c),
                        (_, 5) => block_kernel::<5, 1>(a, k, w, n, bias, c),
                        (_, 4) => block_kernel::<4, 1>(a, k, w, n, bias, c),
                        (_, 3) => block_kernel::<3, 1>(a, k, w, n, bias, c),
                        (_, 2) => block_kernel::<2, 1>(a, k, w, n, bias, c),
                        (_, _) => block_kernel::<1, 1>(a, k, w, n, bias, c),
                    }
                }
                r += block;
            }
            j += wide * LANES;
        }
    }

    /// `R` rows by `16 V` columns of `c` (row stride `n`) from `a` (row stride `k`) and `W` (row stride
    /// `n`), started from the bias or from zero.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block_kernel<const R: usize, const V: usize>(
        a: *const f32,
        k: usize,
        w: *const f32,
        n: usize,
        bias: Option<*const f32>,
        c: *mut f32,
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
        }
    }
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

    /// The AVX-512 product against `matrixmultiply`'s, for widths with and without a 64-column block,
    /// row counts around the register block and the bias on a prefix of the rows.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_layer_product_matches_the_portable_one() {
        if !super::avx512::available() {
            eprintln!("no AVX-512 on this CPU: the portable product is the only one");
            return;
        }
        let mut state = 12345u32;
        let mut draw = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for (fan_in, fan_out) in [(3, 64), (64, 64), (64, 16), (17, 80), (64, 128), (5, 2)] {
            let layer = super::Layer {
                weight: (0..fan_in * fan_out).map(|_| draw()).collect(),
                bias: (0..fan_out).map(|_| draw()).collect(),
                fan_in,
                fan_out,
            };
            for (rows, bias_rows) in [(1, 1), (6, 6), (7, 3), (23, 10), (256, 128)] {
                let a: Vec<f32> = (0..rows * fan_in).map(|_| draw()).collect();
                let mut want = vec![0.0; rows * fan_out];
                super::affine_portable(&a, rows, bias_rows, &layer, &mut want);
                let mut got = vec![f32::NAN; rows * fan_out];
                let applied = super::avx512::affine(&a, rows, bias_rows, &layer, &mut got);
                assert_eq!(applied, fan_out % 16 == 0, "{fan_in} x {fan_out}");
                if !applied {
                    continue;
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{fan_in} x {fan_out}, {rows} rows ({bias_rows} with bias), entry {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
