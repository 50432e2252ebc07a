//! Runs an inverted-residual block in bands of output rows. The expanded
//! activations are six times wider than the block's input, so each band's
//! share is made, filtered and projected while it is still in the core's
//! cache instead of making a round trip through memory per layer.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::build::Block;
use crate::kernels::depthwise::{input_rows, InputWindow};
use crate::kernels::pointwise::OutputRows;
use crate::kernels::Exec;

/// Target size, in floats, of one band's expanded rows plus its depthwise
/// output: 256 KiB, half of a typical per-core L2 cache.
const BAND_FLOATS: usize = 64 * 1024;

/// Per-thread buffers for one band.
#[derive(Default)]
struct BandScratch {
    /// Expanded input rows of the current band.
    expanded: Vec<f32>,
    /// Depthwise output rows of the current band.
    filtered: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<BandScratch> = RefCell::new(BandScratch::default());
}

/// Grows `buffer` to at least `len` floats.
pub(super) fn ensure_len(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
}

impl Block {
    /// Runs the block on one `[height, width, in_channels]` image into
    /// `output` (`[out_h, out_w, out_channels]`). With `exec.parallel`, the
    /// threads split the hidden channels where the block allows it (see
    /// `split.rs`), and the output rows otherwise.
    pub(super) fn forward(
        &self,
        exec: Exec,
        input: &[f32],
        height: usize,
        width: usize,
        output: &mut [f32],
    ) {
        let (out_h, out_w) = self.depthwise.output_size(height, width);
        let row_len = out_w * self.project.out_channels;
        assert_eq!(output.len(), out_h * row_len, "block output length");
        let serial = Exec {
            parallel: false,
            ..exec
        };
        if !exec.parallel || out_h < 2 {
            self.forward_rows(serial, input, height, width, 0..out_h, output);
            return;
        }
        let threads = rayon::current_num_threads();
        if self.can_split_channels(threads) {
            self.forward_channel_split(exec, input, height, width, output);
            return;
        }
        // Otherwise the threads split the output rows. Neighbouring parts
        // both read the few input rows at their boundary.
        let rows_per_part = out_h.div_ceil(threads);
        output
            .par_chunks_mut(rows_per_part * row_len)
            .enumerate()
            .for_each(|(index, part)| {
                let start = index * rows_per_part;
                let rows = start..start + part.len() / row_len;
                self.forward_rows(serial, input, height, width, rows, part);
            });
    }

    /// Returns the output rows per band: as many as keep the band near
    /// `BAND_FLOATS`, or near the size of the block's weights if that is
    /// larger. Every band reads both 1x1 weight matrices again. In the late
    /// blocks the weights outweigh the activations, and on Lite0's 7x7
    /// blocks one band spilling from L2 measured faster than three bands.
    fn band_rows(&self, padded_width: usize, out_width: usize) -> usize {
        let hidden = self.depthwise.channels;
        let per_output_row = (self.depthwise.stride * padded_width + out_width) * hidden;
        let weights = hidden * (self.expand_inputs() + self.project.out_channels);
        (BAND_FLOATS.max(weights) / per_output_row).max(1)
    }

    /// Input channels of the 1x1 expansion, or 0 for a block without one.
    fn expand_inputs(&self) -> usize {
        self.expand.as_ref().map_or(0, |expand| expand.in_channels)
    }

    /// Computes output rows `out_rows` into `output`, band by band, on the
    /// calling thread.
    pub(super) fn forward_rows(
        &self,
        exec: Exec,
        input: &[f32],
        height: usize,
        width: usize,
        out_rows: Range<usize>,
        output: &mut [f32],
    ) {
        let (kernel, stride) = (self.depthwise.kernel, self.depthwise.stride);
        let hidden = self.depthwise.channels;
        let in_channels = input.len() / (height * width);
        let out_channels = self.project.out_channels;
        let (_, out_w) = self.depthwise.output_size(height, width);
        let pad = self.depthwise.column_padding(width);
        let padded_width = pad.before + width + pad.after;
        let band = self.band_rows(padded_width, out_w);
        // Expanded rows carry the depthwise convolution's zero columns.
        let hidden_row = padded_width * hidden;
        let interior = pad.before * hidden..(pad.before + width) * hidden;

        SCRATCH.with(|cell| {
            // The borrow is held only while this thread runs serial kernels,
            // so it cannot be taken twice.
            let BandScratch { expanded, filtered } = &mut *cell.borrow_mut();
            // Input rows whose expansion is currently in `expanded`.
            let mut expanded_span = 0..0;
            let mut oy0 = out_rows.start;
            while oy0 < out_rows.end {
                let oy1 = (oy0 + band).min(out_rows.end);
                let needed = input_rows(oy0..oy1, height, kernel, stride);
                ensure_len(expanded, needed.len() * hidden_row);
                // Bands move down the image, so the rows shared with the
                // previous band are at the end of `expanded_span`. They move
                // to the front instead of being expanded again.
                let fresh =
                    if expanded_span.start <= needed.start && needed.start < expanded_span.end {
                        let keep = (needed.start - expanded_span.start) * hidden_row;
                        expanded.copy_within(keep..expanded_span.len() * hidden_row, 0);
                        expanded_span.end.min(needed.end)
                    } else {
                        needed.start
                    };
                let fresh_rows =
                    &mut expanded[(fresh - needed.start) * hidden_row..needed.len() * hidden_row];
                for row in fresh_rows.chunks_exact_mut(hidden_row) {
                    row[..interior.start].fill(0.0);
                    row[interior.end..].fill(0.0);
                }
                let fresh_input =
                    &input[fresh * width * in_channels..needed.end * width * in_channels];
                match &self.expand {
                    _ if fresh_input.is_empty() => {}
                    Some(expand) => {
                        let rows = OutputRows {
                            pixels_per_row: width,
                            row_stride: hidden_row,
                        };
                        expand.forward_rows(
                            exec.isa,
                            fresh_input,
                            rows,
                            &mut fresh_rows[interior.start..],
                        );
                    }
                    None => {
                        for (src, dst) in fresh_input
                            .chunks_exact(width * in_channels)
                            .zip(fresh_rows.chunks_exact_mut(hidden_row))
                        {
                            dst[interior.clone()].copy_from_slice(src);
                        }
                    }
                }
                expanded_span = needed.clone();
                let window = InputWindow {
                    rows: &expanded[..needed.len() * hidden_row],
                    first_row: needed.start,
                    height,
                    width,
                };

                let filtered_len = (oy1 - oy0) * out_w * hidden;
                ensure_len(filtered, filtered_len);
                let filtered = &mut filtered[..filtered_len];
                self.depthwise
                    .forward_rows(exec, &window, oy0..oy1, filtered);

                let out_range = (oy0 - out_rows.start) * out_w * out_channels
                    ..(oy1 - out_rows.start) * out_w * out_channels;
                // A residual block keeps the spatial size and channel count,
                // so its input rows line up with the output rows.
                let residual = self
                    .residual
                    .then(|| &input[oy0 * out_w * out_channels..oy1 * out_w * out_channels]);
                self.project
                    .forward(exec, filtered, residual, &mut output[out_range]);
                oy0 = oy1;
            }
        });
    }
}
