//! Multi-threaded targets: a hundred threads, with threads created and exiting all the time,
//! patched and unpatched with every thread switching to the right version; and threads blocked
//! in system calls that must never see EINTR because of us.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::support::*;

const WORKERS: usize = 100;

/// Reads lines until every worker has printed `want` at least once; checks that no worker
/// prints anything else after its first `want` (once a thread runs the new code, it never runs
/// the old one again).
fn every_worker_switches(p: &mut Proc, want: &str, other: &str) {
    let mut switched: BTreeMap<usize, usize> = BTreeMap::new();
    let start = Instant::now();
    while switched.len() < WORKERS {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {WORKERS} threads print {want}",
            switched.len()
        );
        let Some(line) = p.next_line_within(Duration::from_secs(1)) else {
            continue;
        };
        let Some((t, v)) = line.split_once(' ') else {
            continue;
        };
        let Some(i) = t.strip_prefix('t').and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        if v == want {
            *switched.entry(i).or_default() += 1;
        } else if v == other {
            assert!(
                !switched.contains_key(&i),
                "thread {i} printed {other} after {want}"
            );
        }
    }
}

#[test]
fn a_hundred_threads_with_churn_are_patched_and_unpatched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("many_threads", "-O2"), &[1]);
    let mut p = Proc::spawn(&built.binary, &[&WORKERS.to_string()]);
    let pid = p.pid_arg();
    // Every worker runs before we start.
    let mut seen = BTreeSet::new();
    while seen.len() < WORKERS {
        let line = p.wait_for("from a worker", |l| l.starts_with('t'));
        if let Some(i) = line
            .split_once(' ')
            .and_then(|(t, _)| t[1..].parse::<usize>().ok())
        {
            seen.insert(i);
        }
    }
    let patch = built.patch(1).to_str().unwrap();
    for round in 0..2 {
        let out = ok(&ctl(dir, &["patch", "-p", &pid, patch], &[]));
        assert!(out.contains("successfully applied"), "round {round}: {out}");
        every_worker_switches(&mut p, "PATCHED", "UNPATCHED");
        let out = ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]));
        assert!(
            out.contains("successfully cancelled"),
            "round {round}: {out}"
        );
        every_worker_switches(&mut p, "UNPATCHED", "PATCHED");
    }
    // Short-lived threads kept being created through it all.
    let a = p.wait_for("a churn count", |l| l.starts_with("churned "));
    let b = p.wait_for("a churn count", |l| l.starts_with("churned ") && l != a);
    assert_ne!(a, b);
    assert!(p.alive());
    assert_eq!(patch_regions(p.pid()), 0);
}

#[test]
fn threads_blocked_in_system_calls_never_see_eintr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("blocked", "-O2"), &[1]);
    let sock = dir.join("sock");
    let mut p = Proc::spawn(&built.binary, &[sock.to_str().unwrap()]);
    let pid = p.pid_arg();
    p.wait_for("rounds", |l| l.starts_with("rounds "));
    let patch = built.patch(1).to_str().unwrap();
    for _ in 0..4 {
        ok(&ctl(dir, &["patch", "-p", &pid, patch], &[]));
        p.wait_for("the patched version", |l| {
            l.starts_with("rounds ") && l.ends_with(" PATCHED")
        });
        ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]));
        p.wait_for("the original version", |l| l.ends_with(" UNPATCHED"));
    }
    // Every blocking call went on being called and returning.
    let counts = |l: &str| -> Vec<u64> {
        l.split_ascii_whitespace()
            .skip(1)
            .take(5)
            .map(|n| n.parse().unwrap_or(0))
            .collect()
    };
    let first = counts(&p.wait_for("rounds", |l| l.starts_with("rounds ")));
    std::thread::sleep(Duration::from_millis(200));
    p.drain();
    let later = counts(&p.wait_for("rounds", |l| l.starts_with("rounds ")));
    for (i, (a, b)) in first.iter().zip(&later).enumerate() {
        assert!(
            b > a,
            "blocking call {i} stopped returning: {first:?} -> {later:?}"
        );
    }
    let eintr: Vec<&String> = p.seen.iter().filter(|l| l.starts_with("EINTR")).collect();
    assert!(
        eintr.is_empty(),
        "system calls failed with EINTR: {eintr:?}"
    );
}
