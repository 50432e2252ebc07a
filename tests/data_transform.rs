//! Resize, centre crop, normalization, cache keys, and scaled JPEG decoding
//! compared with full decoding.

mod data_support;

use data_support::*;
use image::{Rgb, RgbImage};
use pantry::data::image::{decode, decode_for};
use pantry::data::transform::{Preprocess, ResizeFilter};

/// Mean of each channel over the whole HWC tensor, mapped back to 0..=255.
fn channel_means(preprocess: &Preprocess, tensor: &[f32]) -> [f32; 3] {
    let mut sums = [0.0f64; 3];
    for pixel in tensor.chunks_exact(3) {
        for c in 0..3 {
            sums[c] += f64::from(pixel[c]);
        }
    }
    let n = (tensor.len() / 3) as f64;
    [0, 1, 2].map(|c| (sums[c] / n) as f32 * preprocess.std[c] + preprocess.mean[c])
}

#[test]
fn solid_image_normalizes_exactly() {
    let preprocess = Preprocess::for_resolution(32);
    let image = RgbImage::from_pixel(50, 40, Rgb([255, 127, 0]));
    let tensor = preprocess.apply(&image);
    assert_eq!(tensor.len(), 32 * 32 * 3);
    for (i, pixel) in tensor.chunks_exact(3).enumerate() {
        assert_eq!(pixel, [1.0, 0.0, -127.0 / 128.0], "pixel {i}");
    }
}

#[test]
fn tensor_is_hwc_row_major() {
    // 2x2 at the target size is copied without resampling.
    let preprocess = Preprocess {
        mean: [0.0; 3],
        std: [1.0; 3],
        ..Preprocess::for_resolution(2)
    };
    let image = RgbImage::from_fn(2, 2, |x, y| Rgb([x as u8, y as u8, 10 * x as u8 + y as u8]));
    let tensor = preprocess.apply(&image);
    let expected = [0.0, 0.0, 0.0, 1.0, 0.0, 10.0, 0.0, 1.0, 1.0, 1.0, 1.0, 11.0];
    assert_eq!(tensor, expected);
}

#[test]
fn wide_image_keeps_the_centre() {
    let preprocess = Preprocess::for_resolution(32);
    // Thirds: red | green | blue. The centre square is the green third.
    let image = RgbImage::from_fn(300, 100, |x, _| Rgb([RED, GREEN, BLUE][(x / 100) as usize]));
    let tensor = preprocess.apply(&image);
    let means = channel_means(&preprocess, &tensor);
    assert!(means[0] < 3.0, "red leaked into the crop: {means:?}");
    assert!(means[1] > 252.0, "green missing from the crop: {means:?}");
    assert!(means[2] < 3.0, "blue leaked into the crop: {means:?}");
}

#[test]
fn tall_image_keeps_the_centre() {
    let preprocess = Preprocess::for_resolution(24);
    let image = RgbImage::from_fn(60, 240, |_, y| {
        Rgb(if (80..160).contains(&y) {
            WHITE
        } else {
            [0, 0, 0]
        })
    });
    let tensor = preprocess.apply(&image);
    // The centre 60x60 square lies inside the white band.
    let means = channel_means(&preprocess, &tensor);
    assert!(
        means.iter().all(|&m| m > 252.0),
        "crop is not white: {means:?}"
    );
}

#[test]
fn downscale_is_antialiased() {
    // A one-pixel checkerboard averages to mid grey; point sampling would
    // return pure black or white pixels.
    let preprocess = Preprocess::for_resolution(16);
    let image = RgbImage::from_fn(256, 256, |x, y| {
        Rgb(if (x + y) % 2 == 0 { WHITE } else { [0, 0, 0] })
    });
    let tensor = preprocess.apply(&image);
    let worst = tensor
        .iter()
        .map(|v| (v * 128.0 + 127.0 - 127.5).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 4.0,
        "a pixel is {worst} grey levels away from mid grey"
    );
}

#[test]
fn small_image_is_upscaled() {
    let preprocess = Preprocess::for_resolution(64);
    let tensor = preprocess.apply(&two_colour(8, 4, RED, BLUE));
    assert_eq!(tensor.len(), 64 * 64 * 3);
    let means = channel_means(&preprocess, &tensor);
    assert!((means[0] - 127.5).abs() < 10.0, "{means:?}");
    assert!((means[2] - 127.5).abs() < 10.0, "{means:?}");
}

#[test]
fn every_filter_resizes() {
    for filter in [
        ResizeFilter::Bilinear,
        ResizeFilter::Bicubic,
        ResizeFilter::Lanczos3,
        ResizeFilter::Box,
    ] {
        let preprocess = Preprocess {
            filter,
            ..Preprocess::for_resolution(20)
        };
        let tensor = preprocess.apply(&RgbImage::from_pixel(70, 50, Rgb([64, 128, 192])));
        let means = channel_means(&preprocess, &tensor);
        for (c, expected) in [64.0, 128.0, 192.0].into_iter().enumerate() {
            assert!(
                (means[c] - expected).abs() < 0.5,
                "{filter:?} channel {c}: {means:?}"
            );
        }
    }
}

#[test]
fn cache_key_covers_every_field() {
    let base = Preprocess::for_resolution(224);
    assert_eq!(base.cache_key(), "r224-m127_127_127-s128_128_128-bilinear");
    let variants = [
        Preprocess {
            resolution: 240,
            ..base.clone()
        },
        Preprocess {
            mean: [127.0, 127.5, 127.0],
            ..base.clone()
        },
        Preprocess {
            mean: [123.675, 116.28, 103.53],
            ..base.clone()
        },
        Preprocess {
            std: [128.0, 128.0, 64.0],
            ..base.clone()
        },
        Preprocess {
            filter: ResizeFilter::Bicubic,
            ..base.clone()
        },
    ];
    let mut keys = vec![base.cache_key()];
    for variant in &variants {
        let key = variant.cache_key();
        assert!(!keys.contains(&key), "{key} repeats for {variant:?}");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{key} is not file-name safe"
        );
        keys.push(key);
    }
    assert_eq!(base.cache_key(), base.clone().cache_key());
}

#[test]
fn serde_form_defaults_the_filter() {
    let json = r#"{"resolution":240,"mean":[127.0,127.0,127.0],"std":[128.0,128.0,128.0]}"#;
    let parsed: Preprocess = serde_json::from_str(json).unwrap();
    assert_eq!(parsed, Preprocess::for_resolution(240));

    let lanczos = Preprocess {
        filter: ResizeFilter::Lanczos3,
        ..Preprocess::for_resolution(260)
    };
    let text = serde_json::to_string(&lanczos).unwrap();
    assert!(text.contains(r#""filter":"lanczos3""#), "{text}");
    assert_eq!(serde_json::from_str::<Preprocess>(&text).unwrap(), lanczos);
}

#[test]
fn scaled_decode_matches_full_decode() {
    // A large smooth picture, as a phone photo is at the scale of the
    // network input. 2016x1512 decodes at 1/4 (504x378) for 224 pixels and
    // at 1/8 (252x189) for 160 pixels.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "smooth.jpg",
        &jpeg(&smooth(2016, 1512), 90, false),
    );
    let full = decode(&path).unwrap();
    assert_eq!(full.dimensions(), (2016, 1512));

    for (resolution, scaled_size) in [(224, (504, 378)), (160, (252, 189))] {
        let preprocess = Preprocess::for_resolution(resolution);
        let scaled = decode_for(&path, resolution).unwrap();
        assert_eq!(scaled.dimensions(), scaled_size, "resolution {resolution}");

        let a = preprocess.apply(&scaled);
        let b = preprocess.apply(&full);
        let total: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from((x - y).abs()))
            .sum();
        let mean_abs = total / a.len() as f64;
        let max_abs = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "resolution {resolution}, scaled vs full decode: mean |diff| {mean_abs:.5} \
             ({:.3} grey levels), max {max_abs:.4}",
            mean_abs * 128.0
        );
        // One grey level is 1/128 in normalized units.
        assert!(
            mean_abs < 1.0 / 128.0,
            "resolution {resolution}: mean |diff| {mean_abs}"
        );
        assert!(
            max_abs < 8.0 / 128.0,
            "resolution {resolution}: max |diff| {max_abs}"
        );
    }
}
