//! The classification head: optional per-dimension standardization, dense
//! layers with ReLU and dropout, then the class layer.
//!
//! A standardizing head has the tensors `input.mean` and `input.std`
//! (`[input_dim]`). Dense layer `i` has `dense.{i}.weight` (`[out, in]`, the
//! PyTorch `Linear` layout) and `dense.{i}.bias` (`[out]`), and the last
//! dense layer is the class layer.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{EpochSummary, TrainConfig};
use crate::backbone::WeightTensor;

/// Name of the per-dimension feature mean subtracted before the first layer.
pub const INPUT_MEAN: &str = "input.mean";
/// Name of the per-dimension divisor applied after subtracting the mean.
pub const INPUT_STD: &str = "input.std";

/// Name of the weight matrix of dense layer `layer`.
pub fn weight_name(layer: usize) -> String {
    format!("dense.{layer}.weight")
}

/// Name of the bias vector of dense layer `layer`.
pub fn bias_name(layer: usize) -> String {
    format!("dense.{layer}.bias")
}

/// Layer sizes of a head; together with its tensors it defines the head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSpec {
    /// Length of the feature vectors the head takes.
    pub input_dim: usize,
    /// Widths of the hidden layers, each followed by ReLU.
    pub hidden: Vec<usize>,
    /// Number of outputs of the class layer.
    pub num_classes: usize,
    /// Whether `input.mean` and `input.std` standardize the features first.
    pub standardize: bool,
}

impl HeadSpec {
    /// `(inputs, outputs)` of each dense layer, class layer last.
    pub fn layer_dims(&self) -> Vec<(usize, usize)> {
        let mut widths = vec![self.input_dim];
        widths.extend_from_slice(&self.hidden);
        widths.push(self.num_classes);
        widths.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Name and shape of every tensor the head needs.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::new();
        if self.standardize {
            shapes.push((INPUT_MEAN.to_string(), vec![self.input_dim]));
            shapes.push((INPUT_STD.to_string(), vec![self.input_dim]));
        }
        for (layer, (inputs, outputs)) in self.layer_dims().into_iter().enumerate() {
            shapes.push((weight_name(layer), vec![outputs, inputs]));
            shapes.push((bias_name(layer), vec![outputs]));
        }
        shapes
    }
}

/// A trained head with the settings and history of its training.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainedHead {
    pub spec: HeadSpec,
    pub config: TrainConfig,
    /// Every tensor of [`HeadSpec::tensor_shapes`], by name.
    pub tensors: BTreeMap<String, WeightTensor>,
    /// 1-based epoch whose weights these are.
    pub best_epoch: usize,
    /// One summary per epoch run.
    pub history: Vec<EpochSummary>,
}

impl TrainedHead {
    /// Assembles a head, checking that `tensors` has exactly the tensors and
    /// shapes that `spec` implies.
    pub fn new(
        spec: HeadSpec,
        config: TrainConfig,
        tensors: BTreeMap<String, WeightTensor>,
        best_epoch: usize,
        history: Vec<EpochSummary>,
    ) -> Result<Self> {
        let expected = spec.tensor_shapes();
        for (name, shape) in &expected {
            let tensor = tensors
                .get(name)
                .with_context(|| format!("head tensor {name} is missing"))?;
            if &tensor.shape != shape {
                bail!(
                    "head tensor {name} has shape {:?}, expected {shape:?}",
                    tensor.shape
                );
            }
            let count: usize = shape.iter().product();
            if tensor.data.len() != count {
                bail!(
                    "head tensor {name} has {} values, its shape {shape:?} needs {count}",
                    tensor.data.len()
                );
            }
        }
        if let Some(extra) = tensors
            .keys()
            .find(|name| !expected.iter().any(|(n, _)| n == *name))
        {
            bail!("unexpected head tensor {extra}");
        }
        Ok(TrainedHead {
            spec,
            config,
            tensors,
            best_epoch,
            history,
        })
    }

    /// Summary of the epoch whose weights the head holds, if it was recorded.
    pub fn best(&self) -> Option<&EpochSummary> {
        self.history.iter().find(|s| s.epoch == self.best_epoch)
    }

    /// Class probabilities (softmax) for `n` feature rows: row-major
    /// `n x num_classes`.
    pub fn predict_proba(&self, features: &[f32], n: usize) -> Result<Vec<f32>> {
        let dim = self.spec.input_dim;
        if features.len() != n * dim {
            bail!(
                "feature matrix has {} values, expected {n} rows x {dim}",
                features.len()
            );
        }
        let layers = self.layer_tensors()?;
        let mut standardized = features.to_vec();
        if self.spec.standardize {
            let mean = &self.tensors[INPUT_MEAN].data;
            let std = &self.tensors[INPUT_STD].data;
            standardize_rows(&mut standardized, mean, std);
        }
        let mut probabilities = Vec::with_capacity(n * self.spec.num_classes);
        const CHUNK_ROWS: usize = 1024;
        for chunk in standardized.chunks(CHUNK_ROWS * dim) {
            let rows = chunk.len() / dim;
            let x = Tensor::from_slice(chunk, (rows, dim), &Device::Cpu)?;
            let logits = forward(&x, &layers, None)?;
            let p = candle_nn::ops::softmax_last_dim(&logits)?;
            probabilities.extend(p.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(probabilities)
    }

    /// Builds the dense layers as `(weight, bias)` tensors on the CPU.
    fn layer_tensors(&self) -> Result<Vec<(Tensor, Tensor)>> {
        (0..self.spec.layer_dims().len())
            .map(|layer| {
                let w = &self.tensors[&weight_name(layer)];
                let b = &self.tensors[&bias_name(layer)];
                Ok((
                    Tensor::from_slice(&w.data, w.shape.as_slice(), &Device::Cpu)?,
                    Tensor::from_slice(&b.data, b.shape.as_slice(), &Device::Cpu)?,
                ))
            })
            .collect()
    }
}

/// Maps each `mean.len()`-wide row of `rows` to `(x - mean) / std` in place.
pub(crate) fn standardize_rows(rows: &mut [f32], mean: &[f32], std: &[f32]) {
    for row in rows.chunks_exact_mut(mean.len()) {
        for ((x, m), s) in row.iter_mut().zip(mean).zip(std) {
            *x = (*x - m) / s;
        }
    }
}

/// Dropout with masks drawn from a seeded generator, so training is
/// reproducible without candle's global random state.
pub(crate) struct Dropout {
    pub rng: ChaCha8Rng,
    /// Probability of dropping a feature entering the head.
    pub input: f32,
    /// Probability of dropping a unit after a hidden layer.
    pub hidden: f32,
}

impl Dropout {
    /// Zeroes each value with probability `p` and scales the kept ones by
    /// `1 / (1 - p)`, so the expected value is unchanged.
    fn apply(&mut self, x: &Tensor, p: f32) -> candle_core::Result<Tensor> {
        if p == 0.0 {
            return Ok(x.clone());
        }
        let keep_scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < p {
                    0.0
                } else {
                    keep_scale
                }
            })
            .collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// Logits of the dense layers for already standardized rows `x`
/// (`[rows, input_dim]`). Dropout applies only when `dropout` is given.
pub(crate) fn forward(
    x: &Tensor,
    layers: &[(Tensor, Tensor)],
    mut dropout: Option<&mut Dropout>,
) -> candle_core::Result<Tensor> {
    let mut x = match dropout.as_deref_mut() {
        Some(d) => {
            let p = d.input;
            d.apply(x, p)?
        }
        None => x.clone(),
    };
    for (layer, (w, b)) in layers.iter().enumerate() {
        x = x.matmul(&w.t()?)?.broadcast_add(b)?;
        if layer + 1 < layers.len() {
            x = x.relu()?;
            if let Some(d) = dropout.as_deref_mut() {
                let p = d.hidden;
                x = d.apply(&x, p)?;
            }
        }
    }
    Ok(x)
}

/// Initial `(weight, bias)` values of each dense layer. Hidden layers use He
/// uniform initialization (bound `sqrt(6 / inputs)`, suited to ReLU); the
/// class layer uses the bound `1 / sqrt(inputs)` of PyTorch's `Linear`
/// default. Biases start at 0.
pub(crate) fn initial_layers(spec: &HeadSpec, rng: &mut ChaCha8Rng) -> Vec<(Vec<f32>, Vec<f32>)> {
    let dims = spec.layer_dims();
    let last = dims.len() - 1;
    dims.iter()
        .enumerate()
        .map(|(layer, &(inputs, outputs))| {
            let bound = if layer < last {
                (6.0 / inputs as f32).sqrt()
            } else {
                1.0 / (inputs as f32).sqrt()
            };
            let weight = (0..inputs * outputs)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            (weight, vec![0.0; outputs])
        })
        .collect()
}
