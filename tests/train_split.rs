//! Stratified validation split.

use pantry::train::split_stratified;

fn count(indices: &[usize], labels: &[usize], class: usize) -> usize {
    indices.iter().filter(|&&i| labels[i] == class).count()
}

#[test]
fn split_keeps_class_shares() {
    // Class 0: 20 samples, class 1: 10, class 2: 40.
    let mut labels = vec![0; 20];
    labels.extend(vec![1; 10]);
    labels.extend(vec![2; 40]);
    let (train, val) = split_stratified(&labels, 0.15, 3);
    assert_eq!(count(&val, &labels, 0), 3);
    assert_eq!(count(&val, &labels, 1), 2);
    assert_eq!(count(&val, &labels, 2), 6);
    assert_eq!(train.len() + val.len(), labels.len());
}

#[test]
fn split_parts_are_disjoint_and_sorted() {
    let labels: Vec<usize> = (0..50).map(|i| i % 4).collect();
    let (train, val) = split_stratified(&labels, 0.3, 8);
    let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..50).collect::<Vec<_>>());
    assert!(train.windows(2).all(|w| w[0] < w[1]));
    assert!(val.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn singleton_classes_stay_in_training() {
    // Class 1 has one sample, class 2 two, class 3 three.
    let labels = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 3, 3, 3];
    let (train, val) = split_stratified(&labels, 0.1, 0);
    assert_eq!(count(&train, &labels, 1), 1);
    assert_eq!(count(&val, &labels, 1), 0);
    // Classes of 2+ samples give one to validation and keep one for training.
    for class in [0, 2, 3] {
        assert_eq!(count(&val, &labels, class), 1, "class {class}");
        assert!(count(&train, &labels, class) >= 1, "class {class}");
    }
}

#[test]
fn large_fraction_keeps_one_for_training() {
    let labels = vec![0, 0, 1, 1, 1];
    let (train, val) = split_stratified(&labels, 0.99, 1);
    assert_eq!(count(&train, &labels, 0), 1);
    assert_eq!(count(&train, &labels, 1), 1);
    assert_eq!(val.len(), 3);
}

#[test]
fn zero_fraction_keeps_everything_for_training() {
    let labels = vec![0, 0, 1, 1, 2];
    let (train, val) = split_stratified(&labels, 0.0, 1);
    assert_eq!(train, vec![0, 1, 2, 3, 4]);
    assert!(val.is_empty());
}

#[test]
fn split_depends_on_seed() {
    let labels: Vec<usize> = (0..200).map(|i| i % 5).collect();
    let first = split_stratified(&labels, 0.2, 42);
    assert_eq!(first, split_stratified(&labels, 0.2, 42));
    assert_ne!(first, split_stratified(&labels, 0.2, 43));
}
