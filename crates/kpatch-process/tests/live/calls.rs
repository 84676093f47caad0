use std::time::Duration;

use kpatch_process::{Error, Process};

use crate::harness::{fixture, symbol_address, Target, DEADLINE};

#[test]
fn calls_functions_of_the_target() {
    let mut t = Target::spawn("basic", &[]);
    let p = Process::open(t.pid).unwrap();
    let bin = fixture("basic");
    let add = symbol_address(&p, &bin, "add");
    assert_eq!(add, Target::field(&t.ready, "add"));
    let sum6 = symbol_address(&p, &bin, "sum6");
    let spin = symbol_address(&p, &bin, "spin");
    let block_sum = symbol_address(&p, &bin, "block_sum");
    let crash = symbol_address(&p, &bin, "crash");
    let timeout = Duration::from_secs(5);

    {
        let mut stopped = p.stop_all(DEADLINE).unwrap();
        let mut th = stopped.thread(t.pid).unwrap();
        let before = th.regs().unwrap();
        assert_eq!(th.call(add, &[2, 40], timeout).unwrap(), 42);
        assert_eq!(
            th.call(add, &[(-5i64) as u64, 3], timeout).unwrap() as i32,
            -2
        );
        assert_eq!(th.call(sum6, &[1, 2, 3, 4, 5, 6], timeout).unwrap(), 91);
        assert_eq!(th.regs().unwrap(), before);
        let block: Vec<u8> = [10u64, 20, 30]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(
            th.call_with_block(block_sum, &[1], &block, timeout)
                .unwrap(),
            1 + 10 + 40 + 90
        );
        let err = th
            .call_with_block(block_sum, &[0; 6], &block, timeout)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert_eq!(th.regs().unwrap(), before);

        let err = th.call(spin, &[], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::RemoteTimeout { .. }), "{err}");
        assert_eq!(th.regs().unwrap(), before);

        let err = th.call(crash, &[], timeout).unwrap_err();
        assert!(
            matches!(
                err,
                Error::CallFault {
                    signal: libc::SIGSEGV,
                    addr: 8,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(th.regs().unwrap(), before);
        // Still usable after a timeout and a fault.
        assert_eq!(th.call(add, &[1, 1], timeout).unwrap(), 2);
        let err = th.call(add, &[0; 7], timeout).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        stopped.resume().unwrap();
    }
    {
        let mut one = p.stop_one(t.pid, DEADLINE).unwrap();
        assert_eq!(one.thread().call(add, &[20, 22], timeout).unwrap(), 42);
        one.resume().unwrap();
    }
    // The program goes on as if nothing happened: no SIGSEGV delivered, no EINTR.
    t.send("print");
    assert_eq!(t.expect("value="), "value=1234 rodata=42");
    assert!(
        !t.seen.iter().any(|l| l.contains("read error")),
        "{:?}",
        t.seen
    );
}
