//! Sweeps head settings on cached Grocery features: trains on train.tsv
//! (with the CLI's stratified hold-out) and scores on val.tsv.
//! Usage: cargo run --example tune_head -- GROCERY_DIR

use std::path::PathBuf;

use pantry::backbone::{weights, BackboneKind};
use pantry::data::transform::Preprocess;
use pantry::features::{Extractor, FeatureCache};
use pantry::metrics::EvalReport;
use pantry::train::{fit, split_stratified, FeatureSet, TrainConfig};
use pantry::workflow::labelled_features;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).expect("GROCERY_DIR"));
    let kind = BackboneKind::Lite0;
    let (resolved, w) = weights::load(kind, None)?;
    let pre = Preprocess::for_resolution(kind.resolution());
    let cache = FeatureCache::open(kind, &resolved.sha256, &pre)?;
    let ex = Extractor::new(&resolved, &w, pre, 32, Some(cache))?;
    let train = labelled_features(&ex, &dir.join("train.tsv"), None, &mut |_| {}, &mut |_| {})?;
    let val = labelled_features(&ex, &dir.join("val.tsv"), None, &mut |_| {}, &mut |_| {})?;
    let mut labels = train.labels.clone();
    labels.sort();
    labels.dedup();
    let id = |l: &String| labels.binary_search(l).unwrap();
    let all = FeatureSet::new(
        train.features.clone(),
        train.labels.iter().map(id).collect(),
        1280,
    )?;
    let truth: Vec<usize> = val.labels.iter().map(id).collect();

    let base = TrainConfig::default();
    let base = TrainConfig {
        standardize: false,
        ..base
    };
    let configs: Vec<(&str, TrainConfig)> = vec![
        (
            "b128-lr1.5e-3",
            TrainConfig {
                batch_size: 128,
                learning_rate: 1.5e-3,
                ..base.clone()
            },
        ),
        (
            "b256-lr3e-3",
            TrainConfig {
                batch_size: 256,
                learning_rate: 3e-3,
                ..base.clone()
            },
        ),
        (
            "b256-lr3e-3-s1",
            TrainConfig {
                batch_size: 256,
                learning_rate: 3e-3,
                seed: 1,
                ..base.clone()
            },
        ),
        (
            "b128-lr1.5e-3-s1",
            TrainConfig {
                batch_size: 128,
                learning_rate: 1.5e-3,
                seed: 1,
                ..base.clone()
            },
        ),
    ];
    let filter: Option<String> = std::env::args().nth(2);
    for (name, config) in configs {
        if let Some(f) = &filter {
            if !name.contains(f.as_str()) {
                continue;
            }
        }
        let start = std::time::Instant::now();
        let (tr, va) = split_stratified(all.labels(), config.val_fraction, config.seed);
        let head = fit(
            &all.subset(&tr),
            &all.subset(&va),
            labels.len(),
            &config,
            &mut |_| {},
        )?;
        let probs = head.predict_proba(&val.features, truth.len())?;
        let report = EvalReport::new(&truth, &probs, &labels)?;
        println!(
            "{name:>14}: val acc {:.4} macro-F1 {:.4} top5 {:.4} best epoch {} ({:.1}s)",
            report.accuracy,
            report.macro_f1,
            report.top5_accuracy,
            head.best_epoch,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
