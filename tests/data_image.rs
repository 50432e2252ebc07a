//! Decoding of every supported format, EXIF orientation, colour conversion,
//! alpha compositing and decode errors.

mod data_support;

use data_support::*;
use image::{Rgba, RgbaImage};
use pantry::data::image::{decode, decode_for, DecodeErrorKind};

/// JPEG colours may drift by this much at block centres at quality 95.
const JPEG_TOLERANCE: u8 = 12;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temporary folder")
}

#[test]
fn baseline_jpeg_two_colours() {
    let dir = temp();
    let path = write(
        dir.path(),
        "a.jpg",
        &jpeg(&two_colour(64, 32, RED, BLUE), 95, false),
    );
    let image = decode(&path).unwrap();
    assert_eq!(image.dimensions(), (64, 32));
    assert_pixel(&image, 8, 16, RED, JPEG_TOLERANCE, "left half");
    assert_pixel(&image, 56, 16, BLUE, JPEG_TOLERANCE, "right half");
}

#[test]
fn progressive_jpeg_two_colours() {
    let dir = temp();
    let bytes = jpeg(&two_colour(64, 32, GREEN, WHITE), 95, true);
    let path = write(dir.path(), "p.jpg", &bytes);
    let image = decode(&path).unwrap();
    assert_eq!(image.dimensions(), (64, 32));
    assert_pixel(&image, 8, 16, GREEN, JPEG_TOLERANCE, "left half");
    assert_pixel(&image, 56, 16, WHITE, JPEG_TOLERANCE, "right half");
}

#[test]
fn greyscale_jpeg_expands_to_rgb() {
    let dir = temp();
    let grey: Vec<u8> = (0..64 * 32)
        .map(|i| if i % 64 < 32 { 40 } else { 200 })
        .collect();
    let bytes = encode_jpeg(&grey, 64, 32, jpeg_encoder::ColorType::Luma, 95, false);
    let image = decode(&write(dir.path(), "g.jpg", &bytes)).unwrap();
    assert_pixel(&image, 8, 16, [40; 3], 4, "dark half");
    assert_pixel(&image, 56, 16, [200; 3], 4, "light half");
}

#[test]
fn cmyk_and_ycck_jpegs_convert_to_rgb() {
    let dir = temp();
    // Ink amounts: left half magenta + yellow (red), right half cyan only.
    let ink: Vec<u8> = (0..64 * 32)
        .flat_map(|i| {
            if i % 64 < 32 {
                [0u8, 255, 255, 0]
            } else {
                [255, 0, 0, 0]
            }
        })
        .collect();
    for colour in [
        jpeg_encoder::ColorType::Cmyk,
        jpeg_encoder::ColorType::CmykAsYcck,
    ] {
        let bytes = encode_jpeg(&ink, 64, 32, colour, 95, false);
        let name = format!("{colour:?}.jpg");
        let image = decode(&write(dir.path(), &name, &bytes)).unwrap();
        assert_pixel(&image, 8, 16, RED, JPEG_TOLERANCE, &name);
        assert_pixel(&image, 56, 16, [0, 255, 255], JPEG_TOLERANCE, &name);
    }
}

#[test]
fn cmyk_black_ink_darkens() {
    let dir = temp();
    let ink: Vec<u8> = (0..16 * 16).flat_map(|_| [0u8, 0, 0, 128]).collect();
    let bytes = encode_jpeg(&ink, 16, 16, jpeg_encoder::ColorType::Cmyk, 95, false);
    let image = decode(&write(dir.path(), "k.jpg", &bytes)).unwrap();
    assert_pixel(&image, 8, 8, [127; 3], 3, "half black ink");
}

/// Returns where a stored pixel (x, y) of a `w`x`h` image appears once EXIF
/// orientation `o` is applied, per the Exif 2.3 definition of tag 0x0112.
fn displayed(x: u32, y: u32, w: u32, h: u32, o: u16) -> (u32, u32) {
    match o {
        1 => (x, y),
        2 => (w - 1 - x, y),
        3 => (w - 1 - x, h - 1 - y),
        4 => (x, h - 1 - y),
        5 => (y, x),
        6 => (h - 1 - y, x),
        7 => (h - 1 - y, w - 1 - x),
        8 => (y, w - 1 - x),
        _ => unreachable!(),
    }
}

#[test]
fn exif_orientation_all_eight_values() {
    let dir = temp();
    let (w, h) = (48, 32);
    let plain = jpeg(&quadrants(w, h), 95, false);
    // Centres of the stored quadrants and their colours.
    let probes = [
        (12, 8, RED),
        (36, 8, GREEN),
        (12, 24, BLUE),
        (36, 24, WHITE),
    ];
    for orientation in 1..=8u16 {
        let bytes = with_exif_orientation(&plain, orientation);
        let path = write(dir.path(), &format!("o{orientation}.jpg"), &bytes);
        let image = decode(&path).unwrap();
        let swaps = orientation >= 5;
        let expected_size = if swaps { (h, w) } else { (w, h) };
        assert_eq!(
            image.dimensions(),
            expected_size,
            "orientation {orientation}"
        );
        for (x, y, colour) in probes {
            let (dx, dy) = displayed(x, y, w, h, orientation);
            let what = format!("orientation {orientation}, stored ({x}, {y})");
            assert_pixel(&image, dx, dy, colour, JPEG_TOLERANCE, &what);
        }
    }
}

#[test]
fn exif_orientation_applies_to_scaled_decode() {
    let dir = temp();
    let (w, h) = (480, 320);
    let bytes = with_exif_orientation(&jpeg(&quadrants(w, h), 95, false), 6);
    let path = write(dir.path(), "o6.jpg", &bytes);
    let image = decode_for(&path, 40).unwrap();
    // 320 / 8 = 40 covers the request, so the 1/8 scale is used.
    assert_eq!(image.dimensions(), (40, 60));
    // Stored top-left (red) ends up top-right after a 90° clockwise turn.
    assert_pixel(&image, 30, 15, RED, JPEG_TOLERANCE, "top right");
    assert_pixel(&image, 10, 15, BLUE, JPEG_TOLERANCE, "top left");
    assert_pixel(&image, 30, 45, GREEN, JPEG_TOLERANCE, "bottom right");
}

#[test]
fn scaled_decode_picks_smallest_covering_scale() {
    let dir = temp();
    let path = write(dir.path(), "big.jpg", &jpeg(&smooth(800, 600), 90, false));
    let cases = [
        (600, (800, 600)),
        (300, (400, 300)),
        (151, (400, 300)),
        (150, (200, 150)),
        (75, (100, 75)),
        (10, (100, 75)),
    ];
    for (min_side, expected) in cases {
        let image = decode_for(&path, min_side).unwrap();
        assert_eq!(image.dimensions(), expected, "min_side {min_side}");
    }
    let png_path = write(dir.path(), "big.png", &png_rgb8(&smooth(80, 60)));
    assert_eq!(decode_for(&png_path, 10).unwrap().dimensions(), (80, 60));
}

fn png_rgb8(image: &image::RgbImage) -> Vec<u8> {
    let (w, h) = image.dimensions();
    png(
        image.as_raw(),
        w,
        h,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        None,
    )
}

#[test]
fn png_rgb_8_and_16_bit() {
    let dir = temp();
    let image = two_colour(16, 8, RED, [10, 128, 250]);
    let path = write(dir.path(), "rgb8.png", &png_rgb8(&image));
    assert_eq!(decode(&path).unwrap(), image);

    // 16-bit samples 0x8040 etc.: the high byte is the 8-bit value.
    let wide: Vec<u8> = (0..16 * 8)
        .flat_map(|i| {
            let sample: [u16; 3] = if i % 16 < 8 {
                [0xFFFF, 0x0000, 0x8040]
            } else {
                [0x1234, 0xABCD, 0x0101]
            };
            sample.into_iter().flat_map(u16::to_be_bytes)
        })
        .collect();
    let bytes = png(
        &wide,
        16,
        8,
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        None,
    );
    let decoded = decode(&write(dir.path(), "rgb16.png", &bytes)).unwrap();
    assert_pixel(&decoded, 2, 4, [255, 0, 128], 1, "16-bit left");
    assert_pixel(&decoded, 12, 4, [0x12, 0xAB, 0x01], 1, "16-bit right");
}

#[test]
fn png_palette_with_transparency() {
    let dir = temp();
    let palette = [255, 0, 0, 0, 0, 255, 0, 0, 0];
    // Entry 2 (black) is fully transparent and must come out white.
    let trns = [255, 255, 0];
    let indices: Vec<u8> = (0..12 * 4).map(|i| (i % 12 / 4) as u8).collect();
    let bytes = png(
        &indices,
        12,
        4,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some((&palette, Some(&trns))),
    );
    let image = decode(&write(dir.path(), "pal.png", &bytes)).unwrap();
    assert_pixel(&image, 1, 2, RED, 0, "palette entry 0");
    assert_pixel(&image, 5, 2, BLUE, 0, "palette entry 1");
    assert_pixel(&image, 9, 2, WHITE, 0, "transparent entry 2");
}

#[test]
fn png_grey_and_grey_alpha_over_white() {
    let dir = temp();
    let grey: Vec<u8> = (0..8 * 2).map(|i| if i < 8 { 30 } else { 220 }).collect();
    let bytes = png(
        &grey,
        8,
        2,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        None,
    );
    let image = decode(&write(dir.path(), "grey.png", &bytes)).unwrap();
    assert_pixel(&image, 3, 0, [30; 3], 0, "grey row 0");
    assert_pixel(&image, 3, 1, [220; 3], 0, "grey row 1");

    // Black at alpha 255, 128 and 0: black, mid grey, white.
    let grey_alpha = [0u8, 255, 0, 128, 0, 0];
    let bytes = png(
        &grey_alpha,
        3,
        1,
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        None,
    );
    let image = decode(&write(dir.path(), "ga.png", &bytes)).unwrap();
    assert_pixel(&image, 0, 0, [0; 3], 0, "opaque black");
    assert_pixel(&image, 1, 0, [127; 3], 1, "half transparent black");
    assert_pixel(&image, 2, 0, WHITE, 0, "transparent black");
}

#[test]
fn png_rgba_over_white() {
    let dir = temp();
    let rgba = [255u8, 0, 0, 255, 0, 0, 255, 128, 0, 255, 0, 0];
    let bytes = png(
        &rgba,
        3,
        1,
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        None,
    );
    let image = decode(&write(dir.path(), "rgba.png", &bytes)).unwrap();
    assert_pixel(&image, 0, 0, RED, 0, "opaque red");
    assert_pixel(&image, 1, 0, [127, 127, 255], 1, "half transparent blue");
    assert_pixel(&image, 2, 0, WHITE, 0, "transparent green");
}

#[test]
fn webp_lossless_with_alpha() {
    let dir = temp();
    let mut image = with_alpha(&two_colour(16, 8, RED, BLUE), 255);
    image.put_pixel(15, 7, Rgba([0, 255, 0, 0]));
    let decoded = decode(&write(dir.path(), "a.webp", &webp(&image))).unwrap();
    assert_pixel(&decoded, 2, 2, RED, 0, "left");
    assert_pixel(&decoded, 12, 2, BLUE, 0, "right");
    assert_pixel(&decoded, 15, 7, WHITE, 0, "transparent corner");
}

#[test]
fn bmp_two_colours() {
    let dir = temp();
    let image = two_colour(10, 6, GREEN, [12, 34, 56]);
    let decoded = decode(&write(dir.path(), "a.bmp", &bmp(&image))).unwrap();
    assert_eq!(decoded, image);
}

#[test]
fn gif_first_frame_only() {
    let dir = temp();
    let first = with_alpha(&two_colour(8, 8, RED, BLUE), 255);
    let second = RgbaImage::from_pixel(8, 8, Rgba([0, 255, 0, 255]));
    let decoded = decode(&write(dir.path(), "a.gif", &gif(&[first, second]))).unwrap();
    assert_eq!(decoded.dimensions(), (8, 8));
    assert_pixel(&decoded, 1, 4, RED, 0, "first frame left");
    assert_pixel(&decoded, 6, 4, BLUE, 0, "first frame right");
}

fn error_kind(path: &std::path::Path) -> (DecodeErrorKind, String) {
    let error = decode(path).expect_err("decoding should fail");
    let message = error.to_string();
    assert_eq!(error.path, path);
    assert!(
        message.contains(&path.display().to_string()),
        "message {message:?} does not name the file"
    );
    (error.kind, message)
}

#[test]
fn truncated_jpeg_is_an_error() {
    let dir = temp();
    let bytes = jpeg(&smooth(64, 64), 90, false);
    for (name, len) in [("half.jpg", bytes.len() / 2), ("header.jpg", 40)] {
        let path = write(dir.path(), name, &bytes[..len]);
        let (kind, message) = error_kind(&path);
        assert!(
            matches!(kind, DecodeErrorKind::Truncated(_)),
            "{name}: {message}"
        );
    }
}

#[test]
fn truncated_jpeg_is_an_error_when_scaled() {
    let dir = temp();
    let bytes = jpeg(&smooth(256, 256), 90, true);
    let path = write(dir.path(), "half.jpg", &bytes[..bytes.len() / 2]);
    let error = decode_for(&path, 32).expect_err("decoding should fail");
    assert!(
        matches!(error.kind, DecodeErrorKind::Truncated(_)),
        "{error}"
    );
    assert!(error.to_string().contains("half.jpg"), "{error}");
}

#[test]
fn truncated_png_is_an_error() {
    let dir = temp();
    let bytes = png_rgb8(&smooth(64, 64));
    let path = write(dir.path(), "half.png", &bytes[..bytes.len() / 2]);
    let (kind, message) = error_kind(&path);
    assert!(
        matches!(
            kind,
            DecodeErrorKind::Truncated(_) | DecodeErrorKind::Corrupt(_)
        ),
        "{message}"
    );
}

#[test]
fn corrupt_jpeg_header_is_an_error() {
    let dir = temp();
    let mut bytes = jpeg(&smooth(64, 64), 90, false);
    // Overwrite everything after SOI with marker-like garbage.
    for (i, byte) in bytes.iter_mut().enumerate().skip(2).take(200) {
        *byte = if i % 2 == 0 { 0xFF } else { 0x01 };
    }
    let (kind, message) = error_kind(&write(dir.path(), "bad.jpg", &bytes));
    assert!(
        matches!(
            kind,
            DecodeErrorKind::Corrupt(_) | DecodeErrorKind::Unsupported(_)
        ),
        "{message}"
    );
}

#[test]
fn text_named_jpg_is_unsupported() {
    let dir = temp();
    let path = write(dir.path(), "notes.jpg", b"shopping list: milk, eggs\n");
    let (kind, message) = error_kind(&path);
    assert!(matches!(kind, DecodeErrorKind::Unsupported(_)), "{message}");
}

#[test]
fn empty_and_missing_files_are_errors() {
    let dir = temp();
    let (kind, message) = error_kind(&write(dir.path(), "empty.png", b""));
    assert!(matches!(kind, DecodeErrorKind::Truncated(_)), "{message}");
    let (kind, message) = error_kind(&dir.path().join("missing.jpg"));
    assert!(matches!(kind, DecodeErrorKind::Unreadable(_)), "{message}");
}

#[test]
fn huge_declared_size_is_rejected() {
    let dir = temp();
    // A 1x1 PNG whose IHDR is patched to claim 20000 x 20000 pixels.
    let mut bytes = png_rgb8(&smooth(1, 1));
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&20_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&20_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let (kind, message) = error_kind(&write(dir.path(), "bomb.png", &bytes));
    assert!(
        matches!(
            kind,
            DecodeErrorKind::TooLarge {
                width: 20_000,
                height: 20_000
            }
        ),
        "{message}"
    );

    // A JPEG whose SOF0 header is patched to claim 60000 x 60000.
    let mut bytes = jpeg(&smooth(16, 16), 90, false);
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("SOF0 marker");
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let (kind, message) = error_kind(&write(dir.path(), "bomb.jpg", &bytes));
    assert!(
        matches!(
            kind,
            DecodeErrorKind::TooLarge {
                width: 60_000,
                height: 60_000
            }
        ),
        "{message}"
    );
}

/// CRC-32 (IEEE 802.3, as PNG chunks use), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}
