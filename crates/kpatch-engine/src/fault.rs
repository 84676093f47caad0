//! Test-only fault injection: when `LIBCARE_FAULT_STEP` names a step, the tool kills itself
//! with SIGKILL on reaching it, so tests can check what a tool dying at that moment leaves
//! behind. Unset (always, in production), this is one environment lookup per run.

/// Environment variable naming the step at which to die.
pub const FAULT_ENV: &str = "LIBCARE_FAULT_STEP";

/// Dies here if asked to. The variable is read once (the steps inside the stop cost nothing).
pub fn point(step: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var(FAULT_ENV).ok());
    if wanted.as_deref() == Some(step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
