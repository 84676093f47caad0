//! Progress messages from the engine, printed (or not) by the caller.

/// Receives what the engine does, for `-v` output and logs.
pub trait Report {
    /// A step worth showing at the default verbosity.
    fn info(&mut self, msg: &str);
    /// Detail for verbose mode.
    fn detail(&mut self, msg: &str);
}
