//! Times pantry's EfficientNet-Lite feature extraction on a raw input file,
//! the pantry side of `bench/run.sh`.
//!
//! Usage: `bench_backbone <backbone> <input.f32> <batch> [--warmup N]
//! [--iters N] [--output FILE]`
//!
//! The input contains `batch` NHWC float32 images at the backbone's resolution,
//! little-endian, as `bench/make_data.py` writes them. Prints one JSON object
//! with the wall time of each timed run in seconds; `--output` stores the
//! features of the last run as raw float32, for comparison with ONNX Runtime.
//! Threads come from rayon's global pool (set `RAYON_NUM_THREADS`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pantry::backbone::efficientnet::EfficientNet;
use pantry::backbone::{load_safetensors, BackboneKind};
use pantry::cache::cache_root;

const USAGE: &str = "usage: bench_backbone <backbone> <input.f32> <batch> \
                     [--warmup N] [--iters N] [--output FILE]";

struct Args {
    kind: BackboneKind,
    input: PathBuf,
    batch: usize,
    warmup: usize,
    iters: usize,
    output: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, input, batch, options @ ..] = args.as_slice() else {
        bail!(USAGE);
    };
    let mut parsed = Args {
        kind: kind.parse()?,
        input: PathBuf::from(input),
        batch: batch
            .parse()
            .with_context(|| format!("invalid batch size {batch:?}"))?,
        warmup: 1,
        iters: 2,
        output: None,
    };
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let Some(value) = options.next() else {
            bail!("{option} needs a value; {USAGE}");
        };
        let count = || {
            value
                .parse::<usize>()
                .with_context(|| format!("invalid {option} value {value:?}"))
        };
        match option.as_str() {
            "--warmup" => parsed.warmup = count()?,
            "--iters" => parsed.iters = count()?,
            "--output" => parsed.output = Some(PathBuf::from(value)),
            _ => bail!("unknown option {option}; {USAGE}"),
        }
    }
    Ok(parsed)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let weights_path = cache_root()?
        .join("weights")
        .join(format!("{}.safetensors", args.kind.name()));
    let weights = load_safetensors(&weights_path)?;
    let network = EfficientNet::from_weights(args.kind, &weights)?;

    let bytes = std::fs::read(&args.input)
        .with_context(|| format!("failed to read {}", args.input.display()))?;
    let input: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let side = args.kind.resolution() as usize;
    let expected = args.batch * side * side * 3;
    if input.len() != expected {
        bail!(
            "{} has {} floats, expected {expected} for {} images of {side}x{side}x3",
            args.input.display(),
            input.len(),
            args.batch
        );
    }

    for _ in 0..args.warmup {
        network.features(&input, args.batch)?;
    }
    let mut times = Vec::with_capacity(args.iters);
    let mut features = Vec::new();
    for _ in 0..args.iters {
        let start = Instant::now();
        features = network.features(&input, args.batch)?;
        times.push(start.elapsed().as_secs_f64());
    }
    if let Some(output) = &args.output {
        let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(output, bytes)
            .with_context(|| format!("failed to write {}", output.display()))?;
    }
    println!("{}", serde_json::json!({ "times_s": times }));
    Ok(())
}
