//! AVX2+FMA depthwise convolution rows.
//!
//! Interior outputs (all taps inside the input) are computed four pixels at a
//! time so that each weight vector loaded serves four FMAs; border pixels
//! skip the taps that fall in the padding. Channels go eight per vector, and
//! a channel count that is not a multiple of eight ends in a scalar tail.

use std::arch::x86_64::*;

use super::depthwise::{DepthwiseConv, Geometry};
use super::{valid_taps, Activation};

/// Output pixels per interior block.
const PIXELS: usize = 4;

/// Computes output row `oy` of `conv` into `out_row`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn row(conv: &DepthwiseConv, g: &Geometry<'_>, oy: usize, out_row: &mut [f32]) {
    let (c, k, s) = (conv.channels, conv.kernel, conv.stride);
    assert_eq!(out_row.len(), g.out_width * c, "output row length");
    assert_eq!(conv.weight.len(), k * k * c, "weight length");
    let origin_y = (oy * s) as isize - g.pad_top as isize;
    let (ky0, ky1) = valid_taps(origin_y, k, g.height);
    // The caller checked that the window holds input rows `origin_y + ky0 ..
    // origin_y + ky1`; rows are indexed from the window's first row.
    let window_y = origin_y - g.first_row as isize;
    // Outputs `x_lo..x_hi` have every horizontal tap inside the input.
    let x_lo = g.pad_left.div_ceil(s);
    let x_hi = if g.width + g.pad_left >= k {
        ((g.width + g.pad_left - k) / s + 1).min(g.out_width)
    } else {
        0
    };
    let (lo, hi) = match conv.activation {
        Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY),
        Activation::Relu6 => (0.0, 6.0),
    };
    let rows = Rows {
        conv,
        g,
        window_y,
        ky0,
        ky1,
        lo: _mm256_set1_ps(lo),
        hi: _mm256_set1_ps(hi),
    };
    let out = out_row.as_mut_ptr();
    let mut ox = 0;
    while ox < g.out_width {
        if ox >= x_lo && ox + PIXELS <= x_hi {
            rows.interior_block(ox, out.wrapping_add(ox * c));
            ox += PIXELS;
        } else {
            rows.single(ox, out.wrapping_add(ox * c));
            ox += 1;
        }
    }
}

/// Per-row state shared by the pixel kernels.
struct Rows<'a> {
    conv: &'a DepthwiseConv,
    g: &'a Geometry<'a>,
    /// Row of the first vertical tap, relative to the window.
    window_y: isize,
    ky0: usize,
    ky1: usize,
    lo: __m256,
    hi: __m256,
}

impl Rows<'_> {
    /// Computes `PIXELS` outputs starting at `ox`, all of whose taps are
    /// inside the input horizontally, into `out`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn interior_block(&self, ox: usize, out: *mut f32) {
        let conv = self.conv;
        let (c, k, s) = (conv.channels, conv.kernel, conv.stride);
        let input = self.g.input.as_ptr();
        let weight = conv.weight.as_ptr();
        let bias = conv.bias.as_ptr();
        let left = (ox * s - self.g.pad_left) * c;
        let step = s * c;
        let vector_end = c / 8 * 8;
        let mut ch = 0;
        while ch < vector_end {
            let mut acc = [_mm256_loadu_ps(bias.wrapping_add(ch)); PIXELS];
            for ky in self.ky0..self.ky1 {
                let iy = (self.window_y + ky as isize) as usize;
                let row = input.wrapping_add(iy * self.g.width * c + left + ch);
                let taps = weight.wrapping_add(ky * k * c + ch);
                for kx in 0..k {
                    let w = _mm256_loadu_ps(taps.wrapping_add(kx * c));
                    let pixel = row.wrapping_add(kx * c);
                    for (p, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(pixel.wrapping_add(p * step)), w, *a);
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                let clamped = _mm256_min_ps(_mm256_max_ps(*a, self.lo), self.hi);
                _mm256_storeu_ps(out.wrapping_add(p * c + ch), clamped);
            }
            ch += 8;
        }
        for p in 0..PIXELS {
            self.scalar_tail(ox + p, vector_end, out.wrapping_add(p * c));
        }
    }

    /// Computes the output at `ox`, skipping taps in the padding, into `out`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn single(&self, ox: usize, out: *mut f32) {
        let conv = self.conv;
        let (c, k, s) = (conv.channels, conv.kernel, conv.stride);
        let origin_x = (ox * s) as isize - self.g.pad_left as isize;
        let (kx0, kx1) = valid_taps(origin_x, k, self.g.width);
        let input = self.g.input.as_ptr();
        let weight = conv.weight.as_ptr();
        let bias = conv.bias.as_ptr();
        let vector_end = c / 8 * 8;
        let mut ch = 0;
        while ch < vector_end {
            let mut acc = _mm256_loadu_ps(bias.wrapping_add(ch));
            for ky in self.ky0..self.ky1 {
                let iy = (self.window_y + ky as isize) as usize;
                for kx in kx0..kx1 {
                    let ix = (origin_x + kx as isize) as usize;
                    let x = _mm256_loadu_ps(input.wrapping_add((iy * self.g.width + ix) * c + ch));
                    let w = _mm256_loadu_ps(weight.wrapping_add((ky * k + kx) * c + ch));
                    acc = _mm256_fmadd_ps(x, w, acc);
                }
            }
            let clamped = _mm256_min_ps(_mm256_max_ps(acc, self.lo), self.hi);
            _mm256_storeu_ps(out.wrapping_add(ch), clamped);
            ch += 8;
        }
        self.scalar_tail(ox, vector_end, out);
    }

    /// Computes channels `first..c` of the output at `ox` one at a time.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scalar_tail(&self, ox: usize, first: usize, out: *mut f32) {
        let conv = self.conv;
        let (c, k, s) = (conv.channels, conv.kernel, conv.stride);
        let origin_x = (ox * s) as isize - self.g.pad_left as isize;
        let (kx0, kx1) = valid_taps(origin_x, k, self.g.width);
        for ch in first..c {
            let mut acc = conv.bias[ch];
            for ky in self.ky0..self.ky1 {
                let iy = (self.window_y + ky as isize) as usize;
                for kx in kx0..kx1 {
                    let ix = (origin_x + kx as isize) as usize;
                    let x = self.g.input[(iy * self.g.width + ix) * c + ch];
                    acc = x.mul_add(conv.weight[(ky * k + kx) * c + ch], acc);
                }
            }
            *out.wrapping_add(ch) = conv.activation.apply(acc);
        }
    }
}
