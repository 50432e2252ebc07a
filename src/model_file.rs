//! The single-file model: a safetensors file with the head's tensors and,
//! under the `__metadata__` key `pantry`, a JSON object that records what
//! prediction needs besides the weights.
//!
//! The JSON has the keys `format_version`, `labels` (index = class id),
//! `backbone`, `backbone_sha256`, `preprocess`, `head` (layer sizes),
//! `training` (the [`TrainConfig`]), `validation` (accuracy, macro-F1 and
//! best epoch), `history` (one summary per epoch), `created` (RFC 3339, UTC)
//! and `pantry_version`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::backbone::{BackboneKind, WeightTensor};
use crate::cache::write_atomic;
use crate::data::transform::Preprocess;
use crate::train::{EpochSummary, HeadSpec, TrainConfig, TrainedHead};

/// Model format version that [`ModelFile::save`] writes. [`ModelFile::load`]
/// reads this version and older ones.
pub const FORMAT_VERSION: u32 = 1;

/// `__metadata__` key under which the pantry JSON is stored.
pub const METADATA_KEY: &str = "pantry";

/// Validation figures of the kept epoch; `None` when training had no
/// validation set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationSummary {
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    /// 1-based epoch whose weights the model holds.
    pub best_epoch: usize,
}

/// A trained classifier with everything prediction needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// Class names; index = class id.
    pub labels: Vec<String>,
    pub backbone: BackboneKind,
    /// Hex SHA-256 of the backbone weights the features came from.
    pub backbone_sha256: String,
    /// Image preprocessing used for training, to repeat at prediction.
    pub preprocess: Preprocess,
    pub validation: ValidationSummary,
    /// Creation time, RFC 3339 in UTC.
    pub created: String,
    /// Version of pantry that trained the model.
    pub pantry_version: String,
    head: TrainedHead,
}

/// The JSON stored under [`METADATA_KEY`].
#[derive(Serialize, Deserialize)]
struct Metadata {
    format_version: u32,
    labels: Vec<String>,
    backbone: BackboneKind,
    backbone_sha256: String,
    preprocess: Preprocess,
    head: HeadSpec,
    training: TrainConfig,
    validation: ValidationSummary,
    history: Vec<EpochSummary>,
    created: String,
    pantry_version: String,
}

impl ModelFile {
    /// Wraps a trained head, stamping the current time and pantry version.
    /// `labels` must have one name per class of the head.
    pub fn new(
        labels: Vec<String>,
        backbone: BackboneKind,
        backbone_sha256: String,
        preprocess: Preprocess,
        head: TrainedHead,
    ) -> Result<Self> {
        if labels.len() != head.spec.num_classes {
            bail!(
                "{} labels for a head with {} classes",
                labels.len(),
                head.spec.num_classes
            );
        }
        let best = head.best();
        let validation = ValidationSummary {
            accuracy: best.and_then(|s| s.val_accuracy),
            macro_f1: best.and_then(|s| s.val_macro_f1),
            best_epoch: head.best_epoch,
        };
        Ok(ModelFile {
            labels,
            backbone,
            backbone_sha256,
            preprocess,
            validation,
            created: rfc3339_utc(SystemTime::now()),
            pantry_version: env!("CARGO_PKG_VERSION").to_string(),
            head,
        })
    }

    /// Returns the classification head, for [`TrainedHead::predict_proba`].
    pub fn head(&self) -> &TrainedHead {
        &self.head
    }

    /// Writes the model to `path` atomically, replacing any file there.
    pub fn save(&self, path: &Path) -> Result<()> {
        let metadata = Metadata {
            format_version: FORMAT_VERSION,
            labels: self.labels.clone(),
            backbone: self.backbone,
            backbone_sha256: self.backbone_sha256.clone(),
            preprocess: self.preprocess.clone(),
            head: self.head.spec.clone(),
            training: self.head.config.clone(),
            validation: self.validation.clone(),
            history: self.head.history.clone(),
            created: self.created.clone(),
            pantry_version: self.pantry_version.clone(),
        };
        let json = serde_json::to_string(&metadata).context("failed to encode model metadata")?;
        let bytes: Vec<(&String, Vec<u8>)> = self
            .head
            .tensors
            .iter()
            .map(|(name, t)| (name, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for ((name, data), tensor) in bytes.iter().zip(self.head.tensors.values()) {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, tensor.shape.clone(), data)
                .with_context(|| format!("head tensor {name} does not match its shape"))?;
            views.push((name.as_str(), view));
        }
        let info = HashMap::from([(METADATA_KEY.to_string(), json)]);
        let file = safetensors::serialize(views, Some(info))
            .with_context(|| format!("failed to encode model {}", path.display()))?;
        write_atomic(path, &file)
    }

    /// Reads a model written by [`ModelFile::save`], checking the format
    /// version and that the tensors match the head's layer sizes.
    pub fn load(path: &Path) -> Result<Self> {
        let shown = path.display();
        let bytes = std::fs::read(path).with_context(|| format!("failed to read model {shown}"))?;
        // The safetensors crate exposes `__metadata__` only through
        // `read_metadata`, which also checks that the data is complete.
        let (_, header) = SafeTensors::read_metadata(&bytes).with_context(|| {
            format!("{shown} is not a valid safetensors file (corrupt or truncated)")
        })?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .with_context(|| format!("{shown} is not a pantry model: no pantry metadata"))?;
        let metadata = parse_metadata(json).with_context(|| format!("invalid model {shown}"))?;

        let file = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{shown} is not a valid safetensors file"))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != Dtype::F32 {
                bail!(
                    "{shown}: tensor {name} has dtype {:?}, expected F32",
                    view.dtype()
                );
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape = view.shape().to_vec();
            tensors.insert(name, WeightTensor { shape, data });
        }
        if metadata.labels.len() != metadata.head.num_classes {
            bail!(
                "{shown}: {} labels for a head with {} classes",
                metadata.labels.len(),
                metadata.head.num_classes
            );
        }
        let head = TrainedHead::new(
            metadata.head,
            metadata.training,
            tensors,
            metadata.validation.best_epoch,
            metadata.history,
        )
        .with_context(|| format!("invalid model {shown}"))?;
        Ok(ModelFile {
            labels: metadata.labels,
            backbone: metadata.backbone,
            backbone_sha256: metadata.backbone_sha256,
            preprocess: metadata.preprocess,
            validation: metadata.validation,
            created: metadata.created,
            pantry_version: metadata.pantry_version,
            head,
        })
    }
}

/// Parses the pantry JSON, checking the format version before the other
/// fields so that a newer file gets a version error rather than a field
/// error.
fn parse_metadata(json: &str) -> Result<Metadata> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("pantry metadata is not valid JSON")?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .context("pantry metadata has no integer format_version")?;
    if version > u64::from(FORMAT_VERSION) {
        bail!(
            "model format version {version} is not supported: pantry {} reads format versions up to {FORMAT_VERSION}, so upgrade pantry",
            env!("CARGO_PKG_VERSION")
        );
    }
    if version == 0 {
        bail!("model format version 0 is not supported; versions start at 1");
    }
    serde_json::from_value(value).context("pantry metadata is invalid")
}

/// Formats `time` as RFC 3339 in UTC with whole seconds, e.g.
/// `2024-03-01T12:00:00Z`.
fn rfc3339_utc(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian `(year, month,
/// day)`, counting in 400-year eras that start on 1 March so that the leap
/// day falls at the end of each year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamp_is_rfc3339() {
        let time = UNIX_EPOCH + std::time::Duration::from_secs(1_709_294_400 + 3_723);
        assert_eq!(rfc3339_utc(time), "2024-03-01T13:02:03Z");
    }
}
