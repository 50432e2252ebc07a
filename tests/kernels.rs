//! Checks the depthwise, pointwise and stem kernels against the naive
//! convolution in `kernels::reference`, on both instruction sets, serial and
//! split over threads.

use pantry::kernels::depthwise::{input_rows, DepthwiseConv, InputWindow};
use pantry::kernels::pointwise::PointwiseConv;
use pantry::kernels::reference::{conv2d_same, ConvShape};
use pantry::kernels::stem::StemConv;
use pantry::kernels::{Activation, Exec, Isa};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Returns every instruction set this CPU runs, each serial and threaded.
fn execs() -> Vec<Exec> {
    let mut execs = Vec::new();
    for isa in [Isa::Portable, Isa::Avx2Fma] {
        if !isa.is_supported() {
            eprintln!("note: {isa:?} kernels are not supported on this CPU; not tested");
            continue;
        }
        for parallel in [false, true] {
            execs.push(Exec { isa, parallel });
        }
    }
    execs
}

fn random(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Asserts that `actual` matches `expected` within an absolute-plus-relative
/// tolerance suited to float32 sums of a few hundred products.
fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let tolerance = 1e-4 + 1e-4 * e.abs();
        assert!(
            (a - e).abs() <= tolerance,
            "{what}: value {i} is {a}, expected {e}"
        );
    }
}

#[test]
fn depthwise_matches_naive_convolution() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Widths give every tail of the 8-pixel blocks at both strides; 200
    // channels make the AVX2 kernel sweep a row in several channel chunks.
    let sizes = [
        (1, 1),
        (2, 3),
        (7, 9),
        (8, 6),
        (13, 13),
        (16, 11),
        (3, 20),
        (4, 31),
    ];
    let channel_counts = [1, 5, 8, 19, 40, 200];
    // 7x7 takes the AVX2 kernel's general path.
    for kernel in [3, 5, 7] {
        for stride in [1, 2] {
            for &(height, width) in &sizes {
                for &channels in &channel_counts {
                    let activation = if channels % 2 == 0 {
                        Activation::Relu6
                    } else {
                        Activation::Identity
                    };
                    let shape = ConvShape {
                        height,
                        width,
                        in_channels: channels,
                        out_channels: channels,
                        kernel,
                        stride,
                        groups: channels,
                    };
                    let input = random(&mut rng, height * width * channels, 3.0);
                    let weight = random(&mut rng, channels * kernel * kernel, 1.0);
                    let bias = random(&mut rng, channels, 1.0);
                    let expected = conv2d_same(&shape, &input, &weight, &bias, activation);
                    let conv = DepthwiseConv::from_pytorch(
                        channels, kernel, stride, &weight, bias, activation,
                    );
                    let (oh, ow) = conv.output_size(height, width);
                    assert_eq!((oh, ow), shape.output_size());
                    for exec in execs() {
                        let mut output = vec![f32::NAN; oh * ow * channels];
                        conv.forward(exec, &input, height, width, &mut output);
                        let what = format!(
                            "depthwise k{kernel} s{stride} {height}x{width}x{channels} {exec:?}"
                        );
                        assert_close(&output, &expected, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn pointwise_matches_naive_convolution() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    // Pixel counts around the 6-row micro-tile and the 96-row block, input
    // channels around the micro-kernel's 4-step unrolling and past the
    // 256-deep k block, output channels around the 16-wide panel.
    let pixel_counts = [1, 5, 6, 7, 50, 97, 200];
    let in_counts = [1, 3, 7, 16, 258, 301, 600];
    let out_counts = [1, 8, 17, 40];
    for &pixels in &pixel_counts {
        for &k in &in_counts {
            for &n in &out_counts {
                for with_residual in [false, true] {
                    let activation = if with_residual {
                        Activation::Identity
                    } else {
                        Activation::Relu6
                    };
                    let shape = ConvShape {
                        height: 1,
                        width: pixels,
                        in_channels: k,
                        out_channels: n,
                        kernel: 1,
                        stride: 1,
                        groups: 1,
                    };
                    let input = random(&mut rng, pixels * k, 1.0);
                    let weight = random(&mut rng, n * k, 0.5);
                    let bias = random(&mut rng, n, 1.0);
                    let residual = random(&mut rng, pixels * n, 2.0);
                    let mut expected = conv2d_same(&shape, &input, &weight, &bias, activation);
                    if with_residual {
                        for (e, r) in expected.iter_mut().zip(&residual) {
                            *e += r;
                        }
                    }
                    let conv = PointwiseConv::from_pytorch(k, n, &weight, bias, activation);
                    let residual = with_residual.then_some(residual.as_slice());
                    for exec in execs() {
                        let mut output = vec![f32::NAN; pixels * n];
                        conv.forward(exec, &input, residual, &mut output);
                        let what = format!(
                            "pointwise {pixels}x{k}->{n} residual {with_residual} {exec:?}"
                        );
                        assert_close(&output, &expected, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn stem_matches_naive_convolution() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (height, width) in [(1, 1), (9, 9), (10, 12), (224, 224)] {
        let shape = ConvShape {
            height,
            width,
            in_channels: 3,
            out_channels: 32,
            kernel: 3,
            stride: 2,
            groups: 1,
        };
        let input = random(&mut rng, height * width * 3, 1.0);
        let weight = random(&mut rng, 32 * 3 * 9, 1.0);
        let bias = random(&mut rng, 32, 1.0);
        let expected = conv2d_same(&shape, &input, &weight, &bias, Activation::Relu6);
        let conv = StemConv::from_pytorch(3, 32, 3, 2, &weight, bias, Activation::Relu6);
        let (oh, ow) = conv.output_size(height, width);
        for exec in execs() {
            let mut output = vec![f32::NAN; oh * ow * 32];
            conv.forward(exec, &input, height, width, &mut output);
            assert_close(
                &output,
                &expected,
                &format!("stem {height}x{width} {exec:?}"),
            );
        }
    }
}

#[test]
fn simd_and_portable_paths_agree() {
    if !Isa::Avx2Fma.is_supported() {
        eprintln!("skipped: this CPU has no AVX2+FMA, so there is only the portable path");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let portable = Exec {
        isa: Isa::Portable,
        parallel: false,
    };
    let simd = Exec {
        isa: Isa::Avx2Fma,
        parallel: true,
    };

    // A Lite0-sized depthwise layer: 28x28x240, 5x5, stride 1.
    let (h, w, c) = (28, 28, 240);
    let input = random(&mut rng, h * w * c, 3.0);
    let weight = random(&mut rng, c * 25, 0.5);
    let bias = random(&mut rng, c, 1.0);
    let conv = DepthwiseConv::from_pytorch(c, 5, 1, &weight, bias, Activation::Relu6);
    let mut a = vec![0.0; h * w * c];
    let mut b = vec![0.0; h * w * c];
    conv.forward(portable, &input, h, w, &mut a);
    conv.forward(simd, &input, h, w, &mut b);
    assert_close(&b, &a, "depthwise 28x28x240 SIMD vs portable");

    // A Lite0-sized projection: 784 pixels, 1152 -> 192 channels.
    let (m, k, n) = (784, 1152, 192);
    let input = random(&mut rng, m * k, 1.0);
    let weight = random(&mut rng, n * k, 0.1);
    let bias = random(&mut rng, n, 1.0);
    let conv = PointwiseConv::from_pytorch(k, n, &weight, bias, Activation::Identity);
    let mut a = vec![0.0; m * n];
    let mut b = vec![0.0; m * n];
    conv.forward(portable, &input, None, &mut a);
    conv.forward(simd, &input, None, &mut b);
    assert_close(&b, &a, "pointwise 784x1152->192 SIMD vs portable");
}

#[test]
fn depthwise_window_rows_match_whole_image() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (height, width, channels) = (11, 9, 24);
    for kernel in [3, 5] {
        for stride in [1, 2] {
            let input = random(&mut rng, height * width * channels, 3.0);
            let weight = random(&mut rng, channels * kernel * kernel, 1.0);
            let bias = random(&mut rng, channels, 1.0);
            let conv = DepthwiseConv::from_pytorch(
                channels,
                kernel,
                stride,
                &weight,
                bias,
                Activation::Relu6,
            );
            let (oh, ow) = conv.output_size(height, width);
            let row_len = ow * channels;
            let padded = conv.pad_columns(&input, height, width);
            let padded_row = padded.len() / height;
            for exec in execs() {
                let mut whole = vec![0.0; oh * row_len];
                conv.forward(exec, &input, height, width, &mut whole);
                for first in 0..oh {
                    for last in first + 1..=oh {
                        // A window with exactly the input rows these outputs read.
                        let rows = input_rows(first..last, height, kernel, stride);
                        let window = InputWindow {
                            rows: &padded[rows.start * padded_row..rows.end * padded_row],
                            first_row: rows.start,
                            height,
                            width,
                        };
                        let mut band = vec![f32::NAN; (last - first) * row_len];
                        conv.forward_rows(exec, &window, first..last, &mut band);
                        assert_eq!(
                            band,
                            whole[first * row_len..last * row_len],
                            "k{kernel} s{stride} rows {first}..{last} {exec:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "not all in the window")]
fn depthwise_rejects_window_missing_rows() {
    let conv = DepthwiseConv::from_pytorch(8, 3, 1, &[0.5; 72], vec![0.0; 8], Activation::Relu6);
    let padded = conv.pad_columns(&[1.0; 6 * 5 * 8], 6, 5);
    let padded_row = padded.len() / 6;
    // Output row 2 reads input rows 1..4; the window starts at row 2.
    let window = InputWindow {
        rows: &padded[2 * padded_row..4 * padded_row],
        first_row: 2,
        height: 6,
        width: 5,
    };
    let mut out = vec![0.0; 5 * 8];
    let exec = Exec {
        isa: Isa::best_available(),
        parallel: false,
    };
    conv.forward_rows(exec, &window, 2..3, &mut out);
}
