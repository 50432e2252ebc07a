//! Decoding of image files into RGB8 pixels, with EXIF orientation, colour
//! conversion, alpha compositing and a size limit.
//!
//! The format is sniffed from the file's first bytes, not its extension.
//! JPEGs go through libjpeg-turbo (built from source by `mozjpeg-sys`),
//! which can decode at 1/2, 1/4 or 1/8 scale in the DCT domain (see
//! [`decode_for`]). The rare 12-bit and lossless JPEGs that it cannot read
//! go through `jpeg-decoder`. PNG, WebP, BMP and GIF go through the `image`
//! crate.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};

mod jpeg;
mod libjpeg;

/// Largest accepted image, in pixels of the stored (unscaled) image: 160
/// megapixels, over ten times a 12-megapixel phone photo. Larger claims are
/// rejected before any pixel memory is allocated, so a small file that
/// declares huge dimensions (a decompression bomb) cannot exhaust memory.
pub const MAX_PIXELS: u64 = 160_000_000;

/// A file that could not be turned into pixels: the path and the cause.
#[derive(Debug, thiserror::Error)]
#[error("failed to decode {}: {kind}", path.display())]
pub struct DecodeError {
    pub path: PathBuf,
    pub kind: DecodeErrorKind,
}

/// Cause of a decode failure.
#[derive(Debug, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("cannot read the file: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("unsupported format: {0}; supported are JPEG, PNG, WebP, BMP and GIF")]
    Unsupported(String),
    #[error("the file is truncated: {0}")]
    Truncated(String),
    #[error("corrupt image data: {0}")]
    Corrupt(String),
    #[error(
        "the image is {width}x{height} pixels, over the limit of {MAX_PIXELS} pixels \
         (possible decompression bomb)"
    )]
    TooLarge { width: u32, height: u32 },
}

/// Decodes the file at `path` at full size to RGB8, upright per its EXIF
/// orientation, with any alpha channel composited over white.
pub fn decode(path: &Path) -> Result<RgbImage, DecodeError> {
    decode_scaled(path, None)
}

/// Decodes the file at `path` to RGB8 like [`decode`], but lets JPEGs be
/// decoded at 1/2, 1/4 or 1/8 scale. The smallest scale whose shorter side
/// is still at least `min_side` pixels is used, or full size when even 1/2
/// is too small. Other formats are decoded at full size. The result feeds a resize
/// to `min_side`, which is far cheaper from the reduced image; a 4032x3024
/// photo for a 224-pixel input is decoded at 504x378.
pub fn decode_for(path: &Path, min_side: u32) -> Result<RgbImage, DecodeError> {
    decode_scaled(path, Some(min_side))
}

fn decode_scaled(path: &Path, min_side: Option<u32>) -> Result<RgbImage, DecodeError> {
    let with_path = |kind| DecodeError {
        path: path.to_path_buf(),
        kind,
    };
    let bytes = std::fs::read(path).map_err(|e| with_path(DecodeErrorKind::Unreadable(e)))?;
    decode_bytes(&bytes, min_side).map_err(with_path)
}

/// Decodes an in-memory file; `min_side` as in [`decode_for`], `None` for
/// full size.
pub fn decode_bytes(bytes: &[u8], min_side: Option<u32>) -> Result<RgbImage, DecodeErrorKind> {
    let format = sniff_format(bytes)?;
    if format == ImageFormat::Jpeg {
        libjpeg::decode_jpeg(bytes, min_side)
    } else {
        decode_with_image_crate(bytes, format)
    }
}

/// Identifies the format from the magic bytes at the start of the file.
pub fn sniff_format(bytes: &[u8]) -> Result<ImageFormat, DecodeErrorKind> {
    if bytes.is_empty() {
        return Err(DecodeErrorKind::Truncated("the file is empty".into()));
    }
    match image::guess_format(bytes) {
        Ok(
            format @ (ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Gif),
        ) => Ok(format),
        Ok(other) => Err(DecodeErrorKind::Unsupported(format!(
            "{} files are not supported",
            other.extensions_str().first().unwrap_or(&"this format")
        ))),
        Err(_) => Err(DecodeErrorKind::Unsupported(
            "the content is not a recognised image format".into(),
        )),
    }
}

/// Returns an error when `width` x `height` exceeds [`MAX_PIXELS`] or
/// either side is zero.
pub(crate) fn check_size(width: u32, height: u32) -> Result<(), DecodeErrorKind> {
    if width == 0 || height == 0 {
        return Err(DecodeErrorKind::Corrupt(format!(
            "the header declares a {width}x{height} image"
        )));
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(DecodeErrorKind::TooLarge { width, height });
    }
    Ok(())
}

/// Decodes a PNG, WebP, BMP or GIF file with the `image` crate, applying the
/// orientation that the container declares.
pub(crate) fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
) -> Result<RgbImage, DecodeErrorKind> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The size check below replaces the crate's limits, which would reject
    // large but legitimate images by their allocation size.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(kind_from_image_error)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height)?;
    // A malformed Exif block should not cost the picture: treat it as upright.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(kind_from_image_error)?;
    image.apply_orientation(orientation);
    Ok(flatten_to_rgb(image))
}

/// Converts any colour type to RGB8. Alpha is composited over white, so
/// transparent product cut-outs get the white background of catalogue shots.
pub fn flatten_to_rgb(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for pixel in rgba.pixels() {
        let alpha = u32::from(pixel[3]);
        for &channel in &pixel.0[..3] {
            let blended = u32::from(channel) * alpha + 255 * (255 - alpha);
            out.push(((blended + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer length matches the dimensions")
}

fn kind_from_image_error(error: ImageError) -> DecodeErrorKind {
    match error {
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeErrorKind::Truncated(e.to_string())
        }
        ImageError::IoError(e) => DecodeErrorKind::Corrupt(e.to_string()),
        ImageError::Unsupported(e) => DecodeErrorKind::Unsupported(e.to_string()),
        ImageError::Limits(e) => DecodeErrorKind::Corrupt(e.to_string()),
        ImageError::Decoding(e) => {
            let message = e.to_string();
            if looks_truncated(&message) {
                DecodeErrorKind::Truncated(message)
            } else {
                DecodeErrorKind::Corrupt(message)
            }
        }
        other => DecodeErrorKind::Corrupt(other.to_string()),
    }
}

/// Reports whether a decoder's message describes data that ended early. The decoders
/// do not type this case, so the message text is the only signal.
pub(crate) fn looks_truncated(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "eof",
        "end of file",
        "unexpected end",
        "truncated",
        "no more data",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}
