//! `libcare-ctl patch`: plan while the target runs, allocate with one thread stopped, then a
//! short stop of every thread to check safety and write the jumps (docs/internals.md §4).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use kpatch_arch::{Arch, IfuncCall};
use kpatch_file::{Header, KpatchFile, HEADER_SIZE, MAGIC, MAGIC_PENDING};
use kpatch_process::{
    DeferTermination, MapEntry, MapName, Memory, Perms, SpaceLimits, AT_HWCAP, AT_HWCAP2,
};

use crate::callbacks::{self, Callback};
use crate::checked_stop::{self, AfterCommit};
use crate::discover::{AppliedPatch, ImageCache, Loaded, LoadedObject};
use crate::eh_frames::{self, Unwinder};
use crate::elf_image::SymKind;
use crate::error::{Error, Result};
use crate::extras::Extras;
use crate::fault;
use crate::host::Host;
use crate::layers;
use crate::options::{Options, PatchCheck};
use crate::payload::Payload;
use crate::region_layout::function_name;
use crate::region_mapping::{self, Region};
use crate::registry;
use crate::relocate::{Prepared, Relocated};
use crate::replace::{self, Replaced};
use crate::report::Report;
use crate::request::PatchRequest;
use crate::runs;
use crate::scope::{Found, Scope};
use crate::scripts::{self, Scripts};
use crate::session::Session;
use crate::states;
use crate::storage::{self, Storage};

/// One object patched by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedObject {
    pub object: String,
    pub id: String,
    pub kpta: u64,
    /// Functions redirected.
    pub hunks: usize,
}

/// What a patch run did.
#[derive(Debug, Clone, Default)]
pub struct PatchOutcome {
    pub applied: Vec<AppliedObject>,
    /// Patches a cumulative patch replaced: (patch-id, object).
    pub replaced: Vec<(String, String)>,
    /// How long every thread was stopped for the commit (None when nothing applied).
    pub frozen: Option<Duration>,
}

/// A patch file, read and parsed once.
struct PatchFile {
    path: PathBuf,
    header: Header,
    id: String,
    /// The ELF image after the header.
    elf: Vec<u8>,
    level: Option<u32>,
}

/// A patch matched to an object, on its way into the target.
pub(crate) struct Job {
    object: LoadedObject,
    extras: Extras,
    /// What it needs from earlier patches of its object.
    needs: kpatch_file::Depends,
    header: Header,
    id: String,
    level: Option<u32>,
    elf: Vec<u8>,
    prepared: Prepared,
    imports: Vec<(usize, Found)>,
    kpta: u64,
}

/// A redirect to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hunk {
    daddr: u64,
    /// Length of the function replaced.
    dlen: u32,
    jump: Vec<u8>,
    undo_at: u64,
    name: String,
}

/// Applies the patches of `storage` that match objects of process `pid`.
pub fn patch(
    opts: &Options,
    images: &ImageCache,
    pid: i32,
    storage: &Storage,
    req: &PatchRequest<'_>,
    rep: &mut dyn Report,
) -> Result<PatchOutcome> {
    let mut session = Session::open_with(opts, images, pid, req.held, rep)?;
    let arch = session.proc.arch();
    let jobs = find_jobs(
        pid,
        storage,
        &session.loaded,
        arch,
        session.proc.page_size(),
        req.only,
        opts.check.as_ref(),
    )?;
    if jobs.is_empty() {
        if !session.loaded.unreadable.is_empty() {
            return Err(Error::UnreadableObjects {
                pid,
                objects: session.loaded.unreadable.join("; "),
            });
        }
        return Ok(PatchOutcome::default());
    }
    apply_jobs(&mut session, jobs, Some(storage), Vec::new(), 0, req, rep)
}

/// Applies `jobs` (at least one) in one stop, with their callbacks and the `waiting` ones of
/// applied patches (for an object that appeared), the states checked and the patches a
/// cumulative one replaces taken out. The jobs' callbacks run ranked from `rank`. `req` says
/// which objects the loader has not relocated yet and whether this is start-up patching.
pub(crate) fn apply_jobs(
    session: &mut Session<'_>,
    mut jobs: Vec<Job>,
    storage: Option<&Storage>,
    waiting: Vec<Callback>,
    rank: usize,
    req: &PatchRequest<'_>,
    rep: &mut dyn Report,
) -> Result<PatchOutcome> {
    let pid = session.proc.pid();
    let arch = session.proc.arch();
    let new_states: Vec<(&str, &[kpatch_file::StateDecl])> = jobs
        .iter()
        .map(|j| (j.id.as_str(), j.extras.states.as_slice()))
        .collect();
    states::check(
        pid,
        &new_states,
        &states::applied(&session.proc, &session.loaded),
    )?;
    let mut replaced = Replaced::default();
    for job in jobs.iter().filter(|j| j.extras.replace) {
        let bid = job.object.build_id().unwrap_or_default();
        let r = replace::plan(&session.proc, &session.loaded, bid, rep)?;
        replaced.patches.extend(r.patches);
        replaced.originals.extend(r.originals);
        replaced.names.extend(r.names);
    }
    let scope = Scope::of(&session.proc, &session.loaded.objects);
    // Objects the loader has just mapped (`only`) are not relocated yet: their IFUNC
    // resolvers cannot be called.
    let unrelocated: Vec<&str> = match req.only {
        Some(only) => session
            .loaded
            .objects
            .iter()
            .filter(|o| o.build_id().is_some_and(|b| only.contains(b)))
            .map(|o| o.name.as_str())
            .collect(),
        None => Vec::new(),
    };
    let unwinder = Unwinder::find(&scope);
    for job in &mut jobs {
        // What it takes from earlier patches of its object, found in them first.
        let earlier = layers::resolve(
            &session.proc,
            &session.loaded,
            pid,
            &job.id,
            &job.object,
            &job.needs,
        )?;
        for (&sym, (name, version)) in &job.prepared.imports {
            let found = match earlier.get(name) {
                Some(f) => f.clone(),
                None => {
                    scope
                        .lookup(name, version.as_deref())
                        .ok_or_else(|| Error::Unresolved {
                            name: with_version(name, version.as_deref()),
                        })?
                }
            };
            if found.kind == SymKind::Ifunc && unrelocated.contains(&found.object.as_str()) {
                return Err(Error::Unsupported(format!(
                    "{} imports {name}, an IFUNC of {}, which is being loaded and not relocated yet",
                    job.id, found.object
                )));
            }
            rep.detail(&format!(
                "{}: {} resolves to {:#x} in {}",
                job.id, name, found.addr, found.object
            ));
            job.imports.push((sym, found));
        }
    }
    let maps = &session.loaded.maps;
    let wants: Vec<(Range<u64>, u64)> = jobs
        .iter()
        .map(|j| (j.object.range.clone(), j.prepared.layout.total))
        .collect();
    let limits = session.proc.space_limits(maps);
    let kptas = choose_regions(maps, &limits, &wants, arch.max_branch_distance()).map_err(|i| {
        Error::NoRegion {
            object: jobs[i].object.name.clone(),
            size: wants[i].1,
            pid,
        }
    })?;
    for (job, kpta) in jobs.iter_mut().zip(kptas) {
        job.kpta = kpta;
    }

    // Allocate (and run IFUNC resolvers) with one thread stopped while the others run.
    let found = registry::find(&session.proc, &session.loaded.maps);
    let wants_registry = jobs.iter().any(|j| j.extras.needs_registry());
    let (resolved, created) = allocate(session, &jobs, wants_registry && found.is_none(), rep)?;
    fault::point(session.options(), "after-mmap");
    let registry = found.or(created);
    let result = (|| {
        if let Some(at) = created {
            // The states of patches applied before the registry existed.
            for p in session.loaded.patches.iter().filter(|p| p.committed) {
                let states = Extras::of_region(&session.proc, p).states;
                let seq = p.header.applied_seq();
                registry::add_states(&session.proc, pid, at, seq, p.range(), &states)?;
            }
        }
        fill_and_commit(
            session,
            &jobs,
            &resolved,
            registry,
            unwinder,
            storage,
            &replaced,
            waiting,
            rank,
            req.at_startup,
            rep,
        )
    })();
    // Nothing points into the regions yet (or the commit rolled its hunks back). Unless the
    // guardian still has writes to do (breakpoints that could not be removed, performed when it
    // is dropped): their regions then stay, pending, for the next run to reclaim.
    if result.is_err() && session.guardian.armed() == 0 {
        session.unmap_regions(
            jobs.iter().map(|j| (j.kpta, j.prepared.layout.total)),
            unwinder,
        );
    }
    result
}

fn with_version(name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{name}@{v}"),
        None => name.to_owned(),
    }
}

/// Parses a patch file found in the storage, once it has passed the caller's `check`.
fn read_patch(f: storage::Found, check: Option<&PatchCheck>) -> Result<PatchFile> {
    if let Some(check) = check {
        (check.0)(&f.path, &f.bytes).map_err(Error::Refused)?;
    }
    let file = KpatchFile::parse(&f.bytes).map_err(|source| Error::Format {
        path: f.path.clone(),
        source,
    })?;
    let header = *file.header();
    let id = file.patch_id().to_owned();
    let total = header.total_size() as usize;
    let elf = f.bytes.get(HEADER_SIZE..total).unwrap_or(&[]).to_vec();
    Ok(PatchFile {
        path: f.path,
        header,
        id,
        elf,
        level: f.level,
    })
}

/// A patch matched to `object`, checked and prepared.
fn make_job(
    pid: i32,
    loaded: &Loaded,
    arch: &'static dyn Arch,
    page: u64,
    object: &LoadedObject,
    patch: PatchFile,
) -> Result<Job> {
    let PatchFile {
        path,
        header,
        id,
        elf,
        level,
    } = patch;
    if loaded.patches.iter().any(|a| {
        a.committed && !a.orphan && a.id == id && Some(a.build_id.as_str()) == object.build_id()
    }) {
        return Err(Error::AlreadyApplied {
            id,
            object: object.name.clone(),
            pid,
        });
    }
    let payload = Payload::parse(&elf)?;
    if payload.machine != arch.e_machine() {
        let patch_arch = kpatch_arch::for_machine(payload.machine)
            .map(|a| a.name().to_owned())
            .unwrap_or_else(|| format!("e_machine {}", payload.machine));
        return Err(Error::WrongArch {
            path,
            patch_arch,
            target_arch: arch.name().into(),
            pid,
        });
    }
    let extras = Extras::of_payload(&payload, &elf);
    let needs = layers::of_payload(&payload, &elf);
    if extras.replace && !needs.patches.is_empty() {
        return Err(Error::ReplaceNeedsEarlier {
            id,
            needs: needs.patches.join(", "),
        });
    }
    let prepared = Prepared::new(arch, payload, &elf, page)?;
    Ok(Job {
        object: object.clone(),
        extras,
        needs,
        header,
        id,
        level,
        elf,
        prepared,
        imports: Vec::new(),
        kpta: 0,
    })
}

/// The patches of `storage` for objects of the process (those with a build-id in `only`, when
/// given): a file storage's one patch must match an object; a directory storage is searched
/// for every object's build-id.
fn find_jobs(
    pid: i32,
    storage: &Storage,
    loaded: &Loaded,
    arch: &'static dyn Arch,
    page: u64,
    only: Option<&HashSet<String>>,
    check: Option<&PatchCheck>,
) -> Result<Vec<Job>> {
    let objects = &loaded.objects;
    let wanted = |bid: &str| only.is_none_or(|o| o.contains(bid));
    let job =
        |object: &LoadedObject, patch: PatchFile| make_job(pid, loaded, arch, page, object, patch);
    if let Some(f) = storage.file_bytes()? {
        let patch = read_patch(f, check)?;
        let bid = patch.header.build_id().unwrap_or_default().to_owned();
        if !wanted(&bid) {
            return Ok(Vec::new());
        }
        let Some(obj) = objects.iter().find(|o| o.build_id() == Some(bid.as_str())) else {
            return Err(Error::NotApplicable {
                path: patch.path,
                build_id: bid,
                pid,
            });
        };
        return Ok(vec![job(obj, patch)?]);
    }
    let mut found = Vec::new();
    for obj in objects {
        let Some(bid) = obj.build_id().filter(|b| wanted(b)) else {
            continue;
        };
        if let Some(f) = storage.lookup_dir(bid)? {
            found.push((obj, f));
        }
    }
    found
        .into_iter()
        .map(|(obj, f)| job(obj, read_patch(f, check)?))
        .collect()
}

/// The patch `storage` has for the loaded object `index` alone (none if it has none).
pub(crate) fn jobs_for_object(
    session: &Session<'_>,
    storage: &Storage,
    index: usize,
) -> Result<Vec<Job>> {
    let loaded = &session.loaded;
    let (pid, arch, page) = (
        session.proc.pid(),
        session.proc.arch(),
        session.proc.page_size(),
    );
    let object = &loaded.objects[index];
    let Some(bid) = object.build_id() else {
        return Ok(Vec::new());
    };
    let check = session.options().check.as_ref();
    let found = match storage.file_bytes()? {
        Some(f) => {
            let patch = read_patch(f, check)?;
            (patch.header.build_id().ok() == Some(bid)).then_some(patch)
        }
        None => storage
            .lookup_dir(bid)?
            .map(|f| read_patch(f, check))
            .transpose()?,
    };
    found
        .map(|patch| make_job(pid, loaded, arch, page, object, patch))
        .into_iter()
        .collect()
}

/// A region for each of `wants` (an object's range, a region size), in order: within
/// `max_distance` of its object, clear of the mappings and of the regions chosen before it
/// (see [`kpatch_process::find_region`]). Fails with the index of the first that fits nowhere.
fn choose_regions(
    maps: &[MapEntry],
    limits: &SpaceLimits,
    wants: &[(Range<u64>, u64)],
    max_distance: u64,
) -> std::result::Result<Vec<u64>, usize> {
    let mut taken: Vec<MapEntry> = maps.to_vec();
    let mut out = Vec::with_capacity(wants.len());
    for (i, (object, size)) in wants.iter().enumerate() {
        let kpta = kpatch_process::find_region(&taken, object.clone(), *size, max_distance, limits)
            .ok_or(i)?;
        out.push(kpta);
        taken.push(MapEntry {
            start: kpta,
            end: kpta + size,
            perms: Perms {
                read: true,
                write: true,
                exec: false,
                shared: false,
            },
            offset: 0,
            dev: (0, 0),
            inode: 0,
            name: MapName::Anonymous,
        });
    }
    Ok(out)
}

/// Maps every region and resolves IFUNC imports, with one thread stopped. Returns the final
/// address of every import, by job and payload symbol index.
/// With `registry`, also maps the process's livepatch registry and returns its address.
#[allow(clippy::type_complexity)]
fn allocate(
    session: &Session<'_>,
    jobs: &[Job],
    registry: bool,
    rep: &mut dyn Report,
) -> Result<(Vec<HashMap<usize, u64>>, Option<u64>)> {
    let proc = &session.proc;
    let arch = proc.arch();
    let _defer = DeferTermination::new();
    let regions: Vec<Region> = jobs
        .iter()
        .map(|j| Region {
            kpta: j.kpta,
            total: j.prepared.layout.total,
            rx_len: j.prepared.layout.rx_len,
        })
        .collect();
    // Chosen before the first syscall: what the target's seccomp filter lets through.
    let (mut stopped, way) = region_mapping::stop_thread_for(session, &regions)?;
    let mut mapped: Vec<(u64, u64)> = Vec::new();
    let mut out = Vec::new();
    let mut ifunc_call: Option<IfuncCall> = None;
    let mut created = None;
    let result = (|| -> Result<()> {
        let mut thread = stopped.thread();
        if registry {
            let at = registry::create(&mut thread)?;
            rep.detail(&format!("livepatch registry at {at:#x}"));
            created = Some(at);
        }
        for (job, region) in jobs.iter().zip(&regions) {
            let l = job.prepared.layout;
            region_mapping::map(&mut thread, way, *region)?;
            mapped.push((job.kpta, l.total));
            // The header is what identifies the region; put a pending one there at once so an
            // interrupted run leaves something the next run can recognise and reclaim.
            let mut header = job.header;
            header.set_magic(MAGIC_PENDING);
            header.set_kpatch_total_mem_sz(l.total);
            proc.write(job.kpta, header.as_bytes())?;
            rep.detail(&format!(
                "{}: region {:#x}+{:#x} for {}",
                job.id, job.kpta, l.total, job.object.name
            ));
            let mut addrs = HashMap::new();
            for (sym, found) in &job.imports {
                let addr = if found.kind == SymKind::Ifunc {
                    // Called as the dynamic linker calls it (aarch64 resolvers choose by the
                    // hardware capabilities they are passed).
                    let ifunc = ifunc_call.get_or_insert_with(|| {
                        let auxv = proc.auxv().unwrap_or_default();
                        arch.ifunc_call(
                            auxv.get(AT_HWCAP).unwrap_or(0),
                            auxv.get(AT_HWCAP2).unwrap_or(0),
                        )
                    });
                    let a = thread.call_with_block(
                        found.addr,
                        &ifunc.args,
                        &ifunc.block,
                        Duration::from_secs(2),
                    )?;
                    rep.detail(&format!(
                        "{}: IFUNC resolver at {:#x} chose {:#x}",
                        job.id, found.addr, a
                    ));
                    a
                } else {
                    found.addr
                };
                addrs.insert(*sym, addr);
            }
            out.push(addrs);
        }
        Ok(())
    })();
    if let Err(e) = result {
        let mut thread = stopped.thread();
        for (a, l) in mapped {
            let _ = thread.munmap(a, l);
        }
        return Err(e);
    }
    stopped.resume()?;
    Ok((out, created))
}

/// The redirects of a relocated patch, one per function it replaces (new functions need none):
/// each replaced function must be long enough for the jump and lie in the patched object. The
/// original bytes of record `i` go to the undo area's slot `i`.
fn plan_hunks(job: &Job, rel: &Relocated, arch: &dyn Arch) -> Result<Vec<Hunk>> {
    let hs = arch.hunk_size();
    let l = job.prepared.layout;
    let base = job.kpta + l.elf_offset;
    let mut hunks = Vec::new();
    for (i, r) in rel.records.iter().enumerate() {
        if r.is_new_function() {
            continue;
        }
        let name = function_name(
            r.symstr()
                .checked_sub(base)
                .and_then(|off| rel.elf.get(off as usize..)),
            r.daddr(),
        );
        if (r.dlen() as usize) < hs {
            return Err(Error::Unpatchable {
                function: name,
                object: job.object.name.clone(),
                reason: format!(
                    "it is {} bytes long, shorter than the {hs}-byte jump",
                    r.dlen()
                ),
            });
        }
        if !job.object.range.contains(&r.daddr()) {
            return Err(Error::Payload(format!(
                "{name} would be patched at {:#x}, outside {} ({:#x}-{:#x}): the patch does not match this object",
                r.daddr(),
                job.object.name,
                job.object.range.start,
                job.object.range.end
            )));
        }
        hunks.push(Hunk {
            daddr: r.daddr(),
            dlen: r.dlen(),
            jump: arch.encode_jump(r.daddr(), r.saddr())?,
            undo_at: job.kpta + l.user_undo + (i * hs) as u64,
            name,
        });
    }
    Ok(hunks)
}

/// The header of a job's region with the runtime fields filled in, still pending.
fn region_header(job: &Job, seq: u64, at_startup: bool) -> Header {
    let l = job.prepared.layout;
    let mut header = job.header;
    header.set_magic(MAGIC_PENDING);
    header.set_jmp_offset(l.jmp_offset as u32);
    header.set_elf_offset(l.elf_offset as u32);
    header.set_user_undo(l.user_undo as u32);
    header.set_user_info(l.user_info as u32);
    header.set_user_level(job.level.unwrap_or(0));
    header.set_kpatch_total_mem_sz(l.total);
    header.set_applied_seq(seq);
    header.set_applied_at_startup(at_startup);
    header
}

/// The sequence number of the next patch applied to a process with `applied` patches.
fn next_seq(applied: &[AppliedPatch]) -> u64 {
    applied
        .iter()
        .map(|a| a.header.applied_seq())
        .max()
        .unwrap_or(0)
        + 1
}

#[allow(clippy::too_many_arguments)]
fn fill_and_commit(
    session: &mut Session<'_>,
    jobs: &[Job],
    resolved: &[HashMap<usize, u64>],
    registry: Option<u64>,
    unwinder: Option<Unwinder>,
    storage: Option<&Storage>,
    old: &Replaced,
    waiting: Vec<Callback>,
    rank0: usize,
    at_startup: bool,
    rep: &mut dyn Report,
) -> Result<PatchOutcome> {
    let opts = session.options();
    let proc = &session.proc;
    let pid = proc.pid();
    let arch = proc.arch();
    let hs = arch.hunk_size();
    let mut hunks: Vec<Hunk> = Vec::new();
    let mut replaced: Vec<(Range<u64>, String)> = Vec::new();
    let mut outcome = PatchOutcome::default();
    let first_seq = next_seq(&session.loaded.patches);
    let regions: Vec<Range<u64>> = jobs
        .iter()
        .map(|j| j.kpta..j.kpta + j.prepared.layout.total)
        .collect();
    for (seq, (job, imports)) in (first_seq..).zip(jobs.iter().zip(resolved)) {
        let l = job.prepared.layout;
        let mut rel =
            job.prepared
                .relocate(arch, &job.elf, job.kpta, job.object.load_bias, imports)?;
        if let Some(at) = registry {
            registry::fill_slots(&mut rel.elf, &job.extras, at);
        }
        let planned = plan_hunks(job, &rel, arch)?;
        let nh = planned.len();
        replaced.extend(planned.iter().map(|h| {
            (
                h.daddr..h.daddr + u64::from(h.dlen),
                format!("{} ({})", h.name, job.object.name),
            )
        }));
        hunks.extend(planned);
        proc.write(job.kpta, region_header(job, seq, at_startup).as_bytes())?;
        if !rel.jump_table.is_empty() {
            proc.write(job.kpta + l.jmp_offset, &rel.jump_table)?;
        }
        proc.write(job.kpta + l.elf_offset, &rel.elf)?;
        if let (Some(at), false) = (registry, job.extras.states.is_empty()) {
            let region = job.kpta..job.kpta + l.total;
            registry::add_states(proc, pid, at, seq, region, &job.extras.states)?;
        }
        rep.detail(&format!(
            "{}: {} function(s) to redirect in {}",
            job.id, nh, job.object.name
        ));
        outcome.applied.push(AppliedObject {
            object: job.object.name.clone(),
            id: job.id.clone(),
            kpta: job.kpta,
            hunks: nh,
        });
    }
    register_unwind_tables(session, jobs, unwinder, rep)?;
    fault::point(opts, "after-write");

    // The original bytes are saved and the new code pages read while the target still runs;
    // the stop only checks them and writes each run of pages once. A cumulative patch saves
    // the original bytes of what the patches it replaces changed, and puts back those of the
    // functions it does not change itself.
    let mut jumps = Vec::with_capacity(hunks.len());
    let mut back: Vec<(u64, Vec<u8>)> = Vec::with_capacity(hunks.len() + jobs.len());
    for h in &hunks {
        let mut now = vec![0u8; hs.max(h.jump.len())];
        proc.read(h.daddr, &mut now)?;
        let original = old.originals.get(&h.daddr).unwrap_or(&now);
        proc.write(h.undo_at, &original[..hs])?;
        jumps.push((h.daddr, h.jump.clone()));
        now.truncate(h.jump.len());
        back.push((h.daddr, now));
    }
    for (&addr, bytes) in &old.originals {
        if hunks.iter().all(|h| h.daddr != addr) {
            back.push((addr, proc.read_vec(addr, bytes.len())?));
            jumps.push((addr, bytes.clone()));
        }
    }
    let runs = runs::plan(proc, &jumps, proc.page_size())?;
    // Writing the pages back unchanged makes the kernel copy them (copy-on-write) now, while
    // the target runs, rather than during the stop. Threads running that code see the same
    // bytes throughout. Not in a writable mapping: the target could change a byte of it
    // between our read and our write.
    for r in &runs {
        let end = r.addr + r.old.len() as u64;
        let read_only = session
            .loaded
            .maps
            .iter()
            .filter(|m| m.start < end && r.addr < m.end)
            .all(|m| !m.perms.write);
        if read_only {
            proc.write(r.addr, &r.old)?;
        }
    }
    let all = &session.loaded.patches;
    let old_regions: Vec<(u64, u64)> = old
        .patches
        .iter()
        .map(|&i| (all[i].kpta, all[i].len))
        .collect();
    // Read while the process runs: which replaced regions have unwind tables to deregister.
    let old_regs = eh_frames::registrations(proc, || unwinder, &old_regions);
    let mut heads: Vec<(u64, [u8; 8])> = jobs.iter().map(|j| (j.kpta, MAGIC)).collect();
    back.extend(jobs.iter().map(|j| (j.kpta, MAGIC_PENDING.to_vec())));
    // The regions replaced are marked pending in the same stop (and put back as they are if
    // the tool dies).
    heads.extend(old_regions.iter().map(|&(k, _)| (k, MAGIC_PENDING)));
    back.extend(old_regions.iter().map(|&(k, _)| (k, MAGIC.to_vec())));
    let held: Vec<Range<u64>> = old_regions.iter().map(|&(a, l)| a..a + l).collect();
    replaced.extend(old.names.iter().cloned());
    let mut check = session
        .safety_check(replaced)?
        .holding(held.clone())
        .entered_at_starts();
    let mut old_check = session
        .safety_check(old.names.clone())?
        .holding(held.clone());

    // Pre-patch callbacks, before the switch: of the new patches' objects that are loaded,
    // and of an object that appeared, in the applied patches that wait for it.
    let mut cbs = waiting;
    let mut ids: Vec<&str> = Vec::new();
    for job in jobs {
        if !ids.contains(&job.id.as_str()) {
            ids.push(&job.id);
        }
        let rank = rank0 + ids.len() - 1;
        let image = job.kpta + job.prepared.layout.elf_offset;
        let mine = callbacks::read(proc, job.kpta, image, &job.extras, &job.id, rank);
        cbs.extend(mine.into_iter().filter(|c| c.loaded_in(&session.loaded)));
    }
    callbacks::sort(&mut cbs);
    let mut host = Host::new(proc, &session.loaded, session.images(), &regions, opts);
    let unregister = |rep: &mut dyn Report| {
        if let Some(at) = registry {
            if let Err(e) = registry::remove_states(proc, at, &regions) {
                rep.detail(&format!("the states stay in the registry: {e}"));
            }
        }
    };
    if let Err(e) = callbacks::pre_patch(&mut host, proc, pid, &mut cbs, rep) {
        unregister(rep);
        return Err(e);
    }

    let guardian = &mut session.guardian;
    // Armed before the stop, the way back costs nothing inside it: until the commit it only
    // rewrites bytes with their current values.
    let below = guardian.armed();
    if let Err(e) = guardian.arm(&back) {
        callbacks::post_unpatch(&mut host, proc, &mut cbs, rep);
        unregister(rep);
        return Err(e.into());
    }
    let mut after_failed = None;
    // Looked up now: the stop only runs them.
    let Scripts { before, after } = storage.map(Scripts::of).unwrap_or_default();
    // Set once the threads that were running go on before the headers are marked.
    let mut released_early = false;
    let mut old_unmapped = old_regions.is_empty();
    let frozen = checked_stop::with_safe_stop(
        proc,
        opts,
        &mut check,
        guardian,
        rep,
        |stopped, _guardian, found, _rep| {
            if let Some(script) = &before {
                scripts::run(script, proc.pid())?;
            }
            fault::point(opts, "stopped");
            // The guardian holds `back`, the way back (original bytes, pending magic): a tool
            // dying at any point of the series leaves the target unpatched rather than half
            // patched. A run write that fails puts back the runs already written.
            runs::commit(proc, &runs, &|| fault::point(opts, "first-hunk"))?;
            fault::point(opts, "after-hunks");
            // The jumps are in: the threads that were running need not wait for the headers.
            // An `after` script runs with every thread stopped, as the peer's does.
            if after.is_none() {
                released_early = true;
                stopped.release_running(false)?;
            }
            commit_headers(proc, &heads, &back, released_early)?;
            fault::point(opts, "after-commit");
            // The jumps are in: failing now would unmap code they lead to. LibcarePlus, too,
            // only reports a failed `after` script.
            if let Some(script) = &after {
                after_failed = scripts::run(script, proc.pid()).err();
            }
            // Nothing leads into the replaced regions any more: they go now if no thread
            // holds a pointer into them.
            if !old_unmapped && found.refs.is_empty() {
                old_unmapped = true;
                return Ok(AfterCommit {
                    unmap: old_regions.clone(),
                    registrations: old_regs.clone(),
                });
            }
            Ok(AfterCommit::default())
        },
    );
    // Nothing was committed: our batch is not needed. A batch left above it (breakpoints that
    // could not be removed) stays armed, and is performed when the guardian is dropped. Once
    // threads ran the new code, a failure leaves the batch armed: the guardian puts the
    // original bytes back when dropped, and the regions stay for the next run to reclaim.
    if frozen.is_err() && guardian.armed() == below + 1 && !released_early {
        let _ = guardian.disarm();
    }
    let frozen = match frozen {
        Ok(f) => f,
        Err(e) => {
            // Objects whose pre-patch ran get their post-unpatch: the process is as before.
            if !released_early {
                callbacks::post_unpatch(&mut host, proc, &mut cbs, rep);
                unregister(rep);
            }
            return Err(e);
        }
    };
    // The series is complete: the way back is no longer needed. Disarmed once the threads run
    // again (nothing is gained by doing it in the stop): a tool dying before this leaves the
    // target unpatched (the guardian puts the original bytes back; the region, pending, is
    // reclaimed by the next run).
    let _ = guardian.disarm();
    fault::point(opts, "committed");
    if let Some(e) = after_failed {
        rep.info(&format!("warning: {e}; the patch stays applied"));
    }
    for h in &hunks {
        rep.detail(&format!(
            "{} at {:#x} now jumps to the patch",
            h.name, h.daddr
        ));
    }
    if !old.patches.is_empty() {
        if let Some(at) = registry {
            let _ = registry::remove_states(proc, at, &held);
        }
        let loaded = &session.loaded;
        for &i in &old.patches {
            let p = &loaded.patches[i];
            outcome.replaced.push((p.id.clone(), loaded.object_name(p)));
        }
        let ids: Vec<&str> = outcome.replaced.iter().map(|(id, _)| id.as_str()).collect();
        rep.info(&format!(
            "PID '{pid}': patch(es) {} replaced by {}",
            ids.join(", "),
            jobs.iter()
                .filter(|j| j.extras.replace)
                .map(|j| j.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        // One more look, not a wait: the new patch is in, and a run that finds the replaced
        // regions unused later reclaims them (they are pending).
        if !old_unmapped
            && !checked_stop::unmap_when_unused(
                proc,
                &mut old_check,
                &old_regions,
                &old_regs,
                Duration::ZERO,
                opts,
                rep,
            )?
        {
            rep.detail(&format!(
                "PID '{pid}': the replaced patches' memory is still in use; a later run will free it"
            ));
        }
    }
    callbacks::post_patch(&mut host, proc, &mut cbs, rep);
    outcome.frozen = Some(frozen);
    Ok(outcome)
}

/// Registers the unwind tables of the patches that carry some, with one thread stopped, so
/// that exceptions can go through the new code as soon as the jumps lead there.
fn register_unwind_tables(
    session: &Session<'_>,
    jobs: &[Job],
    unwinder: Option<Unwinder>,
    rep: &mut dyn Report,
) -> Result<()> {
    let tables: Vec<(&Job, u64)> = jobs
        .iter()
        .filter_map(|j| {
            let at = j.prepared.eh_frame?;
            Some((j, j.kpta + j.prepared.layout.elf_offset + at))
        })
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let Some(unwinder) = unwinder else {
        rep.detail(
            "the process has no unwinder (__register_frame_info): the patch's unwind tables \
             are not registered",
        );
        return Ok(());
    };
    let _defer = DeferTermination::new();
    let mut stopped = session.stop_one()?;
    let result = (|| -> Result<()> {
        let mut thread = stopped.thread();
        for (job, at) in &tables {
            let total = job.prepared.layout.total;
            eh_frames::register(&mut thread, &session.proc, &unwinder, job.kpta, total, *at)?;
            rep.detail(&format!(
                "{}: unwind tables at {at:#x} registered with the process's unwinder",
                job.id
            ));
        }
        Ok(())
    })();
    stopped.resume()?;
    result
}

/// Marks every region committed (`KPATCH1` in the header at each of `heads`) and every region
/// replaced pending (`KPATCH0`). If a write fails, the threads still all stopped (`released`
/// false), the original bytes in `back` are put back; otherwise that is left to the guardian,
/// which the caller leaves armed.
fn commit_headers(
    mem: &dyn Memory,
    heads: &[(u64, [u8; 8])],
    back: &[(u64, Vec<u8>)],
    released: bool,
) -> Result<()> {
    for (k, magic) in heads {
        if let Err(e) = mem.write(*k, magic) {
            if !released {
                for (addr, old) in back {
                    let _ = mem.write(*addr, old);
                }
            }
            return Err(e.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, FakeProcess};
    use crate::process_view::ProcessView;
    use object::write::{Object, Relocation, Symbol, SymbolSection};
    use object::{elf, RelocationFlags, SectionFlags, SectionKind, SymbolFlags, SymbolKind};
    use object::{Architecture, BinaryFormat, Endianness, SymbolScope};

    const APP: &str = "0123456789abcdef0123456789abcdef01234567";
    /// The object the patch is for, loaded with bias `APP_RANGE.start`.
    const APP_RANGE: Range<u64> = 0x40_0000..0x40_1000;
    /// Link-time address of the function the patch replaces.
    const GREET: u64 = 0x40;
    /// The replacement: `call puts; ret`.
    const NEW_CODE: [u8; 6] = [0xe8, 0, 0, 0, 0, 0xc3];

    /// A payload shaped like `kpatch_strip` output: a placeholder for the original `.text`,
    /// `greet.kpatch` (calling the import `puts`), its name in `.kpatch.strtab`, and one
    /// `.kpatch.info` record replacing `greet` (`dlen` bytes long).
    fn payload(arch: Architecture, dlen: u32) -> Vec<u8> {
        let (call, abs) = match arch {
            Architecture::Aarch64 => (elf::R_AARCH64_CALL26, elf::R_AARCH64_ABS64),
            _ => (elf::R_X86_64_PLT32, elf::R_X86_64_64),
        };
        let mut obj = Object::new(BinaryFormat::Elf, arch, Endianness::Little);
        let text = obj.add_section(
            Vec::new(),
            b".text".to_vec(),
            SectionKind::UninitializedData,
        );
        obj.append_section_bss(text, 0x200, 16);
        obj.section_mut(text).flags = SectionFlags::Elf {
            sh_type: elf::SHT_NOBITS,
            sh_flags: elf::SHF_ALLOC | elf::SHF_EXECINSTR,
        };
        let ktext = obj.add_section(Vec::new(), b".kpatch.text".to_vec(), SectionKind::Text);
        obj.append_section_data(ktext, &NEW_CODE, 16);
        let kstr = obj.add_section(Vec::new(), b".kpatch.strtab".to_vec(), SectionKind::Data);
        obj.append_section_data(kstr, b"greet.kpatch\0", 1);
        let info = obj.add_section(Vec::new(), b".kpatch.info".to_vec(), SectionKind::Data);
        let record = kpatch_file::InfoRecord::new(0, 0, dlen, NEW_CODE.len() as u32, 0);
        let mut records = record.as_bytes().to_vec();
        records.extend(kpatch_file::INFO_END_MARKER);
        obj.append_section_data(info, &records, 8);
        let symbol = |obj: &mut Object, name: &str, value, section| {
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value,
                size: 0,
                kind: SymbolKind::Text,
                scope: SymbolScope::Compilation,
                weak: false,
                section,
                flags: SymbolFlags::None,
            })
        };
        let greet = symbol(&mut obj, "greet", GREET, SymbolSection::Section(text));
        let kgreet = symbol(&mut obj, "greet.kpatch", 0, SymbolSection::Section(ktext));
        let puts = symbol(&mut obj, "puts", 0, SymbolSection::Undefined);
        let name = obj.section_symbol(kstr);
        let mut reloc = |section, offset, symbol, r_type, addend| {
            obj.add_relocation(
                section,
                Relocation {
                    offset,
                    symbol,
                    addend,
                    flags: RelocationFlags::Elf { r_type },
                },
            )
            .unwrap()
        };
        reloc(ktext, 1, puts, call, -4);
        reloc(info, 0, greet, abs, 0);
        reloc(info, 8, kgreet, abs, 0);
        reloc(info, 24, name, abs, 0);
        obj.write().unwrap()
    }

    /// A storage holding one patch file with patch-id 0001 for build-id `bid`.
    fn storage(dir: &tempfile::TempDir, bid: &str, elf: &[u8]) -> Storage {
        let path = dir.path().join("patch.kpatch");
        std::fs::write(
            &path,
            kpatch_file::write_kpatch(bid, "0001", 0, elf).unwrap(),
        )
        .unwrap();
        Storage::open(&path).unwrap()
    }

    fn app_loaded(range: Range<u64>) -> Loaded {
        Loaded {
            maps: Vec::new(),
            objects: vec![fake::object("app", range, fake::image(APP, &[]), true)],
            patches: Vec::new(),
            unreadable: Vec::new(),
        }
    }

    fn jobs_for(loaded: &Loaded, elf: &[u8]) -> Result<Vec<Job>> {
        let dir = tempfile::tempdir().unwrap();
        let arch = FakeProcess::x86_64().arch();
        find_jobs(
            fake::PID,
            &storage(&dir, APP, elf),
            loaded,
            arch,
            4096,
            None,
            None,
        )
    }

    #[test]
    fn a_patch_is_relocated_for_its_region_and_redirects_its_function() {
        let arch = FakeProcess::x86_64().arch();
        let mut job = jobs_for(&app_loaded(APP_RANGE), &payload(Architecture::X86_64, 0x20))
            .unwrap()
            .remove(0);
        assert_eq!((job.id.as_str(), job.object.name.as_str()), ("0001", "app"));
        let imports: Vec<_> = job.prepared.imports.iter().collect();
        assert_eq!(imports.len(), 1);
        let (&puts, (name, version)) = imports[0];
        assert_eq!((name.as_str(), version), ("puts", &None));
        job.kpta = 0x50_0000;
        let l = job.prepared.layout;
        let in_elf = |addr: u64| (addr - (job.kpta + l.elf_offset)) as usize;
        for (puts_addr, through_table) in [(0x7f12_3456_0000u64, true), (0x40_0800, false)] {
            let resolved = HashMap::from([(puts, puts_addr)]);
            let rel = job
                .prepared
                .relocate(arch, &job.elf, job.kpta, APP_RANGE.start, &resolved)
                .unwrap();
            assert_eq!(rel.records.len(), 1);
            let r = rel.records[0];
            let saddr = r.saddr();
            let code = &rel.elf[in_elf(saddr)..][..NEW_CODE.len()];
            assert_eq!((code[0], code[5]), (0xe8, 0xc3));
            // The call reaches puts directly when it can, else through its jump-table entry.
            let disp = i32::from_le_bytes(code[1..5].try_into().unwrap());
            let target = (saddr + 5).wrapping_add_signed(i64::from(disp));
            let entry = l.jump_entry(job.kpta, 0);
            assert_eq!(target, if through_table { entry } else { puts_addr });
            assert_eq!(rel.jump_table, arch.jump_table_entry(puts_addr));
            let hunks = plan_hunks(&job, &rel, arch).unwrap();
            assert_eq!(
                hunks,
                vec![Hunk {
                    daddr: APP_RANGE.start + GREET,
                    dlen: 0x20,
                    jump: arch.encode_jump(APP_RANGE.start + GREET, saddr).unwrap(),
                    undo_at: job.kpta + l.user_undo,
                    name: "greet".into(),
                }]
            );
        }
    }

    /// The hunks of a patch of a `dlen`-byte `greet` for an object mapped at `range`.
    fn hunks_for(range: Range<u64>, dlen: u32) -> Result<Vec<Hunk>> {
        let arch = FakeProcess::x86_64().arch();
        let mut job = jobs_for(&app_loaded(range), &payload(Architecture::X86_64, dlen))?.remove(0);
        job.kpta = 0x50_0000;
        let puts = *job.prepared.imports.keys().next().unwrap();
        let resolved = HashMap::from([(puts, 0x40_0800)]);
        let rel = job
            .prepared
            .relocate(arch, &job.elf, job.kpta, APP_RANGE.start, &resolved)?;
        plan_hunks(&job, &rel, arch)
    }

    #[test]
    fn functions_the_jump_does_not_fit_are_refused() {
        assert_eq!(hunks_for(APP_RANGE, 5).unwrap().len(), 1);
        let err = hunks_for(APP_RANGE, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "greet in app cannot be patched: it is 4 bytes long, shorter than the 5-byte jump"
        );
        // Outside the object the build-id names.
        let err = hunks_for(APP_RANGE.start..APP_RANGE.start + 0x20, 0x20).unwrap_err();
        assert!(
            err.to_string()
                .contains("greet would be patched at 0x400040, outside app (0x400000-0x400020)"),
            "{err}"
        );
    }

    #[test]
    fn a_patch_file_must_match_an_object_once() {
        let x86 = payload(Architecture::X86_64, 0x20);
        let dir = tempfile::tempdir().unwrap();
        let arch = FakeProcess::x86_64().arch();
        let other = storage(&dir, &"ab".repeat(20), &x86);
        let err = find_jobs(
            fake::PID,
            &other,
            &app_loaded(APP_RANGE),
            arch,
            4096,
            None,
            None,
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, Error::NotApplicable { pid: fake::PID, .. }),
            "{err}"
        );

        let mut loaded = app_loaded(APP_RANGE);
        let mut header = *Header::from_bytes(&[0u8; HEADER_SIZE]).unwrap();
        header.set_magic(MAGIC);
        loaded.patches.push(AppliedPatch {
            kpta: 0x50_0000,
            header,
            id: "0001".into(),
            build_id: APP.into(),
            committed: true,
            records: Vec::new(),
            len: 0x1000,
            orphan: false,
        });
        let err = jobs_for(&loaded, &x86).err().unwrap();
        assert!(
            matches!(&err, Error::AlreadyApplied { id, object, .. } if id == "0001" && object == "app"),
            "{err}"
        );
        // Left pending by an interrupted run, it does not count.
        loaded.patches[0].committed = false;
        assert_eq!(jobs_for(&loaded, &x86).unwrap().len(), 1);

        let err = jobs_for(
            &app_loaded(APP_RANGE),
            &payload(Architecture::Aarch64, 0x20),
        )
        .err()
        .unwrap();
        assert!(
            matches!(&err, Error::WrongArch { patch_arch, target_arch, .. } if patch_arch == "aarch64" && target_arch == "x86_64"),
            "{err}"
        );
    }

    #[test]
    fn a_cumulative_patch_built_on_an_earlier_one_is_refused() {
        let mut elf = elf_edit::Elf::parse(&payload(Architecture::X86_64, 0x20)).unwrap();
        let mut depends = kpatch_file::Depends::default();
        depends.add_patch("0000");
        for (name, data) in [
            (kpatch_file::KPATCH_DEPENDS, depends.to_bytes()),
            (
                kpatch_file::KPATCH_REPLACE,
                kpatch_file::REPLACE_MARKER.to_vec(),
            ),
        ] {
            let flags = elf::SectionFlags(0);
            elf.add_section(elf_edit::Section::new(name, elf::SHT_PROGBITS, flags, data));
        }
        let err = jobs_for(&app_loaded(APP_RANGE), &elf.write())
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::ReplaceNeedsEarlier { id, needs } if id == "0001" && needs == "0000"),
            "{err}"
        );
    }

    #[test]
    fn the_callers_check_sees_each_file_before_it_is_parsed_and_can_refuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let arch = FakeProcess::x86_64().arch();
        let loaded = app_loaded(APP_RANGE);
        let elf = payload(Architecture::X86_64, 0x20);
        let good = storage(&dir, APP, &elf);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let check = |refuse: bool| {
            let seen = seen.clone();
            PatchCheck(std::sync::Arc::new(move |path, bytes| {
                seen.lock().unwrap().push((path.to_owned(), bytes.len()));
                if refuse {
                    Err("it is not signed".to_owned())
                } else {
                    Ok(())
                }
            }))
        };
        let jobs = find_jobs(
            fake::PID,
            &good,
            &loaded,
            arch,
            4096,
            None,
            Some(&check(false)),
        );
        assert_eq!(jobs.unwrap().len(), 1);
        let err = find_jobs(
            fake::PID,
            &good,
            &loaded,
            arch,
            4096,
            None,
            Some(&check(true)),
        )
        .err()
        .unwrap();
        assert!(
            matches!(&err, Error::Refused(why) if why == "it is not signed"),
            "{err}"
        );
        // A file that does not parse is refused by the check, not reported as malformed.
        let path = dir.path().join("patch.kpatch");
        std::fs::write(&path, b"garbage").unwrap();
        let garbage = Storage::open(&path).unwrap();
        let err = find_jobs(
            fake::PID,
            &garbage,
            &loaded,
            arch,
            4096,
            None,
            Some(&check(true)),
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::Refused(_)), "{err}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|(p, _)| p == &path), "{seen:?}");
        assert_eq!(seen[2].1, b"garbage".len());
    }

    #[test]
    fn each_region_is_chosen_near_its_object_and_clear_of_the_others() {
        let limits = SpaceLimits {
            min_addr: 0x1_0000,
            max_addr: 0x7fff_ffff_f000,
            page_size: 0x1000,
            stack_reserve: 0,
        };
        let maps = vec![
            fake::mapping(0x40_0000..0x40_2000, false, true, MapName::Anonymous),
            fake::mapping(0x40_3000..0x40_4000, true, false, MapName::Anonymous),
        ];
        let object = 0x40_0000..0x40_2000;
        let wants = [(object.clone(), 0x3000), (object.clone(), 0x3000)];
        let kptas = choose_regions(&maps, &limits, &wants, 1 << 31).unwrap();
        // Below the object, a guard page away; the second, clear of the first, where it is
        // nearest: above the mapping that follows the object, a guard page away.
        assert_eq!(kptas, [0x3f_c000, 0x40_5000]);
        // Nothing fits within reach for the second one.
        let wants = [(object.clone(), 0x1000), (object, 0x10_0000)];
        assert_eq!(choose_regions(&maps, &limits, &wants, 0x4_0000), Err(1));
    }
}
