//! Builders for test images: synthetic pixels and encoders for every format
//! the decoders accept. Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage, Rgba, RgbaImage};

pub const RED: [u8; 3] = [255, 0, 0];
pub const GREEN: [u8; 3] = [0, 255, 0];
pub const BLUE: [u8; 3] = [0, 0, 255];
pub const WHITE: [u8; 3] = [255, 255, 255];

/// Builds an image whose left half is `left` and right half is `right`.
pub fn two_colour(width: u32, height: u32, left: [u8; 3], right: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| {
        Rgb(if x < width / 2 { left } else { right })
    })
}

/// Builds an image split into four quadrants: top-left red, top-right green,
/// bottom-left blue, bottom-right white.
pub fn quadrants(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb(match (x < width / 2, y < height / 2) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => WHITE,
        })
    })
}

/// Builds a smooth photo-like image: overlapping low-frequency waves per channel.
pub fn smooth(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let u = x as f32 / width as f32;
        let v = y as f32 / height as f32;
        let wave = |a: f32, b: f32, phase: f32| {
            let s = (a * u * std::f32::consts::TAU + b * v * std::f32::consts::TAU + phase).sin();
            (127.5 + 110.0 * s) as u8
        };
        Rgb([
            wave(1.5, 0.5, 0.0),
            wave(0.7, 2.0, 1.0),
            wave(2.5, 1.5, 2.0),
        ])
    })
}

/// Asserts that `actual` is within `tolerance` of `expected` on every
/// channel, naming `what` in the failure.
pub fn assert_close(actual: [u8; 3], expected: [u8; 3], tolerance: u8, what: &str) {
    for c in 0..3 {
        let diff = actual[c].abs_diff(expected[c]);
        assert!(
            diff <= tolerance,
            "{what}: channel {c} is {} but expected {} (±{tolerance}); pixel {actual:?}",
            actual[c],
            expected[c]
        );
    }
}

/// Asserts the colour at (x, y) of `image`.
pub fn assert_pixel(
    image: &RgbImage,
    x: u32,
    y: u32,
    expected: [u8; 3],
    tolerance: u8,
    what: &str,
) {
    let actual = image.get_pixel(x, y).0;
    assert_close(
        actual,
        expected,
        tolerance,
        &format!("{what} at ({x}, {y})"),
    );
}

/// Encodes RGB pixels as a JPEG (4:2:0 chroma subsampling, the encoder's
/// default) at `quality`.
pub fn jpeg(image: &RgbImage, quality: u8, progressive: bool) -> Vec<u8> {
    encode_jpeg(
        image.as_raw(),
        image.width(),
        image.height(),
        jpeg_encoder::ColorType::Rgb,
        quality,
        progressive,
    )
}

/// Encodes raw samples of any jpeg-encoder colour type.
pub fn encode_jpeg(
    data: &[u8],
    width: u32,
    height: u32,
    colour: jpeg_encoder::ColorType,
    quality: u8,
    progressive: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder.set_progressive(progressive);
    encoder
        .encode(data, width as u16, height as u16, colour)
        .expect("JPEG encoding failed");
    out
}

/// Inserts an APP1 Exif segment declaring `orientation` (1-8) right after
/// the SOI marker of `jpeg`. The TIFF block is big-endian with a single IFD
/// entry, as phones write it.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2A");
    tiff.extend_from_slice(&8u32.to_be_bytes()); // offset of IFD0
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation tag
    tiff.extend_from_slice(&3u16.to_be_bytes()); // type SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD

    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Encodes a PNG with the png crate: `colour` and `depth` as given, the
/// samples in PNG byte order (big-endian for 16 bit).
pub fn png(
    data: &[u8],
    width: u32,
    height: u32,
    colour: png::ColorType,
    depth: png::BitDepth,
    palette: Option<(&[u8], Option<&[u8]>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(colour);
        encoder.set_depth(depth);
        if let Some((plte, trns)) = palette {
            encoder.set_palette(plte.to_vec());
            if let Some(trns) = trns {
                encoder.set_trns(trns.to_vec());
            }
        }
        let mut writer = encoder.write_header().expect("PNG header");
        writer.write_image_data(data).expect("PNG data");
    }
    out
}

/// Encodes an RGBA image as lossless WebP.
pub fn webp(image: &RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .encode(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgba8,
        )
        .expect("WebP encoding failed");
    out
}

/// Encodes an RGB image as a 24-bit BMP.
pub fn bmp(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::bmp::BmpEncoder::new(&mut out)
        .encode(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("BMP encoding failed");
    out
}

/// Encodes the frames as an animated GIF.
pub fn gif(frames: &[RgbaImage]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        let frames = frames.iter().map(|f| image::Frame::new(f.clone()));
        encoder.encode_frames(frames).expect("GIF encoding failed");
    }
    out
}

/// Converts an RGB image to RGBA with alpha `alpha` everywhere.
pub fn with_alpha(image: &RgbImage, alpha: u8) -> RgbaImage {
    RgbaImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b] = image.get_pixel(x, y).0;
        Rgba([r, g, b, alpha])
    })
}

/// Writes `bytes` to `dir/name`, creating parent folders, and returns the
/// path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create test folder");
    }
    std::fs::write(&path, bytes).expect("write test file");
    path
}
