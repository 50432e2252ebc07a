//! 1x1 convolution (a GEMM over pixels) with the bias, an optional residual
//! and the activation fused into the output pass.

use std::ops::Range;

use rayon::prelude::*;

use super::{for_row_chunks, select_columns, Activation, Exec, Isa};

/// Output channels per column block, the AVX2 kernel's panel width.
const PANEL: usize = 16;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(PANEL == super::gemm_avx2::NR);

/// Threaded products with fewer output pixels than this split their
/// columns instead of their rows.
const COLUMN_SPLIT_PIXELS: usize = 256;

/// A 1x1 convolution `[pixels, in_channels] -> [pixels, out_channels]`, or
/// any dense layer with the same shape, with its weights prepared for both
/// instruction sets.
#[derive(Clone, Debug)]
pub struct PointwiseConv {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Row-major `[in_channels, out_channels]`, for the `gemm` crate.
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// `weight` packed in panels for the AVX2 micro-kernel.
    packed: Vec<f32>,
    /// `bias` zero-padded to whole panels.
    padded_bias: Vec<f32>,
    pub activation: Activation,
}

impl PointwiseConv {
    /// Builds the convolution from PyTorch-layout weights `[out_channels,
    /// in_channels]` (the trailing 1x1 dimensions dropped).
    pub fn from_pytorch(
        in_channels: usize,
        out_channels: usize,
        weight: &[f32],
        bias: Vec<f32>,
        activation: Activation,
    ) -> Self {
        assert_eq!(weight.len(), in_channels * out_channels, "weight length");
        let mut transposed = vec![0.0; weight.len()];
        for co in 0..out_channels {
            for ci in 0..in_channels {
                transposed[ci * out_channels + co] = weight[co * in_channels + ci];
            }
        }
        Self::from_input_major(in_channels, out_channels, transposed, bias, activation)
    }

    /// Builds the convolution from row-major `[in_channels, out_channels]`
    /// weights.
    pub fn from_input_major(
        in_channels: usize,
        out_channels: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        activation: Activation,
    ) -> Self {
        assert_eq!(weight.len(), in_channels * out_channels, "weight length");
        assert_eq!(bias.len(), out_channels, "bias length");
        assert!(
            in_channels > 0,
            "a convolution needs at least one input channel"
        );
        #[cfg(target_arch = "x86_64")]
        let (packed, padded_bias) = {
            use super::gemm_avx2::{pack_b, NR};
            let mut padded_bias = bias.clone();
            padded_bias.resize(out_channels.div_ceil(NR) * NR, 0.0);
            (pack_b(&weight, in_channels, out_channels), padded_bias)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (packed, padded_bias) = (Vec::new(), Vec::new());
        PointwiseConv {
            in_channels,
            out_channels,
            weight,
            bias,
            packed,
            padded_bias,
            activation,
        }
    }

    /// Returns the convolution restricted to output channels `channels`.
    pub fn output_slice(&self, channels: Range<usize>) -> PointwiseConv {
        let weight = select_columns(&self.weight, self.out_channels, channels.clone());
        let bias = self.bias[channels.clone()].to_vec();
        Self::from_input_major(
            self.in_channels,
            channels.len(),
            weight,
            bias,
            self.activation,
        )
    }

    /// Returns the convolution restricted to input channels `channels`, for
    /// a product split along its inner dimension: the parts' outputs sum to
    /// this one's before the activation. With `bias` false the part adds no
    /// bias, so that only one part of the sum carries it.
    pub fn input_slice(&self, channels: Range<usize>, bias: bool) -> PointwiseConv {
        let n = self.out_channels;
        let weight = self.weight[channels.start * n..channels.end * n].to_vec();
        let bias = if bias {
            self.bias.clone()
        } else {
            vec![0.0; n]
        };
        Self::from_input_major(channels.len(), n, weight, bias, self.activation)
    }

    /// Computes `output = activation(input * weight + bias + residual)` for
    /// `input` of `[pixels, in_channels]`; `output` and `residual` are
    /// `[pixels, out_channels]`.
    pub fn forward(&self, exec: Exec, input: &[f32], residual: Option<&[f32]>, output: &mut [f32]) {
        let (k, n) = (self.in_channels, self.out_channels);
        let pixels = input.len() / k;
        assert_eq!(input.len(), pixels * k, "input length");
        assert_eq!(output.len(), pixels * n, "output length");
        if let Some(residual) = residual {
            assert_eq!(residual.len(), pixels * n, "residual length");
        }
        assert!(
            exec.isa.is_supported(),
            "{:?} kernels are not supported here",
            exec.isa
        );
        let threads = rayon::current_num_threads();
        let panels = n.div_ceil(PANEL);
        if exec.parallel && threads > 1 && pixels < COLUMN_SPLIT_PIXELS && panels >= 2 {
            // Few rows: split the columns, so each thread reads only its
            // share of the weights.
            let parts = threads.min(panels);
            let shared = SharedOutput {
                ptr: output.as_mut_ptr(),
                len: output.len(),
            };
            (0..parts).into_par_iter().for_each(|part| {
                let range = panels * part / parts..panels * (part + 1) / parts;
                // SAFETY: the parts compute disjoint column ranges of
                // `output`, which outlives this loop, and nothing else
                // accesses it meanwhile.
                unsafe { self.columns(exec.isa, input, residual, &shared, range) }
            });
            return;
        }
        for_row_chunks(output, n, exec.parallel, |first, chunk| {
            let rows = chunk.len() / n;
            let input = &input[first * k..(first + rows) * k];
            let residual = residual.map(|r| &r[first * n..(first + rows) * n]);
            match exec.isa {
                Isa::Portable => self.rows_portable(input, residual, chunk),
                Isa::Avx2Fma => self.rows_avx2(input, residual, None, chunk),
            }
        });
    }

    /// Computes the columns of `panels` (blocks of `PANEL` output channels)
    /// for all rows.
    ///
    /// # Safety
    /// No other thread may access those columns of `output` during the call.
    unsafe fn columns(
        &self,
        isa: Isa,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &SharedOutput,
        panels: Range<usize>,
    ) {
        let (k, n) = (self.in_channels, self.out_channels);
        let m = input.len() / k;
        let first = panels.start * PANEL;
        let last = (panels.end * PANEL).min(n);
        match isa {
            Isa::Portable => {
                gemm::gemm(
                    m,
                    last - first,
                    k,
                    output.ptr.wrapping_add(first),
                    1,
                    n as isize,
                    false,
                    input.as_ptr(),
                    1,
                    k as isize,
                    self.weight.as_ptr().wrapping_add(first),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                for row in 0..m {
                    let start = row * n + first;
                    assert!(start + last - first <= output.len, "output length");
                    let values =
                        std::slice::from_raw_parts_mut(output.ptr.add(start), last - first);
                    let residual = residual.map(|r| &r[start..start + last - first]);
                    self.epilogue(values, &self.bias[first..last], residual);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                let operands = self.avx2_operands(input, residual, None, panels);
                super::gemm_avx2::gemm(&operands, output.ptr, output.len);
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2Fma => unreachable!("AVX2 kernels exist only on x86-64"),
        }
    }

    /// Adds `bias` and `residual` to `values` and applies the activation.
    fn epilogue(&self, values: &mut [f32], bias: &[f32], residual: Option<&[f32]>) {
        for (o, &b) in values.iter_mut().zip(bias) {
            *o += b;
        }
        if let Some(residual) = residual {
            for (o, &r) in values.iter_mut().zip(residual) {
                *o += r;
            }
        }
        for o in values.iter_mut() {
            *o = self.activation.apply(*o);
        }
    }

    /// Runs the `gemm` crate, then the epilogue, on a block of rows.
    fn rows_portable(&self, input: &[f32], residual: Option<&[f32]>, output: &mut [f32]) {
        let (k, n) = (self.in_channels, self.out_channels);
        let m = output.len() / n;
        // SAFETY: the slices hold `m * k`, `k * n` and `m * n` values with the
        // row-major strides given, as `forward` asserted.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                output.as_mut_ptr(),
                1,
                n as isize,
                false,
                input.as_ptr(),
                1,
                k as isize,
                self.weight.as_ptr(),
                1,
                n as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (index, row) in output.chunks_exact_mut(n).enumerate() {
            let residual = residual.map(|r| &r[index * n..(index + 1) * n]);
            self.epilogue(row, &self.bias, residual);
        }
    }

    /// Computes `activation(input * weight + bias)` for `input` of
    /// `[pixels, in_channels]` into `output` laid out as `rows` describes,
    /// e.g. the interior of a horizontally padded image. Runs on the calling
    /// thread; values of `output` between the rows are left as they are.
    pub fn forward_rows(&self, isa: Isa, input: &[f32], rows: OutputRows, output: &mut [f32]) {
        let (k, n) = (self.in_channels, self.out_channels);
        let pixels = input.len() / k;
        assert_eq!(input.len(), pixels * k, "input length");
        assert!(isa.is_supported(), "{isa:?} kernels are not supported here");
        assert!(
            rows.pixels_per_row > 0 && rows.row_stride >= rows.pixels_per_row * n,
            "invalid output rows {rows:?}"
        );
        if pixels == 0 {
            return;
        }
        let row_count = pixels.div_ceil(rows.pixels_per_row);
        let last = pixels - (row_count - 1) * rows.pixels_per_row;
        let needed = (row_count - 1) * rows.row_stride + last * n;
        assert!(
            output.len() >= needed,
            "output length {} < {needed}",
            output.len()
        );
        match isa {
            Isa::Portable => {
                for (row, pixels) in input.chunks(rows.pixels_per_row * k).enumerate() {
                    let start = row * rows.row_stride;
                    let len = pixels.len() / k * n;
                    self.rows_portable(pixels, None, &mut output[start..start + len]);
                }
            }
            Isa::Avx2Fma => self.rows_avx2(input, None, Some(rows), output),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2_operands<'a>(
        &'a self,
        input: &'a [f32],
        residual: Option<&'a [f32]>,
        rows: Option<OutputRows>,
        panels: Range<usize>,
    ) -> super::gemm_avx2::Operands<'a> {
        let (lo, hi) = match self.activation {
            Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
        };
        super::gemm_avx2::Operands {
            m: input.len() / self.in_channels,
            k: self.in_channels,
            n: self.out_channels,
            a: input,
            packed_b: &self.packed,
            bias: &self.padded_bias,
            residual,
            lo,
            hi,
            groups: rows.map(|rows| super::gemm_avx2::RowGroups {
                rows: rows.pixels_per_row,
                stride: rows.row_stride,
            }),
            panels,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn rows_avx2(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        rows: Option<OutputRows>,
        output: &mut [f32],
    ) {
        let panels = 0..self.out_channels.div_ceil(PANEL);
        let operands = self.avx2_operands(input, residual, rows, panels);
        // SAFETY: the callers asserted that the CPU supports AVX2 and FMA;
        // the kernel checks every slice length, and `output` is borrowed
        // mutably for the call.
        unsafe { super::gemm_avx2::gemm(&operands, output.as_mut_ptr(), output.len()) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn rows_avx2(&self, _: &[f32], _: Option<&[f32]>, _: Option<OutputRows>, _: &mut [f32]) {
        unreachable!("AVX2 kernels exist only on x86-64")
    }
}

/// Output pointer shared by threads that write disjoint columns.
struct SharedOutput {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `forward` hands each thread a disjoint column range, so no two
// threads access the same element.
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

/// Layout of an output that is not contiguous: rows of `pixels_per_row`
/// pixels whose starts are `row_stride` floats apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRows {
    pub pixels_per_row: usize,
    pub row_stride: usize,
}
