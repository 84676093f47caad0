//! shared CLI helpers
