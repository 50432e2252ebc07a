//! The layer plan of an EfficientNet-Lite checkpoint: which blocks exist,
//! their channels, kernels and strides, and TensorFlow "SAME" padding.

use anyhow::{bail, Context, Result};

use crate::backbone::{BackboneKind, WeightTensor, Weights};

/// One stage of the EfficientNet-B0 scheme as used by the Lite variants:
/// `(repeats at depth 1.0, kernel, stride of the first block)`. Channels
/// and expansion ratios are read from the weight shapes instead.
const STAGES: [(usize, usize, usize); 7] = [
    (1, 3, 1),
    (2, 3, 2),
    (2, 5, 2),
    (3, 3, 2),
    (3, 5, 1),
    (4, 5, 2),
    (1, 3, 1),
];

/// An inverted-residual block (MBConv without squeeze-excitation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Index in the checkpoint, as in `_blocks.{index}.*`.
    pub index: usize,
    /// Whether a 1x1 expansion convolution precedes the depthwise one.
    pub expand: bool,
    pub in_channels: usize,
    /// Channels of the depthwise convolution (after expansion).
    pub mid_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl Block {
    /// Whether the block input is added to its output.
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// Depth multiplier of `kind` in tenths: 1.0, 1.1 and 1.2.
fn depth_tenths(kind: BackboneKind) -> usize {
    match kind {
        BackboneKind::Lite0 => 10,
        BackboneKind::Lite1 => 11,
        BackboneKind::Lite2 => 12,
    }
}

/// Repeats per stage: `ceil(depth * repeats)`, except that the Lite variants
/// keep the first and last stage at one block.
pub fn stage_repeats(kind: BackboneKind) -> Vec<usize> {
    let depth = depth_tenths(kind);
    STAGES
        .iter()
        .enumerate()
        .map(|(stage, &(repeats, _, _))| {
            if stage == 0 || stage == STAGES.len() - 1 {
                repeats
            } else {
                (repeats * depth).div_ceil(10)
            }
        })
        .collect()
}

/// Returns the tensor `name` after checking that it has `rank` dimensions.
pub fn tensor<'a>(weights: &'a Weights, name: &str, rank: usize) -> Result<&'a WeightTensor> {
    let tensor = weights
        .get(name)
        .with_context(|| format!("checkpoint tensor {name} is missing"))?;
    if tensor.shape.len() != rank {
        bail!(
            "checkpoint tensor {name} has shape {:?}, expected {rank} dimensions",
            tensor.shape
        );
    }
    Ok(tensor)
}

/// Reads the block plan of `kind` from the checkpoint weights, checking the
/// block count and kernel sizes against the stage table.
pub fn blocks(kind: BackboneKind, weights: &Weights) -> Result<Vec<Block>> {
    let repeats = stage_repeats(kind);
    let expected_count: usize = repeats.iter().sum();
    let found_count = (0..)
        .take_while(|i| weights.contains_key(&format!("_blocks.{i}._depthwise_conv.weight")))
        .count();
    if found_count != expected_count {
        bail!(
            "{kind} checkpoint has {found_count} blocks, expected {expected_count} \
             (is it a checkpoint of another backbone?)"
        );
    }

    let stem = tensor(weights, "_conv_stem.weight", 4)?;
    let mut in_channels = stem.shape[0];
    let mut plan = Vec::with_capacity(expected_count);
    for (stage, (&(_, kernel, first_stride), &count)) in STAGES.iter().zip(&repeats).enumerate() {
        for repeat in 0..count {
            let index = plan.len();
            let prefix = format!("_blocks.{index}");
            let depthwise = tensor(weights, &format!("{prefix}._depthwise_conv.weight"), 4)?;
            let project = tensor(weights, &format!("{prefix}._project_conv.weight"), 4)?;
            let expand_name = format!("{prefix}._expand_conv.weight");
            let expand = weights.contains_key(&expand_name);
            let mid_channels = depthwise.shape[0];
            if depthwise.shape[2..] != [kernel, kernel] {
                bail!(
                    "{prefix}._depthwise_conv.weight has shape {:?}, expected a {kernel}x{kernel} \
                     kernel for stage {stage}",
                    depthwise.shape
                );
            }
            if expand {
                let expand_tensor = tensor(weights, &expand_name, 4)?;
                if expand_tensor.shape[..2] != [mid_channels, in_channels] {
                    bail!(
                        "{expand_name} has shape {:?}, expected [{mid_channels}, {in_channels}, 1, 1]",
                        expand_tensor.shape
                    );
                }
            } else if mid_channels != in_channels {
                bail!(
                    "{prefix} has no expansion but its depthwise convolution has {mid_channels} \
                     channels for {in_channels} inputs"
                );
            }
            if project.shape[1] != mid_channels {
                bail!(
                    "{prefix}._project_conv.weight has shape {:?}, expected {mid_channels} inputs",
                    project.shape
                );
            }
            let out_channels = project.shape[0];
            plan.push(Block {
                index,
                expand,
                in_channels,
                mid_channels,
                out_channels,
                kernel,
                stride: if repeat == 0 { first_stride } else { 1 },
            });
            in_channels = out_channels;
        }
    }
    Ok(plan)
}

/// TensorFlow "SAME" padding of a `kernel`-wide, `stride`-step convolution
/// over `size` pixels: the output has `ceil(size / stride)` pixels, and an
/// odd total padding puts the extra pixel after the input. Returns
/// `(output size, padding before, padding after)`.
pub fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (out, total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_repeats_per_variant() {
        assert_eq!(stage_repeats(BackboneKind::Lite0), [1, 2, 2, 3, 3, 4, 1]);
        assert_eq!(stage_repeats(BackboneKind::Lite1), [1, 3, 3, 4, 4, 5, 1]);
        assert_eq!(stage_repeats(BackboneKind::Lite2), [1, 3, 3, 4, 4, 5, 1]);
    }

    #[test]
    fn same_padding_is_asymmetric_at_stride_two() {
        assert_eq!(same_padding(224, 3, 2), (112, 0, 1));
        assert_eq!(same_padding(112, 3, 1), (112, 1, 1));
        assert_eq!(same_padding(28, 5, 2), (14, 1, 2));
        assert_eq!(same_padding(65, 3, 2), (33, 1, 1));
        assert_eq!(same_padding(7, 1, 1), (7, 0, 0));
    }
}
