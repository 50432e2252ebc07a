//! Decode and preprocess throughput on a synthetic 12-megapixel phone JPEG.
//! Slow (it encodes and decodes 4032x3024 images), so ignored by default:
//! `cargo test --test data_throughput -- --ignored --nocapture`.

mod data_support;

use std::time::{Duration, Instant};

use data_support::*;
use image::{Rgb, RgbImage};
use pantry::data::image::{decode_bytes, decode_for};
use pantry::data::transform::Preprocess;

/// CPU time of the whole process (all threads, since the `image` crate's
/// decoders may spread work over threads), from Linux's /proc; `None`
/// elsewhere.
/// Timing by CPU time keeps the figure meaningful on a busy machine.
fn process_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is first, utime 12th, stime 13th.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // NOTE: assumes the usual 100 clock ticks per second (USER_HZ).
    Some(Duration::from_millis(ticks * 10))
}

/// Builds a 4032x3024 picture of smooth shapes plus per-pixel noise, so the
/// JPEG is about as large as a phone photo (about 3 MiB at quality 90).
fn phone_photo() -> RgbImage {
    let base = smooth(4032, 3024);
    let mut state = 0x1234_5678u32;
    RgbImage::from_fn(4032, 3024, |x, y| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (state >> 24) as i32 % 17 - 8;
        let pixel = base.get_pixel(x, y).0;
        Rgb(pixel.map(|v| (i32::from(v) + noise).clamp(0, 255) as u8))
    })
}

/// Runs `work` `runs` times and returns images per second by wall time and
/// by the process's CPU time.
fn rate(runs: u32, mut work: impl FnMut()) -> (f64, Option<f64>) {
    let wall = Instant::now();
    let cpu = process_cpu_time();
    for _ in 0..runs {
        work();
    }
    let wall_rate = f64::from(runs) / wall.elapsed().as_secs_f64();
    let cpu_rate = cpu
        .zip(process_cpu_time())
        .map(|(start, end)| f64::from(runs) / (end - start).as_secs_f64());
    (wall_rate, cpu_rate)
}

fn describe(what: &str, (wall, cpu): (f64, Option<f64>)) {
    let cpu = cpu.map_or("n/a".to_string(), |r| format!("{r:.1}"));
    eprintln!("  {what}: {wall:.1} images/s wall, {cpu} images/s of CPU time");
}

#[test]
#[ignore = "slow: encodes and decodes 12-megapixel JPEGs"]
fn phone_jpeg_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let photo = phone_photo();
    let preprocess = Preprocess::for_resolution(224);
    for progressive in [false, true] {
        let bytes = jpeg(&photo, 90, progressive);
        let path = write(dir.path(), "phone.jpg", &bytes);
        eprintln!(
            "4032x3024 JPEG, quality 90, 4:2:0, progressive {progressive}, {} KiB:",
            bytes.len() / 1024
        );
        describe(
            "decode_for(224) + preprocess",
            rate(10, || {
                let image = decode_for(&path, 224).unwrap();
                assert_eq!(image.dimensions(), (504, 378));
                let _ = preprocess.apply(&image);
            }),
        );
        describe(
            "libjpeg full size",
            rate(3, || {
                let _ = decode_bytes(&bytes, None).unwrap();
            }),
        );
        describe(
            "zune-jpeg full size (image crate)",
            rate(3, || {
                let _ = image::load_from_memory(&bytes).unwrap().into_rgb8();
            }),
        );
        let full = decode_bytes(&bytes, None).unwrap();
        describe(
            "preprocess from full size",
            rate(5, || {
                let _ = preprocess.apply(&full);
            }),
        );
    }
}
