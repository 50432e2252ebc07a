//! Tests of the legacy `torch.save` reader on hand-assembled checkpoints and,
//! when available, on the real EfficientNet-Lite checkpoints.

mod common;

use std::path::{Path, PathBuf};

use common::{Checkpoint, Pickle, StorageEntry, TensorEntry};
use pantry::backbone::legacy::{read_checkpoint, read_checkpoint_file};
use pantry::backbone::{load_safetensors, BackboneKind, Weights};

fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
}

fn error_text(result: anyhow::Result<Weights>) -> String {
    match result {
        Ok(weights) => panic!("expected an error, got {} tensors", weights.len()),
        Err(err) => format!("{err:#}"),
    }
}

#[test]
fn strided_tensors_become_row_major() {
    let values = iota(108);
    // (out=4, in=3, kh=3, kw=3) stored in TensorFlow's HWIO order, as the
    // real `_conv_stem.weight` is: strides (1, 4, 36, 12).
    let conv = TensorEntry::new("conv.weight", "s0", 0, &[4, 3, 3, 3], &[1, 4, 36, 12]);
    // A transposed matrix, as `_fc.weight` is: (5, 4) with strides (1, 5).
    let fc = TensorEntry::new("fc.weight", "s1", 0, &[5, 4], &[1, 5]);
    let checkpoint = Checkpoint::build(
        &[conv, fc],
        &[
            StorageEntry::f32("s0", &values),
            StorageEntry::f32("s1", &values[..20]),
        ],
    );
    let weights = read_checkpoint(&checkpoint.bytes()).unwrap();

    let conv = &weights["conv.weight"];
    assert_eq!(conv.shape, vec![4, 3, 3, 3]);
    let mut expected = Vec::new();
    for o in 0..4 {
        for i in 0..3 {
            for h in 0..3 {
                for w in 0..3 {
                    expected.push(values[o + 4 * i + 36 * h + 12 * w]);
                }
            }
        }
    }
    assert_eq!(conv.data, expected);

    let fc = &weights["fc.weight"];
    assert_eq!(fc.shape, vec![5, 4]);
    let expected: Vec<f32> = (0..5)
        .flat_map(|r| (0..4).map(move |c| r + 5 * c))
        .map(|i| values[i])
        .collect();
    assert_eq!(fc.data, expected);
}

#[test]
fn shared_storage_with_offsets() {
    let values = iota(16);
    let tensors = [
        TensorEntry::new("a", "shared", 0, &[4], &[1]),
        TensorEntry::new("b", "shared", 4, &[2, 3], &[3, 1]),
        // Every other element from offset 10.
        TensorEntry::new("c", "shared", 10, &[3], &[2]),
        // A broadcast view: stride 0 repeats one element.
        TensorEntry::new("d", "shared", 15, &[2, 2], &[0, 0]),
        // A zero-dimensional tensor has one element.
        TensorEntry::new("scalar", "shared", 7, &[], &[]),
        TensorEntry::new("empty", "shared", 0, &[0, 3], &[3, 1]),
    ];
    let checkpoint = Checkpoint::build(&tensors, &[StorageEntry::f32("shared", &values)]);
    let weights = read_checkpoint(&checkpoint.bytes()).unwrap();

    assert_eq!(weights.len(), 6);
    assert_eq!(weights["a"].data, values[0..4].to_vec());
    assert_eq!(weights["b"].shape, vec![2, 3]);
    assert_eq!(weights["b"].data, values[4..10].to_vec());
    assert_eq!(weights["c"].data, vec![values[10], values[12], values[14]]);
    assert_eq!(weights["d"].data, vec![values[15]; 4]);
    assert_eq!(weights["scalar"].shape, Vec::<usize>::new());
    assert_eq!(weights["scalar"].data, vec![values[7]]);
    assert_eq!(weights["empty"].shape, vec![0, 3]);
    assert!(weights["empty"].data.is_empty());
}

#[test]
fn storage_view_offsets_tensor() {
    let values = iota(12);
    let mut tensor = TensorEntry::new("v", "root", 1, &[3], &[2]);
    tensor.view = Some(("view".to_owned(), 4, 7));
    let checkpoint = Checkpoint::build(&[tensor], &[StorageEntry::f32("root", &values)]);
    let weights = read_checkpoint(&checkpoint.bytes()).unwrap();
    // The view starts at element 4, the tensor at element 1 of the view.
    assert_eq!(weights["v"].data, vec![values[5], values[7], values[9]]);
}

#[test]
fn float_dtypes_convert_and_integers_are_skipped() {
    let half = [0x3c00u16, 0xc000, 0x3555, 0x0001];
    let bf16 = [0x3f80u16, 0xc0a0];
    let double = [0.1f64, -1e10, 3.0];
    let storages = [
        StorageEntry::raw(
            "h",
            "HalfStorage",
            2,
            half.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        StorageEntry::raw(
            "b",
            "BFloat16Storage",
            2,
            bf16.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        StorageEntry::raw(
            "d",
            "DoubleStorage",
            8,
            double.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        StorageEntry::i64("l", &[300]),
        StorageEntry::raw(
            "i",
            "IntStorage",
            4,
            [7i32, 8].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        StorageEntry::f32("f", &[1.5, 2.5]),
    ];
    let tensors = [
        TensorEntry::new("half", "h", 0, &[4], &[1]),
        TensorEntry::new("bfloat16", "b", 0, &[2], &[1]),
        TensorEntry::new("double", "d", 0, &[3], &[1]),
        TensorEntry::new("bn.num_batches_tracked", "l", 0, &[], &[]),
        TensorEntry::new("int", "i", 0, &[2], &[1]),
        TensorEntry::new("float", "f", 0, &[2], &[1]),
    ];
    let weights = read_checkpoint(&Checkpoint::build(&tensors, &storages).bytes()).unwrap();

    let mut names: Vec<&str> = weights.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["bfloat16", "double", "float", "half"]);
    assert_eq!(
        weights["half"].data,
        vec![1.0, -2.0, 0.333_251_95, 2f32.powi(-24)]
    );
    assert_eq!(weights["bfloat16"].data, vec![1.0, -5.0]);
    assert_eq!(weights["double"].data, vec![0.1f32, -1e10f32, 3.0]);
    assert_eq!(weights["float"].data, vec![1.5, 2.5]);
}

#[test]
fn long_memo_indices_are_read() {
    let values = iota(6);
    let tensors = [
        TensorEntry::new("x", "s", 0, &[2, 3], &[3, 1]),
        TensorEntry::new("y", "s", 0, &[3, 2], &[1, 3]),
    ];
    let checkpoint =
        Checkpoint::build_with(&tensors, &[StorageEntry::f32("s", &values)], 300, true);
    assert!(
        checkpoint.state.contains(&b'j'),
        "the encoder should use LONG_BINGET"
    );
    let weights = read_checkpoint(&checkpoint.bytes()).unwrap();
    assert_eq!(weights["x"].data, values);
    assert_eq!(
        weights["y"].data,
        vec![values[0], values[3], values[1], values[4], values[2], values[5]]
    );
}

fn small_checkpoint() -> Checkpoint {
    let tensors = [
        TensorEntry::new("w", "s0", 0, &[2, 2], &[1, 2]),
        TensorEntry::new("n", "s1", 0, &[], &[]),
    ];
    Checkpoint::build(
        &tensors,
        &[
            StorageEntry::f32("s0", &iota(4)),
            StorageEntry::i64("s1", &[3]),
        ],
    )
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_checkpoint().bytes();
    assert!(read_checkpoint(&bytes).is_ok());
    for len in 0..bytes.len() {
        let result = read_checkpoint(&bytes[..len]);
        assert!(
            result.is_err(),
            "a file cut to {len} of {} bytes was accepted",
            bytes.len()
        );
    }
    let message = error_text(read_checkpoint(&bytes[..bytes.len() - 3]));
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = small_checkpoint().bytes();
    bytes.extend([0, 0]);
    let message = error_text(read_checkpoint(&bytes));
    assert!(message.contains("2 unexpected bytes"), "{message}");
}

#[test]
fn bad_magic_number_is_rejected() {
    let mut checkpoint = small_checkpoint();
    checkpoint.magic = Pickle::new().long(common::MAGIC_NUMBER + 1).finish();
    let message = error_text(read_checkpoint(&checkpoint.bytes()));
    assert!(
        message.contains("invalid magic number 119547037146038801333357"),
        "{message}"
    );
    assert!(
        message.contains("not a legacy PyTorch checkpoint"),
        "{message}"
    );
}

#[test]
fn zip_checkpoint_is_rejected() {
    let message = error_text(read_checkpoint(b"PK\x03\x04rest of an archive"));
    assert!(message.contains("zip archive"), "{message}");
}

#[test]
fn unknown_opcode_names_offset() {
    let mut checkpoint = small_checkpoint();
    // STACK_GLOBAL (0x93, protocol 4) right after the state dict's PROTO.
    checkpoint.state.insert(2, 0x93);
    let offset = checkpoint.state_offset() + 2;
    let message = error_text(read_checkpoint(&checkpoint.bytes()));
    assert!(message.contains("pickle opcode 0x93"), "{message}");
    assert!(
        message.contains(&format!("at byte offset {offset}")),
        "{message}"
    );
    assert!(message.contains("unsupported opcode"), "{message}");
}

#[test]
fn big_endian_checkpoint_is_rejected() {
    let tensors = [TensorEntry::new("w", "s0", 0, &[2], &[1])];
    let checkpoint =
        Checkpoint::build_with(&tensors, &[StorageEntry::f32("s0", &[1.0, 2.0])], 0, false);
    let message = error_text(read_checkpoint(&checkpoint.bytes()));
    assert!(message.contains("big-endian"), "{message}");
}

#[test]
fn out_of_bounds_stride_names_tensor() {
    let tensors = [TensorEntry::new("conv.weight", "s0", 1, &[2, 2], &[2, 1])];
    let checkpoint = Checkpoint::build(&tensors, &[StorageEntry::f32("s0", &iota(4))]);
    let message = error_text(read_checkpoint(&checkpoint.bytes()));
    assert!(message.contains("invalid tensor conv.weight"), "{message}");
    assert!(message.contains("reach element 4"), "{message}");
}

#[test]
fn storage_count_mismatch_is_rejected() {
    let mut checkpoint = small_checkpoint();
    checkpoint.data[0] = 5;
    let message = error_text(read_checkpoint(&checkpoint.bytes()));
    assert!(message.contains("storage s0"), "{message}");
    assert!(message.contains("has 5 elements"), "{message}");
}

#[test]
fn arbitrary_call_is_rejected() {
    let mut state = Pickle::new();
    state
        .global("os", "system")
        .str("echo hi")
        .op(0x85)
        .op(b'R');
    let mut checkpoint = small_checkpoint();
    checkpoint.state = state.finish();
    let message = error_text(read_checkpoint(&checkpoint.bytes()));
    assert!(message.contains("unsupported call os.system"), "{message}");
}

#[test]
fn non_tensor_entry_is_rejected() {
    let mut state = Pickle::new();
    state.op(b'}').str("epoch").int(3).op(b's');
    let mut checkpoint = small_checkpoint();
    checkpoint.state = state.finish();
    checkpoint.keys = Pickle::new().op(b']').finish();
    checkpoint.data.clear();
    let message = error_text(read_checkpoint(&checkpoint.bytes()));
    assert!(
        message.contains("state dict entry epoch is a int"),
        "{message}"
    );
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pth");
    let message = format!("{:#}", read_checkpoint_file(&missing).unwrap_err());
    assert!(message.contains("missing.pth"), "{message}");

    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"not a pickle").unwrap();
    let message = format!("{:#}", read_checkpoint_file(&garbage).unwrap_err());
    assert!(message.contains("garbage.pth"), "{message}");
    assert!(message.contains("magic number"), "{message}");
}

/// Finds `efficientnet-liteN*.pth` in `dir`.
fn find_checkpoint(dir: &Path, kind: BackboneKind) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().map(|e| e.path()).find(|path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.starts_with(kind.name()) && name.ends_with(".pth")
    })
}

/// Reads the real checkpoints in `$PANTRY_TEST_CHECKPOINT_DIR` and, when
/// `$PANTRY_TEST_REFERENCE_SAFETENSORS_DIR` names a folder of independent
/// conversions (`liteN.safetensors` or `efficientnet-liteN.safetensors`),
/// requires bit-identical tensors.
#[test]
fn real_checkpoints_match_reference() {
    let Some(dir) = std::env::var_os("PANTRY_TEST_CHECKPOINT_DIR") else {
        eprintln!("skipped: PANTRY_TEST_CHECKPOINT_DIR is not set (a folder with the efficientnet-liteN-*.pth checkpoints)");
        return;
    };
    let reference_dir =
        std::env::var_os("PANTRY_TEST_REFERENCE_SAFETENSORS_DIR").map(PathBuf::from);
    let mut checked = 0;
    for kind in BackboneKind::ALL {
        let Some(path) = find_checkpoint(Path::new(&dir), kind) else {
            continue;
        };
        let weights = read_checkpoint_file(&path).unwrap();
        assert_eq!(
            weights["_conv_stem.weight"].shape,
            vec![32, 3, 3, 3],
            "{}",
            path.display()
        );
        assert_eq!(
            weights["_fc.weight"].shape,
            vec![1000, 1280],
            "{}",
            path.display()
        );
        let head = &weights["_conv_head.weight"].shape;
        assert_eq!(
            (head[0], head[2], head[3]),
            (1280, 1, 1),
            "{}",
            path.display()
        );
        assert_eq!(
            weights["_bn1.weight"].shape,
            vec![1280],
            "{}",
            path.display()
        );
        assert!(!weights.keys().any(|k| k.ends_with("num_batches_tracked")));
        assert!(weights
            .values()
            .all(|t| t.data.iter().all(|v| v.is_finite())));
        checked += 1;

        let Some(reference_dir) = &reference_dir else {
            continue;
        };
        let short = kind.name().trim_start_matches("efficientnet-");
        let reference_path = [
            format!("{}.safetensors", kind.name()),
            format!("{short}.safetensors"),
        ]
        .into_iter()
        .map(|name| reference_dir.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no reference conversion for {kind} in {}",
                reference_dir.display()
            )
        });
        let reference = load_safetensors(&reference_path).unwrap();
        assert_eq!(weights.len(), reference.len(), "{kind}: tensor count");
        for (name, expected) in &reference {
            let actual = weights
                .get(name)
                .unwrap_or_else(|| panic!("{kind}: {name} is missing"));
            assert_eq!(actual.shape, expected.shape, "{kind}: shape of {name}");
            let same = actual
                .data
                .iter()
                .zip(&expected.data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{kind}: values of {name} differ from {}",
                reference_path.display()
            );
        }
    }
    assert!(checked > 0, "no efficientnet-liteN*.pth file in {dir:?}");
}
