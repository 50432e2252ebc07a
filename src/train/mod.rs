//! Training of the classification head on cached backbone features.
//!
//! The backbone is frozen: each image's pooled features are computed once
//! and [`fit`] trains only the head on them ([`head`] describes its layers).
//! Training is deterministic for a given [`TrainConfig::seed`], because
//! weight initialization, dropout masks, shuffling and the validation split
//! draw from ChaCha8 generators seeded from it.

mod config;
mod feature_set;
mod fit;
pub mod head;
pub mod loss;
mod split;

pub use config::{LrSchedule, TrainConfig};
pub use feature_set::FeatureSet;
pub use fit::{fit, fit_split, EpochSummary};
pub use head::{HeadSpec, TrainedHead};
pub use split::split_stratified;
