//! Resize, crop and normalization of decoded images into network input.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// How a decoded image becomes backbone input: the shorter side is resized
/// to `resolution`, the centre `resolution`x`resolution` square is cut out,
/// and each channel is mapped to `(pixel - mean) / std`. Stored in model
/// files so that prediction preprocesses exactly as training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Side of the square network input, in pixels.
    pub resolution: u32,
    /// Per-channel offset subtracted from RGB values in 0..=255.
    pub mean: [f32; 3],
    /// Per-channel divisor applied after the offset.
    pub std: [f32; 3],
    /// Resampling filter of the resize; bilinear when absent from a file.
    #[serde(default)]
    pub filter: ResizeFilter,
}

/// Resampling filter for the resize step. All are convolutions whose
/// support widens with the downscale factor, so shrinking averages every
/// source pixel (antialiasing, as PIL's `Image.resize` does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeFilter {
    /// Triangle filter; PIL's and torchvision's default for `Resize`.
    #[default]
    Bilinear,
    /// Catmull-Rom cubic (PIL's `BICUBIC`).
    Bicubic,
    /// Lanczos windowed sinc with 3 lobes.
    Lanczos3,
    /// Box filter: a plain area average.
    Box,
}

impl ResizeFilter {
    /// Name used in files and cache keys.
    pub fn name(self) -> &'static str {
        match self {
            ResizeFilter::Bilinear => "bilinear",
            ResizeFilter::Bicubic => "bicubic",
            ResizeFilter::Lanczos3 => "lanczos3",
            ResizeFilter::Box => "box",
        }
    }

    fn filter_type(self) -> FilterType {
        match self {
            ResizeFilter::Bilinear => FilterType::Bilinear,
            ResizeFilter::Bicubic => FilterType::CatmullRom,
            ResizeFilter::Lanczos3 => FilterType::Lanczos3,
            ResizeFilter::Box => FilterType::Box,
        }
    }
}

impl Preprocess {
    /// Returns the EfficientNet-Lite preprocessing at `resolution`: mean 127 and
    /// std 128 on every channel, bilinear resize.
    pub fn for_resolution(resolution: u32) -> Self {
        Preprocess {
            resolution,
            mean: [127.0; 3],
            std: [128.0; 3],
            filter: ResizeFilter::default(),
        }
    }

    /// Number of floats in one preprocessed image: `resolution² × 3`.
    pub fn tensor_len(&self) -> usize {
        let side = self.resolution as usize;
        side * side * 3
    }

    /// Resizes, centre-crops and normalizes `image` into a new HWC float32
    /// tensor of [`tensor_len`](Self::tensor_len) values (one NHWC item).
    pub fn apply(&self, image: &RgbImage) -> Vec<f32> {
        let mut out = vec![0.0; self.tensor_len()];
        self.apply_into(image, &mut out);
        out
    }

    /// Like [`apply`](Self::apply), writing into `out`, which must hold
    /// exactly [`tensor_len`](Self::tensor_len) values.
    ///
    /// # Panics
    /// If `out` has the wrong length or `image` has a zero side (the
    /// decoders in [`crate::data::image`] never return one).
    pub fn apply_into(&self, image: &RgbImage, out: &mut [f32]) {
        assert_eq!(out.len(), self.tensor_len(), "output buffer length");
        let square = self.resize_crop(image);
        let scale = self.std.map(|s| 1.0 / s);
        for (dst, src) in out.chunks_exact_mut(3).zip(square.chunks_exact(3)) {
            for c in 0..3 {
                dst[c] = (f32::from(src[c]) - self.mean[c]) * scale[c];
            }
        }
    }

    /// Resizes so the shorter side is `resolution` and cuts out the centre
    /// square, returning RGB8 bytes. Both happen in one pass: the resizer
    /// reads only the centred source square (with sub-pixel offsets), so no
    /// pixel outside the crop is resampled.
    pub fn resize_crop(&self, image: &RgbImage) -> Vec<u8> {
        let (width, height) = image.dimensions();
        assert!(width > 0, "image has zero width");
        assert!(height > 0, "image has zero height");
        let side = self.resolution;
        if width == side && height == side {
            return image.as_raw().clone();
        }
        let src = ImageRef::new(width, height, image.as_raw(), PixelType::U8x3)
            .expect("an RgbImage buffer matches its dimensions");
        let mut dst = Image::new(side, side, PixelType::U8x3);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(self.filter.filter_type()))
            .fit_into_destination(Some((0.5, 0.5)));
        Resizer::new()
            .resize(&src, &mut dst, &options)
            .expect("source and destination are both U8x3");
        dst.into_vec()
    }

    /// Short id that changes whenever any field changes, for naming feature
    /// caches, e.g. `r224-m127_127_127-s128_128_128-bilinear`. Floats are
    /// printed in Rust's shortest round-trip form, so equal configs give
    /// equal keys on every platform.
    pub fn cache_key(&self) -> String {
        let [m0, m1, m2] = self.mean;
        let [s0, s1, s2] = self.std;
        format!(
            "r{}-m{m0}_{m1}_{m2}-s{s0}_{s1}_{s2}-{}",
            self.resolution,
            self.filter.name()
        )
    }
}
