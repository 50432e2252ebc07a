//! The training loop: AdamW on mini-batches, per-epoch validation and early
//! stopping on validation macro-F1.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::head::{self, Dropout, HeadSpec, TrainedHead};
use super::loss::{self, batch_loss, inverse_frequency_weights};
use super::{split_stratified, FeatureSet, TrainConfig};
use crate::backbone::WeightTensor;
use crate::metrics;

/// Random streams of one seed, so that e.g. a different batch size does not
/// change the initial weights.
const INIT_STREAM: u64 = 0;
const SHUFFLE_STREAM: u64 = 1;
const DROPOUT_STREAM: u64 = 2;

/// Rows per forward pass when scoring the validation set.
const EVAL_CHUNK_ROWS: usize = 1024;

/// Outcome of one training epoch, passed to the progress callback and stored
/// in the head's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochSummary {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches, with dropout active.
    pub train_loss: f64,
    /// Loss on the validation set (smoothed, unweighted); `None` without one.
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub val_macro_f1: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub learning_rate: f64,
    /// Whether this epoch's weights are the best so far and were kept.
    pub is_best: bool,
}

/// Trains a head on `train`, validating on `val` after each epoch.
///
/// The weights of the epoch with the highest validation macro-F1 are kept,
/// with ties going to the lower validation loss. Training stops after
/// `config.patience` epochs without such an improvement. With an empty `val`
/// there is no early stopping and the last epoch's weights are kept.
/// `on_epoch` receives each epoch's summary as soon as it is known.
pub fn fit(
    train: &FeatureSet,
    val: &FeatureSet,
    num_classes: usize,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochSummary),
) -> Result<TrainedHead> {
    config.validate().context("invalid training settings")?;
    check_inputs(train, val, num_classes)?;
    let device = Device::Cpu;
    let dim = train.dim();
    let spec = HeadSpec {
        input_dim: dim,
        hidden: config.hidden.clone(),
        num_classes,
        standardize: config.standardize,
    };

    let mut tensors = BTreeMap::new();
    let mut x_train = train.features().to_vec();
    let mut x_val = val.features().to_vec();
    if config.standardize {
        let (mean, std) = feature_statistics(train);
        head::standardize_rows(&mut x_train, &mean, &std);
        head::standardize_rows(&mut x_val, &mean, &std);
        tensors.insert(head::INPUT_MEAN.to_string(), vector(mean));
        tensors.insert(head::INPUT_STD.to_string(), vector(std));
    }

    let mut init_rng = seeded(config.seed, INIT_STREAM);
    let mut layers = Vec::new();
    for (layer, (weight, bias)) in head::initial_layers(&spec, &mut init_rng)
        .into_iter()
        .enumerate()
    {
        let (inputs, outputs) = spec.layer_dims()[layer];
        layers.push((
            Var::from_vec(weight, (outputs, inputs), &device)?,
            Var::from_vec(bias, outputs, &device)?,
        ));
    }
    // Weight decay shrinks weight matrices only; decaying biases would pull
    // class priors towards zero without regularizing anything.
    let decay_params = ParamsAdamW {
        lr: config.learning_rate,
        weight_decay: config.weight_decay,
        ..ParamsAdamW::default()
    };
    let mut weight_optimizer = AdamW::new(
        layers.iter().map(|(w, _)| w.clone()).collect(),
        decay_params.clone(),
    )?;
    let mut bias_optimizer = AdamW::new(
        layers.iter().map(|(_, b)| b.clone()).collect(),
        ParamsAdamW {
            weight_decay: 0.0,
            ..decay_params
        },
    )?;

    let class_weights = config
        .class_weighting
        .then(|| inverse_frequency_weights(train.labels(), num_classes));
    let mut shuffle_rng = seeded(config.seed, SHUFFLE_STREAM);
    let mut dropout = Dropout {
        rng: seeded(config.seed, DROPOUT_STREAM),
        input: config.input_dropout as f32,
        hidden: config.dropout as f32,
    };
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut best_epoch = 0;
    let mut epochs_since_best = 0;
    let mut step = 0;

    for epoch in 1..=config.epochs {
        order.shuffle(&mut shuffle_rng);
        let mut loss_sum = 0.0;
        let mut learning_rate = config.learning_rate;
        for batch in order.chunks(config.batch_size) {
            learning_rate = config.learning_rate_at(step, steps_per_epoch);
            weight_optimizer.set_learning_rate(learning_rate);
            bias_optimizer.set_learning_rate(learning_rate);
            let mut rows = Vec::with_capacity(batch.len() * dim);
            for &i in batch {
                rows.extend_from_slice(&x_train[i * dim..(i + 1) * dim]);
            }
            let labels: Vec<usize> = batch.iter().map(|&i| train.labels()[i]).collect();
            let x = Tensor::from_vec(rows, (batch.len(), dim), &device)?;
            let logits = head::forward(&x, &as_tensors(&layers), Some(&mut dropout))?;
            let loss = batch_loss(
                &logits,
                &labels,
                config.label_smoothing,
                class_weights.as_deref(),
            )?;
            let grads = loss.backward()?;
            weight_optimizer.step(&grads)?;
            bias_optimizer.step(&grads)?;
            loss_sum += loss::scalar(&loss)? * batch.len() as f64;
            step += 1;
        }
        let train_loss = loss_sum / train.len() as f64;
        if !train_loss.is_finite() {
            bail!(
                "training diverged at epoch {epoch}: loss is {train_loss}; lower the learning rate"
            );
        }

        let scores = if val.is_empty() {
            None
        } else {
            Some(evaluate(
                &x_val,
                val.labels(),
                &layers,
                config.label_smoothing,
            )?)
        };
        let is_best = match (scores, best) {
            (None, _) | (Some(_), None) => true,
            (Some((f1, loss, _)), Some((best_f1, best_loss))) => {
                f1 > best_f1 || (f1 == best_f1 && loss < best_loss)
            }
        };
        if is_best {
            best = scores.map(|(f1, loss, _)| (f1, loss));
            best_epoch = epoch;
            epochs_since_best = 0;
            snapshot(&layers, &mut tensors)?;
        } else {
            epochs_since_best += 1;
        }
        let summary = EpochSummary {
            epoch,
            train_loss,
            val_loss: scores.map(|(_, loss, _)| loss),
            val_accuracy: scores.map(|(_, _, accuracy)| accuracy),
            val_macro_f1: scores.map(|(f1, _, _)| f1),
            learning_rate,
            is_best,
        };
        on_epoch(&summary);
        history.push(summary);
        if config.patience > 0 && epochs_since_best >= config.patience {
            break;
        }
    }
    TrainedHead::new(spec, config.clone(), tensors, best_epoch, history)
}

/// Trains on `data` after holding out a stratified `config.val_fraction` of
/// it (see [`split_stratified`]) as the validation set.
pub fn fit_split(
    data: &FeatureSet,
    num_classes: usize,
    config: &TrainConfig,
    on_epoch: &mut dyn FnMut(&EpochSummary),
) -> Result<TrainedHead> {
    config.validate().context("invalid training settings")?;
    let (train_idx, val_idx) = split_stratified(data.labels(), config.val_fraction, config.seed);
    fit(
        &data.subset(&train_idx),
        &data.subset(&val_idx),
        num_classes,
        config,
        on_epoch,
    )
}

fn check_inputs(train: &FeatureSet, val: &FeatureSet, num_classes: usize) -> Result<()> {
    if train.is_empty() {
        bail!("the training set is empty");
    }
    if num_classes == 0 {
        bail!("a head needs at least one class");
    }
    if val.dim() != train.dim() {
        bail!(
            "validation features have {} dimensions, training features {}",
            val.dim(),
            train.dim()
        );
    }
    for (name, set) in [("training", train), ("validation", val)] {
        if let Some(&bad) = set.labels().iter().find(|&&l| l >= num_classes) {
            bail!("{name} set has class id {bad}, but there are only {num_classes} classes");
        }
    }
    Ok(())
}

/// Per-dimension mean and population standard deviation of the training
/// features. A constant dimension gets deviation 1, so it maps to 0.
fn feature_statistics(train: &FeatureSet) -> (Vec<f32>, Vec<f32>) {
    let dim = train.dim();
    let n = train.len() as f64;
    let mut sum = vec![0f64; dim];
    let mut sum_sq = vec![0f64; dim];
    for row in train.features().chunks_exact(dim) {
        for ((s, q), &x) in sum.iter_mut().zip(&mut sum_sq).zip(row) {
            *s += f64::from(x);
            *q += f64::from(x) * f64::from(x);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sum_sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let sd = (q / n - m * m).max(0.0).sqrt();
            if sd < 1e-6 {
                1.0
            } else {
                sd as f32
            }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// Validation `(macro_f1, loss, accuracy)` of standardized rows `x`.
fn evaluate(
    x: &[f32],
    labels: &[usize],
    layers: &[(Var, Var)],
    smoothing: f64,
) -> Result<(f64, f64, f64)> {
    let layers = as_tensors(layers);
    let dim = x.len() / labels.len();
    let mut predicted = Vec::with_capacity(labels.len());
    let mut loss_sum = 0.0;
    for (chunk, chunk_labels) in x
        .chunks(EVAL_CHUNK_ROWS * dim)
        .zip(labels.chunks(EVAL_CHUNK_ROWS))
    {
        let rows = Tensor::from_slice(chunk, (chunk_labels.len(), dim), &Device::Cpu)?;
        let logits = head::forward(&rows, &layers, None)?;
        loss_sum += loss::scalar(&batch_loss(&logits, chunk_labels, smoothing, None)?)?
            * chunk_labels.len() as f64;
        let num_classes = logits.dim(1)?;
        let flat = logits.flatten_all()?.to_vec1::<f32>()?;
        predicted.extend(metrics::argmax_rows(&flat, num_classes));
    }
    Ok((
        metrics::macro_f1(labels, &predicted),
        loss_sum / labels.len() as f64,
        metrics::accuracy(labels, &predicted),
    ))
}

fn as_tensors(layers: &[(Var, Var)]) -> Vec<(Tensor, Tensor)> {
    layers
        .iter()
        .map(|(w, b)| (w.as_tensor().clone(), b.as_tensor().clone()))
        .collect()
}

/// Copies the current layer weights into `tensors`.
fn snapshot(layers: &[(Var, Var)], tensors: &mut BTreeMap<String, WeightTensor>) -> Result<()> {
    for (layer, (w, b)) in layers.iter().enumerate() {
        for (name, var) in [(head::weight_name(layer), w), (head::bias_name(layer), b)] {
            let tensor = WeightTensor {
                shape: var.dims().to_vec(),
                data: var.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            };
            tensors.insert(name, tensor);
        }
    }
    Ok(())
}

fn vector(data: Vec<f32>) -> WeightTensor {
    WeightTensor {
        shape: vec![data.len()],
        data,
    }
}

fn seeded(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
