//! The guardian performs armed batches, and only those, when its owner lets go of it.

use kpatch_process::{Guardian, GuardianForker, Memory, Process};

use crate::harness::Target;

/// Directly, then through a forker (the guardians are not our children then, and letting one
/// go still waits until it has performed its batches and exited), then directly again once the
/// forker is gone.
#[test]
fn armed_batches_are_performed_when_the_guardian_is_let_go() {
    armed_batches_are_performed(None);
    let forker = GuardianForker::start().unwrap();
    armed_batches_are_performed(Some(&forker));
    drop(forker);
    armed_batches_are_performed(None);
}

/// The parent of process `pid`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

fn armed_batches_are_performed(forker: Option<&GuardianForker>) {
    let forked_by_us = forker.is_none();
    let mut t = Target::spawn("basic", &[]);
    let value = Target::field(&t.ready, "value");
    let p = Process::open(t.pid).unwrap();
    let bytes = |v: u64| v.to_ne_bytes().to_vec();

    // Disarmed: nothing happens.
    let mut g = Guardian::spawn(&p, &[], forker).unwrap();
    let ours = parent_of(g.pid()) == std::process::id() as i32;
    assert_eq!(ours, forked_by_us);
    g.arm(&[(value, bytes(1))]).unwrap();
    assert_eq!(g.armed(), 1);
    g.disarm().unwrap();
    drop(g);
    t.send("print");
    assert_eq!(t.expect("value="), "value=1234 rodata=42");

    // Nested: the top batch is disarmed, the bottom one performed when let go.
    let mut g = Guardian::spawn(&p, &[], forker).unwrap();
    g.arm(&[(value, bytes(2))]).unwrap();
    g.arm(&[(value, bytes(3))]).unwrap();
    g.disarm().unwrap();
    drop(g);
    t.send("print");
    assert_eq!(t.expect("value="), "value=2 rodata=42");

    // Both performed, the top one first.
    let mut g = Guardian::spawn(&p, &[], forker).unwrap();
    g.arm(&[(value, bytes(4))]).unwrap();
    g.arm(&[(value, bytes(5)), (value + 8, vec![])]).unwrap();
    drop(g);
    assert_eq!(p.read_u64(value).unwrap(), 4);
}
