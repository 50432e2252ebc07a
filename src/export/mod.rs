//! Export of pantry's networks to formats other runtimes read.

mod graph;
mod layout;
pub mod onnx;
mod proto;
