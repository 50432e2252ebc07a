//! Classification metrics: accuracy, macro-F1, top-k accuracy, per-class
//! precision, recall and F1, and the confusion matrix.
//!
//! Class ids are indices into the model's label list. Where a ratio has a
//! zero denominator (a class never predicted has no precision, a class with
//! no true samples has no recall) the value is 0, as scikit-learn computes it
//! with `zero_division=0`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Fraction of samples whose predicted class equals the true class; 0 for
/// no samples.
///
/// # Panics
/// If `truth` and `predicted` differ in length.
pub fn accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    assert_same_len(truth, predicted);
    if truth.is_empty() {
        return 0.0;
    }
    let correct = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    correct as f64 / truth.len() as f64
}

/// Confusion matrix with rows for the true class and columns for the
/// predicted class: `matrix[t][p]` counts samples of class `t` predicted as
/// `p`.
///
/// # Panics
/// If the slices differ in length or a class id is not below `num_classes`.
pub fn confusion_matrix(truth: &[usize], predicted: &[usize], num_classes: usize) -> Vec<Vec<u64>> {
    assert_same_len(truth, predicted);
    let mut matrix = vec![vec![0u64; num_classes]; num_classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        assert!(
            t < num_classes && p < num_classes,
            "class id out of range: true {t}, predicted {p}, {num_classes} classes"
        );
        matrix[t][p] += 1;
    }
    matrix
}

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// True positives over samples predicted as this class.
    pub precision: f64,
    /// True positives over samples of this class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Number of samples whose true class is this one.
    pub support: usize,
}

/// Scores for every class id in `0..num_classes`, including classes that
/// occur in neither slice (all zero).
///
/// # Panics
/// As [`confusion_matrix`].
pub fn per_class_scores(
    truth: &[usize],
    predicted: &[usize],
    num_classes: usize,
) -> Vec<ClassScores> {
    let matrix = confusion_matrix(truth, predicted, num_classes);
    (0..num_classes)
        .map(|c| {
            let true_positives = matrix[c][c] as f64;
            let support: u64 = matrix[c].iter().sum();
            let predicted_count: u64 = matrix.iter().map(|row| row[c]).sum();
            let precision = ratio(true_positives, predicted_count as f64);
            let recall = ratio(true_positives, support as f64);
            ClassScores {
                precision,
                recall,
                f1: ratio(2.0 * precision * recall, precision + recall),
                support: support as usize,
            }
        })
        .collect()
}

/// Unweighted mean of the per-class F1 over the classes that occur in
/// `truth` or in `predicted`, which is what scikit-learn's
/// `f1_score(average="macro", zero_division=0)` computes. Classes that occur
/// in neither do not count. Returns 0 for no samples.
///
/// # Panics
/// If the slices differ in length.
pub fn macro_f1(truth: &[usize], predicted: &[usize]) -> f64 {
    assert_same_len(truth, predicted);
    let num_classes = truth.iter().chain(predicted).max().map_or(0, |&m| m + 1);
    let scores = per_class_scores(truth, predicted, num_classes);
    let mut present = vec![false; num_classes];
    for &c in truth.iter().chain(predicted) {
        present[c] = true;
    }
    let counted: Vec<f64> = scores
        .iter()
        .zip(&present)
        .filter(|(_, &is_present)| is_present)
        .map(|(s, _)| s.f1)
        .collect();
    if counted.is_empty() {
        return 0.0;
    }
    counted.iter().sum::<f64>() / counted.len() as f64
}

/// Index of the highest score in each row of a row-major `n x num_classes`
/// matrix; the lowest index wins a tie.
pub fn argmax_rows(scores: &[f32], num_classes: usize) -> Vec<usize> {
    scores
        .chunks_exact(num_classes)
        .map(|row| {
            let mut best = 0;
            for (c, &s) in row.iter().enumerate() {
                if s > row[best] {
                    best = c;
                }
            }
            best
        })
        .collect()
}

/// Fraction of samples whose true class is among the `k` highest scores of
/// its row; 0 for no samples. A class tied with the k-th score counts only if
/// its index is lower than the tied classes', so ties never inflate the
/// figure. With `k >= num_classes` every sample counts.
///
/// # Panics
/// If `scores` is not `truth.len() x num_classes`.
pub fn top_k_accuracy(truth: &[usize], scores: &[f32], num_classes: usize, k: usize) -> f64 {
    assert_eq!(
        scores.len(),
        truth.len() * num_classes,
        "scores must be {} samples x {num_classes} classes",
        truth.len()
    );
    if truth.is_empty() {
        return 0.0;
    }
    let hits = truth
        .iter()
        .zip(scores.chunks_exact(num_classes))
        .filter(|(&t, row)| {
            // Rank of the true class: classes scoring higher, plus tied
            // classes with a lower index.
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(c, &s)| s > row[t] || (s == row[t] && c < t))
                .count();
            rank < k
        })
        .count();
    hits as f64 / truth.len() as f64
}

/// One row of [`EvalReport::per_class`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Confusion matrix with the label of each row and column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// Label of row `i` and column `i`.
    pub labels: Vec<String>,
    /// `matrix[t][p]` counts samples of true class `t` predicted as `p`.
    pub matrix: Vec<Vec<u64>>,
}

/// Evaluation of a classifier on a labelled set, serialized by
/// `pantry eval --json` with exactly these keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub accuracy: f64,
    /// See [`macro_f1`] for which classes are averaged.
    pub macro_f1: f64,
    pub top5_accuracy: f64,
    /// Every class of the model in id order, including classes absent from
    /// the evaluated set (support 0).
    pub per_class: Vec<ClassReport>,
    pub confusion: Confusion,
}

impl EvalReport {
    /// Scores a classifier from its per-class `scores` (row-major
    /// `truth.len() x labels.len()`, probabilities or logits); the predicted
    /// class is the row's argmax.
    pub fn new(truth: &[usize], scores: &[f32], labels: &[String]) -> Result<Self> {
        let num_classes = labels.len();
        if num_classes == 0 {
            bail!("cannot evaluate a classifier without labels");
        }
        if scores.len() != truth.len() * num_classes {
            bail!(
                "scores have {} values, expected {} samples x {num_classes} classes",
                scores.len(),
                truth.len()
            );
        }
        if let Some(&bad) = truth.iter().find(|&&t| t >= num_classes) {
            bail!("true class id {bad} is out of range for {num_classes} labels");
        }
        let predicted = argmax_rows(scores, num_classes);
        let per_class = per_class_scores(truth, &predicted, num_classes)
            .into_iter()
            .zip(labels)
            .map(|(s, label)| ClassReport {
                label: label.clone(),
                precision: s.precision,
                recall: s.recall,
                f1: s.f1,
                support: s.support,
            })
            .collect();
        Ok(EvalReport {
            accuracy: accuracy(truth, &predicted),
            macro_f1: macro_f1(truth, &predicted),
            top5_accuracy: top_k_accuracy(truth, scores, num_classes, 5),
            per_class,
            confusion: Confusion {
                labels: labels.to_vec(),
                matrix: confusion_matrix(truth, &predicted, num_classes),
            },
        })
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

fn assert_same_len(truth: &[usize], predicted: &[usize]) {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "true and predicted class lists differ in length"
    );
}
