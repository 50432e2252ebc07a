//! Measures feature extraction over a label file with decoding included,
//! against the backbone alone on already-preprocessed input of the same
//! batch size, in one process.
//!
//! Usage: `bench_pipeline LABEL_FILE [BACKBONE] [BATCH]` (defaults
//! efficientnet-lite0, 32). Prints images/s of both and their ratio.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use pantry::backbone::efficientnet::EfficientNet;
use pantry::backbone::{weights, BackboneKind};
use pantry::data::source;
use pantry::data::transform::Preprocess;
use pantry::features::Extractor;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let label_file = PathBuf::from(
        args.first()
            .context("usage: bench_pipeline LABEL_FILE [BACKBONE] [BATCH]")?,
    );
    let kind: BackboneKind = args
        .get(1)
        .map_or(Ok(BackboneKind::Lite0), |name| name.parse())?;
    let batch: usize = args.get(2).map_or(Ok(32), |text| text.parse())?;

    let (resolved, weights) = weights::load(kind, None)?;
    let preprocess = Preprocess::for_resolution(kind.resolution());
    let dataset = source::load(&label_file, None, false)?;
    let paths: Vec<PathBuf> = dataset.samples.iter().map(|s| s.path.clone()).collect();

    let extractor = Extractor::new(&resolved, &weights, preprocess.clone(), batch, None)?;
    let start = Instant::now();
    let results = extractor.extract(&paths, &mut |_| {});
    let pipeline = paths.len() as f64 / start.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();

    // The backbone alone, on the first batch's real preprocessed pixels
    // repeated, for as many images as the pipeline processed.
    let net = EfficientNet::from_weights(kind, &weights)?;
    let mut input = Vec::with_capacity(batch * preprocess.tensor_len());
    for path in paths.iter().cycle().take(batch) {
        let image = pantry::data::image::decode_for(path, preprocess.resolution)?;
        input.extend(preprocess.apply(&image));
    }
    let batches = paths.len().div_ceil(batch);
    let start = Instant::now();
    for _ in 0..batches {
        net.features(&input, batch)?;
    }
    let backbone = (batches * batch) as f64 / start.elapsed().as_secs_f64();

    println!(
        "{kind} batch {batch}: {} images ({failed} failed); pipeline {pipeline:.1} img/s, backbone alone {backbone:.1} img/s, ratio {:.2}",
        paths.len(),
        pipeline / backbone
    );
    Ok(())
}
