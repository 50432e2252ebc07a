//! Numeric kernels for the backbone's inference path.
//!
//! Activations are NHWC float32: one image is a row-major `[height, width,
//! channels]` array, so a 1x1 convolution is a GEMM of `[pixels, c_in]` by
//! `[c_in, c_out]`. Every kernel applies its bias, optional residual and
//! activation in the same pass that computes the convolution. Each kernel has
//! an explicit AVX2+FMA path and a portable path, chosen by [`Isa`], and the
//! [`reference`] module contains a naive convolution that tests compare both with.

use std::ops::Range;

pub mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_avx2;
#[cfg(target_arch = "x86_64")]
mod gemm_avx2;
pub mod pointwise;
pub mod reference;
pub mod stem;

/// Environment variable that forces the portable kernels when set to `portable`.
pub const KERNELS_ENV: &str = "PANTRY_KERNELS";

/// Instruction set a kernel call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust that the compiler vectorizes for the build target, plus the
    /// `gemm` crate (which picks its own SIMD path at run time).
    Portable,
    /// Hand-written x86-64 AVX2 and FMA kernels.
    Avx2Fma,
}

impl Isa {
    /// Returns the fastest instruction set this CPU supports, or
    /// [`Isa::Portable`] when `PANTRY_KERNELS=portable` is set.
    pub fn detect() -> Isa {
        match std::env::var(KERNELS_ENV) {
            Ok(value) if value.eq_ignore_ascii_case("portable") => Isa::Portable,
            _ => Isa::best_available(),
        }
    }

    /// Returns the fastest instruction set this CPU supports.
    pub fn best_available() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }

    /// Returns whether this CPU can run kernels of this instruction set.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2Fma => Isa::best_available() == Isa::Avx2Fma,
        }
    }
}

/// Activation applied after a convolution's bias (and residual, if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}

/// Execution settings of a kernel call: its instruction set, and whether it
/// may split its work over the rayon thread pool. Callers that already run one image per
/// thread pass `parallel: false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exec {
    pub isa: Isa,
    pub parallel: bool,
}

/// Padding of one spatial axis under TensorFlow's `SAME` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamePadding {
    /// Output length, `ceil(input / stride)`.
    pub output: usize,
    /// Zero rows (or columns) added before the input.
    pub before: usize,
    /// Zero rows (or columns) added after the input; one more than `before`
    /// when the total is odd.
    pub after: usize,
}

/// Computes `SAME` padding for an axis of `input` samples, a kernel of
/// `kernel` taps and `stride`.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> SamePadding {
    assert!(
        stride > 0 && kernel > 0,
        "kernel and stride must be positive"
    );
    let output = input.div_ceil(stride);
    let needed = (output.saturating_sub(1)) * stride + kernel;
    let total = needed.saturating_sub(input);
    SamePadding {
        output,
        before: total / 2,
        after: total - total / 2,
    }
}

/// Taps `first..last` of a kernel axis that land inside the input for the
/// output sample whose first tap sits at `origin` (negative in the padding).
#[inline(always)]
fn valid_taps(origin: isize, kernel: usize, input: usize) -> (usize, usize) {
    let first = (-origin).clamp(0, kernel as isize) as usize;
    let last = (input as isize - origin).clamp(0, kernel as isize) as usize;
    (first, last.max(first))
}

/// Copies the columns `columns` of a row-major matrix whose rows contain
/// `row_len` values, as a row-major matrix of `columns.len()` columns.
fn select_columns(matrix: &[f32], row_len: usize, columns: Range<usize>) -> Vec<f32> {
    matrix
        .chunks_exact(row_len)
        .flat_map(|row| &row[columns.clone()])
        .copied()
        .collect()
}

/// Splits `rows` output rows of `row_len` values each into chunks and runs
/// `work(first_row, chunk)` on each, over the rayon pool when `parallel`.
fn for_row_chunks<F>(output: &mut [f32], row_len: usize, parallel: bool, work: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    use rayon::prelude::*;
    let rows = output.len() / row_len.max(1);
    if !parallel || rows < 2 {
        work(0, output);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    // A few chunks per thread so that uneven rows (borders) still balance.
    let rows_per_chunk = rows.div_ceil(threads * 4).max(1);
    output
        .par_chunks_mut(rows_per_chunk * row_len)
        .enumerate()
        .for_each(|(index, chunk)| work(index * rows_per_chunk, chunk));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 input, 3x3 stride 2: 112 outputs need 225 samples, one pad after.
        assert_eq!(
            same_padding(224, 3, 2),
            SamePadding {
                output: 112,
                before: 0,
                after: 1
            }
        );
        assert_eq!(
            same_padding(113, 5, 2),
            SamePadding {
                output: 57,
                before: 2,
                after: 2
            }
        );
        assert_eq!(
            same_padding(14, 5, 1),
            SamePadding {
                output: 14,
                before: 2,
                after: 2
            }
        );
        assert_eq!(
            same_padding(56, 5, 2),
            SamePadding {
                output: 28,
                before: 1,
                after: 2
            }
        );
    }

    #[test]
    fn select_columns_keeps_column_range() {
        // Rows [0 1 2 3] and [4 5 6 7]; columns 1..3 of each.
        let matrix: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(select_columns(&matrix, 4, 1..3), vec![1.0, 2.0, 5.0, 6.0]);
    }

    #[test]
    fn valid_taps_clip_to_input() {
        assert_eq!(valid_taps(-2, 5, 10), (2, 5));
        assert_eq!(valid_taps(8, 5, 10), (0, 2));
        assert_eq!(valid_taps(3, 3, 10), (0, 3));
    }
}
