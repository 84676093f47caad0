//! What root may trust before it writes code into a process.
//!
//! - [`signature`]: `.kpatch` files signed with an OpenSSH Ed25519 key, as the `sshsig`
//!   signature `ssh-keygen -Y sign -n libcare` writes, kept after `total_size` (where
//!   LibcarePlus never reads; see [`kpatch_file::split_trailer`]);
//! - [`keyring`]: the directory of `*.pub` keys a patch must be signed with;
//! - [`ownership`]: files another user could have written, refused as sshd's `StrictModes`
//!   refuses them;
//! - [`policy`]: both checks applied to a patch file, a storage and its scripts;
//! - [`audit`]: one line per patch, unpatch, refusal and failure, to the system log.

pub mod audit;
pub mod error;
pub mod keyring;
pub mod ownership;
pub mod policy;
pub mod signature;
pub mod storage;

pub use audit::{AuditLog, Event, Outcome, Requester};
pub use error::{Refusal, TrustError};
pub use keyring::{Keyring, DEFAULT_KEYS_DIR};
pub use policy::Policy;
pub use signature::{sign, SigningKey, NAMESPACE};
