//! JPEG decoding through `jpeg-decoder` 0.3, with downscaling in the DCT
//! domain and CMYK/YCCK conversion: the path for the 12-bit and lossless
//! files that libjpeg cannot read.

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::PixelFormat;

use super::{check_size, looks_truncated, DecodeErrorKind};

/// Decodes a JPEG to upright RGB8. With `min_side`, picks the smallest DCT
/// scale (8/8, 4/8, 2/8 or 1/8) whose shorter output side still covers
/// `min_side` pixels.
pub(super) fn decode_jpeg(
    bytes: &[u8],
    min_side: Option<u32>,
) -> Result<RgbImage, DecodeErrorKind> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(kind_from_jpeg_error)?;
    let info = decoder.info().expect("read_info succeeded");
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    check_size(width, height)?;

    if let Some(min_side) = min_side {
        let eighths = scale_eighths(width, height, min_side);
        if eighths < 8 {
            // jpeg-decoder picks the smallest scale at which either side
            // reaches the request, so asking for exactly the scaled size of
            // both sides selects `eighths`.
            let request_w = scaled_len(width, eighths) as u16;
            let request_h = scaled_len(height, eighths) as u16;
            decoder
                .scale(request_w, request_h)
                .map_err(kind_from_jpeg_error)?;
        }
    }

    let pixels = decoder.decode().map_err(kind_from_jpeg_error)?;
    let info = decoder.info().expect("decode succeeded");
    let (out_w, out_h) = (u32::from(info.width), u32::from(info.height));
    let rgb = match info.pixel_format {
        PixelFormat::RGB24 => RgbImage::from_raw(out_w, out_h, pixels),
        PixelFormat::L8 => GrayImage::from_raw(out_w, out_h, pixels)
            .map(|grey| DynamicImage::ImageLuma8(grey).into_rgb8()),
        PixelFormat::L16 => {
            // jpeg-decoder returns 16-bit samples in native byte order.
            let grey: Vec<u8> = pixels
                .chunks_exact(2)
                .map(|pair| (u16::from_ne_bytes([pair[0], pair[1]]) >> 8) as u8)
                .collect();
            GrayImage::from_raw(out_w, out_h, grey)
                .map(|grey| DynamicImage::ImageLuma8(grey).into_rgb8())
        }
        PixelFormat::CMYK32 => RgbImage::from_raw(out_w, out_h, cmyk_to_rgb(&pixels)),
    }
    .ok_or_else(|| {
        DecodeErrorKind::Corrupt(format!(
            "the decoder returned too few pixels for {out_w}x{out_h}"
        ))
    })?;

    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    if orientation == Orientation::NoTransforms {
        return Ok(rgb);
    }
    let mut image = DynamicImage::ImageRgb8(rgb);
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// Returns the DCT scale in eighths (1, 2, 4 or 8) for decoding a
/// `width`x`height` JPEG whose shorter side should stay at least `min_side`.
pub(crate) fn scale_eighths(width: u32, height: u32, min_side: u32) -> u32 {
    let short = width.min(height);
    [1, 2, 4]
        .into_iter()
        .find(|&eighths| scaled_len(short, eighths) >= min_side)
        .unwrap_or(8)
}

/// Side length after DCT scaling by `eighths`/8, rounded up as libjpeg and
/// jpeg-decoder do.
fn scaled_len(len: u32, eighths: u32) -> u32 {
    (len * eighths).div_ceil(8)
}

/// Converts ink amounts (0 = no ink, four channels per pixel) to RGB.
/// jpeg-decoder 0.3 returns ink amounts for both Adobe CMYK and YCCK files,
/// because it undoes the inverted storage that Adobe applications write.
/// The libjpeg path inverts such files itself.
pub(super) fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for pixel in cmyk.chunks_exact(4) {
        let white = 255 - u32::from(pixel[3]);
        for &ink in &pixel[..3] {
            let value = (255 - u32::from(ink)) * white;
            rgb.push(((value + 127) / 255) as u8);
        }
    }
    rgb
}

fn kind_from_jpeg_error(error: jpeg_decoder::Error) -> DecodeErrorKind {
    match error {
        // NOTE: a file that lacks only its final EOI marker also lands here,
        // although libjpeg-based tools display it with a warning.
        jpeg_decoder::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeErrorKind::Truncated("the JPEG data ends early".into())
        }
        jpeg_decoder::Error::Io(e) => DecodeErrorKind::Corrupt(e.to_string()),
        jpeg_decoder::Error::Unsupported(feature) => {
            DecodeErrorKind::Unsupported(format!("JPEG feature {feature:?}"))
        }
        jpeg_decoder::Error::Format(message) if looks_truncated(&message) => {
            DecodeErrorKind::Truncated(message)
        }
        other => DecodeErrorKind::Corrupt(other.to_string()),
    }
}
