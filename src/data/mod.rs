//! Label sources, image decoding, preprocessing and parallel batching.

pub mod image;
pub mod loader;
pub mod source;
pub mod transform;
