//! Resize, crop and normalization of decoded images into network input.

use serde::{Deserialize, Serialize};

/// How a decoded image becomes backbone input: the shorter side is resized
/// to `resolution`, the centre `resolution`x`resolution` square is cut out,
/// and each channel is mapped to `(pixel - mean) / std`. Stored in model
/// files so that prediction preprocesses exactly as training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Side of the square network input, in pixels.
    pub resolution: u32,
    /// Per-channel offset subtracted from RGB values in 0..=255.
    pub mean: [f32; 3],
    /// Per-channel divisor applied after the offset.
    pub std: [f32; 3],
}
