//! Times pantry's decode + resize + centre-crop + normalize on one thread,
//! the pantry side of the decode figures in `bench/run.sh`.
//!
//! Usage: `bench_decode <list> <resolution> <repeat>`
//!
//! `list` names one image file per line. Every file is processed `repeat`
//! times after one untimed warm-up. Prints one JSON object with the image
//! count, the elapsed seconds and the images per second.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pantry::data::image::decode_for;
use pantry::data::transform::Preprocess;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [list, resolution, repeat] = args.as_slice() else {
        bail!("usage: bench_decode <list> <resolution> <repeat>");
    };
    let resolution: u32 = resolution
        .parse()
        .with_context(|| format!("invalid resolution {resolution:?}"))?;
    let repeat: usize = repeat
        .parse()
        .with_context(|| format!("invalid repeat count {repeat:?}"))?;
    let paths: Vec<PathBuf> = std::fs::read_to_string(list)
        .with_context(|| format!("failed to read {list}"))?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(PathBuf::from)
        .collect();
    let Some(first) = paths.first() else {
        bail!("{list} names no images");
    };

    let preprocess = Preprocess::for_resolution(resolution);
    let process = |path: &PathBuf| -> Result<Vec<f32>> {
        let image = decode_for(path, resolution)?;
        Ok(preprocess.apply(&image))
    };
    process(first)?;
    let start = Instant::now();
    for _ in 0..repeat {
        for path in &paths {
            std::hint::black_box(process(path)?);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let images = repeat * paths.len();
    println!(
        "{}",
        serde_json::json!({
            "images": images,
            "seconds": seconds,
            "images_per_s": images as f64 / seconds,
        })
    );
    Ok(())
}
