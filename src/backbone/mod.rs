//! EfficientNet-Lite backbones: their configurations, pretrained weights and
//! the inference network.

pub mod efficientnet;
pub mod legacy;
pub mod weights;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One of the pretrained EfficientNet-Lite ImageNet backbones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackboneKind {
    #[serde(rename = "efficientnet-lite0")]
    Lite0,
    #[serde(rename = "efficientnet-lite1")]
    Lite1,
    #[serde(rename = "efficientnet-lite2")]
    Lite2,
}

impl BackboneKind {
    pub const ALL: [BackboneKind; 3] = [
        BackboneKind::Lite0,
        BackboneKind::Lite1,
        BackboneKind::Lite2,
    ];

    /// Name used on the command line, in model files and in cache keys.
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::Lite0 => "efficientnet-lite0",
            BackboneKind::Lite1 => "efficientnet-lite1",
            BackboneKind::Lite2 => "efficientnet-lite2",
        }
    }

    /// Square input resolution in pixels that the checkpoint was trained at.
    pub fn resolution(self) -> u32 {
        match self {
            BackboneKind::Lite0 => 224,
            BackboneKind::Lite1 => 240,
            BackboneKind::Lite2 => 260,
        }
    }

    /// Length of the pooled feature vector (channels of the head convolution).
    pub fn feature_dim(self) -> usize {
        1280
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackboneKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        for kind in BackboneKind::ALL {
            if kind.name() == s {
                return Ok(kind);
            }
        }
        bail!(
            "unknown backbone {s:?}; expected one of efficientnet-lite0, efficientnet-lite1, efficientnet-lite2"
        )
    }
}

/// A dense float32 tensor in row-major order, as read from a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Checkpoint parameters by their PyTorch names (`_conv_stem.weight`, ...).
pub type Weights = HashMap<String, WeightTensor>;

/// Reads every float32 tensor of a safetensors file.
pub fn load_safetensors(path: &Path) -> Result<Weights> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let mut weights = Weights::new();
    for (name, view) in file.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} has dtype {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        weights.insert(
            name,
            WeightTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(weights)
}
