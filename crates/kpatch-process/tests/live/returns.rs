//! Letting a thread run until it returns from a function, the others stopped.

use std::time::{Duration, Instant};

use kpatch_process::{Memory, Process, ReturnPoint};

use crate::harness::{Target, DEADLINE};

/// The return point the fixture printed.
fn point(t: &mut Target) -> ReturnPoint {
    let line = t.expect("point ");
    ReturnPoint {
        tid: Target::field(&line, "tid") as i32,
        addr: Target::field(&line, "ret"),
        sp: Target::field(&line, "sp"),
    }
}

fn pc_of(p: &Process, stopped: &mut kpatch_process::StoppedProcess<'_>, tid: i32) -> u64 {
    let regs = stopped.thread(tid).unwrap().regs().unwrap();
    regs[p.arch().regs().pc]
}

#[test]
fn a_thread_runs_to_its_return_and_stops_there() {
    let mut t = Target::spawn("returns", &["loop"]);
    let pt = point(&mut t);
    let p = Process::open(t.pid).unwrap();
    let original = p.read_vec(pt.addr, 1).unwrap();
    for round in 0..3 {
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        let mut inserted = 0;
        let report = stopped
            .run_to(&[pt], Duration::from_secs(5), None, &mut || inserted += 1)
            .unwrap();
        assert_eq!(inserted, 1);
        assert_eq!(report.arrived, vec![pt.tid], "round {round}: {report:?}");
        assert_eq!(pc_of(&p, &mut stopped, pt.tid), pt.addr);
        let sp = stopped.thread(pt.tid).unwrap().sp().unwrap();
        assert_eq!(sp, pt.sp);
        assert_eq!(p.read_vec(pt.addr, 1).unwrap(), original, "breakpoint left");
        stopped.resume().unwrap();
        t.expect("back ");
    }
}

#[test]
fn a_thread_that_never_returns_times_out_and_is_left_intact() {
    let mut t = Target::spawn("returns", &["stuck"]);
    let pt = point(&mut t);
    let p = Process::open(t.pid).unwrap();
    let original = p.read_vec(pt.addr, 1).unwrap();
    let mut stopped = p.stop_all(DEADLINE).unwrap();
    let start = Instant::now();
    let report = stopped
        .run_to(&[pt], Duration::from_millis(300), None, &mut || {})
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(report.late, vec![pt.tid]);
    assert!(report.arrived.is_empty());
    assert_eq!(p.read_vec(pt.addr, 1).unwrap(), original);
    // Every thread is stopped again.
    for tid in stopped.tids() {
        assert_eq!(crate::harness::task_state(t.pid, tid), Some('t'));
    }
    stopped.resume().unwrap();
    assert!(p.maps().is_ok());
}

#[test]
fn a_deeper_return_through_the_same_address_is_stepped_over() {
    let mut t = Target::spawn("returns", &["recurse"]);
    let pt = point(&mut t);
    let p = Process::open(t.pid).unwrap();
    let original = p.read_vec(pt.addr, 1).unwrap();
    // Catch the worker while level(0) sleeps, so that its return into level(1) comes first.
    for _ in 0..5 {
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        let report = stopped
            .run_to(&[pt], Duration::from_secs(5), None, &mut || {})
            .unwrap();
        assert_eq!(report.arrived, vec![pt.tid], "{report:?}");
        assert_eq!(pc_of(&p, &mut stopped, pt.tid), pt.addr);
        assert_eq!(p.read_vec(pt.addr, 1).unwrap(), original);
        stopped.resume().unwrap();
        t.expect("back ");
    }
}

#[test]
fn threads_and_processes_born_meanwhile_are_handled() {
    let mut t = Target::spawn("returns", &["spawn"]);
    let pt = point(&mut t);
    let p = Process::open(t.pid).unwrap();
    // Rounds until one catches the worker before its fork.
    let mut saw_birth = false;
    for _ in 0..10 {
        t.expect("back ");
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        let report = stopped
            .run_to(&[pt], Duration::from_secs(5), None, &mut || {})
            .unwrap();
        assert_eq!(report.arrived, vec![pt.tid], "{report:?}");
        for tid in &report.born {
            assert_eq!(crate::harness::task_state(t.pid, *tid), Some('t'));
            saw_birth = true;
        }
        stopped.resume().unwrap();
        // The forked child returned through the breakpoint address in its own memory.
        let status = t.expect("child status=");
        assert_eq!(status, "child status=0", "the forked child died");
        if saw_birth {
            break;
        }
    }
    assert!(saw_birth, "no thread was created during a wait");
    t.expect("born");
}

#[test]
fn signals_arriving_meanwhile_are_delivered() {
    let mut t = Target::spawn("returns", &["loop"]);
    let pt = point(&mut t);
    let p = Process::open(t.pid).unwrap();
    let pid = t.pid;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: tgkill takes three integers.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, pt.tid, libc::SIGUSR1) };
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    for _ in 0..5 {
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        let report = stopped
            .run_to(&[pt], Duration::from_secs(5), None, &mut || {})
            .unwrap();
        assert_eq!(report.arrived, vec![pt.tid], "{report:?}");
        stopped.resume().unwrap();
        t.expect("back ");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    // Every signal reaches the handler (standard signals may merge while pending).
    let line = t.expect("back ");
    let got = Target::field(&line, "signals");
    assert!(got > 0 && got <= sent, "{got} of {sent} signals");
}
