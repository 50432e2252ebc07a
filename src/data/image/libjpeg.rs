//! JPEG decoding through libjpeg-turbo (the MozJPEG build that
//! `mozjpeg-sys` compiles from source), with downscaling in the DCT domain.
//!
//! libjpeg reports fatal errors through a callback that must not return.
//! Ours unwinds with [`std::panic::resume_unwind`], which skips the panic
//! hook, so nothing is printed. The unwind is caught around the whole
//! decode, and the `unwinding` feature builds the C code to let it pass. Warnings
//! are recorded instead of printed: libjpeg treats data that ends early as
//! a warning and pads the image with grey, which we turn into an error.
//! 12-bit and lossless files, which this build cannot read, are handed to
//! `jpeg-decoder`.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use mozjpeg_sys::*;

use super::jpeg::{cmyk_to_rgb, scale_eighths};
use super::{check_size, DecodeErrorKind};

/// A fatal libjpeg error, carried by the unwind from the error callback.
struct Fatal {
    code: i32,
    message: String,
}

/// libjpeg's error manager followed by what our callbacks record. libjpeg
/// reads only the first field, so the struct must start with it.
#[repr(C)]
struct ErrorManager {
    base: jpeg_error_mgr,
    /// Set when the data ran out before the image was complete.
    ended_early: bool,
}

/// Owns a decompressor and destroys it on every exit path, unwinds included.
struct Decompressor {
    cinfo: Box<jpeg_decompress_struct>,
    // Read by libjpeg through `cinfo.common.err`; dropped after `cinfo`.
    _errors: Box<ErrorManager>,
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the struct was initialised by jpeg_create_decompress, and
        // libjpeg allows destroying it after an error exit.
        unsafe { jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

/// Decodes a JPEG to upright RGB8. With `min_side`, decodes at the smallest
/// DCT scale (8/8, 4/8, 2/8 or 1/8) whose shorter side still covers
/// `min_side` pixels.
pub(super) fn decode_jpeg(
    bytes: &[u8],
    min_side: Option<u32>,
) -> Result<RgbImage, DecodeErrorKind> {
    let mut decompressor = new_decompressor();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `bytes` outlives the decompressor's use of it here, and
        // every libjpeg call below happens on a created decompressor.
        unsafe { decode_with(&mut decompressor, bytes, min_side) }
    }));
    let ended_early = decompressor._errors.ended_early;
    drop(decompressor);
    match outcome {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<Fatal>() {
            Ok(fatal) if ended_early || fatal.code == JERR_INPUT_EOF => {
                Err(DecodeErrorKind::Truncated(fatal.message))
            }
            // NOTE: no test covers this path, because the test encoder
            // writes neither 12-bit nor lossless JPEGs.
            Ok(fatal) if fatal.code == JERR_BAD_PRECISION || fatal.code == JERR_SOF_UNSUPPORTED => {
                super::jpeg::decode_jpeg(bytes, min_side)
            }
            Ok(fatal) => Err(DecodeErrorKind::Corrupt(fatal.message)),
            // A panic of our own code rather than a libjpeg error.
            Err(other) => resume_unwind(other),
        },
    }
}

fn new_decompressor() -> Decompressor {
    // SAFETY: both structs are plain C data for which all-zero is the state
    // that jpeg_std_error and jpeg_create_decompress expect to fill in.
    unsafe {
        let mut errors: Box<ErrorManager> = Box::new(std::mem::zeroed());
        jpeg_std_error(&mut errors.base);
        errors.base.error_exit = Some(error_exit);
        errors.base.emit_message = Some(emit_message);
        errors.base.output_message = Some(output_message);
        let mut cinfo: Box<jpeg_decompress_struct> = Box::new(std::mem::zeroed());
        cinfo.common.err = &mut errors.base;
        jpeg_create_decompress(&mut *cinfo);
        Decompressor {
            cinfo,
            _errors: errors,
        }
    }
}

/// # Safety
/// `decompressor` must be freshly created; libjpeg errors unwind out of
/// this function as a [`Fatal`] payload.
unsafe fn decode_with(
    decompressor: &mut Decompressor,
    bytes: &[u8],
    min_side: Option<u32>,
) -> Result<RgbImage, DecodeErrorKind> {
    let cinfo = &mut *decompressor.cinfo;
    jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as _);
    jpeg_save_markers(cinfo, JPEG_APP1, 0xFFFF);
    jpeg_save_markers(cinfo, JPEG_APP14, 0xFFFF);
    jpeg_read_header(cinfo, 1);
    let (width, height) = (cinfo.image_width, cinfo.image_height);
    // Checked before jpeg_start_decompress, which allocates the buffers.
    check_size(width, height)?;

    let cmyk = matches!(cinfo.jpeg_color_space, JCS_CMYK | JCS_YCCK);
    cinfo.out_color_space = if cmyk { JCS_CMYK } else { JCS_RGB };
    if let Some(min_side) = min_side {
        cinfo.scale_num = scale_eighths(width, height, min_side);
        cinfo.scale_denom = 8;
    }
    jpeg_start_decompress(cinfo);
    let (out_w, out_h) = (cinfo.output_width, cinfo.output_height);
    let channels = cinfo.output_components as usize;
    let stride = out_w as usize * channels;
    let mut pixels = vec![0u8; stride * out_h as usize];
    let mut rows: Vec<*mut u8> = pixels
        .chunks_exact_mut(stride)
        .map(<[u8]>::as_mut_ptr)
        .collect();
    while cinfo.output_scanline < out_h {
        let done = cinfo.output_scanline as usize;
        let remaining = out_h - cinfo.output_scanline;
        jpeg_read_scanlines(cinfo, rows[done..].as_mut_ptr(), remaining);
    }
    let (orientation, adobe) = scan_markers(cinfo);
    jpeg_finish_decompress(cinfo);
    if decompressor._errors.ended_early {
        return Err(DecodeErrorKind::Truncated(
            "the JPEG data ends before the image is complete".into(),
        ));
    }

    let rgb = if cmyk {
        // Adobe applications, the usual source of CMYK JPEGs, store
        // inverted ink amounts and mark the file with an APP14 segment.
        if adobe {
            pixels.iter_mut().for_each(|v| *v = 255 - *v);
        }
        cmyk_to_rgb(&pixels)
    } else {
        pixels
    };
    let rgb = RgbImage::from_raw(out_w, out_h, rgb).expect("buffer length matches the dimensions");
    if orientation == Orientation::NoTransforms {
        return Ok(rgb);
    }
    let mut image = DynamicImage::ImageRgb8(rgb);
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

const JPEG_APP1: i32 = 0xE1;
const JPEG_APP14: i32 = 0xEE;

/// Reads the EXIF orientation and whether an Adobe APP14 segment is present
/// from the markers that libjpeg saved.
///
/// # Safety
/// `cinfo` must have read its header.
unsafe fn scan_markers(cinfo: &jpeg_decompress_struct) -> (Orientation, bool) {
    let mut orientation = None;
    let mut adobe = false;
    let mut marker = cinfo.marker_list;
    while let Some(saved) = marker.as_ref() {
        let data = std::slice::from_raw_parts(saved.data, saved.data_length as usize);
        match (i32::from(saved.marker), data) {
            (JPEG_APP1, [b'E', b'x', b'i', b'f', 0, 0, tiff @ ..]) if orientation.is_none() => {
                orientation = Orientation::from_exif_chunk(tiff);
            }
            (JPEG_APP14, [b'A', b'd', b'o', b'b', b'e', ..]) => adobe = true,
            _ => {}
        }
        marker = saved.next;
    }
    // A malformed Exif block should not cost the picture: treat it as upright.
    (orientation.unwrap_or(Orientation::NoTransforms), adobe)
}

/// libjpeg's fatal-error callback: formats the message and unwinds.
unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let errors = &*cinfo.err;
    let code = errors.msg_code;
    let mut buffer = [0u8; 80];
    let target: *mut [u8; 80] = &mut buffer;
    if let Some(format) = errors.format_message {
        format(cinfo, &*target);
    }
    let text = std::ptr::read_volatile(target);
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let message = String::from_utf8_lossy(&text[..end]).into_owned();
    resume_unwind(Box::new(Fatal { code, message }));
}

/// libjpeg's message callback: level -1 is a warning, higher levels are
/// trace output. Records a premature end of data and prints nothing.
unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: i32) {
    let errors = &mut *(cinfo.err as *mut ErrorManager);
    if level < 0 {
        errors.base.num_warnings += 1;
        // NOTE: a file that lacks only its final EOI marker also raises
        // this warning, so it is reported as truncated as well.
        if errors.base.msg_code == JWRN_JPEG_EOF {
            errors.ended_early = true;
        }
    }
}

/// Replaces libjpeg's printing to stderr.
unsafe extern "C-unwind" fn output_message(_cinfo: &mut jpeg_common_struct) {}
