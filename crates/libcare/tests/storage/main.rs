//! End-to-end tests of patch storages, `-p all`, `libcare-server`, the peer's in-process
//! layout, and who may patch with what (trust), on live `greet` processes: one test binary,
//! one module per area. `-p all` tests run as pid 1 of a PID namespace of their own.

mod server;
mod support;

mod all_processes;
mod dir;
mod layout_interop;
mod server_commands;
mod server_protocol;
mod trust;
