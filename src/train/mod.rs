//! Training of the classification head on cached backbone features.

pub mod head;
