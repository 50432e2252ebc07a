//! Parallel batch loading: input order, per-input errors, bounded queue.

mod data_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use data_support::*;
use image::{Rgb, RgbImage};
use pantry::data::image::DecodeErrorKind;
use pantry::data::loader::{Loader, LoaderOptions};
use pantry::data::transform::Preprocess;

/// Writes `count` solid-colour PNGs whose red channel encodes the index.
fn numbered_images(dir: &std::path::Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let image = RgbImage::from_pixel(40, 30, Rgb([(i * 10) as u8, 100, 200]));
            let bytes = png(
                image.as_raw(),
                40,
                30,
                png::ColorType::Rgb,
                png::BitDepth::Eight,
                None,
            );
            write(dir, &format!("{i:02}.png"), &bytes)
        })
        .collect()
}

/// Red channel value of a preprocessed row, back in 0..=255.
fn red_of(row: &[f32]) -> f32 {
    row[0] * 128.0 + 127.0
}

#[test]
fn order_kept_and_failures_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = numbered_images(dir.path(), 10);
    paths[3] = write(
        dir.path(),
        "03-broken.jpg",
        b"\xFF\xD8\xFF\xE0 not really a JPEG",
    );
    paths[7] = dir.path().join("07-missing.png");
    let preprocess = Preprocess::for_resolution(16);
    let options = LoaderOptions {
        threads: 3,
        queue_depth: 1,
    };
    let loader = Loader::with_options(paths.clone(), preprocess.clone(), 4, options);
    assert_eq!(loader.len(), 3);

    let mut next_start = 0;
    let mut good = Vec::new();
    let mut failed = Vec::new();
    for batch in loader {
        assert_eq!(batch.start, next_start, "batches arrive in order");
        next_start += batch.len;
        assert_eq!(
            batch.tensors.len(),
            batch.ok.len() * preprocess.tensor_len()
        );
        let mut covered: Vec<usize> = batch.ok.clone();
        covered.extend(batch.errors.iter().map(|(index, _)| *index));
        covered.sort();
        let range: Vec<usize> = (batch.start..batch.start + batch.len).collect();
        assert_eq!(
            covered, range,
            "every input of batch {} is accounted for",
            batch.start
        );
        for (row, &index) in batch.ok.iter().enumerate() {
            let red = red_of(batch.row(row));
            assert!(
                (red - (index * 10) as f32).abs() < 0.01,
                "input {index} has red {red}"
            );
            good.push(index);
        }
        for (index, error) in batch.errors {
            assert_eq!(error.path, paths[index]);
            assert!(error
                .to_string()
                .contains(&paths[index].display().to_string()));
            failed.push((index, error.kind));
        }
    }
    assert_eq!(next_start, 10);
    assert_eq!(good, [0, 1, 2, 4, 5, 6, 8, 9]);
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0].0, 3);
    assert!(
        matches!(
            failed[0].1,
            DecodeErrorKind::Corrupt(_) | DecodeErrorKind::Truncated(_)
        ),
        "{:?}",
        failed[0].1
    );
    assert_eq!(failed[1].0, 7);
    assert!(
        matches!(failed[1].1, DecodeErrorKind::Unreadable(_)),
        "{:?}",
        failed[1].1
    );
}

#[test]
fn queue_bounds_work_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let paths = numbered_images(dir.path(), 12);
    let options = LoaderOptions {
        threads: 2,
        queue_depth: 2,
    };
    let mut loader = Loader::with_options(paths, Preprocess::for_resolution(8), 1, options);

    // Without a consumer the producer fills the queue, finishes one more
    // batch and then blocks in `send`.
    let deadline = Instant::now() + Duration::from_secs(20);
    while loader.produced() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(loader.produced(), 3, "queue of 2 plus one blocked batch");

    let first = loader.next().unwrap();
    assert_eq!(first.start, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while loader.produced() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(loader.produced(), 4, "one batch taken frees one slot");

    let rest: Vec<usize> = loader.map(|batch| batch.start).collect();
    assert_eq!(rest, (1..12).collect::<Vec<_>>());
}

#[test]
fn dropping_early_stops_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let paths = numbered_images(dir.path(), 20);
    let mut loader = Loader::with_options(
        paths,
        Preprocess::for_resolution(8),
        2,
        LoaderOptions {
            threads: 2,
            queue_depth: 1,
        },
    );
    assert_eq!(loader.next().unwrap().start, 0);
    let started = Instant::now();
    drop(loader);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drop waited {:?}",
        started.elapsed()
    );
}

#[test]
fn empty_input_yields_no_batches() {
    let mut loader = Loader::new(Vec::new(), Preprocess::for_resolution(8), 4);
    assert_eq!(loader.len(), 0);
    assert!(loader.next().is_none());
}

#[test]
fn all_failures_give_an_empty_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![
        write(dir.path(), "a.jpg", b"text"),
        write(dir.path(), "b.png", b""),
    ];
    let batches: Vec<_> = Loader::new(paths, Preprocess::for_resolution(8), 8).collect();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].tensors.is_empty());
    assert!(batches[0].ok.is_empty());
    let indices: Vec<usize> = batches[0].errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [0, 1]);
}
