//! The subset of the ONNX protobuf messages that the exporter writes, with an
//! encoder for the protobuf wire format.
//!
//! Field numbers follow `onnx/onnx.proto` (ONNX 1.x, IR version 8). Only the
//! fields pantry needs are modelled; the encoder writes fields in field-number
//! order and leaves out empty ones, as protobuf's proto3 encoding does.

/// Element type `FLOAT` of `TensorProto.DataType`.
pub const DATA_TYPE_FLOAT: i32 = 1;

/// `ModelProto`: the top-level ONNX file.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub doc_string: String,
    pub graph: Graph,
    /// `(domain, version)` pairs; the empty domain is the default `ai.onnx`.
    pub opset_imports: Vec<(String, i64)>,
    /// `metadata_props`: free-form `(key, value)` pairs that runtimes expose
    /// to applications.
    pub metadata: Vec<(String, String)>,
}

/// `GraphProto`: nodes in topological order, constant tensors, and the typed
/// graph inputs and outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub name: String,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

/// `NodeProto`: one operator call.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub attributes: Vec<Attribute>,
}

/// `AttributeProto`, restricted to the value kinds the exporter uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: AttributeValue,
}

/// Value of an [`Attribute`]; each variant maps to one `AttributeType`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    Int(i64),
    Ints(Vec<i64>),
}

/// `TensorProto` with its data in `raw_data` (little-endian, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    pub raw_data: Vec<u8>,
}

/// One dimension of a graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// A fixed size.
    Value(i64),
    /// A symbolic size, such as the batch dimension.
    Param(String),
}

/// `ValueInfoProto` for a tensor-typed graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: i32,
    pub shape: Vec<Dim>,
}

impl Model {
    /// Serializes the model to protobuf bytes, the content of a `.onnx` file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_int(&mut out, 1, self.ir_version);
        put_bytes(&mut out, 2, self.producer_name.as_bytes());
        put_bytes(&mut out, 3, self.producer_version.as_bytes());
        put_bytes(&mut out, 6, self.doc_string.as_bytes());
        put_message(&mut out, 7, &self.graph.encode());
        for (domain, version) in &self.opset_imports {
            let mut opset = Vec::new();
            put_bytes(&mut opset, 1, domain.as_bytes());
            put_int(&mut opset, 2, *version);
            put_message(&mut out, 8, &opset);
        }
        for (key, value) in &self.metadata {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_message(&mut out, 14, &entry);
        }
        out
    }
}

impl Graph {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for node in &self.nodes {
            put_message(&mut out, 1, &node.encode());
        }
        put_bytes(&mut out, 2, self.name.as_bytes());
        for tensor in &self.initializers {
            put_message(&mut out, 5, &tensor.encode());
        }
        for input in &self.inputs {
            put_message(&mut out, 11, &input.encode());
        }
        for output in &self.outputs {
            put_message(&mut out, 12, &output.encode());
        }
        out
    }
}

impl Node {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for input in &self.inputs {
            // Repeated strings are written even when empty: an empty input
            // name marks an omitted optional input.
            put_key(&mut out, 1, WIRE_LEN);
            put_len_prefixed(&mut out, input.as_bytes());
        }
        for output in &self.outputs {
            put_key(&mut out, 2, WIRE_LEN);
            put_len_prefixed(&mut out, output.as_bytes());
        }
        put_bytes(&mut out, 3, self.name.as_bytes());
        put_bytes(&mut out, 4, self.op_type.as_bytes());
        for attribute in &self.attributes {
            put_message(&mut out, 5, &attribute.encode());
        }
        out
    }
}

impl Attribute {
    fn encode(&self) -> Vec<u8> {
        // `AttributeProto.AttributeType`: INT = 2, INTS = 7.
        let mut out = Vec::new();
        put_bytes(&mut out, 1, self.name.as_bytes());
        let attribute_type = match &self.value {
            AttributeValue::Int(value) => {
                // Written even when zero, so that readers see the attribute.
                put_key(&mut out, 3, WIRE_VARINT);
                put_varint(&mut out, *value as u64);
                2
            }
            AttributeValue::Ints(values) => {
                put_packed_ints(&mut out, 8, values);
                7
            }
        };
        put_int(&mut out, 20, attribute_type);
        out
    }
}

impl Tensor {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_packed_ints(&mut out, 1, &self.dims);
        put_int(&mut out, 2, i64::from(self.data_type));
        put_bytes(&mut out, 8, self.name.as_bytes());
        put_bytes(&mut out, 9, &self.raw_data);
        out
    }
}

impl ValueInfo {
    fn encode(&self) -> Vec<u8> {
        let mut shape = Vec::new();
        for dim in &self.shape {
            let mut dimension = Vec::new();
            match dim {
                Dim::Value(value) => {
                    put_key(&mut dimension, 1, WIRE_VARINT);
                    put_varint(&mut dimension, *value as u64);
                }
                Dim::Param(name) => put_bytes(&mut dimension, 2, name.as_bytes()),
            }
            put_message(&mut shape, 1, &dimension);
        }
        // TypeProto.Tensor { elem_type = 1, shape = 2 } inside TypeProto
        // field 1 (tensor_type).
        let mut tensor_type = Vec::new();
        put_int(&mut tensor_type, 1, i64::from(self.elem_type));
        put_message(&mut tensor_type, 2, &shape);
        let mut type_proto = Vec::new();
        put_message(&mut type_proto, 1, &tensor_type);

        let mut out = Vec::new();
        put_bytes(&mut out, 1, self.name.as_bytes());
        put_message(&mut out, 2, &type_proto);
        out
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_LEN: u8 = 2;

/// Appends `value` as a base-128 varint, low groups first.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends an int32/int64 field unless it is zero (the proto3 default).
/// Negative values take ten bytes, as protobuf encodes them.
fn put_int(out: &mut Vec<u8>, field: u32, value: i64) {
    if value != 0 {
        put_key(out, field, WIRE_VARINT);
        put_varint(out, value as u64);
    }
}

/// Appends a string or bytes field unless it is empty.
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_key(out, field, WIRE_LEN);
        put_len_prefixed(out, bytes);
    }
}

/// Appends an embedded message, even an empty one, because presence of a
/// message field carries meaning (an empty shape is a scalar).
fn put_message(out: &mut Vec<u8>, field: u32, encoded: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_len_prefixed(out, encoded);
}

/// Appends a repeated int64 field in packed form unless it is empty.
fn put_packed_ints(out: &mut Vec<u8>, field: u32, values: &[i64]) {
    if values.is_empty() {
        return;
    }
    let mut packed = Vec::new();
    for &value in values {
        put_varint(&mut packed, value as u64);
    }
    put_key(out, field, WIRE_LEN);
    put_len_prefixed(out, &packed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_encodes_multibyte_and_negative() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        put_varint(&mut out, -1i64 as u64);
        assert_eq!(out.len(), 10);
        assert_eq!(out[9], 0x01);
    }

    #[test]
    fn attribute_ints_are_packed() {
        let attribute = Attribute {
            name: "pads".into(),
            value: AttributeValue::Ints(vec![0, 1]),
        };
        let expected = [
            0x0a, 4, b'p', b'a', b'd', b's', // name
            0x42, 2, 0, 1, // ints (field 8), packed
            0xa0, 0x01, 7, // type (field 20) = INTS
        ];
        assert_eq!(attribute.encode(), expected);
    }

    #[test]
    fn zero_int_attribute_is_written() {
        let attribute = Attribute {
            name: "a".into(),
            value: AttributeValue::Int(0),
        };
        assert_eq!(attribute.encode(), [0x0a, 1, b'a', 0x18, 0, 0xa0, 0x01, 2]);
    }

    #[test]
    fn value_info_nests_symbolic_dim() {
        let info = ValueInfo {
            name: "x".into(),
            elem_type: DATA_TYPE_FLOAT,
            shape: vec![Dim::Param("n".into()), Dim::Value(3)],
        };
        let expected = [
            0x0a, 1, b'x', // name
            0x12, 15, // type
            0x0a, 13, // tensor_type
            0x08, 1, // elem_type FLOAT
            0x12, 9, // shape
            0x0a, 3, 0x12, 1, b'n', // dim_param "n"
            0x0a, 2, 0x08, 3, // dim_value 3
        ];
        assert_eq!(info.encode(), expected);
    }
}
