//! Numeric kernels for the backbone's inference path.
