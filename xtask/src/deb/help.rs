//! A binary's `--help` text read back as a structure: synopsis, paragraphs and sections of
//! `TERM  description` items. The man pages and the shell completions are made from it, so
//! they say what `--help` says. Both kinds of help text in the workspace parse: clap's (short
//! and long forms) and the hand-written getopt-style usage strings (`-p <PID>    - text`).

/// One `TERM  description` entry of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub term: String,
    /// Paragraphs of the description, each joined into one line.
    pub text: Vec<String>,
}

/// A piece of the help text, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Prose, joined into one line.
    Para(String),
    /// Indented lines outside any section (example command lines): kept as they are.
    Literal(Vec<String>),
    /// A `Heading:` and its items.
    Section { heading: String, items: Vec<Item> },
}

/// A parsed help text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Help {
    /// The `usage:` lines, without the word.
    pub usage: Vec<String>,
    pub blocks: Vec<Block>,
}

/// Splits an item line into its term and description: at the first run of two spaces, or
/// (LibcarePlus's `unpatch- unapply ...`) at `- `; a description's leading `- ` goes.
fn split_item(line: &str) -> (String, String) {
    let (term, desc) = match line.find("  ") {
        Some(at) => (&line[..at], line[at..].trim()),
        None => match line.find("- ") {
            Some(at) if at > 0 => (&line[..at], line[at..].trim()),
            _ => (line, ""),
        },
    };
    let desc = desc.strip_prefix("- ").unwrap_or(desc);
    (term.trim().to_owned(), desc.trim().to_owned())
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_heading(line: &str) -> bool {
    indent(line) == 0 && line.ends_with(':') && !line.contains(". ") && line.len() < 40
}

/// Parses a help text.
pub fn parse(text: &str) -> Help {
    let mut help = Help::default();
    // The paragraph being gathered (prose, or an item's description).
    let mut para: Vec<String> = Vec::new();
    let mut literal: Vec<String> = Vec::new();
    let mut section: Option<(String, Vec<Item>)> = None;
    // The current item's indentation, while one is open, and its description's.
    let mut item_indent: Option<usize> = None;
    let mut desc_indent: Option<usize> = None;

    fn flush_para(
        para: &mut Vec<String>,
        section: &mut Option<(String, Vec<Item>)>,
        into: &mut Help,
        in_item: bool,
    ) {
        if para.is_empty() {
            return;
        }
        let text = para.join(" ");
        para.clear();
        match section {
            Some((_, items)) if in_item => {
                if let Some(item) = items.last_mut() {
                    item.text.push(text);
                }
            }
            _ => into.blocks.push(Block::Para(text)),
        }
    }
    fn flush_literal(literal: &mut Vec<String>, into: &mut Help) {
        if !literal.is_empty() {
            into.blocks.push(Block::Literal(std::mem::take(literal)));
        }
    }
    fn close_section(section: &mut Option<(String, Vec<Item>)>, into: &mut Help) {
        if let Some((heading, items)) = section.take() {
            into.blocks.push(Block::Section { heading, items });
        }
    }

    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if line.is_empty() {
            flush_para(&mut para, &mut section, &mut help, item_indent.is_some());
            flush_literal(&mut literal, &mut help);
            continue;
        }
        let lower = trimmed.to_ascii_lowercase();
        if indent(line) == 0 && lower.starts_with("usage:") {
            flush_para(&mut para, &mut section, &mut help, item_indent.is_some());
            close_section(&mut section, &mut help);
            item_indent = None;
            help.usage.push(trimmed["usage:".len()..].trim().to_owned());
            continue;
        }
        if is_heading(line) {
            flush_para(&mut para, &mut section, &mut help, item_indent.is_some());
            flush_literal(&mut literal, &mut help);
            close_section(&mut section, &mut help);
            item_indent = None;
            section = Some((line.trim_end_matches(':').to_owned(), Vec::new()));
            continue;
        }
        if indent(line) == 0 {
            // Prose ends any section.
            if item_indent.is_some() || section.is_some() {
                flush_para(&mut para, &mut section, &mut help, item_indent.is_some());
                close_section(&mut section, &mut help);
                item_indent = None;
            }
            flush_literal(&mut literal, &mut help);
            para.push(trimmed.to_owned());
            continue;
        }
        let Some((_, items)) = section.as_mut() else {
            flush_para(&mut para, &mut section, &mut help, false);
            literal.push(line.to_owned());
            continue;
        };
        // A continuation is indented deeper than its item; an option that has no short
        // form (clap's `      --long`) is too, but less than the description column.
        let continues = match (item_indent, desc_indent) {
            (Some(at), Some(desc)) => {
                indent(line) > at && !(trimmed.starts_with('-') && indent(line) < desc)
            }
            (Some(at), None) => indent(line) > at,
            _ => false,
        };
        if continues {
            desc_indent.get_or_insert(indent(line));
            para.push(trimmed.to_owned());
            continue;
        }
        {
            {
                if !para.is_empty() {
                    let text = para.join(" ");
                    para.clear();
                    if let Some(item) = items.last_mut() {
                        item.text.push(text);
                    }
                }
                let (term, desc) = split_item(trimmed);
                items.push(Item {
                    term,
                    text: Vec::new(),
                });
                desc_indent = None;
                if !desc.is_empty() {
                    let column = trimmed.rfind(desc.as_str()).unwrap_or(0);
                    desc_indent = Some(indent(line) + column);
                    para.push(desc);
                }
                item_indent = Some(indent(line));
            }
        }
    }
    flush_para(&mut para, &mut section, &mut help, item_indent.is_some());
    flush_literal(&mut literal, &mut help);
    close_section(&mut section, &mut help);
    help
}

/// What an option's value or a positional argument is, for completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    File,
    /// A process id (`all` too, when the help says so).
    Pid {
        all: bool,
    },
    Choice(Vec<String>),
    /// Free text: nothing to offer.
    Free,
}

/// An option: its spellings and its value, if it takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub names: Vec<String>,
    pub value: Option<Value>,
    pub summary: String,
}

/// A subcommand: its names (the first is the main one) and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub names: Vec<String>,
    pub summary: String,
    pub args: Args,
}

/// The options and positional arguments of a command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args {
    pub options: Vec<Opt>,
    pub positionals: Vec<Value>,
}

/// The first sentence of an item's description, short enough for a completion menu.
fn summary(item: &Item) -> String {
    let first = item.text.first().map(String::as_str).unwrap_or("");
    let end = first.find(". ").map_or(first.len(), |at| at + 1);
    first[..end].trim_end_matches('.').to_owned()
}

/// Guesses a value's kind from its placeholder (`<PID>`, `<FILE>`...) and description.
fn value_kind(placeholder: &str, item: &Item) -> Value {
    let text = item.text.join(" ");
    if let Some(start) = text.find("[possible values: ") {
        let rest = &text[start + "[possible values: ".len()..];
        if let Some(end) = rest.find(']') {
            return Value::Choice(rest[..end].split(", ").map(str::to_owned).collect());
        }
    }
    let p = placeholder.to_ascii_uppercase();
    if p.contains("PID") {
        return Value::Pid {
            all: text.contains("'all'"),
        };
    }
    let free = ["ID", "VAR", "LEVEL", "FLIST", "CMD"];
    if p == "N" || free.iter().any(|w| p.contains(w)) {
        return Value::Free;
    }
    let file = [
        "FILE", "PATH", "ELF", "OUT", "IN", "ORIG", "PATCH", "DIR", "ROOT", "SOCKET",
    ];
    if file.iter().any(|w| p.contains(w)) {
        Value::File
    } else {
        Value::Free
    }
}

fn options_and_positionals(items: &[Item], into: &mut Args) {
    for item in items {
        if item.term.starts_with('-') {
            let mut names = Vec::new();
            let mut placeholder = None;
            for part in item.term.split(", ") {
                let mut words = part.splitn(2, [' ', '=']);
                if let Some(name) = words.next() {
                    names.push(name.to_owned());
                }
                if let Some(v) = words.next() {
                    placeholder = Some(v.trim_matches(['<', '>', '[', ']']).to_owned());
                }
            }
            let text = item.text.join(" ");
            let alias = text.find("[aliases: ").map(|at| at + "[aliases: ".len());
            let alias = alias.or_else(|| text.find("[alias: ").map(|at| at + "[alias: ".len()));
            if let Some(start) = alias {
                let rest = &text[start..];
                let end = rest.find(']').unwrap_or(rest.len());
                names.extend(rest[..end].split(", ").map(str::to_owned));
            }
            into.options.push(Opt {
                names,
                value: placeholder.map(|p| value_kind(&p, item)),
                summary: summary(item),
            });
        } else {
            let p = item.term.trim_end_matches("...");
            into.positionals.push(value_kind(p, item));
        }
    }
}

impl Help {
    fn sections(&self) -> impl Iterator<Item = (&str, &[Item])> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Section { heading, items } => Some((heading.as_str(), items.as_slice())),
            _ => None,
        })
    }

    /// The options and positional arguments its `Options:` and `Arguments:` sections list.
    pub fn args(&self) -> Args {
        let mut args = Args::default();
        for (heading, items) in self.sections() {
            let h = heading.to_ascii_lowercase();
            if h.contains("option") || h.contains("argument") {
                options_and_positionals(items, &mut args);
            }
        }
        args
    }

    /// The subcommands its `Commands:` section lists (`run CMD` is `run`; `a, b` is two).
    pub fn commands(&self) -> Vec<Cmd> {
        let mut out = Vec::new();
        for (heading, items) in self.sections() {
            if !is_commands(heading) {
                continue;
            }
            for item in items {
                let mut words = item.term.split_whitespace();
                let Some(first) = words.next() else { continue };
                if item.term.contains(", ") {
                    for name in item.term.split(", ") {
                        out.push(Cmd {
                            names: vec![name.trim().to_owned()],
                            summary: summary(item),
                            args: Args::default(),
                        });
                    }
                    continue;
                }
                let mut args = Args::default();
                for arg in words {
                    args.positionals.push(value_kind(arg, item));
                }
                out.push(Cmd {
                    names: vec![first.to_owned()],
                    summary: summary(item),
                    args,
                });
            }
        }
        out
    }
}

fn is_commands(heading: &str) -> bool {
    heading.to_ascii_lowercase().contains("commands")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GETOPT: &str = "usage: tool [options] <cmd> [args]

Options:
  -v          - verbose mode
  -p <PID>    - target process, or 'all' for every
                process
Commands:
  patch  - apply patch
  unpatch- unapply patch
";

    const CLAP_LONG: &str = "Compare two files.

  tool -i A -i B

Usage: tool [OPTIONS]

Options:
  -O, --os <OS>
          Accepted for compatibility

          [possible values: rhel5, rhel6]

  -o, --output <FILE>
          Output file [aliases: --ouput]

      --test-mode
          Ignore the filter

Exit status: 0 on success.
";

    #[test]
    fn getopt_style_usage_parses() {
        let h = parse(GETOPT);
        assert_eq!(h.usage, ["tool [options] <cmd> [args]"]);
        let args = h.args();
        assert_eq!(args.options[0].names, ["-v"]);
        assert_eq!(args.options[0].value, None);
        assert_eq!(args.options[1].value, Some(Value::Pid { all: true }));
        assert_eq!(
            args.options[1].summary,
            "target process, or 'all' for every process"
        );
        let cmds = h.commands();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[1].names, ["unpatch"]);
        assert_eq!(cmds[1].summary, "unapply patch");
    }

    #[test]
    fn clap_long_help_parses() {
        let h = parse(CLAP_LONG);
        assert_eq!(h.blocks[0], Block::Para("Compare two files.".into()));
        assert_eq!(h.blocks[1], Block::Literal(vec!["  tool -i A -i B".into()]));
        assert_eq!(h.usage, ["tool [OPTIONS]"]);
        let args = h.args();
        assert_eq!(
            args.options[0].value,
            Some(Value::Choice(vec!["rhel5".into(), "rhel6".into()]))
        );
        assert_eq!(args.options[1].names, ["-o", "--output", "--ouput"]);
        assert_eq!(args.options[1].value, Some(Value::File));
        assert_eq!(args.options[2].names, ["--test-mode"]);
        assert_eq!(args.options[2].summary, "Ignore the filter");
        assert_eq!(
            h.blocks.last(),
            Some(&Block::Para("Exit status: 0 on success.".into()))
        );
    }
}
