//! Which pages a running process wrote, by userfaultfd or soft-dirty bits (whichever the
//! kernel offers; each is checked where it works), what it holds in memory, and which mappings
//! it marked not to be inherited by a child.

use std::ops::Range;

use kpatch_process::{Process, WriteWatch};

use crate::harness::{Target, DEADLINE};

/// Checks a watch over the fixture's buffer: only the pages touched after the start count.
fn check(t: &mut Target, watch: &mut WriteWatch, buffer: Range<u64>, page: u64) {
    let pages = |list: &[u64]| -> Vec<Range<u64>> {
        list.iter()
            .map(|&n| buffer.start + n * page..buffer.start + (n + 1) * page)
            .collect()
    };
    t.send("touch 3");
    t.expect("touched 3");
    let watched = watch.start(std::slice::from_ref(&buffer)).unwrap();
    assert_eq!(watched, vec![buffer.clone()], "{}", watch.name());
    assert_eq!(watch.written(&watched).unwrap(), vec![], "{}", watch.name());
    // A page written before (5), an untouched one (40): both are counted once written.
    for n in [5, 40] {
        t.send(&format!("touch {n}"));
        t.expect(&format!("touched {n}"));
    }
    assert_eq!(
        watch.written(&watched).unwrap(),
        pages(&[5, 40]),
        "{}",
        watch.name()
    );
    // Taken: listed once, then forgotten (userfaultfd only).
    if let Some(taken) = watch.take_written(&watched).unwrap() {
        assert_eq!(taken, pages(&[5, 40]));
        t.send("touch 7");
        t.expect("touched 7");
        assert_eq!(watch.written(&watched).unwrap(), pages(&[7]));
    }
    // Started again: forgotten.
    watch.start(&watched).unwrap();
    assert_eq!(watch.written(&watched).unwrap(), vec![], "{}", watch.name());
}

#[test]
fn pages_written_since_a_start_are_listed() {
    let mut t = Target::spawn("basic", &[]);
    let p = Process::open(t.pid).unwrap();
    t.send("buffer");
    let line = t.expect("buffer=");
    let (start, guest) = (
        Target::field(&line, "buffer"),
        Target::field(&line, "guest"),
    );
    let page = p.page_size();
    let buffer = start..start + 64 * page;
    // Only the pages written hold data; the guest-like mapping is marked.
    assert_eq!(
        p.resident(buffer.clone()).unwrap(),
        vec![start..start + 32 * page]
    );
    assert_eq!(p.dont_fork().unwrap(), vec![guest..guest + 16 * page]);
    assert!(!p.seccomp_filtered().unwrap());
    let maps = p.maps().unwrap();

    let mut one = p.stop_one(t.pid, DEADLINE).unwrap();
    let uffd = WriteWatch::userfaultfd(&mut one.thread()).unwrap();
    one.resume().unwrap();
    if let Some(mut watch) = uffd {
        check(&mut t, &mut watch, buffer.clone(), page);
        // The target's descriptor was closed again; ours ends the registration.
        let fds = std::fs::read_dir(format!("/proc/{}/fd", t.pid))
            .unwrap()
            .count();
        drop(watch);
        assert_eq!(
            std::fs::read_dir(format!("/proc/{}/fd", t.pid))
                .unwrap()
                .count(),
            fds
        );
    }
    if let Some(mut watch) = WriteWatch::soft_dirty(&p).unwrap() {
        check(&mut t, &mut watch, buffer.clone(), page);
    }
    assert_eq!(p.maps().unwrap(), maps);
    t.send("print");
    assert_eq!(t.expect("value="), "value=1234 rodata=42");
}
