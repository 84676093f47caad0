//! The patch engine: apply, remove and list `.kpatch` patches in a live process.
//!
//! Data flows one way: a `.kpatch` file and a view of the target become a plan (addresses,
//! relocated bytes, hunks), computed while the target runs; a short commit then writes the
//! jumps with every thread stopped. See docs/internals.md sections 2-4.
//!
//! An [`Engine`] is made once per command with its [`Options`]; patch and unpatch open a
//! session on each process (lock, ptrace, guardian, what is loaded), plan, and commit in a
//! checked stop.

mod apply;
mod callbacks;
mod checked_stop;
mod coro;
mod coro_search;
mod discover;
mod eh_frames;
mod elf_image;
mod error;
mod extras;
#[cfg(test)]
mod fake;
mod fault;
mod host;
mod identity;
mod layers;
mod listing;
mod lock;
mod objects;
mod options;
mod payload;
mod process_view;
mod region_layout;
mod region_mapping;
mod registry;
mod relocate;
mod removal;
mod replace;
mod report;
mod request;
mod runs;
mod safety;
mod scope;
mod scripts;
pub mod select;
mod session;
mod states;
mod storage;
mod unapply;
mod unwind;

pub use apply::{AppliedObject, PatchOutcome};
pub use elf_image::build_id_of;
pub use error::{Error, Result};
pub use listing::{CallbackInfo, ObjectInfo, PatchInfo};
pub use options::{Options, PatchCheck};
pub use report::Report;
pub use request::PatchRequest;
pub use storage::Storage;
pub use unapply::{RemovedPatch, UnpatchOutcome};

use discover::ImageCache;

/// One command's worth of engine: its options, and what it reads once for every process it
/// works on (the ELF images of mapped files, kept until it is dropped).
#[derive(Debug)]
pub struct Engine {
    options: Options,
    images: ImageCache,
}

impl Engine {
    /// An engine with these options and nothing read yet.
    pub fn new(options: Options) -> Engine {
        Engine {
            options,
            images: ImageCache::default(),
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Applies the patches of `storage` that match objects of process `pid`.
    pub fn patch(&self, pid: i32, storage: &Storage, rep: &mut dyn Report) -> Result<PatchOutcome> {
        self.patch_with(pid, storage, &PatchRequest::default(), rep)
    }

    /// [`Engine::patch`], as `req` asks (start-up patching of a process whose thread the caller
    /// holds, a subset of objects).
    pub fn patch_with(
        &self,
        pid: i32,
        storage: &Storage,
        req: &PatchRequest<'_>,
        rep: &mut dyn Report,
    ) -> Result<PatchOutcome> {
        apply::patch(&self.options, &self.images, pid, storage, req, rep)
    }

    /// Removes the patch with `id` (or every patch, newest first, without one) from process
    /// `pid`; `targets` limits it to objects named by build-id or file name.
    pub fn unpatch(
        &self,
        pid: i32,
        id: Option<&str>,
        targets: &[String],
        rep: &mut dyn Report,
    ) -> Result<UnpatchOutcome> {
        unapply::unpatch(&self.options, &self.images, pid, id, targets, rep)
    }

    /// `object` (a path, file name or soname) has just been loaded into process `pid` (mapped,
    /// perhaps not relocated yet, its initialisers not yet run): applies `storage`'s patch for
    /// it, if any,
    /// and runs the callbacks applied patches declared for it. For a service following the
    /// process's `dlopen` calls; a failing pre-patch leaves the object unpatched and is
    /// returned as [`Error::PrePatchFailed`].
    pub fn object_loaded(
        &self,
        pid: i32,
        object: &str,
        storage: Option<&Storage>,
        rep: &mut dyn Report,
    ) -> Result<PatchOutcome> {
        self.object_loaded_with(pid, object, storage, &PatchRequest::default(), rep)
    }

    /// [`Engine::object_loaded`], as `req` asks: a thread the caller holds (the one loading,
    /// stopped in the dynamic loader, which then runs the callbacks), the objects the loader
    /// has mapped and not relocated yet (`only`), recorded as applied at start-up.
    pub fn object_loaded_with(
        &self,
        pid: i32,
        object: &str,
        storage: Option<&Storage>,
        req: &PatchRequest<'_>,
        rep: &mut dyn Report,
    ) -> Result<PatchOutcome> {
        objects::loaded(&self.options, &self.images, pid, object, storage, req, rep)
    }

    /// `object` is about to be unloaded from process `pid` (its finalisers have run, it is
    /// still mapped): reverts its patches, with the pre- and post-unpatch callbacks due for it.
    pub fn object_unloading(
        &self,
        pid: i32,
        object: &str,
        rep: &mut dyn Report,
    ) -> Result<UnpatchOutcome> {
        objects::unloading(&self.options, &self.images, pid, object, None, rep)
    }

    /// [`Engine::object_unloading`] with a thread of the process the caller holds (the one
    /// unloading, stopped in the dynamic loader), which runs the callbacks.
    pub fn object_unloading_with(
        &self,
        pid: i32,
        object: &str,
        held: &kpatch_process::HeldThread,
        rep: &mut dyn Report,
    ) -> Result<UnpatchOutcome> {
        objects::unloading(&self.options, &self.images, pid, object, Some(held), rep)
    }

    /// The patches applied to process `pid`, grouped by object, each group in application
    /// order. Needs no ptrace.
    pub fn info(&self, pid: i32) -> Result<Vec<ObjectInfo>> {
        listing::info(&self.images, pid)
    }
}
