//! Dense `k`x`k` convolution with `SAME` padding for the network's first
//! layer, computed as im2col rows fed to the pointwise GEMM.

use std::cell::Cell;

use super::pointwise::PointwiseConv;
use super::{for_row_chunks, same_padding, Activation, Exec};

thread_local! {
    /// Patch buffer of the output row being computed, reused between calls.
    static PATCHES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// A dense convolution with few input channels (the RGB stem).
#[derive(Clone, Debug)]
pub struct StemConv {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// The convolution as a GEMM over `[kernel * kernel * in_channels]`
    /// patches, ordered `(ky, kx, channel)` like the NHWC input.
    patches: PointwiseConv,
}

impl StemConv {
    /// Builds the convolution from PyTorch-layout weights `[out_channels,
    /// in_channels, kernel, kernel]`.
    pub fn from_pytorch(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        weight: &[f32],
        bias: Vec<f32>,
        activation: Activation,
    ) -> Self {
        let taps = kernel * kernel;
        assert_eq!(
            weight.len(),
            out_channels * in_channels * taps,
            "weight length"
        );
        let patch = taps * in_channels;
        let mut input_major = vec![0.0; patch * out_channels];
        for co in 0..out_channels {
            for ci in 0..in_channels {
                for tap in 0..taps {
                    let value = weight[(co * in_channels + ci) * taps + tap];
                    input_major[(tap * in_channels + ci) * out_channels + co] = value;
                }
            }
        }
        StemConv {
            in_channels,
            out_channels,
            kernel,
            stride,
            patches: PointwiseConv::from_input_major(
                patch,
                out_channels,
                input_major,
                bias,
                activation,
            ),
        }
    }

    /// Output `(height, width)` for an input of `height` x `width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        (
            same_padding(height, self.kernel, self.stride).output,
            same_padding(width, self.kernel, self.stride).output,
        )
    }

    /// Convolves one `[height, width, in_channels]` image into `output` of
    /// `[out_h, out_w, out_channels]`.
    pub fn forward(
        &self,
        exec: Exec,
        input: &[f32],
        height: usize,
        width: usize,
        output: &mut [f32],
    ) {
        let (k, s, cin) = (self.kernel, self.stride, self.in_channels);
        let pad_y = same_padding(height, k, s);
        let pad_x = same_padding(width, k, s);
        assert_eq!(input.len(), height * width * cin, "input length");
        assert_eq!(
            output.len(),
            pad_y.output * pad_x.output * self.out_channels,
            "output length"
        );
        let out_w = pad_x.output;
        let patch = k * k * cin;
        let row_len = out_w * self.out_channels;
        let serial = Exec {
            parallel: false,
            ..exec
        };
        for_row_chunks(output, row_len, exec.parallel, |first_row, chunk| {
            // One output row's patches (12 to 14 KiB for the Lite stems)
            // stay in L1 between being gathered and being multiplied. Every
            // value is written below, so the buffer needs no clearing.
            let mut patches = PATCHES.with(|cell| cell.take());
            patches.resize(out_w * patch, 0.0);
            for (index, out_row) in chunk.chunks_exact_mut(row_len).enumerate() {
                let oy = first_row + index;
                for (ox, dst) in patches.chunks_exact_mut(patch).enumerate() {
                    let ix0 = (ox * s) as isize - pad_x.before as isize;
                    let inside_x = ix0 >= 0 && ix0 as usize + k <= width;
                    for ky in 0..k {
                        let iy = (oy * s + ky) as isize - pad_y.before as isize;
                        let taps = &mut dst[ky * k * cin..(ky + 1) * k * cin];
                        if iy < 0 || iy >= height as isize {
                            taps.fill(0.0);
                            continue;
                        }
                        let row_start = iy as usize * width;
                        if inside_x {
                            // The row's `k` taps are contiguous in NHWC.
                            let src = (row_start + ix0 as usize) * cin;
                            taps.copy_from_slice(&input[src..src + k * cin]);
                            continue;
                        }
                        for (kx, tap) in taps.chunks_exact_mut(cin).enumerate() {
                            let ix = ix0 + kx as isize;
                            if ix < 0 || ix >= width as isize {
                                tap.fill(0.0);
                            } else {
                                let src = (row_start + ix as usize) * cin;
                                tap.copy_from_slice(&input[src..src + cin]);
                            }
                        }
                    }
                }
                self.patches.forward(serial, &patches, None, out_row);
            }
            PATCHES.with(|cell| cell.replace(patches));
        });
    }
}
