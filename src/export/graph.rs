//! A small builder for ONNX graphs: it names nodes, stores constant tensors
//! and wraps the few operators the EfficientNet export needs.

use super::proto::{Attribute, AttributeValue, Graph, Node, Tensor, DATA_TYPE_FLOAT};

/// Settings of a 2-D convolution in NCHW layout.
pub struct ConvSpec {
    pub kernel: usize,
    pub stride: usize,
    /// Number of channel groups; equal to the channel count for depthwise.
    pub group: usize,
    /// `[top, left, bottom, right]` zero padding, in pixels.
    pub pads: [usize; 4],
}

/// A graph under construction. Each operator method appends one node and
/// returns the name of its output.
#[derive(Default)]
pub struct GraphBuilder {
    graph: Graph,
    relu6_bounds: Option<(String, String)>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            graph: Graph {
                name: name.to_string(),
                ..Graph::default()
            },
            relu6_bounds: None,
        }
    }

    /// Adds a float32 constant and returns its name.
    pub fn constant(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializers.push(Tensor {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DATA_TYPE_FLOAT,
            raw_data,
        });
        name.to_string()
    }

    /// Appends a node named `name` whose single output is also `name`.
    pub fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        attributes: Vec<(&str, AttributeValue)>,
    ) -> String {
        self.graph.nodes.push(Node {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![name.to_string()],
            name: name.to_string(),
            op_type: op_type.to_string(),
            attributes: attributes
                .into_iter()
                .map(|(name, value)| Attribute {
                    name: name.to_string(),
                    value,
                })
                .collect(),
        });
        name.to_string()
    }

    /// Convolution with bias; `weight` is `[out, in / group, k, k]`.
    pub fn conv(&mut self, name: &str, input: &str, weight: &str, bias: &str, spec: &ConvSpec) {
        let kernel = spec.kernel as i64;
        let stride = spec.stride as i64;
        let attributes = vec![
            ("kernel_shape", AttributeValue::Ints(vec![kernel, kernel])),
            ("strides", AttributeValue::Ints(vec![stride, stride])),
            ("dilations", AttributeValue::Ints(vec![1, 1])),
            ("group", AttributeValue::Int(spec.group as i64)),
            (
                "pads",
                AttributeValue::Ints(spec.pads.iter().map(|&p| p as i64).collect()),
            ),
        ];
        self.node("Conv", name, &[input, weight, bias], attributes);
    }

    /// ReLU6 as `Clip(x, 0, 6)`; opset 11 and later take the bounds as
    /// inputs, which all ReLU6 nodes share.
    pub fn relu6(&mut self, name: &str, input: &str) -> String {
        let (low, high) = match &self.relu6_bounds {
            Some(bounds) => bounds.clone(),
            None => {
                let low = self.constant("relu6.min", &[], &[0.0]);
                let high = self.constant("relu6.max", &[], &[6.0]);
                self.relu6_bounds = Some((low.clone(), high.clone()));
                (low, high)
            }
        };
        self.node("Clip", name, &[input, &low, &high], Vec::new())
    }

    /// The finished graph; the caller adds inputs and outputs.
    pub fn finish(self) -> Graph {
        self.graph
    }
}
