//! `libcare-cc`: a gcc-compatible compiler wrapper for building live patches (see
//! `kpatch_builder::cc`). Configured through the environment (`KPATCH_STAGE`, `KPCCREAL`, ...).
//!
//! No anyhow here: the exit status must be the failed compiler's own, as make expects of `cc`.

use std::collections::HashMap;
use std::ffi::OsString;

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    match kpatch_builder::cc::run(&argv, &env) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            libcare::errln!("libcare-cc: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
