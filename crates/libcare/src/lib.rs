//! Shared pieces of the command-line programs.

pub mod ctl;
pub mod ctl_args;
pub mod server_args;
pub mod trust;

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
