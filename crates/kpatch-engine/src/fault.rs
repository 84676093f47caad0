//! Test-only fault injection: when [`Options::fault_step`] names a step, the tool kills itself
//! with SIGKILL on reaching it, so tests can check what a tool dying at that moment leaves
//! behind; when [`Options::pause_step`] does, it stops itself with SIGSTOP until a test that
//! changed the target meanwhile continues it. Unset (always, in production), a point costs one
//! comparison.

use crate::options::Options;

/// Dies here if asked to.
pub fn point(opts: &Options, step: &str) {
    if opts.fault_step.as_deref() == Some(step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Stops here until continued, if asked to.
pub fn pause(opts: &Options, step: &str) {
    if opts.pause_step.as_deref() == Some(step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}
