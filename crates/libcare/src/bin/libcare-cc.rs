//! `libcare-cc`: a gcc-compatible compiler wrapper for building live patches (see
//! `kpatch_builder::cc`). Configured through the environment (`KPATCH_STAGE`, `KPCCREAL`, ...).
//!
//! No anyhow here: the exit status must be the failed compiler's own, as make expects of `cc`.

use std::collections::HashMap;
use std::ffi::OsString;

const HELP: &str = "usage: libcare-cc [compiler options] FILE...

A gcc-compatible compiler wrapper that builds every C source through assembly, so that
libcare-patch-make can diff the original and the patched build function by function. Use it
as CC (libcare-patch-make does). The options are the real compiler's.

Options:
  --help      this message (alone; with other arguments it goes to the compiler)
  --version   the real compiler's version on standard output, libcare-cc's own on
              standard error (build systems read the compiler's)

Environment:
  KPATCH_STAGE         original, patched or configure; unset: run the real compiler
                       unchanged
  KPATCH_PATH          directory of kpatch_gensrc (default: libcare-cc's own)
  KPCCREAL             the real C compiler (default: gcc from PATH)
  KPCXXREAL            the real C++ compiler (default: g++), used when called as
                       c++, g++ or kpcc++
  KPCC_DEBUG           1 prints every command run, 2 also the invocation
  KPCC_REMOVE_ARGS     ;-separated options removed from every command
  KPCC_APPEND_ARGS     ;-separated options appended to every command
  KPCC_DBGFILTER_ARGS  ;-separated kpatch_gensrc options of the debug-filter pass
  KPCC_PATCH_ARGS      ;-separated kpatch_gensrc options of the diff (default
                       --force-gotpcrel;--os=rhel6)
  KPATCH_GENSRC_ASM    when set, .s and .S inputs are diffed like C sources
  KPATCH_PREFIX        prefix of kept assembly file names (default .kpatch_)
  KPATCH_ASM_DIR       keep assembly under this directory instead of next to the object

Exit status: the real compiler's; 1 when the wrapper itself fails (the message says why).
";

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match argv.get(1..).unwrap_or_default() {
        [only] if only == "--help" => {
            print!("{HELP}");
            return;
        }
        [only] if only == "--version" => {
            libcare::errln!("{}", libcare::version_line("libcare-cc"));
        }
        _ => {}
    }
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
