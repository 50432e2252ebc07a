//! Batch prediction with a trained model: one result per input, in input
//! order, and the submission-format TSV writer.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::backbone::weights::{self, ResolvedWeights};
use crate::features::{Extractor, FeatureCache, InputError};
use crate::model_file::ModelFile;

/// A trained model file together with the backbone it was trained on.
pub struct Classifier {
    model: ModelFile,
    extractor: Extractor,
}

/// Options for loading a [`Classifier`].
#[derive(Clone, Debug)]
pub struct ClassifierOptions {
    /// Local checkpoint overriding the cached or fetched backbone weights.
    pub weights: Option<PathBuf>,
    /// Images per backbone forward pass.
    pub batch_size: usize,
    /// Whether to read and write the on-disk feature cache.
    pub use_cache: bool,
}

impl Classifier {
    /// Loads a model file and the backbone weights it names, refusing
    /// weights whose checksum differs from the one the model was trained on.
    pub fn load(model_path: &Path, options: &ClassifierOptions) -> Result<Self> {
        let model = ModelFile::load(model_path)?;
        let (resolved, weights) = weights::load(model.backbone, options.weights.as_deref())?;
        check_weights(&model, model_path, &resolved)?;
        let cache = if options.use_cache {
            Some(FeatureCache::open(
                model.backbone,
                &resolved.sha256,
                &model.preprocess,
            )?)
        } else {
            None
        };
        let extractor = Extractor::new(
            &resolved,
            &weights,
            model.preprocess.clone(),
            options.batch_size,
            cache,
        )?;
        Ok(Classifier { model, extractor })
    }

    pub fn model(&self) -> &ModelFile {
        &self.model
    }

    /// Class names, indexed by class id.
    pub fn labels(&self) -> &[String] {
        &self.model.labels
    }

    /// Returns class probabilities for each input, in input order.
    pub fn probabilities(
        &self,
        paths: &[PathBuf],
        on_done: &mut dyn FnMut(usize),
    ) -> Vec<Result<Vec<f32>, InputError>> {
        let features = self.extractor.extract(paths, on_done);
        // One head pass over every good row: the head rebuilds its weight
        // tensors on each call, so per-image calls would repeat that work.
        let good: Vec<f32> = features
            .iter()
            .filter_map(|feature| feature.as_ref().ok())
            .flatten()
            .copied()
            .collect();
        let count = good.len() / self.extractor.dim();
        let probabilities = match self.model.head().predict_proba(&good, count) {
            Ok(probabilities) => probabilities,
            Err(err) => {
                let message = format!("the classification head failed: {err:#}");
                return features
                    .into_iter()
                    .zip(paths)
                    .map(|(feature, path)| {
                        feature?;
                        Err(InputError {
                            path: path.clone(),
                            message: message.clone(),
                        })
                    })
                    .collect();
            }
        };
        let mut rows = probabilities.chunks_exact(self.labels().len());
        features
            .into_iter()
            .map(|feature| feature.map(|_| rows.next().expect("one row per good input").to_vec()))
            .collect()
    }
}

/// Fails unless `resolved` are the backbone weights `model` was trained on.
pub fn check_weights(
    model: &ModelFile,
    model_path: &Path,
    resolved: &ResolvedWeights,
) -> Result<()> {
    if resolved.kind != model.backbone || resolved.sha256 != model.backbone_sha256 {
        bail!(
            "{} was trained on {} weights with SHA-256 {}, but the weights found are {} with SHA-256 {}; \
             pass the original checkpoint with --weights",
            model_path.display(),
            model.backbone,
            model.backbone_sha256,
            resolved.kind,
            resolved.sha256
        );
    }
    Ok(())
}

/// Indices of the `k` highest scores, best first; ties keep the lower index first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// One output row: the file as the user named it and its outcome.
#[derive(Clone, Debug)]
pub struct PredictionRow {
    pub file: String,
    pub outcome: Result<Vec<f32>, String>,
}

/// Writes the submission-format TSV: a header, then per input `file`, the
/// predicted `label` and its `confidence`, the runner-up labels and scores
/// when `top_k` > 1 (`label_2`, `score_2`, ...), and `error`, which is empty
/// for images that were classified and gives the cause for those that were
/// not (their label is empty). Fields are quoted where the format needs it.
pub fn write_tsv<W: Write>(
    writer: W,
    rows: &[PredictionRow],
    labels: &[String],
    top_k: usize,
) -> Result<()> {
    let top_k = top_k.max(1);
    let mut out = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(writer);
    let mut header = vec![
        "file".to_string(),
        "label".to_string(),
        "confidence".to_string(),
    ];
    for rank in 2..=top_k {
        header.push(format!("label_{rank}"));
        header.push(format!("score_{rank}"));
    }
    header.push("error".to_string());
    out.write_record(&header)
        .context("failed to write the predictions header")?;

    for row in rows {
        let mut record = vec![row.file.clone()];
        match &row.outcome {
            Ok(scores) => {
                let best = self::top_k(scores, top_k);
                for rank in 0..top_k {
                    match best.get(rank) {
                        Some(&class) => {
                            record.push(labels[class].clone());
                            record.push(format!("{:.6}", scores[class]));
                        }
                        None => {
                            record.push(String::new());
                            record.push(String::new());
                        }
                    }
                }
                record.push(String::new());
            }
            Err(message) => {
                record.extend(std::iter::repeat_n(String::new(), 2 * top_k));
                record.push(message.replace(['\n', '\r', '\t'], " "));
            }
        }
        out.write_record(&record)
            .context("failed to write a prediction row")?;
    }
    out.flush().context("failed to write the predictions")?;
    Ok(())
}
