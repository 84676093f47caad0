//! The trust settings of `libcare-ctl` and `libcare-server`: which keys patches must be
//! signed with (`--keys DIR`, `LIBCARE_KEYS`, default `/etc/libcare/keys`), whether root
//! refuses files other users could have written (on unless `--no-strict-modes`), and where
//! the audit trail goes (`--audit-log FILE`, `LIBCARE_AUDIT_LOG`, default the system log).
//! They are options of the programs, never of a request: a client of the server cannot
//! change them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpatch_engine::PatchCheck;
use kpatch_trust::{AuditLog, Event, Keyring, Policy, TrustError, DEFAULT_KEYS_DIR};

/// The options as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustArgs {
    pub keys: Option<PathBuf>,
    pub no_strict_modes: bool,
    pub audit_log: Option<PathBuf>,
}

impl TrustArgs {
    /// If `args[i]` is one of the options, takes it (and its value); returns how many
    /// arguments it used, 0 when it is not one of them.
    pub fn take(&mut self, args: &[String], i: usize) -> Result<usize, String> {
        let Some(arg) = args.get(i) else { return Ok(0) };
        let (name, attached) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let value = |used: &mut usize| -> Result<PathBuf, String> {
            let v = match &attached {
                Some(v) => v.clone(),
                None => {
                    *used += 1;
                    args.get(i + 1)
                        .cloned()
                        .ok_or_else(|| format!("option {name} needs a value"))?
                }
            };
            if v.is_empty() {
                return Err(format!("option {name} needs a value"));
            }
            Ok(PathBuf::from(v))
        };
        let mut used = 1;
        match name {
            "--keys" => self.keys = Some(value(&mut used)?),
            "--audit-log" => self.audit_log = Some(value(&mut used)?),
            "--no-strict-modes" if attached.is_none() => self.no_strict_modes = true,
            _ => return Ok(0),
        }
        Ok(used)
    }

    /// Loads the keys and opens the audit trail of program `tag`.
    pub fn load(&self, tag: &str) -> Result<Trust, TrustError> {
        let named = self.keys.clone().or_else(|| {
            std::env::var_os("LIBCARE_KEYS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let keys = match &named {
            Some(dir) => Keyring::load(dir, true)?,
            None => Keyring::load(Path::new(DEFAULT_KEYS_DIR), false)?,
        };
        Ok(Trust {
            policy: Arc::new(Policy::new(keys, !self.no_strict_modes)?),
            audit: AuditLog::from_env(tag, self.audit_log.as_deref()),
        })
    }
}

/// What is trusted, and where refusals and actions are recorded.
#[derive(Debug, Clone)]
pub struct Trust {
    pub policy: Arc<Policy>,
    pub audit: AuditLog,
}

impl Trust {
    /// No keys, no ownership check, no audit trail (for tests of other things).
    pub fn none() -> Trust {
        Trust {
            policy: Arc::new(Policy::default()),
            audit: AuditLog::new("libcare", kpatch_trust::audit::Sink::None),
        }
    }

    /// The policy as the engine's check of each patch file it reads.
    pub fn engine_check(&self) -> PatchCheck {
        let policy = self.policy.clone();
        PatchCheck(Arc::new(move |path, bytes| {
            policy.check_patch(path, bytes).map_err(|e| e.to_string())
        }))
    }

    /// Records an event; returns a warning to show when it could not be written.
    pub fn record(&self, event: &Event<'_>) -> Option<String> {
        self.audit
            .record(event)
            .err()
            .map(|e| format!("cannot write the audit log: {e}"))
    }
}
