//! Test-only fault injection: when `LIBCARE_FAULT_STEP` names a step, the tool kills itself
//! with SIGKILL on reaching it, so tests can check what a tool dying at that moment leaves
//! behind. Unset (always, in production), this is one environment lookup per step.

/// Environment variable naming the step at which to die.
pub const FAULT_ENV: &str = "LIBCARE_FAULT_STEP";

/// Dies here if asked to.
pub fn point(step: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
