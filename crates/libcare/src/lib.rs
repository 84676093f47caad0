//! Shared pieces of the command-line programs.

pub mod ctl;
pub mod ctl_args;
pub mod server_args;
pub mod trust;

/// The version and the git commit it was built from, as every binary's `--version` prints
/// them after its name.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LIBCARE_GIT_COMMIT"),
    ")"
);

/// `--version`'s line: `NAME VERSION (commit HASH)`.
pub fn version_line(name: &str) -> String {
    format!("{name} {VERSION}")
}

/// `eprintln!` that writes the whole line with one `write`: tools run side by side under
/// `make -j` would otherwise interleave their messages piece by piece on a shared stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

/// `eprint!` with one `write`, like [`errln!`].
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
    }};
}
