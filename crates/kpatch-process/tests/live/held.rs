use std::time::{Duration, Instant};

use kpatch_process::{HeldEvent, HeldThread, Memory, Process};

use crate::harness::{task_state, Target, DEADLINE};

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const ANON: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// The next event of `held`, which must come within the deadline.
fn next(held: &mut HeldThread) -> HeldEvent {
    held.wait(Instant::now() + DEADLINE)
        .unwrap()
        .expect("an event in time")
}

#[test]
fn a_held_thread_is_followed_through_exec_and_adopted_by_stops() {
    let mut t = Target::spawn("execs", &[]);
    let pid = t.pid;
    let mut held = HeldThread::seize(pid, pid, true).unwrap();
    // Another handle cannot hold it too.
    assert!(HeldThread::seize(pid, pid, false).is_err());
    t.send("exec");
    assert_eq!(next(&mut held), HeldEvent::Exec);
    // Out of execve, before the new program's first instruction: syscalls can run in it.
    assert!(held.stop_in_user_mode().unwrap());
    let proc = Process::open_held(&held).unwrap();
    let page = proc.page_size();
    {
        let mut th = held.handle(&proc).unwrap();
        let before = th.regs().unwrap();
        let a = th.mmap(None, page, RW, ANON).unwrap();
        proc.write(a, b"held").unwrap();
        assert_eq!(proc.read_vec(a, 4).unwrap(), b"held");
        th.munmap(a, page).unwrap();
        assert_eq!(th.pc().unwrap(), before[proc.arch().regs().pc]);
    }
    // The process's stops adopt the held thread as it is and leave it stopped.
    let stopped = proc.stop_all(DEADLINE).unwrap();
    assert_eq!(stopped.tids(), vec![pid]);
    stopped.resume().unwrap();
    assert!(held.is_stopped());
    assert!(held
        .wait(Instant::now() + Duration::from_millis(50))
        .unwrap()
        .is_none());
    assert_eq!(task_state(pid, pid), Some('t'));
    // Let go, the new program runs from its first instruction.
    held.release().unwrap();
    t.expect("ready 1");
    t.send("exec");
    t.expect("ready 2");
}

#[test]
fn a_held_thread_interrupted_and_let_go_runs_on() {
    let mut t = Target::spawn("execs", &[]);
    let pid = t.pid;
    let mut held = HeldThread::seize(pid, pid, false).unwrap();
    held.interrupt().unwrap();
    assert_eq!(next(&mut held), HeldEvent::Interrupted);
    // Parking a stop that is not a signal's changes nothing.
    held.park().unwrap();
    assert!(held.is_stopped());
    // Without follow_exec an exec is not reported.
    held.resume(0).unwrap();
    t.send("exec");
    t.expect("ready 1");
    drop(held);
    t.send("exec");
    t.expect("ready 2");
}

#[test]
fn a_held_thread_backs_out_of_a_syscall_and_makes_it_again() {
    let mut t = Target::spawn("execs", &[]);
    let pid = t.pid;
    t.send("map");
    let addr = Target::field(&t.expect("mapped"), "addr");
    let mut held = HeldThread::seize(pid, pid, false).unwrap();
    held.interrupt().unwrap();
    assert_eq!(next(&mut held), HeldEvent::Interrupted);
    let proc = Process::open_held(&held).unwrap();
    let munmap = proc.arch().sys_munmap();
    // Syscall by syscall to the munmap of the page.
    held.resume_to_syscall(0).unwrap();
    t.send("unmap");
    loop {
        assert_eq!(next(&mut held), HeldEvent::Syscall);
        match held.syscall_entry().unwrap() {
            Some((nr, args)) if nr == munmap && args[0] == addr => break,
            _ => held.resume_to_syscall(0).unwrap(),
        }
    }
    assert!(held.back_out_of_syscall(&proc).unwrap());
    // Not made yet: the page is there, the thread on the syscall instruction, and it can run
    // syscalls of ours.
    let mapped = |p: &Process| p.maps().unwrap().iter().any(|m| m.start == addr);
    assert!(mapped(&proc));
    {
        let mut th = held.handle(&proc).unwrap();
        let insn = proc.arch().syscall_insn();
        assert_eq!(proc.read_vec(th.pc().unwrap(), insn.len()).unwrap(), insn);
        let page = proc.page_size();
        let a = th.mmap(None, page, RW, ANON).unwrap();
        th.munmap(a, page).unwrap();
    }
    // Let go, it makes the call, which succeeds.
    held.release().unwrap();
    t.expect("unmapped 0");
    assert!(!mapped(&proc));
}
