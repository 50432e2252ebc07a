//! Settings of head training, stored in model files.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Shape of the learning rate over training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// `learning_rate` for every step after the warmup.
    Constant,
    /// Half a cosine from `learning_rate` after the warmup towards 0 at the
    /// end of `epochs`.
    Cosine,
}

/// Settings of head training. Every field has a default, so a partial JSON
/// object deserializes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Maximum number of passes over the training set. Default 60.
    pub epochs: usize,
    /// Samples per optimizer step. Default 256: on the Grocery val split it
    /// scored as well as 64 (with the learning rate scaled up) in a third of
    /// the time.
    pub batch_size: usize,
    /// Peak AdamW learning rate. Default 3e-3.
    pub learning_rate: f64,
    /// Decoupled AdamW weight decay, applied to weight matrices only (not to
    /// biases). Default 0.05.
    pub weight_decay: f64,
    /// Linear warmup from 0 to `learning_rate`, in epochs. Default 2.
    pub warmup_epochs: usize,
    /// Learning-rate shape after the warmup. Default cosine.
    pub schedule: LrSchedule,
    /// Probability mass spread evenly over all classes in the target
    /// distribution, in `[0, 1)`. Default 0.1.
    pub label_smoothing: f64,
    /// Dropout probability on the features entering the head, in `[0, 1)`.
    /// Default 0.2.
    pub input_dropout: f64,
    /// Dropout probability after each hidden layer's ReLU, in `[0, 1)`.
    /// Default 0.3.
    pub dropout: f64,
    /// Widths of the hidden dense layers; empty gives a linear classifier.
    /// Default `[512]`.
    pub hidden: Vec<usize>,
    /// Whether features are standardized per dimension with the mean and
    /// standard deviation of the training set (stored in the head). Default
    /// false: on frozen EfficientNet-Lite0 features, standardizing lowered
    /// Grocery val accuracy from 70 % to 65 % (`examples/tune_head.rs`).
    pub standardize: bool,
    /// Epochs without a better validation macro-F1 before training stops;
    /// 0 disables early stopping. Default 10.
    pub patience: usize,
    /// Whether each sample's loss is weighted by the inverse frequency of its
    /// class, so rare classes count as much as common ones. Default false.
    pub class_weighting: bool,
    /// Share of each class held out for validation when no validation set is
    /// given, in `[0, 1)`. Default 0.15.
    pub val_fraction: f64,
    /// Seed of weight initialization, dropout masks, shuffling and the
    /// validation split. Default 0.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 60,
            batch_size: 256,
            learning_rate: 3e-3,
            weight_decay: 0.05,
            warmup_epochs: 2,
            schedule: LrSchedule::Cosine,
            label_smoothing: 0.1,
            input_dropout: 0.2,
            dropout: 0.3,
            hidden: vec![512],
            standardize: false,
            patience: 10,
            class_weighting: false,
            val_fraction: 0.15,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks that every setting is in its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("epochs must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            bail!(
                "learning_rate must be a positive number, got {}",
                self.learning_rate
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "weight_decay must be zero or positive, got {}",
                self.weight_decay
            );
        }
        check_unit_interval("label_smoothing", self.label_smoothing)?;
        check_unit_interval("input_dropout", self.input_dropout)?;
        check_unit_interval("dropout", self.dropout)?;
        check_unit_interval("val_fraction", self.val_fraction)?;
        if let Some(position) = self.hidden.iter().position(|&w| w == 0) {
            bail!("hidden layer {position} has width 0; widths must be at least 1");
        }
        Ok(())
    }

    /// Learning rate at optimizer step `step` (0-based) of a run with
    /// `steps_per_epoch` steps in each epoch.
    pub fn learning_rate_at(&self, step: usize, steps_per_epoch: usize) -> f64 {
        let warmup = self.warmup_epochs * steps_per_epoch;
        if step < warmup {
            return self.learning_rate * (step + 1) as f64 / warmup as f64;
        }
        match self.schedule {
            LrSchedule::Constant => self.learning_rate,
            LrSchedule::Cosine => {
                let total = (self.epochs * steps_per_epoch).saturating_sub(warmup);
                if total == 0 {
                    return self.learning_rate;
                }
                let progress = ((step - warmup) as f64 / total as f64).min(1.0);
                self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

fn check_unit_interval(name: &str, value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) {
        bail!("{name} must be in [0, 1), got {value}");
    }
    Ok(())
}
