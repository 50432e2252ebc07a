//! Head training on synthetic Gaussian clusters.

use pantry::metrics;
use pantry::train::{fit, fit_split, EpochSummary, FeatureSet, TrainConfig, TrainedHead};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Standard normal sample by the Box-Muller transform.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `classes` random cluster centres in `dim` dimensions, each coordinate
/// drawn from N(0, spread^2).
fn centres(classes: usize, dim: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..classes)
        .map(|_| (0..dim).map(|_| spread * normal(&mut rng)).collect())
        .collect()
}

/// `per_class` samples around each centre with unit-variance noise, offset
/// by 5 so that features are mostly positive like pooled activations.
fn sample(centres: &[Vec<f32>], per_class: usize, seed: u64) -> FeatureSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dim = centres[0].len();
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..per_class {
        for (class, centre) in centres.iter().enumerate() {
            features.extend(centre.iter().map(|c| 5.0 + c + normal(&mut rng)));
            labels.push(class);
        }
    }
    FeatureSet::new(features, labels, dim).unwrap()
}

fn quick_config() -> TrainConfig {
    TrainConfig {
        epochs: 30,
        batch_size: 16,
        learning_rate: 3e-3,
        hidden: vec![64],
        patience: 0,
        // The synthetic features sit far from the origin, which
        // standardization undoes.
        standardize: true,
        ..TrainConfig::default()
    }
}

fn predicted(head: &TrainedHead, set: &FeatureSet) -> Vec<usize> {
    let probabilities = head.predict_proba(set.features(), set.len()).unwrap();
    metrics::argmax_rows(&probabilities, head.spec.num_classes)
}

fn all_weights(head: &TrainedHead) -> Vec<f32> {
    head.tensors
        .values()
        .flat_map(|t| t.data.iter().copied())
        .collect()
}

#[test]
fn separable_clusters_reach_high_accuracy() {
    let c = centres(6, 32, 1.0, 1);
    let train = sample(&c, 30, 2);
    let val = sample(&c, 20, 3);
    let head = fit(&train, &val, 6, &quick_config(), &mut |_| {}).unwrap();
    let accuracy = metrics::accuracy(val.labels(), &predicted(&head, &val));
    assert!(accuracy >= 0.95, "validation accuracy {accuracy}");
    let best = head.best().unwrap();
    assert_eq!(best.val_accuracy, Some(accuracy));
}

#[test]
fn linear_head_reaches_high_accuracy() {
    let c = centres(6, 32, 1.0, 1);
    let train = sample(&c, 30, 2);
    let val = sample(&c, 20, 3);
    let config = TrainConfig {
        hidden: vec![],
        ..quick_config()
    };
    let head = fit(&train, &val, 6, &config, &mut |_| {}).unwrap();
    assert_eq!(head.spec.layer_dims(), vec![(32, 6)]);
    let accuracy = metrics::accuracy(val.labels(), &predicted(&head, &val));
    assert!(accuracy >= 0.95, "validation accuracy {accuracy}");
}

#[test]
fn probabilities_form_distributions() {
    let c = centres(4, 8, 1.0, 4);
    let train = sample(&c, 10, 5);
    let config = TrainConfig {
        epochs: 3,
        ..quick_config()
    };
    let head = fit(&train, &FeatureSet::empty(8), 4, &config, &mut |_| {}).unwrap();
    let probabilities = head.predict_proba(train.features(), train.len()).unwrap();
    assert_eq!(probabilities.len(), train.len() * 4);
    for row in probabilities.chunks(4) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
        assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
    assert!(head
        .predict_proba(train.features(), train.len() + 1)
        .is_err());
}

#[test]
fn same_seed_gives_identical_weights() {
    let c = centres(4, 16, 1.0, 6);
    let train = sample(&c, 12, 7);
    let val = sample(&c, 5, 8);
    let config = TrainConfig {
        epochs: 4,
        seed: 11,
        ..quick_config()
    };
    let first = fit(&train, &val, 4, &config, &mut |_| {}).unwrap();
    let second = fit(&train, &val, 4, &config, &mut |_| {}).unwrap();
    assert_eq!(all_weights(&first), all_weights(&second));
    assert_eq!(first.history, second.history);

    let other_seed = TrainConfig { seed: 12, ..config };
    let third = fit(&train, &val, 4, &other_seed, &mut |_| {}).unwrap();
    assert_ne!(all_weights(&first), all_weights(&third));
}

#[test]
fn early_stopping_restores_best_epoch() {
    // Heavily overlapping clusters, few samples and a wide head without
    // regularization overfit, so validation F1 peaks early.
    let c = centres(5, 64, 0.15, 9);
    let train = sample(&c, 8, 10);
    let val = sample(&c, 30, 11);
    let config = TrainConfig {
        epochs: 200,
        hidden: vec![256],
        learning_rate: 3e-3,
        weight_decay: 0.0,
        dropout: 0.0,
        input_dropout: 0.0,
        label_smoothing: 0.0,
        patience: 5,
        ..quick_config()
    };
    let mut seen: Vec<EpochSummary> = Vec::new();
    let head = fit(&train, &val, 5, &config, &mut |s| seen.push(s.clone())).unwrap();
    assert_eq!(seen, head.history);

    let last = head.history.last().unwrap().epoch;
    assert!(last < config.epochs, "training did not stop early");
    assert_eq!(last, head.best_epoch + config.patience);
    let best = head.best().unwrap();
    assert!(best.is_best);
    for summary in &head.history {
        assert!(summary.val_macro_f1 <= best.val_macro_f1);
    }
    // The returned weights are the best epoch's, not the last epoch's.
    let predictions = predicted(&head, &val);
    assert_eq!(
        Some(metrics::macro_f1(val.labels(), &predictions)),
        best.val_macro_f1
    );
    assert_eq!(
        Some(metrics::accuracy(val.labels(), &predictions)),
        best.val_accuracy
    );
}

#[test]
fn history_numbers_epochs_and_marks_best() {
    let c = centres(3, 8, 1.0, 12);
    let train = sample(&c, 10, 13);
    let val = sample(&c, 4, 14);
    let config = TrainConfig {
        epochs: 6,
        ..quick_config()
    };
    let head = fit(&train, &val, 3, &config, &mut |_| {}).unwrap();
    let epochs: Vec<usize> = head.history.iter().map(|s| s.epoch).collect();
    assert_eq!(epochs, vec![1, 2, 3, 4, 5, 6]);
    assert!(head.history[0].is_best);
    let last_best = head.history.iter().rev().find(|s| s.is_best).unwrap();
    assert_eq!(last_best.epoch, head.best_epoch);
    assert!(head.history.iter().all(|s| s.train_loss.is_finite()));
}

#[test]
fn split_training_holds_out_validation() {
    let c = centres(4, 16, 1.0, 15);
    let data = sample(&c, 20, 16);
    let config = TrainConfig {
        epochs: 15,
        val_fraction: 0.25,
        ..quick_config()
    };
    let head = fit_split(&data, 4, &config, &mut |_| {}).unwrap();
    let best = head.best().unwrap();
    assert!(best.val_accuracy.unwrap() >= 0.9, "{best:?}");
}

#[test]
fn class_weighting_trains_on_imbalanced_data() {
    let c = centres(3, 16, 1.0, 17);
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (class, count) in [(0, 60), (1, 6), (2, 6)] {
        let set = sample(&c[class..class + 1], count, 18 + class as u64);
        features.extend_from_slice(set.features());
        labels.extend(std::iter::repeat_n(class, count));
    }
    let train = FeatureSet::new(features, labels, 16).unwrap();
    let val = sample(&c, 10, 21);
    let plain = fit(&train, &val, 3, &quick_config(), &mut |_| {}).unwrap();
    let weighted_config = TrainConfig {
        class_weighting: true,
        ..quick_config()
    };
    let weighted = fit(&train, &val, 3, &weighted_config, &mut |_| {}).unwrap();
    assert_ne!(plain.history[0].train_loss, weighted.history[0].train_loss);
    let f1 = weighted.best().unwrap().val_macro_f1.unwrap();
    assert!(f1 >= 0.9, "weighted macro-F1 {f1}");
}

#[test]
fn invalid_inputs_are_rejected() {
    let c = centres(3, 8, 1.0, 22);
    let train = sample(&c, 4, 23);
    let config = quick_config();
    let error = fit(&train, &FeatureSet::empty(8), 2, &config, &mut |_| {}).unwrap_err();
    assert!(error.to_string().contains("class id 2"), "{error}");
    let error = fit(&train, &FeatureSet::empty(9), 3, &config, &mut |_| {}).unwrap_err();
    assert!(error.to_string().contains("dimensions"), "{error}");
    let bad_config = TrainConfig {
        label_smoothing: 1.0,
        ..config
    };
    let error = fit(&train, &FeatureSet::empty(8), 3, &bad_config, &mut |_| {}).unwrap_err();
    assert!(
        format!("{error:#}").contains("label_smoothing"),
        "{error:#}"
    );
}

#[test]
fn feature_set_rejects_bad_matrices() {
    let error = FeatureSet::new(vec![0.0; 5], vec![0, 1], 3).unwrap_err();
    assert!(error.to_string().contains("5 values"), "{error}");
    let error = FeatureSet::new(vec![0.0, 1.0, f32::NAN, 0.0], vec![0, 1], 2).unwrap_err();
    assert!(error.to_string().contains("row 1"), "{error}");
    assert!(FeatureSet::new(vec![], vec![], 0).is_err());

    let set = FeatureSet::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0, 1, 2], 2).unwrap();
    let subset = set.subset(&[2, 0]);
    assert_eq!(subset.features(), &[5.0, 6.0, 1.0, 2.0]);
    assert_eq!(subset.labels(), &[2, 0]);
}
