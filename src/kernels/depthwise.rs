//! Depthwise `k`x`k` convolution with `SAME` padding on NHWC images, with the
//! bias and activation fused into the output pass.
//!
//! The kernels read input rows that already carry the horizontal padding as
//! zero columns, so every output pixel uses all `k` taps of a row and the
//! SIMD code needs no border cases. Vertical padding is handled by skipping
//! the tap rows that fall outside the image.

use std::ops::Range;

use super::{
    for_row_chunks, same_padding, select_columns, valid_taps, Activation, Exec, Isa, SamePadding,
};

/// Consecutive rows of an NHWC image, possibly not all of it, with the
/// convolution's horizontal padding (see [`DepthwiseConv::column_padding`]).
pub struct InputWindow<'a> {
    /// Rows `first_row..`, each of `before + width + after` pixels whose
    /// padding pixels are zero.
    pub rows: &'a [f32],
    pub first_row: usize,
    /// Height of the whole image, which sets the vertical padding.
    pub height: usize,
    /// Width of the image without padding.
    pub width: usize,
}

/// Returns the input rows (clipped to the image) that output rows
/// `out_rows` of a `kernel`-tap, `stride` convolution with `SAME` padding
/// read from an image of `height` rows.
pub fn input_rows(
    out_rows: Range<usize>,
    height: usize,
    kernel: usize,
    stride: usize,
) -> Range<usize> {
    let pad = same_padding(height, kernel, stride).before as isize;
    if out_rows.is_empty() {
        return 0..0;
    }
    let start = (out_rows.start * stride) as isize - pad;
    let end = ((out_rows.end - 1) * stride + kernel) as isize - pad;
    let start = start.clamp(0, height as isize) as usize;
    let end = end.clamp(0, height as isize) as usize;
    start..end.max(start)
}

/// A depthwise convolution (one `kernel`x`kernel` filter per channel) with
/// its bias, activation and weights laid out for the kernels.
#[derive(Clone, Debug)]
pub struct DepthwiseConv {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Tap-major weights `[kernel * kernel, channels]`, so the filters of
    /// neighbouring channels are contiguous like the NHWC input.
    pub(super) weight: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub activation: Activation,
}

/// Geometry of one depthwise call.
pub(super) struct Geometry<'a> {
    /// Padded input rows `first_row..`.
    pub input: &'a [f32],
    pub first_row: usize,
    /// Height of the whole input image, which sets the padding.
    pub height: usize,
    /// Pixels per padded input row.
    pub padded_width: usize,
    pub out_width: usize,
    pub pad_top: usize,
}

impl DepthwiseConv {
    /// Builds the convolution from PyTorch-layout weights `[channels, 1,
    /// kernel, kernel]`.
    pub fn from_pytorch(
        channels: usize,
        kernel: usize,
        stride: usize,
        weight: &[f32],
        bias: Vec<f32>,
        activation: Activation,
    ) -> Self {
        assert_eq!(weight.len(), channels * kernel * kernel, "weight length");
        assert_eq!(bias.len(), channels, "bias length");
        assert!(
            kernel > 0 && stride > 0,
            "kernel and stride must be positive"
        );
        let taps = kernel * kernel;
        let mut tap_major = vec![0.0; weight.len()];
        for c in 0..channels {
            for tap in 0..taps {
                tap_major[tap * channels + c] = weight[c * taps + tap];
            }
        }
        DepthwiseConv {
            channels,
            kernel,
            stride,
            weight: tap_major,
            bias,
            activation,
        }
    }

    /// Returns the convolution restricted to channels `channels`.
    pub fn channel_slice(&self, channels: Range<usize>) -> DepthwiseConv {
        // Tap-major weights: one row of `self.channels` values per tap.
        let weight = select_columns(&self.weight, self.channels, channels.clone());
        DepthwiseConv {
            channels: channels.len(),
            kernel: self.kernel,
            stride: self.stride,
            weight,
            bias: self.bias[channels].to_vec(),
            activation: self.activation,
        }
    }

    /// Output `(height, width)` for an input of `height` x `width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        (
            same_padding(height, self.kernel, self.stride).output,
            same_padding(width, self.kernel, self.stride).output,
        )
    }

    /// Horizontal `SAME` padding for an input `width` pixels wide.
    pub fn column_padding(&self, width: usize) -> SamePadding {
        same_padding(width, self.kernel, self.stride)
    }

    /// Copies `[height, width, channels]` `input` into rows with the zero
    /// columns that [`InputWindow`] expects.
    pub fn pad_columns(&self, input: &[f32], height: usize, width: usize) -> Vec<f32> {
        let c = self.channels;
        assert_eq!(input.len(), height * width * c, "input length");
        let pad = self.column_padding(width);
        let padded_row = (pad.before + width + pad.after) * c;
        let mut padded = vec![0.0; height * padded_row];
        for (src, dst) in input
            .chunks_exact(width * c)
            .zip(padded.chunks_exact_mut(padded_row))
        {
            dst[pad.before * c..(pad.before + width) * c].copy_from_slice(src);
        }
        padded
    }

    /// Convolves one `[height, width, channels]` image into `output`, which
    /// must hold `[out_h, out_w, channels]` values.
    pub fn forward(
        &self,
        exec: Exec,
        input: &[f32],
        height: usize,
        width: usize,
        output: &mut [f32],
    ) {
        let out_h = same_padding(height, self.kernel, self.stride).output;
        let padded = self.pad_columns(input, height, width);
        let window = InputWindow {
            rows: &padded,
            first_row: 0,
            height,
            width,
        };
        self.forward_rows(exec, &window, 0..out_h, output);
    }

    /// Computes output rows `out_rows` into `output` (`[rows, out_w,
    /// channels]`) from the input rows in `window`, which must include every
    /// input row those outputs read.
    pub fn forward_rows(
        &self,
        exec: Exec,
        window: &InputWindow<'_>,
        out_rows: Range<usize>,
        output: &mut [f32],
    ) {
        let (k, s, c) = (self.kernel, self.stride, self.channels);
        let pad_y = same_padding(window.height, k, s);
        let pad_x = same_padding(window.width, k, s);
        let padded_width = pad_x.before + window.width + pad_x.after;
        let row_len = pad_x.output * c;
        assert!(out_rows.end <= pad_y.output, "output rows past the image");
        assert_eq!(output.len(), out_rows.len() * row_len, "output length");
        let present = window.rows.len() / (padded_width * c).max(1);
        assert_eq!(
            window.rows.len(),
            present * padded_width * c,
            "input window length is not a whole number of padded rows"
        );
        let needed = input_rows(out_rows.clone(), window.height, k, s);
        assert!(
            needed.is_empty()
                || (window.first_row <= needed.start && needed.end <= window.first_row + present),
            "input rows {needed:?} are not all in the window"
        );
        let geometry = Geometry {
            input: window.rows,
            first_row: window.first_row,
            height: window.height,
            padded_width,
            out_width: pad_x.output,
            pad_top: pad_y.before,
        };
        let isa = exec.isa;
        assert!(isa.is_supported(), "{isa:?} kernels are not supported here");
        for_row_chunks(output, row_len, exec.parallel, |first, chunk| {
            for (index, out_row) in chunk.chunks_exact_mut(row_len).enumerate() {
                let oy = out_rows.start + first + index;
                match isa {
                    Isa::Portable => self.row_portable(&geometry, oy, out_row),
                    // SAFETY: `is_supported` checked above that the CPU has AVX2
                    // and FMA, and the window contains every row that `oy` reads.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2Fma => unsafe {
                        super::depthwise_avx2::row(self, &geometry, oy, out_row)
                    },
                    #[cfg(not(target_arch = "x86_64"))]
                    Isa::Avx2Fma => unreachable!("AVX2 kernels exist only on x86-64"),
                }
            }
        });
    }

    /// Computes output row `oy` with plain loops over channels.
    fn row_portable(&self, g: &Geometry<'_>, oy: usize, out_row: &mut [f32]) {
        let (c, k, s) = (self.channels, self.kernel, self.stride);
        let origin_y = (oy * s) as isize - g.pad_top as isize;
        let (ky0, ky1) = valid_taps(origin_y, k, g.height);
        let window_y = origin_y - g.first_row as isize;
        for (ox, out) in out_row.chunks_exact_mut(c).enumerate() {
            out.copy_from_slice(&self.bias);
            for ky in ky0..ky1 {
                let iy = (window_y + ky as isize) as usize;
                for kx in 0..k {
                    let pixel = &g.input[(iy * g.padded_width + ox * s + kx) * c..][..c];
                    let taps = &self.weight[(ky * k + kx) * c..][..c];
                    for ((o, &x), &w) in out.iter_mut().zip(pixel).zip(taps) {
                        *o += x * w;
                    }
                }
            }
            for o in out.iter_mut() {
                *o = self.activation.apply(*o);
            }
        }
    }
}
