//! Loss function and training settings.

use candle_core::{Device, Tensor};
use pantry::train::loss::{batch_loss, inverse_frequency_weights, smoothed_targets};
use pantry::train::TrainConfig;

fn logits(values: &[f32], rows: usize, classes: usize) -> Tensor {
    Tensor::from_slice(values, (rows, classes), &Device::Cpu).unwrap()
}

fn value(t: &Tensor) -> f64 {
    f64::from(t.to_scalar::<f32>().unwrap())
}

fn log_softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::MIN, f64::max);
    let log_sum = row.iter().map(|x| (x - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|x| x - log_sum).collect()
}

#[test]
fn smoothed_targets_stay_in_range() {
    let targets = smoothed_targets(&[2, 0], 4, 0.1);
    assert_eq!(targets.len(), 8);
    for row in targets.chunks(4) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "row sums to {sum}");
    }
    assert!((targets[2] - 0.925).abs() < 1e-6);
    assert!((targets[0] - 0.025).abs() < 1e-6);
    assert!((targets[4] - 0.925).abs() < 1e-6);
    assert!(targets
        .iter()
        .all(|&t| (0.025 - 1e-6..=0.925 + 1e-6).contains(&t)));
    assert_eq!(smoothed_targets(&[1], 3, 0.0), vec![0.0, 1.0, 0.0]);
}

#[test]
fn label_smoothing_range_is_checked() {
    for valid in [0.0, 0.1, 0.999] {
        let config = TrainConfig {
            label_smoothing: valid,
            ..TrainConfig::default()
        };
        assert!(config.validate().is_ok(), "{valid} was rejected");
    }
    for invalid in [-0.1, 1.0, 1.5, f64::NAN] {
        let config = TrainConfig {
            label_smoothing: invalid,
            ..TrainConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("label_smoothing"), "{error}");
    }
}

#[test]
fn other_settings_are_checked() {
    let cases = [
        TrainConfig {
            epochs: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            learning_rate: 0.0,
            ..TrainConfig::default()
        },
        TrainConfig {
            weight_decay: -1.0,
            ..TrainConfig::default()
        },
        TrainConfig {
            dropout: 1.0,
            ..TrainConfig::default()
        },
        TrainConfig {
            input_dropout: -0.5,
            ..TrainConfig::default()
        },
        TrainConfig {
            val_fraction: 1.0,
            ..TrainConfig::default()
        },
        TrainConfig {
            hidden: vec![64, 0],
            ..TrainConfig::default()
        },
    ];
    for config in cases {
        assert!(config.validate().is_err(), "{config:?} was accepted");
    }
    assert!(TrainConfig::default().validate().is_ok());
}

#[test]
fn loss_matches_hand_computation() {
    let raw = [2.0, 0.5, -1.0, 0.0, 1.0, 3.0];
    let labels = [0, 2];
    let smoothing = 0.1;
    let loss = value(&batch_loss(&logits(&raw, 2, 3), &labels, smoothing, None).unwrap());
    let mut expected = 0.0;
    for (row, &label) in raw.chunks(3).zip(&labels) {
        let row: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
        let log_p = log_softmax(&row);
        for (c, lp) in log_p.iter().enumerate() {
            let q = smoothing / 3.0 + if c == label { 1.0 - smoothing } else { 0.0 };
            expected -= q * lp;
        }
    }
    expected /= 2.0;
    assert!(
        (loss - expected).abs() < 1e-5,
        "loss {loss}, expected {expected}"
    );
}

#[test]
fn class_weighting_changes_the_loss() {
    // Three samples of class 0 predicted well, one of class 1 predicted badly.
    let raw = [3.0, 0.0, 3.0, 0.0, 3.0, 0.0, 2.0, 0.0];
    let labels = [0, 0, 0, 1];
    let weights = inverse_frequency_weights(&labels, 2);
    assert_eq!(weights, vec![4.0 / 6.0, 2.0]);

    let input = logits(&raw, 4, 2);
    let plain = value(&batch_loss(&input, &labels, 0.0, None).unwrap());
    let weighted = value(&batch_loss(&input, &labels, 0.0, Some(&weights)).unwrap());
    let good = -log_softmax(&[3.0, 0.0])[0];
    let bad = -log_softmax(&[2.0, 0.0])[1];
    let expected_plain = (3.0 * good + bad) / 4.0;
    // Weighted mean: (3 * 2/3 * good + 2 * bad) / (3 * 2/3 + 2).
    let expected_weighted = (2.0 * good + 2.0 * bad) / 4.0;
    assert!((plain - expected_plain).abs() < 1e-5, "{plain}");
    assert!((weighted - expected_weighted).abs() < 1e-5, "{weighted}");
    assert!(weighted > plain);
}

#[test]
fn inverse_frequency_weights_skip_absent_classes() {
    let weights = inverse_frequency_weights(&[0, 0, 2, 2, 2, 2], 4);
    assert_eq!(weights, vec![1.5, 0.0, 0.75, 0.0]);
}

#[test]
fn warmup_then_cosine_schedule() {
    let config = TrainConfig {
        epochs: 10,
        warmup_epochs: 2,
        learning_rate: 1.0,
        ..TrainConfig::default()
    };
    // 4 steps per epoch: 8 warmup steps, then 32 cosine steps.
    assert!((config.learning_rate_at(0, 4) - 1.0 / 8.0).abs() < 1e-12);
    assert!((config.learning_rate_at(7, 4) - 1.0).abs() < 1e-12);
    assert!((config.learning_rate_at(8, 4) - 1.0).abs() < 1e-12);
    assert!((config.learning_rate_at(24, 4) - 0.5).abs() < 1e-12);
    let last = config.learning_rate_at(39, 4);
    assert!(last > 0.0 && last < 0.01, "{last}");
}
