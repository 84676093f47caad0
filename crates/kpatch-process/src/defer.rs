//! Holding back the signals that would end this process while it is in the middle of changing
//! a target. Killed then, the tool would leave the target stopped for nothing at best, or with
//! breakpoints and half-written code at worst; with these signals blocked, an operator's
//! Ctrl-C or `kill` takes effect as soon as the target is consistent again. Only SIGKILL (and
//! a crash) remain, which a [`crate::Guardian`] covers.

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGQUIT for the calling thread until dropped; one that
/// arrives meanwhile is delivered then.
#[derive(Debug)]
pub struct DeferTermination {
    old: Option<SigSet>,
}

impl DeferTermination {
    /// Starts holding the signals back.
    pub fn new() -> DeferTermination {
        let mut set = SigSet::empty();
        for sig in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            set.add(sig);
        }
        let mut old = SigSet::empty();
        let old = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .ok()
            .map(|()| old);
        DeferTermination { old }
    }
}

impl Default for DeferTermination {
    fn default() -> Self {
        DeferTermination::new()
    }
}

impl Drop for DeferTermination {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        }
    }
}
