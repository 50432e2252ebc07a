//! The on-disk feature cache: one small file per image, keyed by the image
//! file's content, the backbone weights and the preprocessing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::backbone::BackboneKind;
use crate::cache::{cache_root, write_atomic};
use crate::data::transform::Preprocess;

/// Version of the code that computes features, part of every cache key.
/// Bump it when decoding, preprocessing or the backbone kernels change
/// their output, so that features from older code are not reused.
pub const FEATURE_CODE_VERSION: &str = "2";

/// Feature vectors stored under one folder per (backbone, weights,
/// preprocessing) combination, one file per image content hash.
///
/// Entries are raw little-endian float32 vectors written atomically, so a
/// crash or a concurrent writer never leaves a partial entry behind. A file
/// of the wrong length is treated as a miss and rewritten.
#[derive(Clone, Debug)]
pub struct FeatureCache {
    dir: PathBuf,
    dim: usize,
}

impl FeatureCache {
    /// Opens the cache for one backbone and preprocessing in the user's
    /// cache root (see [`crate::cache::cache_root`]).
    pub fn open(
        kind: BackboneKind,
        backbone_sha256: &str,
        preprocess: &Preprocess,
    ) -> Result<Self> {
        let root = cache_root()?.join("features");
        Ok(Self::open_in(&root, kind, backbone_sha256, preprocess))
    }

    /// Opens the cache below `root`, creating nothing until the first write.
    pub fn open_in(
        root: &Path,
        kind: BackboneKind,
        backbone_sha256: &str,
        preprocess: &Preprocess,
    ) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(FEATURE_CODE_VERSION.as_bytes());
        hasher.update([0]);
        hasher.update(backbone_sha256.as_bytes());
        hasher.update([0]);
        hasher.update(preprocess.cache_key().as_bytes());
        let variant = hex::encode(&hasher.finalize()[..8]);
        FeatureCache {
            dir: root.join(format!("{}-{variant}", kind.name())),
            dim: kind.feature_dim(),
        }
    }

    /// Folder containing this cache's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, content_sha256: &str) -> PathBuf {
        let shard = &content_sha256[..2.min(content_sha256.len())];
        self.dir.join(shard).join(format!("{content_sha256}.f32"))
    }

    /// Returns the cached vector for an image content hash, if present and
    /// of the expected length.
    pub fn get(&self, content_sha256: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.entry_path(content_sha256)).ok()?;
        if bytes.len() != self.dim * 4 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    /// Stores a feature vector for an image content hash.
    pub fn put(&self, content_sha256: &str, features: &[f32]) -> Result<()> {
        anyhow::ensure!(
            features.len() == self.dim,
            "feature vector has {} values, expected {}",
            features.len(),
            self.dim
        );
        let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = self.entry_path(content_sha256);
        write_atomic(&path, &bytes)
            .with_context(|| format!("failed to write the feature cache entry {}", path.display()))
    }
}

/// Returns the hex SHA-256 of a file's bytes: the content part of a cache key.
pub fn content_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
