//! AVX2+FMA depthwise convolution rows on horizontally padded input.
//!
//! For 3x3 and 5x5 kernels at stride 1 and 2, a register block computes up
//! to eight neighbouring output pixels of eight channels at once. Per tap
//! row it loads the `k` weight vectors. At stride 1 it then loads each
//! input column of the block once and adds it to every output pixel that
//! uses it, so there are eight independent FMA chains and fewer loads than
//! FMAs. Other kernel sizes use a plain vector loop. Channels past the last
//! multiple of eight are computed one at a time.

use std::arch::x86_64::*;
use std::ops::Range;

use super::depthwise::{DepthwiseConv, Geometry};
use super::{valid_taps, Activation};

/// Bytes of L1 that the input columns of one 8-pixel block may take. Rows
/// with more channels are swept in channel chunks that fit.
const BLOCK_BYTES: usize = 24 * 1024;

/// Addresses and constants of one output row, for the pixel blocks.
struct RowArgs {
    /// Input at the first valid tap row, column 0, channel 0.
    input: *const f32,
    /// Floats from one padded input row to the next.
    row_stride: usize,
    /// Tap rows inside the image.
    taps: usize,
    /// Weights of the first valid tap row, column 0, channel 0.
    weight: *const f32,
    channels: usize,
    lo: __m256,
    hi: __m256,
}

/// Computes output row `oy` of `conv` into `out_row`.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `g.input` must hold every padded
/// input row that output row `oy` reads.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn row(conv: &DepthwiseConv, g: &Geometry<'_>, oy: usize, out_row: &mut [f32]) {
    let (c, k, s) = (conv.channels, conv.kernel, conv.stride);
    assert_eq!(out_row.len(), g.out_width * c, "output row length");
    assert_eq!(conv.weight.len(), k * k * c, "weight length");

    let origin_y = (oy * s) as isize - g.pad_top as isize;
    let (ky0, ky1) = valid_taps(origin_y, k, g.height);
    let first_tap_row = (origin_y + ky0 as isize - g.first_row as isize) as usize;
    let (lo, hi) = match conv.activation {
        Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY),
        Activation::Relu6 => (0.0, 6.0),
    };
    let args = RowArgs {
        input: g
            .input
            .as_ptr()
            .wrapping_add(first_tap_row * g.padded_width * c),
        row_stride: g.padded_width * c,
        taps: ky1 - ky0,
        weight: conv.weight.as_ptr().wrapping_add(ky0 * k * c),
        channels: c,
        lo: _mm256_set1_ps(lo),
        hi: _mm256_set1_ps(hi),
    };

    let out = out_row.as_mut_ptr();
    let bias = conv.bias.as_ptr();
    let vector_end = c / 8 * 8;
    match (k, s) {
        (3, 1) => row_blocks::<3, 1>(&args, g.out_width, vector_end, bias, out),
        (3, 2) => row_blocks::<3, 2>(&args, g.out_width, vector_end, bias, out),
        (5, 1) => row_blocks::<5, 1>(&args, g.out_width, vector_end, bias, out),
        (5, 2) => row_blocks::<5, 2>(&args, g.out_width, vector_end, bias, out),
        _ => {
            for ch in (0..vector_end).step_by(8) {
                let bias = _mm256_loadu_ps(bias.wrapping_add(ch));
                row_vector_any(&args, k, s, g.out_width, ch, bias, out);
            }
        }
    }

    for ch in vector_end..c {
        for ox in 0..g.out_width {
            let mut acc = conv.bias[ch];
            for t in 0..args.taps {
                for kx in 0..k {
                    let x = *args
                        .input
                        .wrapping_add(t * args.row_stride + (ox * s + kx) * c + ch);
                    let w = conv.weight[((ky0 + t) * k + kx) * c + ch];
                    acc = x.mul_add(w, acc);
                }
            }
            out_row[ox * c + ch] = conv.activation.apply(acc);
        }
    }
}

/// Computes channels `0..vector_end` of every pixel in the row, in blocks
/// of 8 pixels and one block of the remaining 1 to 7. Each chunk of
/// channels sweeps the row block by block, so the input columns that
/// neighbouring blocks share are still in L1 (see [`BLOCK_BYTES`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_blocks<const K: usize, const S: usize>(
    args: &RowArgs,
    out_width: usize,
    vector_end: usize,
    bias: *const f32,
    out: *mut f32,
) {
    let full_end = out_width / 8 * 8;
    let column_bytes = K * (7 * S + K) * size_of::<f32>();
    let chunk_len = (BLOCK_BYTES / column_bytes / 8 * 8).max(8);
    for chunk in (0..vector_end).step_by(chunk_len) {
        let channels = chunk..(chunk + chunk_len).min(vector_end);
        for ox in (0..full_end).step_by(8) {
            channel_groups::<K, S, 8>(args, ox, channels.clone(), bias, out);
        }
        let ox = full_end;
        match out_width - full_end {
            0 => {}
            1 => channel_groups::<K, S, 1>(args, ox, channels, bias, out),
            2 => channel_groups::<K, S, 2>(args, ox, channels, bias, out),
            3 => channel_groups::<K, S, 3>(args, ox, channels, bias, out),
            4 => channel_groups::<K, S, 4>(args, ox, channels, bias, out),
            5 => channel_groups::<K, S, 5>(args, ox, channels, bias, out),
            6 => channel_groups::<K, S, 6>(args, ox, channels, bias, out),
            _ => channel_groups::<K, S, 7>(args, ox, channels, bias, out),
        }
    }
}

/// Computes the given channels of output pixels `ox..ox + P`, eight at a
/// time.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn channel_groups<const K: usize, const S: usize, const P: usize>(
    args: &RowArgs,
    ox: usize,
    channels: Range<usize>,
    bias: *const f32,
    out: *mut f32,
) {
    for ch in channels.step_by(8) {
        let bias = _mm256_loadu_ps(bias.wrapping_add(ch));
        pixel_block::<K, S, P>(args, ox, ch, bias, out);
    }
}

/// Computes channels `ch..ch + 8` of output pixels `ox..ox + P`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pixel_block<const K: usize, const S: usize, const P: usize>(
    args: &RowArgs,
    ox: usize,
    ch: usize,
    bias: __m256,
    out: *mut f32,
) {
    let c = args.channels;
    let mut acc = [bias; P];
    let mut input = args.input.wrapping_add(ox * S * c + ch);
    let mut weight = args.weight.wrapping_add(ch);
    for _ in 0..args.taps {
        let mut w = [_mm256_setzero_ps(); K];
        for (kx, w) in w.iter_mut().enumerate() {
            *w = _mm256_loadu_ps(weight.wrapping_add(kx * c));
        }
        if S == 1 {
            // Input column `j` of the block feeds output pixel `p` through
            // tap `kx = j - p` when that tap exists, so each column is loaded
            // once.
            for j in 0..P - 1 + K {
                let x = _mm256_loadu_ps(input.wrapping_add(j * c));
                for (p, acc) in acc.iter_mut().enumerate() {
                    if j >= p && j - p < K {
                        *acc = _mm256_fmadd_ps(x, w[j - p], *acc);
                    }
                }
            }
        } else {
            // Neighbouring pixels share few columns at stride 2. A load per
            // tap keeps the loop simple enough for the compiler to unroll,
            // which keeps the accumulators in registers.
            for (p, acc) in acc.iter_mut().enumerate() {
                for (kx, w) in w.iter().enumerate() {
                    let x = _mm256_loadu_ps(input.wrapping_add((p * S + kx) * c));
                    *acc = _mm256_fmadd_ps(x, *w, *acc);
                }
            }
        }
        input = input.wrapping_add(args.row_stride);
        weight = weight.wrapping_add(K * c);
    }
    for (p, acc) in acc.iter().enumerate() {
        let clamped = _mm256_min_ps(_mm256_max_ps(*acc, args.lo), args.hi);
        _mm256_storeu_ps(out.wrapping_add((ox + p) * c + ch), clamped);
    }
}

/// Computes channels `ch..ch + 8` of every pixel in the row for any kernel
/// size and stride, one pixel at a time.
#[target_feature(enable = "avx2,fma")]
unsafe fn row_vector_any(
    args: &RowArgs,
    k: usize,
    s: usize,
    out_width: usize,
    ch: usize,
    bias: __m256,
    out: *mut f32,
) {
    let c = args.channels;
    for ox in 0..out_width {
        let mut acc = bias;
        for t in 0..args.taps {
            for kx in 0..k {
                let x = args
                    .input
                    .wrapping_add(t * args.row_stride + (ox * s + kx) * c + ch);
                let w = args.weight.wrapping_add((t * k + kx) * c + ch);
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(w), acc);
            }
        }
        let clamped = _mm256_min_ps(_mm256_max_ps(acc, args.lo), args.hi);
        _mm256_storeu_ps(out.wrapping_add(ox * c + ch), clamped);
    }
}
