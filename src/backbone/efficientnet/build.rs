//! Turns a PyTorch-named EfficientNet-Lite checkpoint into kernel layers,
//! folding each batch norm into the convolution before it.

use anyhow::{bail, ensure, Context, Result};

use super::split::BlockParts;
use crate::backbone::{BackboneKind, WeightTensor, Weights};
use crate::kernels::depthwise::DepthwiseConv;
use crate::kernels::pointwise::PointwiseConv;
use crate::kernels::stem::StemConv;
use crate::kernels::Activation;

/// Batch-norm epsilon of the TensorFlow checkpoints the weights come from.
pub(super) const BN_EPSILON: f32 = 1e-3;

/// Stride of the first block of each stage; later blocks use stride 1.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
/// Blocks per stage of EfficientNet-Lite0 (depth multiplier 1.0).
const BASE_REPEATS: [usize; 7] = [1, 2, 2, 3, 3, 4, 1];

/// One inverted-residual block: optional 1x1 expansion, depthwise
/// convolution, 1x1 projection, and a skip connection when shapes allow.
#[derive(Clone, Debug)]
pub(super) struct Block {
    pub expand: Option<PointwiseConv>,
    pub depthwise: DepthwiseConv,
    pub project: PointwiseConv,
    /// Whether the block input is added to the projection output.
    pub residual: bool,
    /// The block cut by hidden channels, for one image on several threads.
    pub parts: BlockParts,
}

/// Blocks per stage: the middle stages scale by the depth multiplier
/// (rounded up); EfficientNet-Lite keeps one block in the first and last.
pub(super) fn stage_repeats(kind: BackboneKind) -> [usize; 7] {
    let depth: f64 = match kind {
        BackboneKind::Lite0 => 1.0,
        BackboneKind::Lite1 => 1.1,
        BackboneKind::Lite2 => 1.2,
    };
    let mut repeats = BASE_REPEATS;
    let last = repeats.len() - 1;
    for r in &mut repeats[1..last] {
        *r = (depth * *r as f64).ceil() as usize;
    }
    repeats
}

/// Returns the tensor `name`, checking that its shape is `shape`.
fn tensor<'a>(weights: &'a Weights, name: &str, shape: &[usize]) -> Result<&'a WeightTensor> {
    let tensor = weights
        .get(name)
        .with_context(|| format!("checkpoint has no parameter {name}"))?;
    ensure!(
        tensor.shape == shape,
        "parameter {name} has shape {:?}, expected {:?}",
        tensor.shape,
        shape
    );
    Ok(tensor)
}

/// Returns the shape of the tensor `name`, checking its rank.
fn shape_of<'a>(weights: &'a Weights, name: &str, rank: usize) -> Result<&'a [usize]> {
    let tensor = weights
        .get(name)
        .with_context(|| format!("checkpoint has no parameter {name}"))?;
    ensure!(
        tensor.shape.len() == rank,
        "parameter {name} has shape {:?}, expected rank {rank}",
        tensor.shape
    );
    Ok(&tensor.shape)
}

/// Reads the weights `[out, in_per_group, k, k]` of convolution `conv` and
/// folds batch norm `bn` into them. Returns the scaled weights and the bias.
fn folded_conv(
    weights: &Weights,
    conv: &str,
    bn: &str,
    shape: &[usize],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let out = shape[0];
    let weight = tensor(weights, &format!("{conv}.weight"), shape)?;
    let gamma = tensor(weights, &format!("{bn}.weight"), &[out])?;
    let beta = tensor(weights, &format!("{bn}.bias"), &[out])?;
    let mean = tensor(weights, &format!("{bn}.running_mean"), &[out])?;
    let var = tensor(weights, &format!("{bn}.running_var"), &[out])?;
    let per_out = weight.data.len() / out;
    let mut scaled = weight.data.clone();
    let mut bias = vec![0.0; out];
    for o in 0..out {
        let scale = gamma.data[o] / (var.data[o] + BN_EPSILON).sqrt();
        for w in &mut scaled[o * per_out..(o + 1) * per_out] {
            *w *= scale;
        }
        bias[o] = beta.data[o] - mean.data[o] * scale;
    }
    Ok((scaled, bias))
}

/// Builds the stem: 3x3 stride-2 convolution from RGB, batch norm, ReLU6.
pub(super) fn stem(weights: &Weights) -> Result<StemConv> {
    let shape = shape_of(weights, "_conv_stem.weight", 4)?.to_vec();
    ensure!(
        shape[1] == 3 && shape[2] == 3 && shape[3] == 3,
        "parameter _conv_stem.weight has shape {shape:?}, expected [out, 3, 3, 3]"
    );
    let (weight, bias) = folded_conv(weights, "_conv_stem", "_bn0", &shape)?;
    Ok(StemConv::from_pytorch(
        3,
        shape[0],
        3,
        2,
        &weight,
        bias,
        Activation::Relu6,
    ))
}

/// Builds every block, checking that each consumes the previous output and
/// that the checkpoint has exactly the blocks `kind` needs.
pub(super) fn blocks(
    kind: BackboneKind,
    weights: &Weights,
    stem_channels: usize,
) -> Result<Vec<Block>> {
    let repeats = stage_repeats(kind);
    let expected: usize = repeats.iter().sum();
    let present = weights
        .keys()
        .filter_map(|name| name.strip_prefix("_blocks."))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |last| last + 1);
    if present != expected {
        bail!(
            "checkpoint has {present} blocks (_blocks.N), but {} needs {expected}",
            kind.name()
        );
    }

    let mut blocks = Vec::with_capacity(expected);
    let mut channels = stem_channels;
    for (stage, &count) in repeats.iter().enumerate() {
        for repeat in 0..count {
            let stride = if repeat == 0 { STAGE_STRIDES[stage] } else { 1 };
            let block = block(weights, blocks.len(), channels, stride)?;
            channels = block.project.out_channels;
            blocks.push(block);
        }
    }
    Ok(blocks)
}

/// Builds block `index`, which takes `in_channels` channels.
fn block(weights: &Weights, index: usize, in_channels: usize, stride: usize) -> Result<Block> {
    let prefix = format!("_blocks.{index}");
    let dw_name = format!("{prefix}._depthwise_conv.weight");
    let dw_shape = shape_of(weights, &dw_name, 4)?.to_vec();
    let (hidden, kernel) = (dw_shape[0], dw_shape[2]);
    ensure!(
        dw_shape[1] == 1 && dw_shape[3] == kernel,
        "parameter {dw_name} has shape {dw_shape:?}, expected [channels, 1, k, k]"
    );

    let expand = if weights.contains_key(&format!("{prefix}._expand_conv.weight")) {
        let (weight, bias) = folded_conv(
            weights,
            &format!("{prefix}._expand_conv"),
            &format!("{prefix}._bn0"),
            &[hidden, in_channels, 1, 1],
        )?;
        Some(PointwiseConv::from_pytorch(
            in_channels,
            hidden,
            &weight,
            bias,
            Activation::Relu6,
        ))
    } else {
        ensure!(
            hidden == in_channels,
            "block {index} has no expansion, so {dw_name} must have {in_channels} channels, \
             not {hidden}"
        );
        None
    };

    let (weight, bias) = folded_conv(
        weights,
        &format!("{prefix}._depthwise_conv"),
        &format!("{prefix}._bn1"),
        &dw_shape,
    )?;
    let depthwise =
        DepthwiseConv::from_pytorch(hidden, kernel, stride, &weight, bias, Activation::Relu6);

    let project_name = format!("{prefix}._project_conv.weight");
    let out_channels = shape_of(weights, &project_name, 4)?[0];
    let (weight, bias) = folded_conv(
        weights,
        &format!("{prefix}._project_conv"),
        &format!("{prefix}._bn2"),
        &[out_channels, hidden, 1, 1],
    )?;
    let project =
        PointwiseConv::from_pytorch(hidden, out_channels, &weight, bias, Activation::Identity);

    Ok(Block {
        expand,
        depthwise,
        project,
        residual: stride == 1 && in_channels == out_channels,
        parts: BlockParts::default(),
    })
}

/// Builds the head: 1x1 convolution to the feature channels, batch norm,
/// ReLU6.
pub(super) fn head(weights: &Weights, in_channels: usize) -> Result<PointwiseConv> {
    let out = shape_of(weights, "_conv_head.weight", 4)?[0];
    let (weight, bias) = folded_conv(weights, "_conv_head", "_bn1", &[out, in_channels, 1, 1])?;
    Ok(PointwiseConv::from_pytorch(
        in_channels,
        out,
        &weight,
        bias,
        Activation::Relu6,
    ))
}

/// Builds the ImageNet classifier `_fc` over `features` inputs.
pub(super) fn classifier(weights: &Weights, features: usize) -> Result<PointwiseConv> {
    let classes = shape_of(weights, "_fc.weight", 2)?[0];
    let weight = tensor(weights, "_fc.weight", &[classes, features])?;
    let bias = tensor(weights, "_fc.bias", &[classes])?;
    Ok(PointwiseConv::from_pytorch(
        features,
        classes,
        &weight.data,
        bias.data.clone(),
        Activation::Identity,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_give_sixteen_and_twenty_one_blocks() {
        assert_eq!(stage_repeats(BackboneKind::Lite0), [1, 2, 2, 3, 3, 4, 1]);
        assert_eq!(stage_repeats(BackboneKind::Lite1), [1, 3, 3, 4, 4, 5, 1]);
        assert_eq!(stage_repeats(BackboneKind::Lite2), [1, 3, 3, 4, 4, 5, 1]);
    }
}
