//! Metrics against hand-computed values.

use pantry::metrics::{
    accuracy, argmax_rows, confusion_matrix, macro_f1, per_class_scores, top_k_accuracy, EvalReport,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

// Truth and predictions used by several tests. Class 2 is never predicted,
// class 3 is predicted but never true.
//   truth:     0 0 0 1 1 2 2
//   predicted: 0 0 1 1 3 0 1
const TRUTH: [usize; 7] = [0, 0, 0, 1, 1, 2, 2];
const PREDICTED: [usize; 7] = [0, 0, 1, 1, 3, 0, 1];

#[test]
fn accuracy_counts_exact_matches() {
    assert!(close(accuracy(&TRUTH, &PREDICTED), 3.0 / 7.0));
    assert!(close(accuracy(&[], &[]), 0.0));
}

#[test]
fn confusion_rows_are_true_classes() {
    let matrix = confusion_matrix(&TRUTH, &PREDICTED, 4);
    assert_eq!(
        matrix,
        vec![
            vec![2, 1, 0, 0],
            vec![0, 1, 0, 1],
            vec![1, 1, 0, 0],
            vec![0, 0, 0, 0],
        ]
    );
}

#[test]
fn per_class_scores_handle_zero_division() {
    let scores = per_class_scores(&TRUTH, &PREDICTED, 5);
    // Class 0: TP 2, predicted 3, support 3.
    assert!(close(scores[0].precision, 2.0 / 3.0));
    assert!(close(scores[0].recall, 2.0 / 3.0));
    assert!(close(scores[0].f1, 2.0 / 3.0));
    assert_eq!(scores[0].support, 3);
    // Class 1: TP 1, predicted 3, support 2.
    assert!(close(scores[1].precision, 1.0 / 3.0));
    assert!(close(scores[1].recall, 0.5));
    assert!(close(scores[1].f1, 0.4));
    // Class 2 is never predicted: precision 0 by convention.
    assert_eq!(scores[2].precision, 0.0);
    assert_eq!(scores[2].recall, 0.0);
    assert_eq!(scores[2].f1, 0.0);
    assert_eq!(scores[2].support, 2);
    // Class 3 has no true samples: recall 0 by convention.
    assert_eq!(scores[3].precision, 0.0);
    assert_eq!(scores[3].recall, 0.0);
    assert_eq!(scores[3].support, 0);
    // Class 4 occurs nowhere.
    assert_eq!(scores[4].f1, 0.0);
    assert_eq!(scores[4].support, 0);
}

#[test]
fn macro_f1_averages_present_classes() {
    // Classes 0..=3 occur in truth or predictions: (2/3 + 0.4 + 0 + 0) / 4,
    // as sklearn.metrics.f1_score(average="macro", zero_division=0) gives.
    assert!(close(macro_f1(&TRUTH, &PREDICTED), (2.0 / 3.0 + 0.4) / 4.0));
    assert!(close(macro_f1(&[1, 1, 5], &[1, 1, 5]), 1.0));
    assert!(close(macro_f1(&[], &[]), 0.0));
}

#[test]
fn argmax_prefers_lowest_index_on_ties() {
    let scores = [0.1, 0.7, 0.2, 0.5, 0.5, 0.0];
    assert_eq!(argmax_rows(&scores, 3), vec![1, 0]);
}

#[test]
fn top_k_counts_rank_of_true_class() {
    // Ranks are 0-based: rank r is a hit for every k > r.
    let scores = [
        0.5, 0.3, 0.1, 0.05, 0.05, 0.0, // true 2: rank 2
        0.1, 0.1, 0.1, 0.1, 0.1, 0.5, // true 3: behind class 5 and tied ids 0..=2, rank 4
        0.0, 0.1, 0.2, 0.3, 0.3, 0.1, // true 0: last, rank 5
    ];
    let truth = [2, 3, 0];
    assert!(close(top_k_accuracy(&truth, &scores, 6, 1), 0.0));
    assert!(close(top_k_accuracy(&truth, &scores, 6, 3), 1.0 / 3.0));
    assert!(close(top_k_accuracy(&truth, &scores, 6, 4), 1.0 / 3.0));
    assert!(close(top_k_accuracy(&truth, &scores, 6, 5), 2.0 / 3.0));
    assert!(close(top_k_accuracy(&truth, &scores, 6, 6), 1.0));
}

#[test]
fn report_json_has_expected_keys() {
    let labels: Vec<String> = ["apple", "pear", "milk"].map(String::from).to_vec();
    // Predictions: 0, 1, 1, 2.
    let scores = [
        0.8, 0.1, 0.1, //
        0.2, 0.7, 0.1, //
        0.3, 0.6, 0.1, //
        0.1, 0.1, 0.8, //
    ];
    let truth = [0, 1, 0, 2];
    let report = EvalReport::new(&truth, &scores, &labels).unwrap();
    assert!(close(report.accuracy, 0.75));
    // F1: apple 2/3, pear 2/3, milk 1.
    assert!(close(report.macro_f1, (2.0 / 3.0 + 2.0 / 3.0 + 1.0) / 3.0));
    assert!(close(report.top5_accuracy, 1.0));
    assert_eq!(report.per_class[0].label, "apple");
    assert_eq!(report.per_class[0].support, 2);
    assert!(close(report.per_class[0].recall, 0.5));

    let json = serde_json::to_value(&report).unwrap();
    let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "accuracy",
            "confusion",
            "macro_f1",
            "per_class",
            "top5_accuracy"
        ]
    );
    let row = json["per_class"][1].as_object().unwrap();
    let mut row_keys: Vec<&String> = row.keys().collect();
    row_keys.sort();
    assert_eq!(row_keys, ["f1", "label", "precision", "recall", "support"]);
    assert_eq!(json["confusion"]["labels"][2], "milk");
    assert_eq!(json["confusion"]["matrix"][0], serde_json::json!([1, 1, 0]));
}

#[test]
fn report_rejects_mismatched_scores() {
    let labels: Vec<String> = vec!["a".into(), "b".into()];
    assert!(EvalReport::new(&[0, 1], &[0.5, 0.5, 0.5], &labels).is_err());
    assert!(EvalReport::new(&[0, 2], &[0.5, 0.5, 0.5, 0.5], &labels).is_err());
    assert!(EvalReport::new(&[0], &[], &[]).is_err());
}
