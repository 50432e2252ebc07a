//! The EfficientNet-Lite inference network: frozen weights with batch norm
//! folded in, run on the SIMD kernels of [`crate::kernels`].
//!
//! EfficientNet-Lite is the EfficientNet-B0 layout without squeeze-excitation
//! and with ReLU6: a 3x3 stride-2 stem, seven stages of inverted-residual
//! blocks (1x1 expand, depthwise `k`x`k`, 1x1 project), a 1x1 head to 1280
//! channels, global average pooling and a 1000-class classifier. Channel
//! counts and kernel sizes come from the checkpoint's weight shapes; the
//! number of blocks per stage comes from the variant's depth multiplier.

mod block;
mod build;
mod split;

use std::cell::RefCell;

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::{BackboneKind, Weights};
use crate::kernels::pointwise::PointwiseConv;
use crate::kernels::stem::StemConv;
use crate::kernels::{Exec, Isa};
use build::Block;

/// A frozen EfficientNet-Lite backbone with its ImageNet classifier.
#[derive(Clone, Debug)]
pub struct EfficientNet {
    kind: BackboneKind,
    isa: Isa,
    stem: StemConv,
    blocks: Vec<Block>,
    head: PointwiseConv,
    classifier: PointwiseConv,
    /// Largest activation of one image, in floats, for the work buffers.
    max_activation: usize,
}

/// Activation buffers for one image at a time. Blocks keep their expanded
/// activations in per-thread band buffers instead.
#[derive(Default)]
struct Workspace {
    current: Vec<f32>,
    next: Vec<f32>,
    head: Vec<f32>,
}

impl Workspace {
    /// Grows every buffer to at least `len` floats.
    fn reserve(&mut self, len: usize) {
        for buffer in [&mut self.current, &mut self.next, &mut self.head] {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
        }
    }
}

thread_local! {
    /// Kept per thread so that repeated calls reuse pages already mapped.
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

impl EfficientNet {
    /// Builds the network of `kind` from a PyTorch-named checkpoint, using the
    /// fastest kernels this CPU supports (see [`Isa::detect`]). Errors name
    /// the missing or misshaped parameter.
    pub fn from_weights(kind: BackboneKind, weights: &Weights) -> Result<Self> {
        let stem = build::stem(weights)?;
        let blocks = build::blocks(kind, weights, stem.out_channels)?;
        let last = blocks
            .last()
            .map_or(stem.out_channels, |b| b.project.out_channels);
        let head = build::head(weights, last)?;
        ensure!(
            head.out_channels == kind.feature_dim(),
            "parameter _conv_head.weight has {} output channels, expected {} for {}",
            head.out_channels,
            kind.feature_dim(),
            kind.name()
        );
        let classifier = build::classifier(weights, head.out_channels)?;
        let mut network = EfficientNet {
            kind,
            isa: Isa::detect(),
            stem,
            blocks,
            head,
            classifier,
            max_activation: 0,
        };
        network.max_activation = network.largest_activation();
        Ok(network)
    }

    /// Selects the kernels' instruction set, e.g. to compare the portable
    /// kernels with the SIMD ones. Panics if this CPU cannot run `isa`.
    pub fn with_isa(mut self, isa: Isa) -> Self {
        assert!(isa.is_supported(), "{isa:?} kernels are not supported here");
        self.isa = isa;
        self
    }

    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    /// Computes pooled features for `batch` NHWC images of the backbone's
    /// resolution, normalized as `(pixel - 127) / 128` RGB. Returns
    /// `batch * 1280` values, one row per image.
    pub fn features(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let res = self.kind.resolution() as usize;
        let image_len = res * res * 3;
        ensure!(
            input.len() == batch * image_len,
            "{} input has {} values, expected {batch} images of {res}x{res}x3 = {}",
            self.kind.name(),
            input.len(),
            batch * image_len
        );
        let dim = self.head.out_channels;
        let mut features = vec![0.0; batch * dim];
        let threads = rayon::current_num_threads();
        if batch >= 2 && threads > 1 {
            // One image per thread: no synchronization inside the network.
            let exec = Exec {
                isa: self.isa,
                parallel: false,
            };
            input
                .par_chunks_exact(image_len)
                .zip(features.par_chunks_exact_mut(dim))
                .for_each(|(image, out)| self.forward_image(exec, image, out));
        } else if threads > 1 {
            // Few images: each layer splits its rows or columns over the
            // threads. Running on a pool thread lets this thread take its
            // share of each split instead of sleeping until a worker wakes.
            let exec = Exec {
                isa: self.isa,
                parallel: true,
            };
            rayon::scope(|_| {
                for (image, out) in input
                    .chunks_exact(image_len)
                    .zip(features.chunks_exact_mut(dim))
                {
                    self.forward_image(exec, image, out);
                }
            });
        } else {
            let exec = Exec {
                isa: self.isa,
                parallel: false,
            };
            for (image, out) in input
                .chunks_exact(image_len)
                .zip(features.chunks_exact_mut(dim))
            {
                self.forward_image(exec, image, out);
            }
        }
        Ok(features)
    }

    /// Computes ImageNet logits for `batch` images given as for
    /// [`features`](Self::features). Returns `batch * 1000` values.
    pub fn logits(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let features = self.features(input, batch)?;
        let mut logits = vec![0.0; batch * self.classifier.out_channels];
        let exec = Exec {
            isa: self.isa,
            parallel: rayon::current_num_threads() > 1,
        };
        rayon::scope(|_| {
            self.classifier.forward(exec, &features, None, &mut logits);
        });
        Ok(logits)
    }

    /// Returns the number of floats in the largest block input or output,
    /// or head output, of one image.
    fn largest_activation(&self) -> usize {
        let res = self.kind.resolution() as usize;
        let (mut h, mut w) = self.stem.output_size(res, res);
        let mut largest = h * w * self.stem.out_channels;
        for block in &self.blocks {
            (h, w) = block.depthwise.output_size(h, w);
            largest = largest.max(h * w * block.project.out_channels);
        }
        largest.max(h * w * self.head.out_channels)
    }

    /// Runs one image through stem, blocks, head and pooling into `features`.
    fn forward_image(&self, exec: Exec, image: &[f32], features: &mut [f32]) {
        WORKSPACE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut ws) => {
                ws.reserve(self.max_activation);
                self.forward_image_with(exec, image, &mut ws, features);
            }
            // This thread is already in a forward pass: rayon ran another
            // call here while the first one waits for its threads.
            Err(_) => {
                let mut ws = Workspace::default();
                ws.reserve(self.max_activation);
                self.forward_image_with(exec, image, &mut ws, features);
            }
        });
    }

    fn forward_image_with(
        &self,
        exec: Exec,
        image: &[f32],
        ws: &mut Workspace,
        features: &mut [f32],
    ) {
        let res = self.kind.resolution() as usize;
        let (mut h, mut w) = self.stem.output_size(res, res);
        let mut channels = self.stem.out_channels;
        self.stem
            .forward(exec, image, res, res, &mut ws.current[..h * w * channels]);

        for block in &self.blocks {
            let (oh, ow) = block.depthwise.output_size(h, w);
            let out_channels = block.project.out_channels;
            block.forward(
                exec,
                &ws.current[..h * w * channels],
                h,
                w,
                &mut ws.next[..oh * ow * out_channels],
            );
            std::mem::swap(&mut ws.current, &mut ws.next);
            (h, w, channels) = (oh, ow, out_channels);
        }

        let dim = self.head.out_channels;
        let head = &mut ws.head[..h * w * dim];
        self.head
            .forward(exec, &ws.current[..h * w * channels], None, head);
        features.fill(0.0);
        for pixel in head.chunks_exact(dim) {
            for (f, &x) in features.iter_mut().zip(pixel) {
                *f += x;
            }
        }
        let scale = 1.0 / (h * w) as f32;
        for f in features.iter_mut() {
            *f *= scale;
        }
    }
}
