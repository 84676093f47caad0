//! Arbitrary command lines (the input split at NUL bytes) given to the parsers of
//! `libcare-ctl`, `libcare-server` and `libcare-cc`: usage errors are fine, panics are not;
//! the command line `libcare-cc` hands on means to it what the original meant (it parses to
//! the same pieces; `-xLANG` comes back as `-x LANG`, the same to gcc).

#![no_main]

use libcare::ctl_args;
use libcare::server_args::parse_args;
use libcare::trust::TrustArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let _ = ctl_args::parse(&args);
    let _ = parse_args(&args);
    let mut trust = TrustArgs::default();
    let mut i = 0;
    while i < args.len() {
        match trust.take(&args, i) {
            Ok(0) | Err(_) => i += 1,
            Ok(used) => i += used,
        }
    }
    let cl = kpatch_builder::cc::parse(&args);
    let back: Vec<String> = cl.tokens.iter().flat_map(|t| t.to_args()).collect();
    let again = kpatch_builder::cc::parse(&back);
    assert_eq!(
        again.tokens, cl.tokens,
        "libcare-cc keeps the meaning of {args:?}"
    );
    assert_eq!((again.mode, again.query), (cl.mode, cl.query));
    let _ = cl.output();
    let _ = cl.inputs().count();
});
