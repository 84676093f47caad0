use kpatch_process::{find_region, Error, Memory, Process, ThreadHandle};
use nix::errno::Errno;

use crate::harness::{task_state, wait_until, Target, DEADLINE};

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const ANON: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// mmap, use, mprotect, munmap in one thread, checking the registers come back unchanged.
fn exercise(p: &Process, th: &mut ThreadHandle<'_>, page: u64) {
    let before = th.regs().unwrap();
    let len = 3 * page;
    let a = th.mmap(None, len, RW, ANON).unwrap();
    assert_eq!(a % page, 0);
    p.write(a + 100, b"hello").unwrap();
    assert_eq!(p.read_vec(a + 100, 5).unwrap(), b"hello");
    th.mprotect(a, len, libc::PROT_READ).unwrap();
    let m = p
        .maps()
        .unwrap()
        .into_iter()
        .find(|m| m.start == a)
        .unwrap();
    assert_eq!((m.end, m.perms.to_string().as_str()), (a + len, "r--p"));
    th.munmap(a, len).unwrap();
    assert!(p.maps().unwrap().iter().all(|m| !m.contains(a)));
    // A failing syscall is a typed error, and the thread is restored all the same.
    let err = th.munmap(a + 1, page).unwrap_err();
    assert!(
        matches!(&err, Error::RemoteSyscall { errno: Errno::EINVAL, syscall, .. } if syscall == "munmap"),
        "{err}"
    );
    assert_eq!(
        program_visible(th.regs().unwrap()),
        program_visible(before),
        "thread {}",
        th.tid()
    );
}

/// The registers as the program will see them once resumed. On aarch64 two `pstate` bits
/// read back differently after single-stepping a syscall (seen on Linux 6.1 under QEMU): SS
/// (bit 21), which the kernel keeps set while a single-step is armed and clears at the next
/// resume, and SSBS (bit 12), the speculative-store-bypass control the kernel manages.
fn program_visible(mut regs: Vec<u64>) -> Vec<u64> {
    if cfg!(target_arch = "aarch64") {
        if let Some(pstate) = regs.get_mut(33) {
            *pstate &= !((1 << 21) | (1 << 12));
        }
    }
    regs
}

#[test]
fn remote_syscalls_in_blocked_threads_cause_no_eintr() {
    let mut t = Target::spawn("blocked", &[]);
    let pid = t.pid;
    // Main + read, nanosleep, futex, cond, accept, epoll: all asleep in their calls.
    wait_until("7 threads asleep", || {
        let tids = t.tids();
        tids.len() == 7 && tids.iter().all(|&tid| task_state(pid, tid) == Some('S'))
    });
    let p = Process::open(pid).unwrap();
    let page = p.page_size();
    let maps = p.maps().unwrap();
    let exe: Vec<_> = maps
        .iter()
        .filter(|m| m.file_path() == Some(p.exe_path()))
        .collect();
    let object =
        exe.iter().map(|m| m.start).min().unwrap()..exe.iter().map(|m| m.end).max().unwrap();
    let limits = p.space_limits(&maps);

    {
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        assert_eq!(stopped.tids().len(), 7);
        for tid in stopped.tids() {
            exercise(&p, &mut stopped.thread(tid).unwrap(), page);
        }
        // A fixed address next to the executable, chosen from the maps.
        let dist = p.arch().max_branch_distance();
        let at = find_region(&maps, object.clone(), 4 * page, dist, &limits).unwrap();
        let mut th = stopped.thread(pid).unwrap();
        assert_eq!(th.mmap(Some(at), 4 * page, RW, ANON).unwrap(), at);
        let m = p
            .maps()
            .unwrap()
            .into_iter()
            .find(|m| m.start == at)
            .unwrap();
        assert_eq!(m.end, at + 4 * page);
        assert!((at + 4 * page - 1).abs_diff(object.start) <= dist);
        // MAP_FIXED_NOREPLACE: an occupied address is refused, not clobbered.
        let err = th.mmap(Some(at), page, RW, ANON).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RemoteSyscall {
                    errno: Errno::EEXIST,
                    ..
                }
            ),
            "{err}"
        );
        th.munmap(at, 4 * page).unwrap();
        stopped.resume().unwrap();
    }

    // One thread at a time while the others run.
    for tid in t.tids() {
        let mut one = p.stop_one(tid, DEADLINE).unwrap();
        assert_eq!(one.tid(), tid);
        exercise(&p, &mut one.thread(), page);
        one.resume().unwrap();
    }
    let err = p.stop_one(i32::MAX, DEADLINE).unwrap_err();
    assert!(matches!(err, Error::NoSuchThread { .. }), "{err}");

    t.send("release");
    let done = t.expect("done");
    assert_eq!(done, "done eintr=0", "{:?}", t.seen);
    assert!(!t.seen.iter().any(|l| l.contains("EINTR")), "{:?}", t.seen);
    for call in [
        "read returned 1",
        "nanosleep done",
        "futex done",
        "cond done",
        "accept returned a socket",
        "epoll_wait returned 1",
    ] {
        assert!(
            t.seen.iter().any(|l| l == call),
            "{call:?} missing from {:?}",
            t.seen
        );
    }
}
