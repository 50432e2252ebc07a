//! Naive convolution that the fast kernels are tested against.

use super::{same_padding, Activation};

/// Shape of a grouped 2-D convolution with `SAME` padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub height: usize,
    pub width: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// 1 for a dense convolution, `in_channels` for a depthwise one.
    pub groups: usize,
}

impl ConvShape {
    /// Output `(height, width)`.
    pub fn output_size(&self) -> (usize, usize) {
        (
            same_padding(self.height, self.kernel, self.stride).output,
            same_padding(self.width, self.kernel, self.stride).output,
        )
    }
}

/// Convolves one NHWC image with weights in PyTorch layout
/// `[out_channels, in_channels / groups, kernel, kernel]`, then adds `bias`
/// and applies `activation`. Returns the `[out_h, out_w, out_channels]` output.
pub fn conv2d_same(
    shape: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    activation: Activation,
) -> Vec<f32> {
    let ConvShape {
        height,
        width,
        in_channels,
        out_channels,
        kernel,
        stride,
        groups,
    } = *shape;
    assert_eq!(in_channels % groups, 0, "groups must divide in_channels");
    assert_eq!(out_channels % groups, 0, "groups must divide out_channels");
    let group_in = in_channels / groups;
    let group_out = out_channels / groups;
    assert_eq!(input.len(), height * width * in_channels, "input length");
    assert_eq!(
        weight.len(),
        out_channels * group_in * kernel * kernel,
        "weight length"
    );
    assert_eq!(bias.len(), out_channels, "bias length");

    let pad_y = same_padding(height, kernel, stride);
    let pad_x = same_padding(width, kernel, stride);
    let mut output = vec![0.0; pad_y.output * pad_x.output * out_channels];
    for oy in 0..pad_y.output {
        for ox in 0..pad_x.output {
            for co in 0..out_channels {
                let group = co / group_out;
                // Accumulate in f64 so the reference is more precise than the
                // kernels under test.
                let mut sum = bias[co] as f64;
                for ky in 0..kernel {
                    let iy = (oy * stride + ky) as isize - pad_y.before as isize;
                    if iy < 0 || iy >= height as isize {
                        continue;
                    }
                    for kx in 0..kernel {
                        let ix = (ox * stride + kx) as isize - pad_x.before as isize;
                        if ix < 0 || ix >= width as isize {
                            continue;
                        }
                        let pixel = (iy as usize * width + ix as usize) * in_channels;
                        for ci in 0..group_in {
                            let x = input[pixel + group * group_in + ci];
                            let w = weight[((co * group_in + ci) * kernel + ky) * kernel + kx];
                            sum += x as f64 * w as f64;
                        }
                    }
                }
                output[(oy * pad_x.output + ox) * out_channels + co] = activation.apply(sum as f32);
            }
        }
    }
    output
}
