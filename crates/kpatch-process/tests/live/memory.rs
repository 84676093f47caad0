use kpatch_process::{Error, Memory, Process};

use crate::harness::Target;

#[test]
fn reads_and_writes_a_running_process() {
    let mut t = Target::spawn("basic", &[]);
    let value = Target::field(&t.ready, "value");
    let rodata = Target::field(&t.ready, "rodata");
    let p = Process::open(t.pid).unwrap();

    assert_eq!(p.read_u64(value).unwrap(), 1234);
    p.write_u64(value, 5678).unwrap();
    t.send("print");
    assert_eq!(t.expect("value="), "value=5678 rodata=42");

    // /proc/PID/mem writes through read-only protection (copy-on-write of the page).
    let ro = p
        .maps()
        .unwrap()
        .into_iter()
        .find(|m| m.contains(rodata))
        .unwrap();
    assert!(!ro.perms.write, "{ro:?}");
    p.write(rodata, &77u64.to_ne_bytes()).unwrap();
    t.send("print");
    assert_eq!(t.expect("value="), "value=5678 rodata=77");

    // A whole executable mapping in one read.
    let text = p
        .maps()
        .unwrap()
        .into_iter()
        .find(|m| m.perms.exec && m.file_path() == Some(p.exe_path()))
        .unwrap();
    assert_eq!(
        p.read_vec(text.start, text.len() as usize).unwrap().len() as u64,
        text.len()
    );

    // Errors name the address and the length.
    let err = p.read_vec(0, 16).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Read {
                addr: 0,
                len: 16,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("16 bytes at 0x0"), "{err}");
    let err = p.write(8, &[1, 2, 3]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Write {
                addr: 8,
                len: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = p.read_vec(u64::MAX - 1, 4).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
}

#[test]
fn many_reads_at_once_report_each_buffer() {
    let t = Target::spawn("basic", &[]);
    let value = Target::field(&t.ready, "value");
    let rodata = Target::field(&t.ready, "rodata");
    let p = Process::open(t.pid).unwrap();
    let (mut a, mut b, mut c, mut d) = ([0u8; 8], [0u8; 8], [0u8; 8], [0u8; 8]);
    // The third is unmapped: the one system call stops there, the fourth is read after it.
    let mut parts: Vec<(u64, &mut [u8])> = vec![
        (value, &mut a),
        (rodata, &mut b),
        (8, &mut c),
        (value, &mut d),
    ];
    assert_eq!(p.read_many(&mut parts), vec![true, true, false, true]);
    assert_eq!(u64::from_ne_bytes(a), 1234);
    assert_eq!(u64::from_ne_bytes(b), 42);
    assert_eq!(u64::from_ne_bytes(d), 1234);
}
