//! pantry: train product-photo classifiers by transfer learning from
//! EfficientNet-Lite, evaluate them, and predict labels for new photos.
//!
//! The modules follow the pipeline: [`data`] reads label sources and decodes
//! and preprocesses images, [`backbone`] runs the pretrained network on top
//! of the numeric [`kernels`], [`features`] caches pooled backbone outputs,
//! [`train`] fits the classification head, [`metrics`] scores predictions,
//! [`model_file`] stores a trained classifier in one file and [`predict`]
//! labels new photos with it.

pub mod backbone;
pub mod cache;
pub mod data;
pub mod export;
pub mod features;
pub mod kernels;
pub mod metrics;
pub mod model_file;
pub mod predict;
pub mod train;
pub mod workflow;
