//! Runs a block on one image over several threads by giving each thread a
//! share of the block's hidden channels.
//!
//! Hidden channels are independent through the expansion and the depthwise
//! convolution, and the projection is a sum over them. So each thread runs
//! the whole block, band by band, on its share of the channels and of the
//! weights, and the partial projections are added at the end. Unlike a row
//! split, no part expands rows that its neighbour expands too, which on a
//! 14x14 or 7x7 image would be much of the work.

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::block::ensure_len;
use super::build::Block;
use crate::kernels::{Activation, Exec};

/// A block's parts for one thread count, built on first use. Each part is
/// a block of its own: one share of the hidden channels, with the residual
/// and the projection's bias in the first part only.
#[derive(Clone, Debug, Default)]
pub(super) struct BlockParts(OnceLock<(usize, Vec<Block>)>);

thread_local! {
    /// Projections of the parts after the first, summed into the output.
    static PARTIALS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Start of share `index` of `channels` cut into `count` shares, at a
/// multiple of 8 so that every share fills whole SIMD vectors.
fn share_start(channels: usize, count: usize, index: usize) -> usize {
    if index >= count {
        channels
    } else {
        channels * index / count / 8 * 8
    }
}

impl Block {
    /// Whether [`forward_channel_split`](Self::forward_channel_split) can run
    /// this block in `parts` parts: the block must expand, project without
    /// an activation (so that partial sums add up), and give every part at
    /// least 16 channels.
    pub(super) fn can_split_channels(&self, parts: usize) -> bool {
        self.expand.is_some()
            && self.project.activation == Activation::Identity
            && parts > 1
            && self.depthwise.channels >= 16 * parts
    }

    fn make_parts(&self, count: usize) -> Vec<Block> {
        let expand = self
            .expand
            .as_ref()
            .expect("can_split_channels accepts only blocks that expand");
        let hidden = self.depthwise.channels;
        (0..count)
            .map(|index| {
                let share =
                    share_start(hidden, count, index)..share_start(hidden, count, index + 1);
                Block {
                    expand: Some(expand.output_slice(share.clone())),
                    depthwise: self.depthwise.channel_slice(share.clone()),
                    project: self.project.input_slice(share, index == 0),
                    residual: self.residual && index == 0,
                    parts: BlockParts::default(),
                }
            })
            .collect()
    }

    /// Runs the block on one `[height, width, in_channels]` image into
    /// `output`, one share of the hidden channels per rayon thread. The
    /// caller checks [`can_split_channels`](Self::can_split_channels).
    pub(super) fn forward_channel_split(
        &self,
        exec: Exec,
        input: &[f32],
        height: usize,
        width: usize,
        output: &mut [f32],
    ) {
        let count = rayon::current_num_threads();
        let fresh;
        let parts = match self.parts.0.get_or_init(|| (count, self.make_parts(count))) {
            (built_for, parts) if *built_for == count => parts,
            // A pool of another size than the first call's gets parts built
            // for this call only.
            _ => {
                fresh = self.make_parts(count);
                &fresh
            }
        };

        let serial = Exec {
            parallel: false,
            ..exec
        };
        let (out_h, _) = self.depthwise.output_size(height, width);
        let out_len = output.len();
        let mut partials = PARTIALS.with(|cell| cell.take());
        let partials_len = (count - 1) * out_len;
        ensure_len(&mut partials, partials_len);
        let mut destinations: Vec<&mut [f32]> = std::iter::once(&mut *output)
            .chain(partials[..partials_len].chunks_exact_mut(out_len))
            .collect();

        parts
            .par_iter()
            .zip(destinations.par_iter_mut())
            .for_each(|(part, destination)| {
                part.forward_rows(serial, input, height, width, 0..out_h, destination);
            });

        for partial in partials[..partials_len].chunks_exact(out_len) {
            for (out, &value) in output.iter_mut().zip(partial) {
                *out += value;
            }
        }
        PARTIALS.with(|cell| cell.replace(partials));
    }
}

#[cfg(test)]
mod tests {
    use super::share_start;

    #[test]
    fn shares_cover_channels_in_multiples_of_eight() {
        for (channels, count) in [(96, 2), (144, 2), (1152, 3), (240, 4), (40, 2)] {
            let starts: Vec<usize> = (0..=count)
                .map(|i| share_start(channels, count, i))
                .collect();
            assert_eq!(starts[0], 0);
            assert_eq!(starts[count], channels);
            for pair in starts.windows(2) {
                assert!(pair[0] < pair[1], "{channels}/{count}: {starts:?}");
                assert_eq!(pair[0] % 8, 0, "{channels}/{count}: {starts:?}");
            }
        }
    }
}
