//! A gcc command line, split into the pieces the wrapper needs to rewrite.
//!
//! Only what changes the wrapper's behaviour is classified: inputs (and the language they are
//! compiled as), the output, the mode (`-c`, `-S`, `-E`), dependency-file options and queries
//! that produce no object. Every other option is kept as an opaque [`Token::Flag`], with its
//! separate value when gcc takes one, so that it is never mistaken for an input file.

use std::path::Path;

/// What gcc stops at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-E`, `-M` or `-MM`: preprocess only.
    Preprocess,
    /// `-S`: compile to assembly.
    Assembly,
    /// `-c`: compile or assemble to an object.
    Compile,
    /// None of the above: compile what needs it and link.
    Link,
}

/// How an input file is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// C or C++ source (also preprocessed `.i`/`.ii`): compiled through assembly by the wrapper.
    Source,
    /// Assembly without preprocessing (`.s`).
    Asm,
    /// Assembly to be preprocessed (`.S`, `.sx`).
    AsmCpp,
    /// A source of another language (headers, Fortran, Objective-C...): left to gcc.
    Other,
    /// An object, archive, shared library or anything gcc hands to the linker.
    Linker,
    /// `/dev/null`, typical of probes.
    DevNull,
    /// `-`: standard input.
    Stdin,
}

/// One input file and the `-x` language in effect for it, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The path as written on the command line.
    pub path: String,
    /// How it is treated.
    pub kind: InputKind,
    /// The `-x` language in effect (`None` for `-x none` or no `-x`).
    pub lang: Option<String>,
}

/// A dependency-generation option (`-MD`, `-MMD`, `-MF f`, `-MT t`, `-MQ t`, `-MP`, `-MG`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DepOpt {
    /// `-MD` or `-MMD`: write dependencies as a side effect of compiling.
    Generate(String),
    /// `-MF FILE`.
    File(String),
    /// `-MT TARGET` or `-MQ TARGET` (the option name is kept).
    Target(String, String),
    /// `-MP`, `-MG` and other value-less dependency flags.
    Flag(String),
}

impl DepOpt {
    /// The option as command-line arguments.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            DepOpt::Generate(s) | DepOpt::Flag(s) => vec![s.clone()],
            DepOpt::File(f) => vec!["-MF".into(), f.clone()],
            DepOpt::Target(opt, t) => vec![opt.clone(), t.clone()],
        }
    }
}

/// One element of the command line, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// Any other option, with its separate value if it has one (`["-I", "dir"]`, `["-O2"]`).
    Flag(Vec<String>),
    /// A dependency option.
    Dep(DepOpt),
    /// `-x LANG` (`LANG` kept; `none` resets).
    Lang(String),
    /// `-o FILE`.
    Output(String),
    /// `-c`, `-S` or `-E` as written.
    ModeFlag(String),
    /// An input file.
    Input(Input),
    /// `-lNAME` or `-l NAME`: positional like an input, only meaningful when linking.
    Library(Vec<String>),
}

impl Token {
    /// The token as command-line arguments, as written.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Token::Flag(v) | Token::Library(v) => v.clone(),
            Token::Dep(d) => d.to_args(),
            Token::Lang(l) => vec!["-x".into(), l.clone()],
            Token::Output(o) => vec!["-o".into(), o.clone()],
            Token::ModeFlag(m) => vec![m.clone()],
            Token::Input(i) => vec![i.path.clone()],
        }
    }
}

/// A parsed gcc command line (without `argv[0]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// The pieces, in order.
    pub tokens: Vec<Token>,
    /// Where gcc stops.
    pub mode: Mode,
    /// The option asks gcc something (version, search paths, help, dry run) or produces no
    /// output file (`-fsyntax-only`): nothing for the wrapper to do.
    pub query: bool,
}

/// Options whose value is the next argument when it is not attached (`-I dir` or `-Idir`).
const ATTACHABLE_WITH_VALUE: &[&str] = &["-I", "-D", "-U", "-A", "-L", "-B"];

/// Options that always take the next argument as their value.
const SEPARATE_VALUE: &[&str] = &[
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-iprefix",
    "-iwithprefix",
    "-iwithprefixbefore",
    "-isysroot",
    "-imultilib",
    "-imultiarch",
    "-Xlinker",
    "-Xassembler",
    "-Xpreprocessor",
    "-u",
    "-T",
    "-e",
    "-z",
    "-aux-info",
    "--param",
    "-dumpbase",
    "-dumpbase-ext",
    "-dumpdir",
    "-wrapper",
    "--sysroot",
    "--include",
    "--include-directory",
    "--define-macro",
    "--undefine-macro",
    "--library-directory",
    "--assert",
    "-G",
    "-V",
    "-b",
];

/// Arguments that make gcc answer a question instead of building something.
fn is_query(arg: &str) -> bool {
    matches!(
        arg,
        "--version"
            | "-dumpversion"
            | "-dumpfullversion"
            | "-dumpmachine"
            | "-dumpspecs"
            | "--help"
            | "--target-help"
            | "-###"
            | "-fsyntax-only"
    ) || arg.starts_with("-print-")
        || arg.starts_with("--print-")
        || arg.starts_with("--help=")
}

/// The kind of an input given its `-x` language or, without one, its file name.
pub fn input_kind(path: &str, lang: Option<&str>) -> InputKind {
    if path == "-" {
        return InputKind::Stdin;
    }
    if path == "/dev/null" {
        return InputKind::DevNull;
    }
    if let Some(lang) = lang {
        return match lang {
            "c" | "cpp-output" | "c++" | "c++-cpp-output" => InputKind::Source,
            "assembler" => InputKind::Asm,
            "assembler-with-cpp" => InputKind::AsmCpp,
            _ => InputKind::Other,
        };
    }
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    match ext {
        "c" | "i" | "cc" | "cp" | "cxx" | "cpp" | "CPP" | "c++" | "C" | "ii" => InputKind::Source,
        "s" => InputKind::Asm,
        "S" | "sx" => InputKind::AsmCpp,
        "h" | "hh" | "H" | "hp" | "hxx" | "hpp" | "HPP" | "h++" | "tcc" | "m" | "mi" | "mm"
        | "M" | "mii" | "f" | "for" | "ftn" | "F" | "FOR" | "fpp" | "FPP" | "FTN" | "f90"
        | "f95" | "f03" | "f08" | "F90" | "F95" | "F03" | "F08" | "go" | "d" | "di" | "dd"
        | "ads" | "adb" | "brig" | "rs" => InputKind::Other,
        _ => InputKind::Linker,
    }
}

/// Splits a gcc command line (without `argv[0]`) into tokens.
pub fn parse(args: &[String]) -> CommandLine {
    let mut tokens = Vec::with_capacity(args.len());
    let mut lang: Option<String> = None;
    let (mut preprocess, mut assembly, mut compile, mut query) = (false, false, false, false);
    let mut it = args.iter();

    // Takes the separate value of `opt`, if the command line has one.
    fn with_next<'a>(opt: &str, it: &mut impl Iterator<Item = &'a String>) -> Vec<String> {
        let mut v = vec![opt.to_string()];
        if let Some(next) = it.next() {
            v.push(next.clone());
        }
        v
    }

    while let Some(arg) = it.next() {
        let a = arg.as_str();
        if !a.starts_with('-') || a == "-" {
            let kind = input_kind(a, lang.as_deref());
            tokens.push(Token::Input(Input {
                path: arg.clone(),
                kind,
                lang: lang.clone(),
            }));
            continue;
        }
        if is_query(a) {
            query = true;
            tokens.push(Token::Flag(vec![arg.clone()]));
            continue;
        }
        match a {
            "-c" => {
                compile = true;
                tokens.push(Token::ModeFlag(arg.clone()));
            }
            "-S" => {
                assembly = true;
                tokens.push(Token::ModeFlag(arg.clone()));
            }
            "-E" => {
                preprocess = true;
                tokens.push(Token::ModeFlag(arg.clone()));
            }
            "-M" | "-MM" => {
                preprocess = true;
                tokens.push(Token::Dep(DepOpt::Flag(arg.clone())));
            }
            "-MD" | "-MMD" => tokens.push(Token::Dep(DepOpt::Generate(arg.clone()))),
            "-MP" | "-MG" => tokens.push(Token::Dep(DepOpt::Flag(arg.clone()))),
            "-o" | "--output" => {
                if let Some(out) = it.next() {
                    tokens.push(Token::Output(out.clone()));
                } else {
                    tokens.push(Token::Flag(vec![arg.clone()]));
                }
            }
            "-x" | "--language" => {
                if let Some(l) = it.next() {
                    lang = (l != "none").then(|| l.clone());
                    tokens.push(Token::Lang(l.clone()));
                } else {
                    tokens.push(Token::Flag(vec![arg.clone()]));
                }
            }
            "-MF" => match it.next() {
                Some(f) => tokens.push(Token::Dep(DepOpt::File(f.clone()))),
                None => tokens.push(Token::Flag(vec![arg.clone()])),
            },
            "-MT" | "-MQ" => match it.next() {
                Some(t) => tokens.push(Token::Dep(DepOpt::Target(arg.clone(), t.clone()))),
                None => tokens.push(Token::Flag(vec![arg.clone()])),
            },
            "-l" => tokens.push(Token::Library(with_next(a, &mut it))),
            _ if SEPARATE_VALUE.contains(&a) || ATTACHABLE_WITH_VALUE.contains(&a) => {
                tokens.push(Token::Flag(with_next(a, &mut it)));
            }
            _ if a.starts_with("-o") => tokens.push(Token::Output(a[2..].to_string())),
            _ if a.starts_with("--output=") => {
                tokens.push(Token::Output(a["--output=".len()..].to_string()))
            }
            _ if a.starts_with("-x") => {
                let l = &a[2..];
                lang = (l != "none").then(|| l.to_string());
                tokens.push(Token::Lang(l.to_string()));
            }
            _ if a.starts_with("--language=") => {
                let l = &a["--language=".len()..];
                lang = (l != "none").then(|| l.to_string());
                tokens.push(Token::Lang(l.to_string()));
            }
            _ if a.starts_with("-MF") => {
                tokens.push(Token::Dep(DepOpt::File(a[3..].to_string())));
            }
            _ if a.starts_with("-MT") || a.starts_with("-MQ") => {
                tokens.push(Token::Dep(DepOpt::Target(
                    a[..3].to_string(),
                    a[3..].to_string(),
                )));
            }
            _ if a.starts_with("-l") => tokens.push(Token::Library(vec![arg.clone()])),
            _ => tokens.push(Token::Flag(vec![arg.clone()])),
        }
    }

    // gcc stops at the earliest stage asked for, whatever the order of the flags.
    let mode = if preprocess {
        Mode::Preprocess
    } else if assembly {
        Mode::Assembly
    } else if compile {
        Mode::Compile
    } else {
        Mode::Link
    };
    CommandLine {
        tokens,
        mode,
        query,
    }
}

impl CommandLine {
    /// The input files, in order.
    pub fn inputs(&self) -> impl Iterator<Item = &Input> {
        self.tokens.iter().filter_map(|t| match t {
            Token::Input(i) => Some(i),
            _ => None,
        })
    }

    /// The `-o` value (the last one wins, as with gcc).
    pub fn output(&self) -> Option<&str> {
        self.tokens
            .iter()
            .filter_map(|t| match t {
                Token::Output(o) => Some(o.as_str()),
                _ => None,
            })
            .next_back()
    }

    /// Dependency options, in order.
    pub fn deps(&self) -> impl Iterator<Item = &DepOpt> {
        self.tokens.iter().filter_map(|t| match t {
            Token::Dep(d) => Some(d),
            _ => None,
        })
    }

    /// Whether any argument contains `needle`.
    pub fn any_arg_contains(&self, needle: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| t.to_args().iter().any(|a| a.contains(needle)))
    }

    /// Removes every option whose arguments are exactly one of `remove` (`KPCC_REMOVE_ARGS`).
    pub fn remove_flags(&mut self, remove: &[String]) {
        if remove.is_empty() {
            return;
        }
        self.tokens.retain(|t| match t {
            Token::Flag(v) => !(v.len() == 1 && remove.contains(&v[0])),
            _ => true,
        });
    }
}

/// Expands gcc `@FILE` response-file arguments, as gcc does: whitespace-separated words,
/// single and double quotes, backslash escapes, nested files. An unreadable file is kept as a
/// literal argument (gcc then treats it as a file name).
pub fn expand_response_files(args: &[String]) -> Vec<String> {
    fn expand(args: &[String], depth: usize, out: &mut Vec<String>) {
        for arg in args {
            let Some(file) = arg.strip_prefix('@') else {
                out.push(arg.clone());
                continue;
            };
            match (depth < 16)
                .then(|| std::fs::read_to_string(file).ok())
                .flatten()
            {
                Some(text) => expand(&split_response(&text), depth + 1, out),
                None => out.push(arg.clone()),
            }
        }
    }
    let mut out = Vec::with_capacity(args.len());
    expand(args, 0, &mut out);
    out
}

/// Splits response-file text into arguments.
fn split_response(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> CommandLine {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn compile_with_output_anywhere_and_values_not_taken_as_inputs() {
        let cl = p("-o out/foo.o -I inc -include cfg.h -MD -MF out/foo.d -c foo.c -DX=1");
        assert_eq!(cl.mode, Mode::Compile);
        assert_eq!(cl.output(), Some("out/foo.o"));
        let inputs: Vec<_> = cl.inputs().map(|i| i.path.as_str()).collect();
        assert_eq!(inputs, ["foo.c"]);
        assert!(cl
            .deps()
            .any(|d| *d == DepOpt::File("out/foo.d".to_string())));
        assert!(!cl.query);
    }

    #[test]
    fn attached_forms() {
        let cl = p("-ofoo -xc bar.inc -x none baz.s -lm -MTt");
        assert_eq!(cl.output(), Some("foo"));
        let inputs: Vec<_> = cl.inputs().cloned().collect();
        assert_eq!(inputs[0].kind, InputKind::Source);
        assert_eq!(inputs[0].lang.as_deref(), Some("c"));
        assert_eq!(inputs[1].kind, InputKind::Asm);
        assert_eq!(inputs[1].lang, None);
        assert!(cl.tokens.contains(&Token::Library(vec!["-lm".into()])));
        assert!(cl
            .deps()
            .any(|d| *d == DepOpt::Target("-MT".into(), "t".into())));
        assert_eq!(cl.mode, Mode::Link);
    }

    #[test]
    fn earliest_stage_wins() {
        assert_eq!(p("-c -S a.c").mode, Mode::Assembly);
        assert_eq!(p("-c a.c -E").mode, Mode::Preprocess);
        assert_eq!(p("-MM a.c").mode, Mode::Preprocess);
    }

    #[test]
    fn kinds() {
        assert_eq!(input_kind("a.cpp", None), InputKind::Source);
        assert_eq!(input_kind("a.S", None), InputKind::AsmCpp);
        assert_eq!(input_kind("a.sx", None), InputKind::AsmCpp);
        assert_eq!(input_kind("liba.so.1", None), InputKind::Linker);
        assert_eq!(input_kind("a.h", None), InputKind::Other);
        assert_eq!(input_kind("x", Some("assembler")), InputKind::Asm);
        assert_eq!(input_kind("-", Some("c")), InputKind::Stdin);
        assert_eq!(input_kind("/dev/null", None), InputKind::DevNull);
    }

    #[test]
    fn queries() {
        assert!(p("--version").query);
        assert!(p("-print-file-name=libc.so").query);
        assert!(p("-### -c a.c").query);
        assert!(!p("-v -c a.c").query);
    }

    #[test]
    fn remove_only_whole_flags() {
        let mut cl = p("-g -O2 -ggdb -c a.c");
        cl.remove_flags(&["-g".to_string()]);
        let has_arg = |arg: &str| {
            cl.tokens
                .iter()
                .any(|t| t.to_args().iter().any(|a| a == arg))
        };
        assert!(!has_arg("-g"));
        assert!(has_arg("-ggdb"));
    }

    #[test]
    fn response_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("args");
        std::fs::write(&f, "-DA='x y' \"-I dir\" \\-q\n-c\n").unwrap();
        let args = vec![format!("@{}", f.display()), "@/nonexistent".into()];
        assert_eq!(
            expand_response_files(&args),
            ["-DA=x y", "-I dir", "-q", "-c", "@/nonexistent"]
        );
    }
}
