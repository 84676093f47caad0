//! The files a compiler command writes, as gcc names them: what the patched stage moves aside
//! before overwriting it (see [`crate::stash`]).

use super::cmdline::{CommandLine, DepOpt, Input, InputKind, Mode};
use super::naming::{default_output, replace_ext};

/// The dependency file `-MD`/`-MMD` writes for `input`: the last `-MF`, else the output's name
/// (or the input's, without `-o`) with `.d`. `None` without `-MD`/`-MMD`.
pub fn dep_file(cl: &CommandLine, input: &Input) -> Option<String> {
    let mut generate = false;
    let mut file = None;
    for d in cl.deps() {
        match d {
            DepOpt::Generate(_) => generate = true,
            DepOpt::File(f) => file = Some(f.clone()),
            _ => {}
        }
    }
    if !generate {
        return None;
    }
    file.or_else(|| {
        Some(match cl.output() {
            Some(o) => replace_ext(o, "d"),
            None => default_output(&input.path, "d"),
        })
    })
}

/// The files `cl` writes: the objects (`-c`), assembly (`-S`), preprocessed output (`-E -o`)
/// or linked file, and the dependency files. Standard output and `/dev/null` are left out.
pub fn written_files(cl: &CommandLine) -> Vec<String> {
    let compiled: Vec<&Input> = cl
        .inputs()
        .filter(|i| i.kind != InputKind::Linker)
        .collect();
    let mut out: Vec<String> = Vec::new();
    match cl.mode {
        Mode::Link => out.push(cl.output().unwrap_or("a.out").to_string()),
        Mode::Preprocess => out.extend(cl.output().map(String::from)),
        Mode::Compile | Mode::Assembly => {
            let ext = if cl.mode == Mode::Compile { "o" } else { "s" };
            match cl.output() {
                // gcc refuses -o with several inputs and writes nothing.
                Some(o) if compiled.len() <= 1 => out.push(o.to_string()),
                Some(_) => {}
                None => out.extend(
                    compiled
                        .iter()
                        .filter(|i| !matches!(i.kind, InputKind::Stdin | InputKind::DevNull))
                        .map(|i| default_output(&i.path, ext)),
                ),
            }
        }
    }
    if cl.mode != Mode::Preprocess {
        out.extend(compiled.iter().filter_map(|i| dep_file(cl, i)));
    }
    out.retain(|f| f != "-" && f != "/dev/null");
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::super::cmdline::parse;
    use super::*;

    fn files(s: &str) -> Vec<String> {
        written_files(&parse(
            &s.split_whitespace().map(String::from).collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn objects_assembly_links_and_dependencies() {
        assert_eq!(files("-O2 -c -o src/f.o src/f.c"), ["src/f.o"]);
        assert_eq!(files("-c src/a.c b.S x.o"), ["a.o", "b.o"]);
        assert_eq!(files("-S a.c"), ["a.s"]);
        assert_eq!(files("-o app a.o b.o -lm"), ["app"]);
        assert_eq!(files("a.o"), ["a.out"]);
        assert_eq!(files("-E a.c -o a.i"), ["a.i"]);
        assert!(files("-E a.c").is_empty());
        assert_eq!(
            files("-MMD -MP -c src/u.c -o src/u.o"),
            ["src/u.d", "src/u.o"]
        );
        assert_eq!(files("-MD -c a.c b.c"), ["a.d", "a.o", "b.d", "b.o"]);
        assert_eq!(files("-MD -MF x.d -c a.c -o a.o"), ["a.o", "x.d"]);
        assert_eq!(files("-MD -o foo foo.c"), ["foo", "foo.d"]);
        assert!(files("-c a.c b.c -o x.o").is_empty());
        assert!(files("-c -x c /dev/null -o /dev/null").is_empty());
        assert_eq!(files("-c -x c - -o s.o"), ["s.o"]);
    }
}
