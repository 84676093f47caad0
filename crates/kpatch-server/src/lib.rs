//! LibcarePlus's control socket: the request format `libcare-client` sends, the address forms
//! `libcare-server` listens on, and the server loop with its own commands (`run`, `kill`,
//! `storage`, `update`, `stop`). Every other request is a `libcare-ctl` command line, handed
//! to a [`Handler`] that runs it and writes its text back to the client.

pub mod access;
pub mod address;
pub mod child;
pub mod conn;
pub mod error;
pub mod protocol;
pub mod server;

pub use access::{Access, Peer};
pub use address::Address;
pub use error::{Error, Result};
pub use protocol::{encode_request, parse_request, Reply, Request};
pub use server::{Handler, Server, DEFAULT_STORAGE};
