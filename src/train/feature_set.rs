//! Labelled feature matrices, the input of head training.

use anyhow::{bail, Result};

/// Row-major `len() x dim()` matrix of pooled backbone features with one
/// class id per row.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSet {
    dim: usize,
    features: Vec<f32>,
    labels: Vec<usize>,
}

impl FeatureSet {
    /// Wraps `features` (`labels.len()` rows of `dim` values). Rejects a
    /// length mismatch and non-finite values, naming the row.
    pub fn new(features: Vec<f32>, labels: Vec<usize>, dim: usize) -> Result<Self> {
        if dim == 0 {
            bail!("feature dimension must be at least 1");
        }
        if features.len() != labels.len() * dim {
            bail!(
                "feature matrix has {} values, expected {} rows x {dim} = {}",
                features.len(),
                labels.len(),
                labels.len() * dim
            );
        }
        if let Some(position) = features.iter().position(|v| !v.is_finite()) {
            bail!(
                "feature row {} contains a non-finite value ({})",
                position / dim,
                features[position]
            );
        }
        Ok(FeatureSet {
            dim,
            features,
            labels,
        })
    }

    /// An empty set of `dim`-wide rows.
    pub fn empty(dim: usize) -> Self {
        FeatureSet {
            dim,
            features: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The whole row-major matrix.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// Copies the rows at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> FeatureSet {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            features.extend_from_slice(self.row(i));
        }
        FeatureSet {
            dim: self.dim,
            features,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}
