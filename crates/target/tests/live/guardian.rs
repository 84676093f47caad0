//! The guardian performs armed batches, and only those, when its owner lets go of it.

use kpatch_target::{Guardian, Memory, Process};

use crate::harness::Target;

#[test]
fn armed_batches_are_performed_when_the_guardian_is_let_go() {
    let mut t = Target::spawn("basic", &[]);
    let value = Target::field(&t.ready, "value");
    let p = Process::open(t.pid).unwrap();
    let bytes = |v: u64| v.to_ne_bytes().to_vec();

    // Disarmed: nothing happens.
    let mut g = Guardian::spawn(&p, &[]).unwrap();
    g.arm(&[(value, bytes(1))]).unwrap();
    assert_eq!(g.armed(), 1);
    g.disarm().unwrap();
    drop(g);
    t.send("print");
    assert_eq!(t.expect("value="), "value=1234 rodata=42");

    // Nested: the top batch is disarmed, the bottom one performed when let go.
    let mut g = Guardian::spawn(&p, &[]).unwrap();
    g.arm(&[(value, bytes(2))]).unwrap();
    g.arm(&[(value, bytes(3))]).unwrap();
    g.disarm().unwrap();
    drop(g);
    t.send("print");
    assert_eq!(t.expect("value="), "value=2 rodata=42");

    // Both performed, the top one first.
    let mut g = Guardian::spawn(&p, &[]).unwrap();
    g.arm(&[(value, bytes(4))]).unwrap();
    g.arm(&[(value, bytes(5)), (value + 8, vec![])]).unwrap();
    drop(g);
    assert_eq!(p.read_u64(value).unwrap(), 4);
}
