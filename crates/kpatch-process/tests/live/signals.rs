use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kpatch_process::Process;

use crate::harness::{wait_until, Target, DEADLINE};

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const ANON: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

fn sigqueue(pid: i32, value: i32) {
    let v = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue takes plain values.
    let r = unsafe { libc::sigqueue(pid, libc::SIGRTMIN(), v) };
    assert_eq!(r, 0, "sigqueue: {}", std::io::Error::last_os_error());
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill takes plain values.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Asks the fixture for its counts until `rt` reaches `want`.
fn report_when(t: &mut Target, want: u64) -> String {
    let mut line = String::new();
    wait_until("all signals delivered", || {
        t.send("report");
        line = t.expect("report");
        Target::field(&line, "rt") >= want
    });
    line
}

#[test]
fn a_signal_sent_while_stopped_is_delivered_after_resume() {
    let mut t = Target::spawn("signals", &[]);
    let p = Process::open(t.pid).unwrap();
    let stopped = p.stop_all(DEADLINE).unwrap();
    kill(t.pid, libc::SIGUSR1);
    sigqueue(t.pid, 7);
    stopped.resume().unwrap();
    let line = report_when(&mut t, 1);
    let me = std::process::id() as u64;
    assert_eq!(
        line,
        format!("report rt=1 dup=0 bad=0 usr1=1 usr1_code=0 usr1_pid={me}")
    );
    assert!(
        !t.seen.iter().any(|l| l.contains("read error")),
        "{:?}",
        t.seen
    );
}

#[test]
fn signals_caught_by_injected_syscalls_come_back_with_their_siginfo() {
    let mut t = Target::spawn("signals", &[]);
    let p = Process::open(t.pid).unwrap();
    let page = p.page_size();
    let mut sent = 0;
    for cycle in 0..20 {
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        // Pending while stopped; the single-step of the injected syscall dequeues them.
        for _ in 0..=(cycle % 3) {
            sigqueue(t.pid, sent);
            sent += 1;
        }
        if cycle == 5 {
            kill(t.pid, libc::SIGUSR1);
        }
        let mut th = stopped.thread(t.pid).unwrap();
        let a = th.mmap(None, page, RW, ANON).unwrap();
        th.munmap(a, page).unwrap();
        stopped.resume().unwrap();
    }
    let line = report_when(&mut t, sent as u64);
    let me = std::process::id() as u64;
    // SI_USER (0) and our pid: queued back from inside the thread, not re-sent by us.
    assert_eq!(
        line,
        format!("report rt={sent} dup=0 bad=0 usr1=1 usr1_code=0 usr1_pid={me}")
    );
    assert!(
        !t.seen.iter().any(|l| l.contains("read error")),
        "{:?}",
        t.seen
    );
}

#[test]
fn signals_racing_with_stop_and_resume_are_neither_lost_nor_doubled() {
    const SIGNALS: i32 = 3000;
    let mut t = Target::spawn("signals", &[]);
    let pid = t.pid;
    let p = Process::open(pid).unwrap();
    let page = p.page_size();
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = done.clone();
        std::thread::spawn(move || {
            for v in 0..SIGNALS {
                sigqueue(pid, v);
                if v % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut cycles = 0;
    while !done.load(Ordering::SeqCst) || cycles < 20 {
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        if cycles % 2 == 0 {
            let mut th = stopped.thread(pid).unwrap();
            let a = th.mmap(None, page, RW, ANON).unwrap();
            th.munmap(a, page).unwrap();
        }
        stopped.resume().unwrap();
        cycles += 1;
    }
    sender.join().unwrap();
    let line = report_when(&mut t, SIGNALS as u64);
    assert_eq!(
        line,
        format!("report rt={SIGNALS} dup=0 bad=0 usr1=0 usr1_code=0 usr1_pid=0")
    );
    assert!(
        !t.seen.iter().any(|l| l.contains("read error")),
        "{:?}",
        t.seen
    );
}
