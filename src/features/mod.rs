//! Pooled backbone features for image files, computed in batches and cached
//! on disk by image content.

mod cache;

use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;

pub use cache::{content_sha256, FeatureCache, FEATURE_CODE_VERSION};

use crate::backbone::efficientnet::EfficientNet;
use crate::backbone::weights::ResolvedWeights;
use crate::backbone::{BackboneKind, Weights};
use crate::data::loader::Loader;
use crate::data::transform::Preprocess;

/// An input that yielded no features: the file and the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// Runs the frozen backbone over image files, with preprocessing fixed by
/// the backbone, and consults the feature cache first.
pub struct Extractor {
    kind: BackboneKind,
    weights_sha256: String,
    net: EfficientNet,
    preprocess: Preprocess,
    batch_size: usize,
    cache: Option<FeatureCache>,
}

impl Extractor {
    /// Builds the network from loaded weights. `cache` is `None` to always
    /// recompute.
    pub fn new(
        resolved: &ResolvedWeights,
        weights: &Weights,
        preprocess: Preprocess,
        batch_size: usize,
        cache: Option<FeatureCache>,
    ) -> Result<Self> {
        anyhow::ensure!(batch_size > 0, "the batch size must be at least 1");
        let net = EfficientNet::from_weights(resolved.kind, weights)?;
        Ok(Extractor {
            kind: resolved.kind,
            weights_sha256: resolved.sha256.clone(),
            net,
            preprocess,
            batch_size,
            cache,
        })
    }

    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    /// SHA-256 of the checkpoint the network was built from.
    pub fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Length of each feature vector.
    pub fn dim(&self) -> usize {
        self.kind.feature_dim()
    }

    /// Computes one feature vector per path, in input order. `on_done` is
    /// called with the number of inputs finished since its last call.
    pub fn extract(
        &self,
        paths: &[PathBuf],
        on_done: &mut dyn FnMut(usize),
    ) -> Vec<Result<Vec<f32>, InputError>> {
        let mut results: Vec<Option<Result<Vec<f32>, InputError>>> = vec![None; paths.len()];
        let keys = self.content_keys(paths, &mut results);

        let mut misses = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            if results[index].is_some() {
                continue;
            }
            let cached = key
                .as_ref()
                .zip(self.cache.as_ref())
                .and_then(|(key, cache)| cache.get(key));
            match cached {
                Some(features) => results[index] = Some(Ok(features)),
                None => misses.push(index),
            }
        }
        on_done(paths.len() - misses.len());

        self.compute(paths, &misses, &keys, &mut results, on_done);
        results
            .into_iter()
            .map(|result| result.expect("every input has a result"))
            .collect()
    }

    /// Hashes every file's content in parallel; unreadable files get their
    /// error in `results` and no key.
    fn content_keys(
        &self,
        paths: &[PathBuf],
        results: &mut [Option<Result<Vec<f32>, InputError>>],
    ) -> Vec<Option<String>> {
        if self.cache.is_none() {
            return vec![None; paths.len()];
        }
        let hashed: Vec<Result<String, InputError>> = paths
            .par_iter()
            .map(|path| {
                std::fs::read(path)
                    .map(|bytes| content_sha256(&bytes))
                    .map_err(|err| input_error(path, format!("failed to read the file: {err}")))
            })
            .collect();
        hashed
            .into_iter()
            .enumerate()
            .map(|(index, hash)| match hash {
                Ok(key) => Some(key),
                Err(err) => {
                    results[index] = Some(Err(err));
                    None
                }
            })
            .collect()
    }

    /// Decodes and runs the backbone on the inputs at `indices`, filling
    /// their results and the cache.
    fn compute(
        &self,
        paths: &[PathBuf],
        indices: &[usize],
        keys: &[Option<String>],
        results: &mut [Option<Result<Vec<f32>, InputError>>],
        on_done: &mut dyn FnMut(usize),
    ) {
        if indices.is_empty() {
            return;
        }
        let miss_paths: Vec<PathBuf> = indices.iter().map(|&i| paths[i].clone()).collect();
        let loader = Loader::new(miss_paths, self.preprocess.clone(), self.batch_size);
        let dim = self.dim();
        for batch in loader {
            for (position, error) in batch.errors {
                let index = indices[position];
                results[index] = Some(Err(input_error(&paths[index], error.kind.to_string())));
            }
            if !batch.ok.is_empty() {
                match self.net.features(&batch.tensors, batch.ok.len()) {
                    Ok(features) => {
                        for (row, &position) in batch.ok.iter().enumerate() {
                            let index = indices[position];
                            let vector = features[row * dim..(row + 1) * dim].to_vec();
                            self.store(&paths[index], keys[index].as_deref(), &vector);
                            results[index] = Some(Ok(vector));
                        }
                    }
                    Err(err) => {
                        for &position in &batch.ok {
                            let index = indices[position];
                            let message = format!("the backbone failed on this batch: {err:#}");
                            results[index] = Some(Err(input_error(&paths[index], message)));
                        }
                    }
                }
            }
            on_done(batch.len);
        }
    }

    /// Writes one entry to the cache. A failed write costs only a later
    /// recomputation, so it is reported on stderr once and not returned.
    fn store(&self, path: &Path, key: Option<&str>, features: &[f32]) {
        let (Some(cache), Some(key)) = (self.cache.as_ref(), key) else {
            return;
        };
        if let Err(err) = cache.put(key, features) {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "warning: the feature cache is not being written ({err:#}; first seen for {})",
                    path.display()
                )
            });
        }
    }
}

fn input_error(path: &Path, message: String) -> InputError {
    InputError {
        path: path.to_path_buf(),
        message,
    }
}
