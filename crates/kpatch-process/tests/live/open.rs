use std::io::Read;
use std::process::Command;

use kpatch_process::{Error, MapName, Process};

use crate::harness::{fixture, wait_until, Target};

#[test]
fn identifies_a_running_program() {
    let t = Target::spawn("basic", &[]);
    let p = Process::open(t.pid).unwrap();
    assert_eq!(p.pid(), t.pid);
    assert_eq!(p.arch().name(), kpatch_arch::host().name());
    assert_eq!(
        p.exe_path(),
        std::fs::canonicalize(fixture("basic")).unwrap()
    );
    assert_eq!(p.comm(), "basic");
    assert_eq!(p.thread_ids().unwrap(), vec![t.pid]);

    let maps = p.maps().unwrap();
    let exe: Vec<_> = maps
        .iter()
        .filter(|m| m.file_path() == Some(p.exe_path()))
        .collect();
    assert!(exe.iter().any(|m| m.perms.exec), "{maps:?}");
    let lo = exe.iter().map(|m| m.start).min().unwrap();
    let hi = exe.iter().map(|m| m.end).max().unwrap();
    let vdso = maps
        .iter()
        .find(|m| m.is_special("[vdso]"))
        .expect("a vdso");

    let auxv = p.auxv().unwrap();
    assert!((lo..hi).contains(&auxv.entry().unwrap()));
    assert!((lo..hi).contains(&auxv.phdr().unwrap()));
    assert_eq!(auxv.vdso(), Some(vdso.start));
    assert_ne!(auxv.interp_base(), Some(0), "dynamically linked");
    assert_eq!(p.page_size(), auxv.page_size().unwrap());

    let first = exe.iter().find(|m| m.offset == 0).unwrap();
    let mut magic = [0u8; 4];
    p.open_mapped_file(first)
        .unwrap()
        .read_exact(&mut magic)
        .unwrap();
    assert_eq!(&magic, b"\x7fELF");
    p.open_exe().unwrap().read_exact(&mut magic).unwrap();
    assert_eq!(&magic, b"\x7fELF");
    let anon = maps
        .iter()
        .find(|m| m.name == MapName::Anonymous || m.is_stack())
        .unwrap();
    assert!(matches!(
        p.open_mapped_file(anon),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn refuses_what_cannot_be_patched() {
    // A pid that no longer exists: a child that has been reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id() as i32;
    gone.wait().unwrap();
    let err = Process::open(gone_pid).unwrap_err();
    assert!(
        matches!(err, Error::NoSuchProcess { pid } if pid == gone_pid),
        "{err}"
    );
    assert_eq!(err.to_string(), format!("no process with pid {gone_pid}"));
    assert!(matches!(
        Process::open(-1),
        Err(Error::NoSuchProcess { .. })
    ));

    // A zombie: a child that exited and was not reaped yet.
    let mut zombie = Command::new("true").spawn().unwrap();
    let zpid = zombie.id() as i32;
    wait_until("the child to become a zombie", || {
        crate::harness::task_state(zpid, zpid) == Some('Z')
    });
    let err = Process::open(zpid).unwrap_err();
    assert!(matches!(err, Error::Zombie { pid } if pid == zpid), "{err}");
    assert!(err.to_string().contains("zombie"));
    zombie.wait().unwrap();

    // Ourselves.
    let me = std::process::id() as i32;
    let err = Process::open(me).unwrap_err();
    assert!(matches!(err, Error::SelfTarget { .. }), "{err}");

    // A kernel thread (pid 2 is kthreadd, unless we run in a pid namespace).
    let kthread = std::fs::read_to_string("/proc/2/stat").ok().and_then(|s| {
        let flags: u64 = s[s.rfind(')')? + 1..]
            .split_ascii_whitespace()
            .nth(6)?
            .parse()
            .ok()?;
        Some(flags & 0x0020_0000 != 0)
    });
    if kthread == Some(true) {
        let err = Process::open(2).unwrap_err();
        assert!(matches!(err, Error::KernelThread { pid: 2 }), "{err}");
        assert_eq!(
            err.to_string(),
            "pid 2 is a kernel thread: nothing to patch"
        );
    } else {
        eprintln!("pid 2 is not a kernel thread here; kernel-thread check skipped");
    }

    // A thread that is not the process.
    let threads = Target::spawn("threads", &["3", "0"]);
    wait_until("3 threads", || threads.tids().len() == 3);
    let tid = *threads.tids().iter().find(|&&t| t != threads.pid).unwrap();
    let err = Process::open(tid).unwrap_err();
    assert!(
        matches!(err, Error::NotProcess { tid: a, tgid } if a == tid && tgid == threads.pid),
        "{err}"
    );
}
