//! Head training on real backbone features, when a feature file is given.
//!
//! `PANTRY_TEST_FEATURES` names a safetensors file with `train_x` and
//! `val_x` (f32, `[n, dim]`) and `train_y` and `val_y` (integer class ids,
//! `[n]`), for example pooled EfficientNet-Lite0 features of the Grocery
//! Store train and val splits.

use std::path::Path;

use pantry::metrics::{self, EvalReport};
use pantry::train::{fit_split, FeatureSet, TrainConfig};
use safetensors::{Dtype, SafeTensors};

const FEATURES_ENV: &str = "PANTRY_TEST_FEATURES";

/// Accuracy of logistic regression on frozen EfficientNet-Lite0 features of
/// the Grocery Store val split (81 classes), the figure to beat.
const LOGISTIC_REGRESSION_ACCURACY: f64 = 0.666;

fn read_features(file: &SafeTensors, x_name: &str, y_name: &str) -> FeatureSet {
    let x = file
        .tensor(x_name)
        .unwrap_or_else(|e| panic!("{x_name}: {e}"));
    assert_eq!(x.dtype(), Dtype::F32, "{x_name} must be F32");
    let &[rows, dim] = x.shape() else {
        panic!("{x_name} must have shape [n, dim], got {:?}", x.shape());
    };
    let features = x
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let y = file
        .tensor(y_name)
        .unwrap_or_else(|e| panic!("{y_name}: {e}"));
    let labels: Vec<usize> = match y.dtype() {
        Dtype::I64 => y
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect(),
        Dtype::I32 => y
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect(),
        Dtype::U32 => y
            .data()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect(),
        other => panic!("{y_name} has dtype {other:?}, expected I64, I32 or U32"),
    };
    assert_eq!(labels.len(), rows, "{y_name} length");
    FeatureSet::new(features, labels, dim).unwrap()
}

#[test]
fn real_features_beat_logistic_regression() {
    let Some(path) = std::env::var_os(FEATURES_ENV) else {
        eprintln!(
            "skipped: {FEATURES_ENV} is not set (a safetensors file with train_x, train_y, val_x, val_y)"
        );
        return;
    };
    let bytes = std::fs::read(Path::new(&path)).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let train = read_features(&file, "train_x", "train_y");
    let val = read_features(&file, "val_x", "val_y");
    let num_classes = train
        .labels()
        .iter()
        .chain(val.labels())
        .max()
        .map_or(0, |&m| m + 1);

    // Early stopping uses a split of the training set, so the val split
    // stays unseen until the final score.
    let config = TrainConfig::default();
    let head = fit_split(&train, num_classes, &config, &mut |s| {
        eprintln!(
            "epoch {:>3} loss {:.4} val acc {:.4} macro-F1 {:.4}{}",
            s.epoch,
            s.train_loss,
            s.val_accuracy.unwrap_or(f64::NAN),
            s.val_macro_f1.unwrap_or(f64::NAN),
            if s.is_best { " *" } else { "" }
        );
    })
    .unwrap();

    let probabilities = head.predict_proba(val.features(), val.len()).unwrap();
    let labels: Vec<String> = (0..num_classes).map(|c| c.to_string()).collect();
    let report = EvalReport::new(val.labels(), &probabilities, &labels).unwrap();
    eprintln!(
        "best epoch {}: accuracy {:.4}, macro-F1 {:.4}, top-5 {:.4}",
        head.best_epoch, report.accuracy, report.macro_f1, report.top5_accuracy
    );
    let predicted = metrics::argmax_rows(&probabilities, num_classes);
    assert_eq!(report.accuracy, metrics::accuracy(val.labels(), &predicted));
    assert!(
        report.accuracy >= LOGISTIC_REGRESSION_ACCURACY,
        "accuracy {} is below logistic regression's {LOGISTIC_REGRESSION_ACCURACY}",
        report.accuracy
    );
}
