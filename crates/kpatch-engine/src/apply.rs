//! `libcare-ctl patch`: plan while the target runs, allocate with one thread stopped, then a
//! short stop of every thread to check safety and write the jumps (docs/internals.md §4).

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use kpatch_arch::{Arch, IfuncCall};
use kpatch_file::{Header, KpatchFile, HEADER_SIZE, MAGIC, MAGIC_PENDING};
use kpatch_process::{
    DeferTermination, Guardian, MapEntry, MapName, Memory, Perms, Process, AT_HWCAP, AT_HWCAP2,
};

use crate::discover::{self, AppliedPatch, LoadedObject};
use crate::elf_image::SymKind;
use crate::error::{Error, Result};
use crate::fault;
use crate::options::Options;
use crate::payload::Payload;
use crate::relocate::Prepared;
use crate::report::Report;
use crate::runs;
use crate::scope::Found;
use crate::storage::Storage;
use crate::world;

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
    /// How long every thread was stopped for the commit (None when nothing applied).
    pub frozen: Option<Duration>,
}

/// A patch matched to an object, on its way into the target.
struct Job<'a> {
    object: &'a LoadedObject,
    header: Header,
    id: String,
    level: Option<u32>,
    elf: Vec<u8>,
    prepared: Prepared,
    imports: Vec<(usize, Found)>,
    kpta: u64,
}

/// A redirect to write.
struct Hunk {
    daddr: u64,
    jump: Vec<u8>,
    undo_at: u64,
    name: String,
}

/// Applies the patches of `storage` that match objects of process `pid`.
pub fn patch(
    pid: i32,
    storage: &Storage,
    opts: &Options,
    rep: &mut dyn Report,
) -> Result<PatchOutcome> {
    // The lock comes first: another run holding it also traces the process, which opening
    // it would refuse.
    if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(kpatch_process::Error::NoSuchProcess { pid }.into());
    }
    let lock = crate::lock::lock(&opts.lock_dir, pid, opts.lock_wait)?;
    let proc = Process::open(pid)?;
    let mut guardian = Guardian::spawn(&proc, &[lock.fd()])?;
    let arch = proc.arch();
    let page = proc.page_size();
    world::reclaim_pending(&proc, opts, &mut guardian, rep)?;
    let maps = proc.maps()?;
    let objects = discover::objects(&proc, &maps)?;
    let applied = discover::applied_patches(&proc, &maps)?;

    let mut jobs = find_jobs(pid, storage, &objects, &applied, arch, page, opts)?;
    if jobs.is_empty() {
        return Ok(PatchOutcome::default());
    }
    let scope = world::scope(&proc, &objects);
    for job in &mut jobs {
        for (&sym, (name, version)) in &job.prepared.imports {
            let found =
                scope
                    .lookup(name, version.as_deref())
                    .ok_or_else(|| Error::Unresolved {
                        name: with_version(name, version.as_deref()),
                    })?;
            rep.detail(&format!(
                "{}: {} resolves to {:#x} in {}",
                job.id, name, found.addr, found.object
            ));
            job.imports.push((sym, found));
        }
    }
    choose_regions(&proc, &maps, &mut jobs, arch)?;

    // Allocate (and run IFUNC resolvers) with one thread stopped while the others run.
    let resolved = allocate(&proc, &mut jobs, arch, opts, rep)?;
    fault::point("after-mmap");
    let result = fill_and_commit(
        &proc,
        &Planned {
            maps: &maps,
            objects: &objects,
            jobs: &jobs,
            resolved: &resolved,
            applied: &applied,
        },
        storage,
        arch,
        opts,
        &mut guardian,
        rep,
    );
    // Nothing points into the regions yet (or the commit rolled its hunks back). Unless the
    // guardian still has writes to do (breakpoints that could not be removed, performed when it
    // is dropped): their regions then stay, pending, for the next run to reclaim.
    if result.is_err() && guardian.armed() == 0 {
        world::unmap_regions(
            &proc,
            jobs.iter().map(|j| (j.kpta, j.prepared.layout.total)),
            opts,
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

fn read_patch(path: &std::path::Path, bytes: &[u8]) -> Result<(Header, String, Vec<u8>)> {
    let file = KpatchFile::parse(bytes).map_err(|source| Error::Format {
        path: path.to_owned(),
        source,
    })?;
    let header = *file.header();
    let id = file.patch_id().to_owned();
    let total = header.total_size() as usize;
    let elf = bytes.get(HEADER_SIZE..total).unwrap_or(&[]).to_vec();
    Ok((header, id, elf))
}

fn find_jobs<'a>(
    pid: i32,
    storage: &Storage,
    objects: &'a [LoadedObject],
    applied: &[AppliedPatch],
    arch: &'static dyn Arch,
    page: u64,
    opts: &Options,
) -> Result<Vec<Job<'a>>> {
    let mut found = Vec::new();
    if let Some(f) = storage.file_bytes()? {
        let (header, _, _) = read_patch(&f.path, &f.bytes)?;
        let bid = header.build_id().unwrap_or_default().to_owned();
        let Some(obj) = objects.iter().find(|o| o.build_id() == Some(bid.as_str())) else {
            return Err(Error::NotApplicable {
                path: f.path,
                build_id: bid,
                pid,
            });
        };
        found.push((obj, f));
    } else {
        for obj in objects {
            let Some(bid) = obj.build_id() else { continue };
            if let Some(f) = storage.lookup_dir(bid)? {
                found.push((obj, f));
            }
        }
    }
    let mut jobs = Vec::new();
    for (object, f) in found {
        if let Some(check) = &opts.check {
            (check.0)(&f.path, &f.bytes).map_err(Error::Refused)?;
        }
        let (header, id, elf) = read_patch(&f.path, &f.bytes)?;
        if applied
            .iter()
            .any(|a| a.committed && a.id == id && Some(a.build_id.as_str()) == object.build_id())
        {
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
                path: f.path,
                patch_arch,
                target_arch: arch.name().into(),
                pid,
            });
        }
        let prepared = Prepared::new(arch, payload, &elf, page)?;
        jobs.push(Job {
            object,
            header,
            id,
            level: f.level,
            elf,
            prepared,
            imports: Vec::new(),
            kpta: 0,
        });
    }
    Ok(jobs)
}

fn choose_regions(
    proc: &Process,
    maps: &[MapEntry],
    jobs: &mut [Job<'_>],
    arch: &dyn Arch,
) -> Result<()> {
    let limits = proc.space_limits(maps);
    let mut taken: Vec<MapEntry> = maps.to_vec();
    for job in jobs.iter_mut() {
        let size = job.prepared.layout.total;
        let kpta = kpatch_process::find_region(
            &taken,
            job.object.range.clone(),
            size,
            arch.max_branch_distance(),
            &limits,
        )
        .ok_or_else(|| Error::NoRegion {
            object: job.object.name.clone(),
            size,
            pid: proc.pid(),
        })?;
        job.kpta = kpta;
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
    Ok(())
}

/// Maps every region and resolves IFUNC imports, with one thread stopped. Returns the final
/// address of every import, by job and payload symbol index.
fn allocate(
    proc: &Process,
    jobs: &mut [Job<'_>],
    arch: &dyn Arch,
    opts: &Options,
    rep: &mut dyn Report,
) -> Result<Vec<HashMap<usize, u64>>> {
    let _defer = DeferTermination::new();
    let mut stopped = world::stop_one(proc, opts)?;
    let mut mapped: Vec<(u64, u64)> = Vec::new();
    let mut out = Vec::new();
    let mut ifunc_call: Option<IfuncCall> = None;
    let result = (|| -> Result<()> {
        let mut thread = stopped.thread();
        for job in jobs.iter() {
            let l = job.prepared.layout;
            thread.mmap(
                Some(job.kpta),
                l.total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            )?;
            mapped.push((job.kpta, l.total));
            // The header is what identifies the region; put a pending one there at once so an
            // interrupted run leaves something the next run can recognise and reclaim.
            let mut header = job.header;
            header.set_magic(MAGIC_PENDING);
            header.set_kpatch_total_mem_sz(l.total);
            proc.write(job.kpta, header.as_bytes())?;
            thread.mprotect(job.kpta, l.rx_len, libc::PROT_READ | libc::PROT_EXEC)?;
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
    Ok(out)
}

/// Names the function an info record replaces, from the patch's string table.
fn record_name(job: &Job<'_>, relocated_elf: &[u8], symstr: u64) -> String {
    let base = job.kpta + job.prepared.layout.elf_offset;
    let name = symstr
        .checked_sub(base)
        .and_then(|off| relocated_elf.get(off as usize..))
        .and_then(|s| s.split(|&b| b == 0).next())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".kpatch").unwrap_or(&name).to_owned();
    if name.is_empty() {
        format!("function at {symstr:#x}")
    } else {
        name
    }
}

/// What the run found and decided while the target ran.
struct Planned<'a, 'o> {
    maps: &'a [MapEntry],
    objects: &'o [LoadedObject],
    jobs: &'a [Job<'o>],
    resolved: &'a [HashMap<usize, u64>],
    applied: &'a [AppliedPatch],
}

fn fill_and_commit(
    proc: &Process,
    plan: &Planned<'_, '_>,
    storage: &Storage,
    arch: &'static dyn Arch,
    opts: &Options,
    guardian: &mut Guardian,
    rep: &mut dyn Report,
) -> Result<PatchOutcome> {
    let Planned {
        maps,
        objects,
        jobs,
        resolved,
        applied,
    } = *plan;
    let hs = arch.hunk_size();
    let mut hunks: Vec<Hunk> = Vec::new();
    let mut replaced: Vec<(Range<u64>, String)> = Vec::new();
    let mut outcome = PatchOutcome::default();
    let mut next_seq = applied
        .iter()
        .map(|a| a.header.applied_seq())
        .max()
        .unwrap_or(0)
        + 1;
    for (job, imports) in jobs.iter().zip(resolved) {
        let l = job.prepared.layout;
        let rel = job
            .prepared
            .relocate(arch, &job.elf, job.kpta, job.object.load_bias, imports)?;
        let mut nh = 0;
        for (i, r) in rel.records.iter().enumerate() {
            if r.is_new_function() {
                continue;
            }
            let name = record_name(job, &rel.elf, r.symstr());
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
            let jump = arch.encode_jump(r.daddr(), r.saddr())?;
            replaced.push((
                r.daddr()..r.daddr() + u64::from(r.dlen()),
                format!("{name} ({})", job.object.name),
            ));
            hunks.push(Hunk {
                daddr: r.daddr(),
                jump,
                undo_at: job.kpta + l.user_undo + (i * hs) as u64,
                name,
            });
            nh += 1;
        }
        let mut header = job.header;
        header.set_magic(MAGIC_PENDING);
        header.set_jmp_offset(l.jmp_offset as u32);
        header.set_elf_offset(l.elf_offset as u32);
        header.set_user_undo(l.user_undo as u32);
        header.set_user_info(l.user_info as u32);
        header.set_user_level(job.level.unwrap_or(0));
        header.set_kpatch_total_mem_sz(l.total);
        header.set_applied_seq(next_seq);
        next_seq += 1;
        proc.write(job.kpta, header.as_bytes())?;
        if !rel.jump_table.is_empty() {
            proc.write(job.kpta + l.jmp_offset, &rel.jump_table)?;
        }
        proc.write(job.kpta + l.elf_offset, &rel.elf)?;
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
    fault::point("after-write");

    // The original bytes are saved and the new code pages read while the target still runs;
    // the stop only checks them and writes each run of pages once.
    let mut jumps = Vec::with_capacity(hunks.len());
    let mut back: Vec<(u64, Vec<u8>)> = Vec::with_capacity(hunks.len() + jobs.len());
    for h in &hunks {
        let mut old = vec![0u8; hs.max(h.jump.len())];
        proc.read(h.daddr, &mut old)?;
        proc.write(h.undo_at, &old[..hs])?;
        jumps.push((h.daddr, h.jump.clone()));
        old.truncate(h.jump.len());
        back.push((h.daddr, old));
    }
    let runs = runs::plan(proc, &jumps, proc.page_size())?;
    // Writing the pages back unchanged makes the kernel copy them (copy-on-write) now, while
    // the target runs, rather than during the stop. Threads running that code see the same
    // bytes throughout. Not in a writable mapping: the target could change a byte of it
    // between our read and our write.
    for r in &runs {
        let end = r.addr + r.old.len() as u64;
        let read_only = maps
            .iter()
            .filter(|m| m.start < end && r.addr < m.end)
            .all(|m| !m.perms.write);
        if read_only {
            proc.write(r.addr, &r.old)?;
        }
    }
    let heads: Vec<u64> = jobs.iter().map(|j| j.kpta).collect();
    back.extend(heads.iter().map(|&k| (k, MAGIC_PENDING.to_vec())));
    let mut safety = world::Safety::new(proc, maps, objects, applied, replaced)?;
    // Armed before the stop, the way back costs nothing inside it: until the commit it only
    // rewrites bytes with their current values.
    let below = guardian.armed();
    guardian.arm(&back)?;
    let mut after_failed = None;
    // Looked up now: the stop only runs them.
    let (before, after) = (storage.script("before"), storage.script("after"));
    // Set once the threads that were running go on before the headers are marked.
    let mut released_early = false;
    let frozen = world::with_safe_stop(
        proc,
        opts,
        &mut safety,
        guardian,
        rep,
        |stopped, _guardian, _found, _rep| {
            if let Some(script) = &before {
                world::run_script(script, proc.pid())?;
            }
            fault::point("stopped");
            // The guardian holds `back`, the way back (original bytes, pending magic): a tool
            // dying at any point of the series leaves the target unpatched rather than half
            // patched. A run write that fails puts back the runs already written.
            runs::commit(proc, &runs, &|| fault::point("first-hunk"))?;
            fault::point("after-hunks");
            // The jumps are in: the threads that were running need not wait for the headers.
            // An `after` script runs with every thread stopped, as the peer's does.
            if after.is_none() {
                released_early = true;
                stopped.release_running(false)?;
            }
            commit_headers(proc, &heads, &back, released_early)?;
            fault::point("after-commit");
            // The jumps are in: failing now would unmap code they lead to. LibcarePlus, too,
            // only reports a failed `after` script.
            if let Some(script) = &after {
                after_failed = world::run_script(script, proc.pid()).err();
            }
            Ok(world::AfterCommit::default())
        },
    );
    // Nothing was committed: our batch is not needed. A batch left above it (breakpoints that
    // could not be removed) stays armed, and is performed when the guardian is dropped. Once
    // threads ran the new code, a failure leaves the batch armed: the guardian puts the
    // original bytes back when dropped, and the regions stay for the next run to reclaim.
    if frozen.is_err() && guardian.armed() == below + 1 && !released_early {
        let _ = guardian.disarm();
    }
    let frozen = frozen?;
    // The series is complete: the way back is no longer needed. Disarmed once the threads run
    // again (nothing is gained by doing it in the stop): a tool dying before this leaves the
    // target unpatched (the guardian puts the original bytes back; the region, pending, is
    // reclaimed by the next run).
    let _ = guardian.disarm();
    fault::point("committed");
    if let Some(e) = after_failed {
        rep.info(&format!("warning: {e}; the patch stays applied"));
    }
    for h in &hunks {
        rep.detail(&format!(
            "{} at {:#x} now jumps to the patch",
            h.name, h.daddr
        ));
    }
    outcome.frozen = Some(frozen);
    Ok(outcome)
}

/// Marks every region committed (`KPATCH1` in the header at each of `heads`). If a write
/// fails, the threads still all stopped (`released` false), the original bytes in `back` are
/// put back; otherwise that is left to the guardian, which the caller leaves armed.
fn commit_headers(
    mem: &dyn Memory,
    heads: &[u64],
    back: &[(u64, Vec<u8>)],
    released: bool,
) -> Result<()> {
    for &k in heads {
        if let Err(e) = mem.write(k, &MAGIC) {
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
