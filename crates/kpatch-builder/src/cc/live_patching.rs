//! The options that make a build safe to live-patch, added to both stages' compiles.
//!
//! At -O2 a compiler lets a caller depend on what it proved about a callee's body: a callee
//! found `const`/`pure` has its calls hoisted out of loops or dropped, a leaf callee's register
//! use lets callers keep values in call-clobbered registers (IPA-RA), identical functions are
//! folded into one (ICF), argument ranges and bits are propagated into callees, `noreturn` and
//! `nothrow` are discovered. None of it shows in the caller's assembly when the callee changes,
//! so the patch "works" while callers still rely on the old body. gcc's
//! `-flive-patching=inline-clone` (gcc 9 and later) turns off exactly the passes whose results
//! a patch cannot see, and keeps inlining and cloning, which `kpatch_gensrc` follows (a changed
//! callee changes every function it was inlined into, and its `.isra`/`.constprop` clones).
//! Older gcc gets the individual `-fno-ipa-*` options it has.
//!
//! clang has no equivalent: its function-attribute inference (`readnone`, `readonly`,
//! `nounwind`, `norecurse`, `noreturn`...) and interprocedural constant propagation cannot be
//! turned off from the command line (IPA-RA and function merging are off by default; only
//! interposable functions, default visibility with `-fPIC -fsemantic-interposition`, are left
//! alone). Nothing is added for it; `kpatch_gensrc` warns instead, from the producer the
//! debugging information records.

/// A compiler, as far as these options care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiler {
    /// gcc, with its major version.
    Gcc(u32),
    /// clang, with its major version.
    Clang(u32),
    /// Something else: nothing is added.
    Unknown,
}

impl Compiler {
    /// Identifies a compiler from the first line of its `--version` output.
    pub fn from_version(text: &str) -> Compiler {
        let first = text.lines().next().unwrap_or("");
        let major = |v: &str| {
            v.split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0)
        };
        if let Some(rest) = first.split("clang version ").nth(1) {
            return Compiler::Clang(major(rest.split_whitespace().next().unwrap_or("")));
        }
        // "gcc (Debian 12.2.0-14) 12.2.0", "aarch64-linux-gnu-gcc (...) 12.2.0", "g++ (GCC) 9.4.0"
        let looks_gcc = first.contains("gcc") || first.contains("g++") || first.contains("GCC");
        let after = first.rsplit(')').next().unwrap_or(first);
        match after.split_whitespace().next() {
            Some(v) if looks_gcc && v.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                Compiler::Gcc(major(v))
            }
            _ => Compiler::Unknown,
        }
    }
}

/// gcc options that `-flive-patching=inline-clone` refuses to be combined with (an explicit
/// `-fipa-icf` in the project's flags, say), and LTO, which it does not support.
const INCOMPATIBLE: &[&str] = &[
    "-fwhole-program",
    "-fipa-pta",
    "-fipa-reference",
    "-fipa-reference-addressable",
    "-fipa-ra",
    "-fipa-icf",
    "-fipa-icf-functions",
    "-fipa-icf-variables",
    "-fipa-bit-cp",
    "-fipa-vrp",
    "-fipa-pure-const",
    "-fipa-modref",
    "-fipa-stack-alignment",
];

/// What to add for `compiler` to a compile whose options are `args`, and, when something
/// should have been added but cannot be, why (for a warning).
pub fn flags(compiler: &Compiler, args: &[String]) -> (Vec<&'static str>, Option<String>) {
    let Compiler::Gcc(major) = *compiler else {
        return (Vec::new(), None);
    };
    if args.iter().any(|a| a.starts_with("-flive-patching")) {
        // The project chose its own level.
        return (Vec::new(), None);
    }
    if let Some(a) = args.iter().find(|a| {
        INCOMPATIBLE.contains(&a.as_str()) || (a.starts_with("-flto") && *a != "-flto=none")
    }) {
        return (
            Vec::new(),
            Some(format!(
                "{a} rules out -flive-patching=inline-clone: callers may depend on the bodies of the functions a patch changes (kpatch_gensrc names them)"
            )),
        );
    }
    let f: Vec<&'static str> = match major {
        9.. => vec!["-flive-patching=inline-clone"],
        7 | 8 => vec![
            "-fno-ipa-pure-const",
            "-fno-ipa-reference",
            "-fno-ipa-ra",
            "-fno-ipa-icf",
            "-fno-ipa-bit-cp",
            "-fno-ipa-vrp",
        ],
        5 | 6 => vec![
            "-fno-ipa-pure-const",
            "-fno-ipa-reference",
            "-fno-ipa-ra",
            "-fno-ipa-icf",
        ],
        _ => vec!["-fno-ipa-pure-const", "-fno-ipa-reference"],
    };
    (f, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn compilers_from_their_version_line() {
        assert_eq!(
            Compiler::from_version("gcc (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright"),
            Compiler::Gcc(12)
        );
        assert_eq!(
            Compiler::from_version("aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0"),
            Compiler::Gcc(12)
        );
        assert_eq!(
            Compiler::from_version("g++ (GCC) 8.5.0 20210514"),
            Compiler::Gcc(8)
        );
        assert_eq!(
            Compiler::from_version("Debian clang version 14.0.6\nTarget: x86_64"),
            Compiler::Clang(14)
        );
        assert_eq!(
            Compiler::from_version("tcc version 0.9.27"),
            Compiler::Unknown
        );
        assert_eq!(Compiler::from_version(""), Compiler::Unknown);
    }

    #[test]
    fn gcc_gets_live_patching_unless_the_project_rules_it_out() {
        let (f, w) = flags(&Compiler::Gcc(12), &args("-O2 -g"));
        assert_eq!(f, ["-flive-patching=inline-clone"]);
        assert!(w.is_none());
        let (f, _) = flags(&Compiler::Gcc(8), &args("-O2"));
        assert!(f.contains(&"-fno-ipa-ra") && f.contains(&"-fno-ipa-pure-const"));
        let (f, w) = flags(&Compiler::Gcc(12), &args("-O2 -flto=auto"));
        assert!(f.is_empty() && w.unwrap().contains("-flto=auto"));
        let (f, w) = flags(&Compiler::Gcc(12), &args("-O2 -fipa-icf"));
        assert!(f.is_empty() && w.is_some());
        let (f, w) = flags(
            &Compiler::Gcc(12),
            &args("-flive-patching=inline-only-static"),
        );
        assert!(f.is_empty() && w.is_none());
        assert_eq!(flags(&Compiler::Clang(14), &args("-O2")).0.len(), 0);
        assert_eq!(flags(&Compiler::Unknown, &args("-O2")).0.len(), 0);
    }
}
