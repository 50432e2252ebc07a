//! Saving and loading the single-file model.

use std::collections::HashMap;
use std::path::Path;

use pantry::backbone::BackboneKind;
use pantry::data::transform::Preprocess;
use pantry::model_file::{ModelFile, FORMAT_VERSION, METADATA_KEY};
use pantry::train::{fit, FeatureSet, TrainConfig};
use safetensors::{Dtype, SafeTensors};

const DIM: usize = 6;
const CLASSES: usize = 3;

/// Features where class `c` is marked by a large value in dimension `c`.
fn features(per_class: usize) -> FeatureSet {
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for i in 0..per_class * CLASSES {
        let class = i % CLASSES;
        for d in 0..DIM {
            let noise = ((i * 7 + d * 3) % 5) as f32 * 0.1;
            values.push(if d == class { 3.0 } else { 0.0 } + noise);
        }
        labels.push(class);
    }
    FeatureSet::new(values, labels, DIM).unwrap()
}

fn trained_model() -> ModelFile {
    let config = TrainConfig {
        epochs: 5,
        batch_size: 8,
        hidden: vec![8],
        ..TrainConfig::default()
    };
    let head = fit(&features(8), &features(3), CLASSES, &config, &mut |_| {}).unwrap();
    ModelFile::new(
        vec!["apple".into(), "milk".into(), "oat".into()],
        BackboneKind::Lite0,
        "ab".repeat(32),
        Preprocess::for_resolution(224),
        head,
    )
    .unwrap()
}

/// Rewrites the pantry JSON of the model at `path` with `edit`.
fn edit_metadata(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()[METADATA_KEY]).unwrap();
    edit(&mut json);
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let info = HashMap::from([(METADATA_KEY.to_string(), json.to_string())]);
    let rewritten = safetensors::serialize(file.tensors(), Some(info)).unwrap();
    std::fs::write(path, rewritten).unwrap();
}

fn load_error(path: &Path) -> String {
    format!("{:#}", ModelFile::load(path).unwrap_err())
}

#[test]
fn round_trip_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let model = trained_model();
    model.save(&path).unwrap();
    let loaded = ModelFile::load(&path).unwrap();

    assert_eq!(loaded.labels, model.labels);
    assert_eq!(loaded.backbone, model.backbone);
    assert_eq!(loaded.backbone_sha256, model.backbone_sha256);
    assert_eq!(loaded.preprocess, model.preprocess);
    assert_eq!(loaded.created, model.created);
    assert_eq!(loaded.pantry_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(loaded.validation.best_epoch, model.validation.best_epoch);
    assert_eq!(loaded.head().spec, model.head().spec);
    assert_eq!(loaded.head().config, model.head().config);
    assert_eq!(loaded.head().tensors, model.head().tensors);
    assert_eq!(loaded.head().history.len(), model.head().history.len());

    let probe = features(2);
    let before = model
        .head()
        .predict_proba(probe.features(), probe.len())
        .unwrap();
    let after = loaded
        .head()
        .predict_proba(probe.features(), probe.len())
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn metadata_has_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    trained_model().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()[METADATA_KEY]).unwrap();
    assert_eq!(json["format_version"], FORMAT_VERSION);
    assert_eq!(json["backbone"], "efficientnet-lite0");
    assert_eq!(json["labels"][1], "milk");
    assert_eq!(json["head"]["hidden"], serde_json::json!([8]));
    assert_eq!(json["training"]["epochs"], 5);
    assert!(json["validation"]["macro_f1"].is_number());
    assert!(json["preprocess"]["resolution"].is_number());
    let created = json["created"].as_str().unwrap();
    assert_eq!(created.len(), "2024-03-01T13:02:03Z".len(), "{created}");
    assert!(created.ends_with('Z'), "{created}");
}

#[test]
fn corrupt_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"this is not a model at all").unwrap();
    let message = load_error(&path);
    assert!(message.contains("garbage.safetensors"), "{message}");
    assert!(
        message.contains("not a valid safetensors file"),
        "{message}"
    );
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    trained_model().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let message = load_error(&path);
    assert!(message.contains("cut.safetensors"), "{message}");
    assert!(message.contains("corrupt or truncated"), "{message}");
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let message = load_error(&dir.path().join("absent.safetensors"));
    assert!(message.contains("absent.safetensors"), "{message}");
}

#[test]
fn foreign_safetensors_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.safetensors");
    let data = [0u8; 16];
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap();
    let bytes = safetensors::serialize([("weight", view)], None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let message = load_error(&path);
    assert!(
        message.contains("foreign.safetensors is not a pantry model: no pantry metadata"),
        "{message}"
    );
}

#[test]
fn future_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.safetensors");
    trained_model().save(&path).unwrap();
    edit_metadata(&path, |json| {
        json["format_version"] = serde_json::json!(FORMAT_VERSION + 1);
        json["labels"] = serde_json::json!("a field that changed shape");
    });
    let message = load_error(&path);
    assert!(message.contains("future.safetensors"), "{message}");
    assert!(
        message.contains(&format!("version {}", FORMAT_VERSION + 1)),
        "{message}"
    );
    assert!(
        message.contains(&format!("up to {FORMAT_VERSION}")),
        "{message}"
    );
}

#[test]
fn wrong_tensor_shape_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shape.safetensors");
    trained_model().save(&path).unwrap();
    // The file's tensors are for one hidden layer of 8; claim 9.
    edit_metadata(&path, |json| {
        json["head"]["hidden"] = serde_json::json!([9])
    });
    let message = load_error(&path);
    assert!(message.contains("shape.safetensors"), "{message}");
    assert!(message.contains("dense.0.weight"), "{message}");
}

#[test]
fn label_count_must_match_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.safetensors");
    trained_model().save(&path).unwrap();
    edit_metadata(&path, |json| {
        json["labels"] = serde_json::json!(["only one"])
    });
    let message = load_error(&path);
    assert!(
        message.contains("1 labels for a head with 3 classes"),
        "{message}"
    );

    let model = trained_model();
    let result = ModelFile::new(
        vec!["a".into()],
        model.backbone,
        model.backbone_sha256.clone(),
        model.preprocess.clone(),
        model.head().clone(),
    );
    assert!(result.is_err());
}

#[cfg(unix)]
#[test]
fn saved_model_is_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    trained_model().save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o644, 0o644, "mode {mode:o}");
}
