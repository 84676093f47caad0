//! End-to-end tests of `libcare-ctl` on live processes built from tests/fixtures/runtime: one
//! test binary, one module per area. Every process a test starts is killed when its guard
//! drops, passed or not.

mod support;

mod callbacks;
mod coro;
mod fault;
mod hardened;
mod input;
mod layered;
mod livepatch;
mod lock;
mod objects;
mod recursion;
mod safety;
mod stacked;
mod threads;
