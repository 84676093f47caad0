//! Man pages (roff) made from the parsed `--help` texts.

use std::fmt::Write as _;

use super::help::{Block, Help, Item};

/// What a page is made of.
pub struct Page<'a> {
    pub name: &'a str,
    pub section: u8,
    pub summary: &'a str,
    /// `libcare VERSION`, for the footer.
    pub source: &'a str,
    /// The date of the commit, for the footer (may be empty).
    pub date: &'a str,
    pub help: &'a Help,
    /// Each subcommand's own help (`libcare-ctl patch -h`).
    pub commands: &'a [(String, Help)],
    /// Other pages, for SEE ALSO.
    pub see_also: &'a [(&'a str, u8)],
}

/// Escapes text for roff: backslashes, minus signs, and a leading dot or quote (which would
/// make the line a request).
fn esc(s: &str) -> String {
    let mut out = s.replace('\\', "\\e").replace('-', "\\-");
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// An item's term with options and command names in bold, placeholders in italics.
fn term(t: &str) -> String {
    t.split(' ')
        .map(|word| {
            let (core, comma) = match word.strip_suffix(',') {
                Some(c) => (c, ","),
                None => (word, ""),
            };
            let placeholder = core.starts_with(['<', '['])
                || (core.chars().any(|c| c.is_ascii_uppercase())
                    && !core.chars().any(|c| c.is_ascii_lowercase()));
            let font = if placeholder && !core.starts_with('-') {
                "I"
            } else {
                "B"
            };
            format!("\\f{font}{}\\fR{comma}", esc(core))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn usage(out: &mut String, name: &str, lines: &[String]) {
    out.push_str(".nf\n");
    for line in lines {
        match line.strip_prefix(name) {
            Some(rest) => {
                let _ = writeln!(out, "\\fB{}\\fR{}", esc(name), esc(rest));
            }
            None => {
                let _ = writeln!(out, "{}", esc(line));
            }
        }
    }
    out.push_str(".fi\n");
}

fn items(out: &mut String, items: &[Item]) {
    // Items without descriptions are example lines: keep them as lines.
    if items.iter().all(|i| i.text.is_empty()) {
        out.push_str(".PP\n.nf\n");
        for i in items {
            let _ = writeln!(out, "{}", esc(&i.term));
        }
        out.push_str(".fi\n");
        return;
    }
    for i in items {
        let _ = writeln!(out, ".TP\n{}", term(&i.term));
        for (n, p) in i.text.iter().enumerate() {
            if n > 0 {
                out.push_str(".IP\n");
            }
            let _ = writeln!(out, "{}", esc(p));
        }
    }
}

/// A `Exit status: ...` paragraph after the sections becomes its own section.
fn titled(p: &str) -> Option<(&str, &str)> {
    let (title, rest) = p.split_once(": ")?;
    let words = title.split(' ').count();
    (words <= 3 && title.starts_with(|c: char| c.is_ascii_uppercase())).then_some((title, rest))
}

/// Writes the blocks; `sh` is the heading request of sections (`.SH` on the page, `.SS` in a
/// subcommand's part).
fn blocks(out: &mut String, help: &Help, sh: &str, description: Option<&str>) {
    let mut in_section = false;
    let mut described = false;
    for block in &help.blocks {
        match block {
            Block::Para(p) => {
                if let (true, Some((title, rest))) = (in_section, titled(p)) {
                    let _ = writeln!(
                        out,
                        "{sh} \"{}\"\n{}",
                        esc(&title.to_uppercase()),
                        esc(rest)
                    );
                    continue;
                }
                if !in_section && !described && description.is_some() {
                    out.push_str(".SH DESCRIPTION\n");
                    described = true;
                }
                let _ = writeln!(out, ".PP\n{}", esc(p));
            }
            Block::Literal(lines) => {
                if !in_section && !described && description.is_some() {
                    out.push_str(".SH DESCRIPTION\n");
                    described = true;
                }
                out.push_str(".PP\n.nf\n.RS\n");
                for l in lines {
                    let _ = writeln!(out, "{}", esc(l.trim()));
                }
                out.push_str(".RE\n.fi\n");
            }
            Block::Section {
                heading,
                items: list,
            } => {
                if !in_section && !described {
                    if let Some(d) = description {
                        let _ = writeln!(out, ".SH DESCRIPTION\n{}", esc(d));
                        described = true;
                    }
                }
                in_section = true;
                let _ = writeln!(out, "{sh} \"{}\"", esc(&heading.to_uppercase()));
                items(out, list);
            }
        }
    }
}

/// The page's roff source.
pub fn render(page: &Page<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".\\\" Generated by `cargo xtask deb` from `{} --help`: edit the help text, not this.",
        page.name
    );
    let _ = writeln!(
        out,
        ".TH \"{}\" \"{}\" \"{}\" \"{}\" \"libcare\"",
        esc(&page.name.to_uppercase()),
        page.section,
        page.date,
        esc(page.source),
    );
    let _ = writeln!(
        out,
        ".SH NAME\n{} \\- {}",
        esc(page.name),
        esc(page.summary)
    );
    out.push_str(".SH SYNOPSIS\n");
    usage(&mut out, page.name, &page.help.usage);
    blocks(&mut out, page.help, ".SH", Some(page.summary));
    for (cmd, help) in page.commands {
        let _ = writeln!(
            out,
            ".SH \"{}\"",
            esc(&format!("{} {cmd}", page.name).to_uppercase())
        );
        usage(&mut out, page.name, &help.usage);
        blocks(&mut out, help, ".SS", None);
    }
    if !page.see_also.is_empty() {
        out.push_str(".SH \"SEE ALSO\"\n");
        let refs: Vec<String> = page
            .see_also
            .iter()
            .map(|(name, section)| format!(".BR {} ({section})", esc(name)))
            .collect();
        out.push_str(&refs.join(",\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc(".x -p a\\b"), "\\&.x \\-p a\\eb");
        assert_eq!(term("-p <PID>"), "\\fB\\-p\\fR \\fI<PID>\\fR");
        assert_eq!(term("-o, --output"), "\\fB\\-o\\fR, \\fB\\-\\-output\\fR");
    }
}
