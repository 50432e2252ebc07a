//! Export of an EfficientNet-Lite backbone, optionally with a dense
//! classification head, as an ONNX model (IR version 8, opset 13).
//!
//! The model's input `input` is `[batch, height, width, 3]` float32 in NHWC
//! order, normalized as pantry's preprocessing does for the backbone
//! (`(pixel - 127) / 128` for the Lite checkpoints), so the same buffer that
//! pantry's network takes can be fed to ONNX Runtime. A `Transpose` turns it
//! into NCHW for the convolutions. Batch normalization is folded into the
//! convolutions, and padding is written as explicit, possibly asymmetric
//! `pads` to reproduce TensorFlow "SAME" padding.
//!
//! Outputs: `features` (`[batch, 1280]`, the pooled backbone output) and,
//! when a head is given, `logits` and `probabilities` (softmax of the
//! logits), both `[batch, classes]`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::graph::{ConvSpec, GraphBuilder};
use super::layout::{self, same_padding};
use super::proto::{AttributeValue, Dim, Model, ValueInfo, DATA_TYPE_FLOAT};
use crate::backbone::{BackboneKind, WeightTensor, Weights};
use crate::train::head::{bias_name, weight_name, INPUT_MEAN, INPUT_STD};
use crate::train::TrainedHead;

/// ONNX IR version written to the model.
pub const IR_VERSION: i64 = 8;
/// Version of the default `ai.onnx` operator set the graph uses.
pub const OPSET_VERSION: i64 = 13;
/// Epsilon of the checkpoints' batch normalization layers.
const BN_EPSILON: f32 = 1e-3;

/// A fully connected layer `y = W x + b`, optionally followed by ReLU.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseLayer {
    /// `[outputs, inputs]` row-major, the PyTorch `Linear` layout.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
    pub relu: bool,
}

impl DenseLayer {
    /// Builds a layer from a `[outputs, inputs]` weight and `[outputs]` bias.
    pub fn from_tensors(weight: &WeightTensor, bias: &WeightTensor, relu: bool) -> Result<Self> {
        let &[outputs, inputs] = weight.shape.as_slice() else {
            bail!(
                "dense weight has shape {:?}, expected [outputs, inputs]",
                weight.shape
            );
        };
        if bias.shape != [outputs] {
            bail!(
                "dense bias has shape {:?}, expected [{outputs}] to match weight {:?}",
                bias.shape,
                weight.shape
            );
        }
        Ok(DenseLayer {
            weight: weight.data.clone(),
            bias: bias.data.clone(),
            inputs,
            outputs,
            relu,
        })
    }
}

/// Per-feature standardization `(x - mean) / std` applied before the first
/// dense layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// A classification head on the pooled features.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxHead {
    pub standardization: Option<Standardization>,
    /// Dense layers in order; the last one produces the logits.
    pub layers: Vec<DenseLayer>,
    /// Class names of the logits' columns, in order. When not empty they
    /// are stored in the file's metadata under `labels`, as a JSON array.
    pub labels: Vec<String>,
}

impl OnnxHead {
    /// Builds the head of a trained classifier whose classes are `labels`.
    pub fn from_trained(head: &TrainedHead, labels: &[String]) -> Result<Self> {
        let mut onnx = Self::from_named_tensors(&head.tensors)?;
        let classes = onnx.layers.last().map_or(0, |layer| layer.outputs);
        if labels.len() != classes {
            bail!(
                "invalid model: the head has {classes} outputs but the model lists {} labels",
                labels.len()
            );
        }
        onnx.labels = labels.to_vec();
        Ok(onnx)
    }

    /// Builds a head from tensors named as [`crate::train::head`] stores
    /// them: optional `input.mean` and `input.std`, then `dense.{i}.weight`
    /// (`[out, in]`) and `dense.{i}.bias` for i = 0, 1, ... Every layer but
    /// the last is followed by ReLU.
    pub fn from_named_tensors(tensors: &BTreeMap<String, WeightTensor>) -> Result<Self> {
        let standardization = match (tensors.get(INPUT_MEAN), tensors.get(INPUT_STD)) {
            (Some(mean), Some(std)) => Some(Standardization {
                mean: mean.data.clone(),
                std: std.data.clone(),
            }),
            (None, None) => None,
            _ => bail!("head has only one of {INPUT_MEAN} and {INPUT_STD}"),
        };
        let count = (0..)
            .take_while(|&i| tensors.contains_key(&weight_name(i)))
            .count();
        if count == 0 {
            bail!(
                "head has no dense layers (tensor {} is missing)",
                weight_name(0)
            );
        }
        let mut layers = Vec::with_capacity(count);
        for i in 0..count {
            let weight = &tensors[&weight_name(i)];
            let bias = tensors
                .get(&bias_name(i))
                .with_context(|| format!("head tensor {} is missing", bias_name(i)))?;
            let layer = DenseLayer::from_tensors(weight, bias, i + 1 < count)
                .with_context(|| format!("head layer {}", weight_name(i)))?;
            layers.push(layer);
        }
        Ok(OnnxHead {
            standardization,
            layers,
            labels: Vec::new(),
        })
    }
}

/// Builds the ONNX model of `kind` from its checkpoint `weights` (PyTorch
/// names and layout), with `head` on top of the features when given, and
/// returns the serialized bytes.
pub fn backbone_to_onnx(
    kind: BackboneKind,
    weights: &Weights,
    head: Option<&OnnxHead>,
) -> Result<Vec<u8>> {
    let resolution = kind.resolution() as usize;
    let mut graph = GraphBuilder::new(kind.name());
    let nchw = graph.node(
        "Transpose",
        "input.nchw",
        &["input"],
        vec![("perm", AttributeValue::Ints(vec![0, 3, 1, 2]))],
    );

    // Stem: 3x3 stride-2 convolution, BN, ReLU6.
    let stem_weight = layout::tensor(weights, "_conv_stem.weight", 4)?;
    let (mut size, before, after) = same_padding(resolution, stem_weight.shape[2], 2);
    let stem = folded_conv(&mut graph, weights, "stem", "_conv_stem", "_bn0")?;
    let spec = ConvSpec {
        kernel: stem_weight.shape[2],
        stride: 2,
        group: 1,
        pads: [before, before, after, after],
    };
    graph.conv("stem.conv", &nchw, &stem.0, &stem.1, &spec);
    let mut x = graph.relu6("stem.relu6", "stem.conv");

    for block in layout::blocks(kind, weights)? {
        let name = format!("blocks.{}", block.index);
        let prefix = format!("_blocks.{}", block.index);
        let block_input = x.clone();
        if block.expand {
            let (w, b) = folded_conv(
                &mut graph,
                weights,
                &format!("{name}.expand"),
                &format!("{prefix}._expand_conv"),
                &format!("{prefix}._bn0"),
            )?;
            let conv = format!("{name}.expand");
            graph.conv(&conv, &x, &w, &b, &pointwise());
            x = graph.relu6(&format!("{conv}.relu6"), &conv);
        }

        let (out_size, before, after) = same_padding(size, block.kernel, block.stride);
        let (w, b) = folded_conv(
            &mut graph,
            weights,
            &format!("{name}.depthwise"),
            &format!("{prefix}._depthwise_conv"),
            &format!("{prefix}._bn1"),
        )?;
        let conv = format!("{name}.depthwise");
        let spec = ConvSpec {
            kernel: block.kernel,
            stride: block.stride,
            group: block.mid_channels,
            pads: [before, before, after, after],
        };
        graph.conv(&conv, &x, &w, &b, &spec);
        x = graph.relu6(&format!("{conv}.relu6"), &conv);
        size = out_size;

        let (w, b) = folded_conv(
            &mut graph,
            weights,
            &format!("{name}.project"),
            &format!("{prefix}._project_conv"),
            &format!("{prefix}._bn2"),
        )?;
        let conv = format!("{name}.project");
        graph.conv(&conv, &x, &w, &b, &pointwise());
        x = conv;
        if block.residual() {
            x = graph.node(
                "Add",
                &format!("{name}.add"),
                &[&block_input, &x],
                Vec::new(),
            );
        }
    }

    // Head convolution to 1280 channels, BN, ReLU6, global average pool.
    let (w, b) = folded_conv(&mut graph, weights, "head", "_conv_head", "_bn1")?;
    graph.conv("head.conv", &x, &w, &b, &pointwise());
    let x = graph.relu6("head.relu6", "head.conv");
    let pooled = graph.node("GlobalAveragePool", "head.pool", &[&x], Vec::new());
    let features = graph.node(
        "Flatten",
        "features",
        &[&pooled],
        vec![("axis", AttributeValue::Int(1))],
    );
    let feature_dim = layout::tensor(weights, "_conv_head.weight", 4)?.shape[0];

    let mut outputs = vec![batch_tensor("features", &[feature_dim])];
    let mut metadata = vec![("backbone".to_string(), kind.name().to_string())];
    if let Some(head) = head.filter(|head| !head.labels.is_empty()) {
        metadata.push(("labels".to_string(), serde_json::to_string(&head.labels)?));
    }
    if let Some(head) = head {
        let classes = add_head(&mut graph, &features, feature_dim, head)?;
        outputs.push(batch_tensor("logits", &[classes]));
        outputs.push(batch_tensor("probabilities", &[classes]));
    }

    let mut graph = graph.finish();
    graph.inputs = vec![batch_tensor("input", &[resolution, resolution, 3])];
    graph.outputs = outputs;
    let model = Model {
        ir_version: IR_VERSION,
        producer_name: "pantry".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        doc_string: format!(
            "{kind} exported by pantry. Input: NHWC float32 [batch, {resolution}, \
             {resolution}, 3], normalized as (pixel - 127) / 128."
        ),
        graph,
        opset_imports: vec![(String::new(), OPSET_VERSION)],
        metadata,
    };
    Ok(model.encode())
}

/// Exports `kind` (and `head`, when given) to an ONNX file at `path`,
/// replacing it atomically.
pub fn write_onnx(
    path: &Path,
    kind: BackboneKind,
    weights: &Weights,
    head: Option<&OnnxHead>,
) -> Result<()> {
    let bytes = backbone_to_onnx(kind, weights, head)
        .with_context(|| format!("failed to export {kind} to ONNX"))?;
    crate::cache::write_atomic(path, &bytes)
        .with_context(|| format!("failed to write ONNX model {}", path.display()))
}

fn pointwise() -> ConvSpec {
    ConvSpec {
        kernel: 1,
        stride: 1,
        group: 1,
        pads: [0; 4],
    }
}

/// Graph tensor of shape `[batch, dims...]` with a symbolic batch size.
fn batch_tensor(name: &str, dims: &[usize]) -> ValueInfo {
    let mut shape = vec![Dim::Param("batch".to_string())];
    shape.extend(dims.iter().map(|&d| Dim::Value(d as i64)));
    ValueInfo {
        name: name.to_string(),
        elem_type: DATA_TYPE_FLOAT,
        shape,
    }
}

/// Adds the weight and bias of the bias-free convolution `conv` with batch
/// normalization `bn` folded in. Returns the names of the two constants,
/// `{name}.weight` and `{name}.bias`.
fn folded_conv(
    graph: &mut GraphBuilder,
    weights: &Weights,
    name: &str,
    conv: &str,
    bn: &str,
) -> Result<(String, String)> {
    let weight = layout::tensor(weights, &format!("{conv}.weight"), 4)?;
    let (folded, bias) = fold_batch_norm(weight, weights, bn)
        .with_context(|| format!("failed to fold {bn} into {conv}"))?;
    let weight_name = graph.constant(&format!("{name}.weight"), &weight.shape, &folded);
    let bias_name = graph.constant(&format!("{name}.bias"), &[bias.len()], &bias);
    Ok((weight_name, bias_name))
}

/// Folds inference-mode batch normalization into the preceding bias-free
/// convolution: each output channel `c` is scaled by
/// `s = gamma / sqrt(var + eps)` and gets bias `beta - mean * s`.
fn fold_batch_norm(
    weight: &WeightTensor,
    weights: &Weights,
    bn: &str,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let channels = weight.shape[0];
    let per_channel = |field: &str| -> Result<&[f32]> {
        let t = layout::tensor(weights, &format!("{bn}.{field}"), 1)?;
        if t.shape[0] != channels {
            bail!(
                "{bn}.{field} has {} values, the convolution has {channels} output channels",
                t.shape[0]
            );
        }
        Ok(&t.data)
    };
    let gamma = per_channel("weight")?;
    let beta = per_channel("bias")?;
    let mean = per_channel("running_mean")?;
    let var = per_channel("running_var")?;

    let per_output = weight.data.len() / channels;
    let mut folded = weight.data.clone();
    let mut bias = Vec::with_capacity(channels);
    for c in 0..channels {
        let scale = gamma[c] / (var[c] + BN_EPSILON).sqrt();
        for w in &mut folded[c * per_output..(c + 1) * per_output] {
            *w *= scale;
        }
        bias.push(beta[c] - mean[c] * scale);
    }
    Ok((folded, bias))
}

/// Appends standardization, the dense layers and the softmax after
/// `features`; returns the number of classes.
fn add_head(
    graph: &mut GraphBuilder,
    features: &str,
    feature_dim: usize,
    head: &OnnxHead,
) -> Result<usize> {
    let mut x = features.to_string();
    if let Some(standardization) = &head.standardization {
        for (field, values) in [
            ("mean", &standardization.mean),
            ("std", &standardization.std),
        ] {
            if values.len() != feature_dim {
                bail!(
                    "head standardization {field} has {} values, the backbone has {feature_dim} features",
                    values.len()
                );
            }
        }
        let mean = graph.constant("head.input.mean", &[feature_dim], &standardization.mean);
        let std = graph.constant("head.input.std", &[feature_dim], &standardization.std);
        let centered = graph.node("Sub", "head.input.centered", &[&x, &mean], Vec::new());
        x = graph.node(
            "Div",
            "head.input.standardized",
            &[&centered, &std],
            Vec::new(),
        );
    }

    let Some(last) = head.layers.last() else {
        bail!("head has no dense layers");
    };
    if last.relu {
        bail!("the last head layer produces logits and must not be followed by ReLU");
    }
    let mut width = feature_dim;
    for (i, layer) in head.layers.iter().enumerate() {
        if layer.inputs != width {
            bail!(
                "head layer {i} takes {} inputs but receives {width}",
                layer.inputs
            );
        }
        if layer.weight.len() != layer.inputs * layer.outputs || layer.bias.len() != layer.outputs {
            bail!(
                "head layer {i} has {} weights and {} biases, expected {} x {} and {}",
                layer.weight.len(),
                layer.bias.len(),
                layer.outputs,
                layer.inputs,
                layer.outputs
            );
        }
        let w = graph.constant(
            &format!("head.dense.{i}.weight"),
            &[layer.outputs, layer.inputs],
            &layer.weight,
        );
        let b = graph.constant(
            &format!("head.dense.{i}.bias"),
            &[layer.outputs],
            &layer.bias,
        );
        let is_last = i + 1 == head.layers.len();
        let name = if is_last {
            "logits".to_string()
        } else {
            format!("head.dense.{i}")
        };
        // Gemm with transB = 1 multiplies by the transposed [out, in] weight.
        x = graph.node(
            "Gemm",
            &name,
            &[&x, &w, &b],
            vec![("transB", AttributeValue::Int(1))],
        );
        if layer.relu {
            x = graph.node("Relu", &format!("{name}.relu"), &[&x], Vec::new());
        }
        width = layer.outputs;
    }
    graph.node(
        "Softmax",
        "probabilities",
        &[&x],
        vec![("axis", AttributeValue::Int(1))],
    );
    Ok(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], data: &[f32]) -> WeightTensor {
        WeightTensor {
            shape: shape.to_vec(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn fold_batch_norm_scales_each_output_channel() {
        // Two output channels, one input channel, 1x2 kernel.
        let conv = tensor(&[2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let mut weights = Weights::new();
        weights.insert("bn.weight".into(), tensor(&[2], &[2.0, 1.0]));
        weights.insert("bn.bias".into(), tensor(&[2], &[0.5, -1.0]));
        weights.insert("bn.running_mean".into(), tensor(&[2], &[1.0, 2.0]));
        weights.insert(
            "bn.running_var".into(),
            tensor(&[2], &[4.0 - BN_EPSILON, 0.25 - BN_EPSILON]),
        );
        let (folded, bias) = fold_batch_norm(&conv, &weights, "bn").unwrap();
        // Scales: 2 / sqrt(4) = 1 and 1 / sqrt(0.25) = 2.
        let expected_weight = [1.0, 2.0, 6.0, 8.0];
        let expected_bias = [0.5 - 1.0, -1.0 - 4.0];
        for (got, want) in folded.iter().zip(expected_weight) {
            assert!((got - want).abs() < 1e-5, "weight {got} != {want}");
        }
        for (got, want) in bias.iter().zip(expected_bias) {
            assert!((got - want).abs() < 1e-5, "bias {got} != {want}");
        }
    }

    #[test]
    fn fold_batch_norm_rejects_channel_mismatch() {
        let conv = tensor(&[2, 1, 1, 1], &[1.0, 1.0]);
        let mut weights = Weights::new();
        for field in ["weight", "bias", "running_mean", "running_var"] {
            weights.insert(format!("bn.{field}"), tensor(&[3], &[1.0; 3]));
        }
        let error = fold_batch_norm(&conv, &weights, "bn").unwrap_err();
        assert!(
            error.to_string().contains("bn.weight has 3 values"),
            "{error}"
        );
    }

    #[test]
    fn head_from_named_tensors_puts_relu_between_layers() {
        let mut tensors = BTreeMap::new();
        tensors.insert("input.mean".into(), tensor(&[3], &[0.0; 3]));
        tensors.insert("input.std".into(), tensor(&[3], &[1.0; 3]));
        tensors.insert("dense.0.weight".into(), tensor(&[2, 3], &[0.0; 6]));
        tensors.insert("dense.0.bias".into(), tensor(&[2], &[0.0; 2]));
        tensors.insert("dense.1.weight".into(), tensor(&[4, 2], &[0.0; 8]));
        tensors.insert("dense.1.bias".into(), tensor(&[4], &[0.0; 4]));
        let head = OnnxHead::from_named_tensors(&tensors).unwrap();
        assert!(head.standardization.is_some());
        let dims: Vec<_> = head
            .layers
            .iter()
            .map(|l| (l.inputs, l.outputs, l.relu))
            .collect();
        assert_eq!(dims, [(3, 2, true), (2, 4, false)]);
    }

    #[test]
    fn head_from_named_tensors_rejects_bad_bias() {
        let mut tensors = BTreeMap::new();
        tensors.insert("dense.0.weight".into(), tensor(&[2, 3], &[0.0; 6]));
        tensors.insert("dense.0.bias".into(), tensor(&[3], &[0.0; 3]));
        let error = OnnxHead::from_named_tensors(&tensors).unwrap_err();
        assert!(
            format!("{error:#}").contains("dense bias has shape [3]"),
            "{error:#}"
        );
    }
}
