use std::time::Duration;

use kpatch_process::{Memory, Process};

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const ANON: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

use crate::harness::{task_state, wait_until, Target, DEADLINE};

/// Long enough for a running thread (they bump their counter every millisecond) to show.
const STILL_WINDOW: Duration = Duration::from_millis(30);

fn counters(p: &Process, counters: u64, churned: u64, n: usize) -> (Vec<u64>, u64) {
    let bytes = p.read_vec(counters, n * 8).unwrap();
    let values = bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    (values, p.read_u64(churned).unwrap())
}

/// Stops and resumes a fixture with `n` counting threads (plus two thread-creating threads
/// when `churn`) `cycles` times, checking each time that every thread is stopped and that
/// nothing moves, then that every thread runs again.
fn stop_and_resume(n: usize, churn: bool, cycles: usize) {
    let t = Target::spawn("threads", &[&n.to_string(), if churn { "1" } else { "0" }]);
    let addr = Target::field(&t.ready, "counters");
    let churned = Target::field(&t.ready, "churned");
    let p = Process::open(t.pid).unwrap();
    let floor = n + if churn { 2 } else { 0 };
    wait_until("all threads started", || t.tids().len() >= floor);

    for cycle in 0..cycles {
        let stopped = p.stop_all(DEADLINE).unwrap();
        let ours = stopped.tids();
        // No thread escaped: /proc lists the threads we hold, all in tracing stop, and
        // nothing else but threads in the middle of exiting.
        for tid in t.tids() {
            if !ours.contains(&tid) {
                let state = task_state(t.pid, tid);
                assert!(
                    matches!(state, None | Some('Z') | Some('X')),
                    "cycle {cycle}: thread {tid} not stopped, state {state:?}"
                );
            }
        }
        assert!(ours.len() >= floor, "cycle {cycle}: {} threads", ours.len());
        for &tid in &ours {
            assert_eq!(
                task_state(t.pid, tid),
                Some('t'),
                "cycle {cycle}: thread {tid}"
            );
        }
        let before = counters(&p, addr, churned, n);
        std::thread::sleep(STILL_WINDOW);
        let after = counters(&p, addr, churned, n);
        assert_eq!(before, after, "cycle {cycle}: something ran while stopped");
        stopped.resume().unwrap();

        // Every counting thread runs again (and thread creation goes on).
        wait_until("every thread to run again", || {
            let now = counters(&p, addr, churned, n);
            now.0.iter().zip(&before.0).all(|(a, b)| a > b) && (!churn || now.1 > before.1)
        });
    }
    for &tid in &t.tids() {
        assert_ne!(
            task_state(t.pid, tid),
            Some('t'),
            "thread {tid} left stopped"
        );
    }
}

#[test]
fn stop_all_single_thread() {
    stop_and_resume(1, false, 20);
}

#[test]
fn stop_all_four_threads_while_threads_come_and_go() {
    stop_and_resume(4, true, 20);
}

#[test]
fn stop_all_hundred_threads_while_threads_come_and_go() {
    stop_and_resume(100, true, 10);
}

#[test]
fn a_process_whose_main_thread_has_exited() {
    let t = Target::spawn("threads", &["3", "0", "exit-main"]);
    let addr = Target::field(&t.ready, "counters");
    let churned = Target::field(&t.ready, "churned");
    wait_until("the main thread to exit", || {
        task_state(t.pid, t.pid) == Some('Z')
    });
    let p = Process::open(t.pid).unwrap();
    assert!(!p.maps().unwrap().is_empty());
    let page = p.page_size();
    let before = counters(&p, addr, churned, 3);

    let mut stopped = p.stop_all(DEADLINE).unwrap();
    let tids = stopped.tids();
    assert_eq!(tids.len(), 2, "{tids:?}");
    assert!(!tids.contains(&t.pid));
    let mut th = stopped.thread(tids[0]).unwrap();
    let a = th.mmap(None, page, RW, ANON).unwrap();
    p.write(a, b"x").unwrap();
    th.munmap(a, page).unwrap();
    stopped.resume().unwrap();

    wait_until("the workers to run again", || {
        let now = counters(&p, addr, churned, 3);
        now.0[1] > before.0[1] && now.0[2] > before.0[2]
    });
}
