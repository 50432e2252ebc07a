//! Real photos from the Grocery Store dataset, read through
//! `PANTRY_GROCERY_DIR` (the folder with train.tsv, val.tsv, train/, val/).
//! Prints decode and preprocess throughput.

use std::path::PathBuf;
use std::time::Instant;

use pantry::data::image::{decode, decode_for};
use pantry::data::loader::{Loader, LoaderOptions};
use pantry::data::source::load;
use pantry::data::transform::Preprocess;

fn grocery_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PANTRY_GROCERY_DIR").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("skipped: PANTRY_GROCERY_DIR is not set (Grocery Store dataset with train.tsv)");
    }
    dir
}

#[test]
fn grocery_label_files_load() {
    let Some(dir) = grocery_dir() else { return };
    let train = load(&dir.join("train.tsv"), None, true).unwrap();
    assert_eq!(train.samples.len(), 2640);
    assert_eq!(train.labels().len(), 81);
    for sample in &train.samples {
        assert!(
            sample.path.is_file(),
            "{} is missing",
            sample.path.display()
        );
    }
    let val = load(&dir.join("val.tsv"), None, true).unwrap();
    assert_eq!(val.samples.len(), 296);
    let train_labels = train.labels();
    for label in val.labels() {
        assert!(
            train_labels.contains(&label),
            "validation label {label:?} is not a training label"
        );
    }
}

#[test]
fn grocery_photos_preprocess() {
    let Some(dir) = grocery_dir() else { return };
    let train = load(&dir.join("train.tsv"), None, true).unwrap();
    let paths: Vec<PathBuf> = train
        .samples
        .iter()
        .step_by(55)
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths.len(), 48);
    let preprocess = Preprocess::for_resolution(224);
    let mut rows = 0;
    for batch in Loader::new(paths, preprocess.clone(), 16) {
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        rows += batch.ok.len();
        let (low, high) = batch
            .tensors
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(
            low >= -127.0 / 128.0 && high <= 1.0,
            "values outside [-0.99, 1]: {low}..{high}"
        );
        assert!(
            high - low > 0.5,
            "batch {} looks blank: {low}..{high}",
            batch.start
        );
    }
    assert_eq!(rows, 48);
}

#[test]
fn grocery_throughput() {
    let Some(dir) = grocery_dir() else { return };
    let train = load(&dir.join("train.tsv"), None, true).unwrap();
    let paths: Vec<PathBuf> = train
        .samples
        .iter()
        .step_by(13)
        .take(200)
        .map(|s| s.path.clone())
        .collect();
    let preprocess = Preprocess::for_resolution(224);
    // Read every file once so that the timings below exclude disk reads.
    for path in &paths {
        std::fs::read(path).unwrap();
    }

    // One thread: decode at reduced scale where possible, then resize.
    let started = Instant::now();
    let mut pixels = 0u64;
    for path in &paths {
        let image = decode_for(path, preprocess.resolution).unwrap();
        pixels += u64::from(image.width()) * u64::from(image.height());
        let tensor = preprocess.apply(&image);
        assert_eq!(tensor.len(), preprocess.tensor_len());
    }
    let scaled_rate = paths.len() as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    for path in &paths {
        let tensor = preprocess.apply(&decode(path).unwrap());
        assert_eq!(tensor.len(), preprocess.tensor_len());
    }
    let full_rate = paths.len() as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let rows: usize = Loader::with_options(paths.clone(), preprocess, 32, LoaderOptions::default())
        .map(|batch| batch.ok.len())
        .sum();
    let loader_rate = rows as f64 / started.elapsed().as_secs_f64();
    assert_eq!(rows, paths.len());

    eprintln!(
        "{} Grocery photos at 224: {scaled_rate:.0} images/s on one thread with decode_for \
         ({:.0} decoded pixels per image), {full_rate:.0} images/s with full decode, \
         {loader_rate:.0} images/s through the loader on {} threads",
        paths.len(),
        pixels as f64 / paths.len() as f64,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
}
