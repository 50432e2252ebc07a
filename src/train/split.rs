//! Stratified split of a training set into training and validation parts.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Splits sample indices into `(train, val)`, each in ascending order, so
/// that every class keeps its share in both parts.
///
/// A class with `n` samples gives `round(n * fraction)` of them to
/// validation, at least 1 and at most `n - 1`, so a class with 2 or more
/// samples always appears in both parts when `fraction > 0`. Small classes
/// therefore give a larger share than `fraction`. A class with a single
/// sample stays in training. `fraction <= 0` puts everything in training.
/// Which samples go to validation depends only on `labels`, `fraction` and
/// `seed`.
pub fn split_stratified(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let num_classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &label) in labels.iter().enumerate() {
        by_class[label].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut val = Vec::new();
    for mut members in by_class {
        let n = members.len();
        let held_out = if fraction > 0.0 && n >= 2 {
            ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        members.shuffle(&mut rng);
        val.extend_from_slice(&members[..held_out]);
        train.extend_from_slice(&members[held_out..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}
