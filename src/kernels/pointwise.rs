//! 1x1 convolution (a GEMM over pixels) with the bias, an optional residual
//! and the activation fused into the output pass.

use super::{for_row_chunks, Activation, Exec, Isa};

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
            for (o, &b) in row.iter_mut().zip(&self.bias) {
                *o += b;
            }
            if let Some(residual) = residual {
                for (o, &r) in row.iter_mut().zip(&residual[index * n..(index + 1) * n]) {
                    *o += r;
                }
            }
            for o in row.iter_mut() {
                *o = self.activation.apply(*o);
            }
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
    fn rows_avx2(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        rows: Option<OutputRows>,
        output: &mut [f32],
    ) {
        use super::gemm_avx2::{gemm, Operands, RowGroups};
        let (lo, hi) = match self.activation {
            Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
        };
        let operands = Operands {
            m: input.len() / self.in_channels,
            k: self.in_channels,
            n: self.out_channels,
            a: input,
            packed_b: &self.packed,
            bias: &self.padded_bias,
            residual,
            lo,
            hi,
            groups: rows.map(|rows| RowGroups {
                rows: rows.pixels_per_row,
                stride: rows.row_stride,
            }),
        };
        // SAFETY: the callers asserted that the CPU supports AVX2 and FMA;
        // the kernel checks every slice length.
        unsafe { gemm(&operands, output) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn rows_avx2(&self, _: &[f32], _: Option<&[f32]>, _: Option<OutputRows>, _: &mut [f32]) {
        unreachable!("AVX2 kernels exist only on x86-64")
    }
}

/// Layout of an output that is not contiguous: rows of `pixels_per_row`
/// pixels whose starts are `row_stride` floats apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRows {
    pub pixels_per_row: usize,
    pub row_stride: usize,
}
