//! The berth agent as a library, so in-process tests can drive it.
pub mod docker;
pub mod labels;
