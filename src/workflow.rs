//! The jobs that chain the stages: features for a labelled dataset, training
//! and saving a model, and evaluating a model on labelled data.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::data::source::{self, Skipped};
use crate::features::{Extractor, InputError};
use crate::metrics::{top_k_accuracy, EvalReport};
use crate::model_file::ModelFile;
use crate::predict::Classifier;
use crate::train::{fit, split_stratified, EpochSummary, FeatureSet, TrainConfig};

/// Features of a labelled dataset: the samples that produced features, and
/// an account of those that did not.
#[derive(Debug)]
pub struct LabelledFeatures {
    /// Label of each feature row.
    pub labels: Vec<String>,
    /// Row-major `labels.len() x dim` feature matrix.
    pub features: Vec<f32>,
    pub dim: usize,
    /// Inputs that could not be read or decoded.
    pub failures: Vec<InputError>,
    /// Files in class folders that were not images.
    pub skipped: Vec<Skipped>,
    /// Labels of the data none of whose images could be read or decoded,
    /// so that no feature row carries them.
    pub lost_labels: Vec<String>,
}

/// Loads a labelled folder or label file and extracts its features.
/// `on_start` receives the number of images before extraction begins and
/// `on_done` the number finished as they finish.
pub fn labelled_features(
    extractor: &Extractor,
    data: &Path,
    images_dir: Option<&Path>,
    on_start: &mut dyn FnMut(usize),
    on_done: &mut dyn FnMut(usize),
) -> Result<LabelledFeatures> {
    let dataset = source::load(data, images_dir, true)?;
    if dataset.samples.is_empty() {
        bail!("{} contains no images", data.display());
    }
    let paths: Vec<PathBuf> = dataset.samples.iter().map(|s| s.path.clone()).collect();
    on_start(paths.len());
    let results = extractor.extract(&paths, on_done);
    let all_labels = dataset.labels();

    let dim = extractor.dim();
    let mut labelled = LabelledFeatures {
        labels: Vec::new(),
        features: Vec::with_capacity(paths.len() * dim),
        dim,
        failures: Vec::new(),
        skipped: dataset.skipped,
        lost_labels: Vec::new(),
    };
    for (sample, result) in dataset.samples.into_iter().zip(results) {
        match result {
            Ok(features) => {
                labelled.features.extend_from_slice(&features);
                labelled
                    .labels
                    .push(sample.label.expect("labels are required"));
            }
            Err(err) => labelled.failures.push(err),
        }
    }
    let decoded: HashSet<&String> = labelled.labels.iter().collect();
    labelled.lost_labels = all_labels
        .into_iter()
        .filter(|label| !decoded.contains(label))
        .collect();
    Ok(labelled)
}

/// Counts and validation figures of a [`train_and_save`] run.
#[derive(Debug)]
pub struct TrainSummary {
    pub model_path: PathBuf,
    pub classes: usize,
    pub train_count: usize,
    pub val_count: usize,
    /// Validation rows dropped because their label is not among the
    /// training labels, by label.
    pub unknown_val_labels: BTreeMap<String, usize>,
    pub best_epoch: usize,
    pub val_accuracy: Option<f64>,
    pub val_macro_f1: Option<f64>,
}

/// Trains a head on `train` and writes the model file to `output`.
///
/// Validation uses `val` when given (rows whose label the training data
/// lacks are dropped and counted), else a stratified `config.val_fraction`
/// of `train`.
pub fn train_and_save(
    extractor: &Extractor,
    train: &LabelledFeatures,
    val: Option<&LabelledFeatures>,
    config: &TrainConfig,
    output: &Path,
    on_epoch: &mut dyn FnMut(&EpochSummary),
) -> Result<TrainSummary> {
    if train.labels.is_empty() {
        bail!("no training image could be used");
    }
    let mut labels: Vec<String> = train.labels.clone();
    labels.sort();
    labels.dedup();
    let class_of = |label: &str| {
        labels
            .binary_search_by(|probe| probe.as_str().cmp(label))
            .ok()
    };
    let train_ids: Vec<usize> = train
        .labels
        .iter()
        .map(|l| class_of(l).expect("a training label"))
        .collect();
    let all = FeatureSet::new(train.features.clone(), train_ids, train.dim)?;

    let mut unknown_val_labels = BTreeMap::new();
    let (train_set, val_set) = match val {
        Some(val) => {
            let mut features = Vec::new();
            let mut ids = Vec::new();
            for (row, label) in val.labels.iter().enumerate() {
                match class_of(label) {
                    Some(id) => {
                        ids.push(id);
                        features
                            .extend_from_slice(&val.features[row * val.dim..(row + 1) * val.dim]);
                    }
                    None => *unknown_val_labels.entry(label.clone()).or_insert(0) += 1,
                }
            }
            (all, FeatureSet::new(features, ids, val.dim)?)
        }
        None => {
            let (train_idx, val_idx) =
                split_stratified(all.labels(), config.val_fraction, config.seed);
            (all.subset(&train_idx), all.subset(&val_idx))
        }
    };

    let head = fit(&train_set, &val_set, labels.len(), config, on_epoch)?;
    let best = head.best().cloned();
    let model = ModelFile::new(
        labels.clone(),
        extractor.kind(),
        extractor.weights_sha256().to_string(),
        extractor.preprocess().clone(),
        head,
    )?;
    model.save(output)?;
    Ok(TrainSummary {
        model_path: output.to_path_buf(),
        classes: labels.len(),
        train_count: train_set.len(),
        val_count: val_set.len(),
        unknown_val_labels,
        best_epoch: model.validation.best_epoch,
        val_accuracy: best.as_ref().and_then(|b| b.val_accuracy),
        val_macro_f1: best.as_ref().and_then(|b| b.val_macro_f1),
    })
}

/// Outcome of [`evaluate`]: the report, and the per-image outcome in input
/// order (probabilities or the failure) for writing predictions.
pub struct Evaluation {
    pub report: EvalReport,
    /// The model's class names, indexed by class id.
    pub labels: Vec<String>,
    /// Each input's name (the label file's `file` field, or the path for a
    /// folder) and class probabilities, or why it failed.
    pub outcomes: Vec<(String, Result<Vec<f32>, InputError>)>,
    pub skipped: Vec<Skipped>,
    /// Number of images whose label the model does not know; they count as
    /// errors in every figure.
    pub unknown_label_count: usize,
}

/// Scores `classifier` on a labelled folder or label file. Images that fail
/// to decode are left out of the figures and listed in the outcomes.
pub fn evaluate(
    classifier: &Classifier,
    data: &Path,
    images_dir: Option<&Path>,
    on_start: &mut dyn FnMut(usize),
    on_done: &mut dyn FnMut(usize),
) -> Result<Evaluation> {
    let dataset = source::load(data, images_dir, true)?;
    if dataset.samples.is_empty() {
        bail!("{} contains no images", data.display());
    }
    let paths: Vec<PathBuf> = dataset.samples.iter().map(|s| s.path.clone()).collect();
    on_start(paths.len());
    let probabilities = classifier.probabilities(&paths, on_done);

    // Labels the model never saw become extra classes with zero scores, so
    // their images count as misclassified rather than disappearing.
    let mut labels: Vec<String> = classifier.labels().to_vec();
    let known = labels.len();
    let mut truth = Vec::new();
    let mut scores = Vec::new();
    let mut unknown_label_count = 0;
    let mut rows: Vec<&[f32]> = Vec::new();
    for (sample, outcome) in dataset.samples.iter().zip(&probabilities) {
        let Ok(row) = outcome else { continue };
        let label = sample.label.as_deref().expect("labels are required");
        let id = match labels.iter().position(|l| l == label) {
            Some(id) => id,
            None => {
                labels.push(label.to_string());
                labels.len() - 1
            }
        };
        if id >= known {
            unknown_label_count += 1;
        }
        truth.push(id);
        rows.push(row);
    }
    if truth.is_empty() {
        let first = probabilities
            .iter()
            .find_map(|outcome| outcome.as_ref().err());
        let cause = first.map_or(String::new(), |error| format!(", e.g. {error}"));
        bail!(
            "none of the {} images in {} could be read or decoded{cause}",
            paths.len(),
            data.display()
        );
    }
    for row in rows {
        scores.extend_from_slice(row);
        scores.extend(std::iter::repeat_n(0.0, labels.len() - known));
    }
    let mut report = EvalReport::new(&truth, &scores, &labels)
        .with_context(|| format!("failed to score the model on {}", data.display()))?;
    // A model with fewer than 5 classes would rank an unknown label's
    // zero-score column inside its top 5. Ranking only as deep as the
    // model's own classes keeps those images misses.
    report.top5_accuracy = top_k_accuracy(&truth, &scores, labels.len(), 5.min(known));
    Ok(Evaluation {
        report,
        labels: classifier.labels().to_vec(),
        outcomes: dataset
            .samples
            .into_iter()
            .map(|sample| sample.name)
            .zip(probabilities)
            .collect(),
        skipped: dataset.skipped,
        unknown_label_count,
    })
}
