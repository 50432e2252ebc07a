//! Cross-entropy with label smoothing and optional per-class weights.

use candle_core::{Result, Tensor};

/// Inverse-frequency class weights `n / (k * n_c)`, where `n` is the number
/// of labels, `k` the number of classes that occur and `n_c` the count of
/// class `c`. The weights average to 1 over the samples, so weighting changes
/// the balance of the loss but not its scale. Classes that do not occur get 0.
pub fn inverse_frequency_weights(labels: &[usize], num_classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; num_classes];
    for &label in labels {
        counts[label] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count();
    counts
        .iter()
        .map(|&count| {
            if count == 0 {
                0.0
            } else {
                labels.len() as f32 / (present * count) as f32
            }
        })
        .collect()
}

/// Target distributions (row-major `labels.len() x num_classes`): each row
/// puts `smoothing / num_classes` on every class plus `1 - smoothing` on the
/// true class, so it sums to 1.
pub fn smoothed_targets(labels: &[usize], num_classes: usize, smoothing: f64) -> Vec<f32> {
    let floor = (smoothing / num_classes as f64) as f32;
    let mut targets = vec![floor; labels.len() * num_classes];
    for (row, &label) in labels.iter().enumerate() {
        targets[row * num_classes + label] += (1.0 - smoothing) as f32;
    }
    targets
}

/// Loss of a batch: the cross-entropy `-sum_c q_c log softmax(logits)_c`
/// against the smoothed targets `q` of `labels`, averaged over the samples
/// with weight `class_weights[label]` each (plain mean without weights).
/// Returns a scalar tensor that carries gradients to `logits`.
///
/// NOTE: with both weights and smoothing this differs from PyTorch's
/// `CrossEntropyLoss`, which weights the smoothing term of each class by that
/// class's weight. Here the whole loss of a sample takes its label's weight.
pub fn batch_loss(
    logits: &Tensor,
    labels: &[usize],
    smoothing: f64,
    class_weights: Option<&[f32]>,
) -> Result<Tensor> {
    let (rows, num_classes) = logits.dims2()?;
    if rows != labels.len() {
        candle_core::bail!("{rows} logit rows for {} labels", labels.len());
    }
    let device = logits.device();
    let targets = Tensor::from_vec(
        smoothed_targets(labels, num_classes, smoothing),
        (rows, num_classes),
        device,
    )?;
    let log_p = candle_nn::ops::log_softmax(logits, 1)?;
    let per_sample = (log_p * targets)?.sum(1)?.neg()?;
    match class_weights {
        None => per_sample.mean_all(),
        Some(weights) => {
            let sample_weights: Vec<f32> = labels.iter().map(|&l| weights[l]).collect();
            let total: f32 = sample_weights.iter().sum();
            let sample_weights = Tensor::from_vec(sample_weights, rows, device)?;
            (per_sample * sample_weights)?.sum_all()? / f64::from(total)
        }
    }
}

/// Scalar value of a loss tensor.
pub(crate) fn scalar(loss: &Tensor) -> Result<f64> {
    Ok(f64::from(
        loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?,
    ))
}
