//! Measures backbone feature-extraction throughput: EfficientNet-Lite0 at
//! batch 32 and batch 1, and Lite2 at batch 32, on random normalized input.
//!
//! Run with `cargo run --release --example backbone_speed [BACKBONE:BATCH ...]`,
//! e.g. `efficientnet-lite0:1` to time one case. Weights are read
//! from `<cache root>/weights/<backbone>.safetensors`. Set
//! `PANTRY_KERNELS=portable` to time the portable kernels and
//! `RAYON_NUM_THREADS` to change the thread count.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pantry::backbone::efficientnet::EfficientNet;
use pantry::backbone::{load_safetensors, BackboneKind};
use pantry::cache::cache_root;
use pantry::kernels::Isa;
use rand::{Rng, SeedableRng};

/// Timed runs per case; the median is reported.
const RUNS: usize = 5;

fn main() -> Result<()> {
    println!(
        "kernels: {:?}, threads: {}",
        Isa::detect(),
        rayon::current_num_threads()
    );
    let mut cases = vec![
        (BackboneKind::Lite0, 32),
        (BackboneKind::Lite0, 1),
        (BackboneKind::Lite2, 32),
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        cases = args
            .iter()
            .map(|arg| parse_case(arg))
            .collect::<Result<_>>()?;
    }
    for (kind, batch) in cases {
        let path = cache_root()?
            .join("weights")
            .join(format!("{}.safetensors", kind.name()));
        let network = EfficientNet::from_weights(kind, &load_safetensors(&path)?)?;
        let res = kind.resolution() as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let input: Vec<f32> = (0..batch * res * res * 3)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();

        // Warm-up: page in buffers and let the CPU clock settle.
        let warmups = if batch == 1 { 5 } else { 1 };
        for _ in 0..warmups {
            network.features(&input, batch)?;
        }
        let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            let features = network.features(&input, batch)?;
            times.push(start.elapsed());
            std::hint::black_box(features);
        }
        times.sort();
        let median = times[RUNS / 2];
        println!(
            "{} {res}px batch {batch:>2}: median {:>8.2} ms, {:>7.1} images/s (min {:.2} ms, max {:.2} ms)",
            kind.name(),
            median.as_secs_f64() * 1e3,
            batch as f64 / median.as_secs_f64(),
            times[0].as_secs_f64() * 1e3,
            times[RUNS - 1].as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

/// Parses `BACKBONE:BATCH`, e.g. `efficientnet-lite2:32`.
fn parse_case(arg: &str) -> Result<(BackboneKind, usize)> {
    let (name, batch) = arg
        .split_once(':')
        .with_context(|| format!("invalid case {arg:?}: expected BACKBONE:BATCH"))?;
    let batch = batch
        .parse()
        .with_context(|| format!("invalid batch size in {arg:?}"))?;
    Ok((name.parse()?, batch))
}
