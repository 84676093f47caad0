//! Layouts of the structure and union types a file describes in its debugging information
//! (gcc -g writes `.debug_info` as assembler directives): the patched build must not lay out
//! a type differently, because the running process holds objects in the original layout.
//!
//! The debugging sections are assembled here just far enough to read types: data directives
//! become bytes, labels become offsets in their sections (so a `.long .LASF5` string
//! reference or a `.long .Ldebug_abbrev0` resolves), addresses of code and data become 0.
//! The bytes are then read with gimli.

use std::collections::{BTreeMap, HashMap};

use gimli::{AttributeValue, EndianSlice, LittleEndian};

use crate::lex::split_args;
use crate::parse::{AsmFile, StmtKind};

/// Where a member lies in its structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its name (`#N` for the Nth unnamed member).
    pub name: String,
    /// Offset from the start of the structure, in bits.
    pub bit_offset: u64,
    /// Size in bits of a bit-field (0 for an ordinary member).
    pub bit_size: u64,
}

/// The layout of one named structure or union type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// `struct`, `union` or `class`.
    pub kind: &'static str,
    pub size: u64,
    pub members: Vec<Member>,
}

/// The structure and union types declared at file scope in `file`'s debugging information,
/// by name (a `typedef` of an unnamed structure names it). `None` if the file has no
/// debugging information, or none this reader understands.
pub(crate) fn layouts(file: &AsmFile) -> Option<BTreeMap<String, Layout>> {
    let sections = assemble(file)?;
    if sections.get(".debug_info").is_none_or(Vec::is_empty) {
        return None;
    }
    read_types(&dwarf_of(&sections)).ok()
}

/// The debugging information of the assembled `sections`.
fn dwarf_of(sections: &HashMap<String, Vec<u8>>) -> gimli::Dwarf<Slice<'_>> {
    let get = |name: &str| sections.get(name).map(Vec::as_slice).unwrap_or(&[]);
    gimli::Dwarf {
        debug_info: gimli::DebugInfo::new(get(".debug_info"), LittleEndian),
        debug_abbrev: gimli::DebugAbbrev::new(get(".debug_abbrev"), LittleEndian),
        debug_str: gimli::DebugStr::new(get(".debug_str"), LittleEndian),
        debug_line_str: gimli::DebugLineStr::new(get(".debug_line_str"), LittleEndian),
        debug_str_offsets: gimli::DebugStrOffsets::from(EndianSlice::new(
            get(".debug_str_offsets"),
            LittleEndian,
        )),
        ..Default::default()
    }
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// What one unit declares, at file scope and in namespaces.
#[derive(Default)]
struct Found {
    named: Vec<(String, Layout)>,
    anonymous: HashMap<gimli::UnitOffset, Layout>,
    typedefs: Vec<(String, gimli::UnitOffset)>,
}

type Node<'a, 'b, 'd> = gimli::EntriesTreeNode<'a, 'b, Slice<'d>>;

/// The types declared by the children of `node` (a unit, or a C++ namespace whose name,
/// qualified, is `prefix`), named as C++ qualifies them (`shapes::Counter`).
fn collect<'d>(
    strings: &Strings<'_, 'd>,
    node: Node<'_, '_, 'd>,
    prefix: &str,
    found: &mut Found,
) -> gimli::Result<()> {
    let qualify = |n: String| {
        if prefix.is_empty() {
            n
        } else {
            format!("{prefix}::{n}")
        }
    };
    let mut children = node.children();
    while let Some(child) = children.next()? {
        let entry = child.entry();
        let offset = entry.offset();
        let tag = entry.tag();
        let kind = match tag {
            gimli::DW_TAG_namespace => {
                let name = strings
                    .get(entry, gimli::DW_AT_name)?
                    .unwrap_or_else(|| "(anonymous namespace)".into());
                collect(strings, child, &qualify(name), found)?;
                continue;
            }
            gimli::DW_TAG_structure_type => "struct",
            gimli::DW_TAG_union_type => "union",
            gimli::DW_TAG_class_type => "class",
            gimli::DW_TAG_typedef => {
                let name = strings.get(entry, gimli::DW_AT_name)?;
                if let (Some(name), Some(AttributeValue::UnitRef(to))) =
                    (name, entry.attr_value(gimli::DW_AT_type))
                {
                    found.typedefs.push((qualify(name), to));
                }
                continue;
            }
            _ => continue,
        };
        if entry.attr_value(gimli::DW_AT_declaration).is_some() {
            continue;
        }
        let name = strings.get(entry, gimli::DW_AT_name)?;
        let size = entry
            .attr_value(gimli::DW_AT_byte_size)
            .and_then(|v| v.udata_value())
            .unwrap_or(0);
        let mut members = Vec::new();
        let mut fields = child.children();
        while let Some(m) = fields.next()? {
            let e = m.entry();
            // Static data members are declarations (`DW_AT_external`), not part of the
            // layout; C++ base classes occupy room like members.
            let is_static = e.attr_value(gimli::DW_AT_external).is_some()
                || e.attr_value(gimli::DW_AT_declaration).is_some();
            if !matches!(e.tag(), gimli::DW_TAG_member | gimli::DW_TAG_inheritance) || is_static {
                continue;
            }
            let name = match e.tag() {
                gimli::DW_TAG_inheritance => format!("(base #{})", members.len()),
                _ => strings
                    .get(e, gimli::DW_AT_name)?
                    .unwrap_or_else(|| format!("#{}", members.len())),
            };
            let bits = e
                .attr_value(gimli::DW_AT_data_bit_offset)
                .and_then(|v| v.udata_value());
            let bytes = e
                .attr_value(gimli::DW_AT_data_member_location)
                .and_then(|v| v.udata_value());
            let bit_offset = bits.or(bytes.map(|b| b * 8)).unwrap_or(0);
            let bit_size = e
                .attr_value(gimli::DW_AT_bit_size)
                .and_then(|v| v.udata_value())
                .unwrap_or(0);
            members.push(Member {
                name,
                bit_offset,
                bit_size,
            });
        }
        let layout = Layout {
            kind,
            size,
            members,
        };
        match name {
            Some(n) => found.named.push((qualify(n), layout)),
            None => {
                found.anonymous.insert(offset, layout);
            }
        }
    }
    Ok(())
}

/// The `DW_AT_producer` of every compilation unit of `file`'s debugging information (the
/// compiler and, for gcc, the options it was run with).
pub(crate) fn producers(file: &AsmFile) -> Vec<String> {
    let Some(sections) = assemble(file) else {
        return Vec::new();
    };
    let dwarf = dwarf_of(&sections);
    let mut out = Vec::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(abbrevs) = dwarf.abbreviations(&header) else {
            break;
        };
        let Ok(mut tree) = header.entries_tree(&abbrevs, None) else {
            break;
        };
        if let Ok(root) = tree.root() {
            let strings = Strings::of_unit(&dwarf, &header, root.entry());
            if let Ok(Some(p)) = strings.get(root.entry(), gimli::DW_AT_producer) {
                out.push(p);
            }
        }
    }
    out
}

fn read_types(dwarf: &gimli::Dwarf<Slice<'_>>) -> gimli::Result<BTreeMap<String, Layout>> {
    let mut out = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        // Not `dwarf.unit()`: that reads the line program, which is not assembled here.
        let abbrevs = dwarf.abbreviations(&header)?;
        let mut tree = header.entries_tree(&abbrevs, None)?;
        let root = tree.root()?;
        let strings = Strings::of_unit(dwarf, &header, root.entry());
        let mut found = Found::default();
        collect(&strings, root, "", &mut found)?;
        let Found {
            named,
            anonymous,
            typedefs,
        } = found;
        for (n, l) in named {
            out.entry(n).or_insert(l);
        }
        for (name, to) in typedefs {
            if let Some(l) = anonymous.get(&to) {
                out.entry(name).or_insert_with(|| l.clone());
            }
        }
    }
    Ok(out)
}

/// Reads the string attributes of one unit's entries.
struct Strings<'a, 'd> {
    dwarf: &'a gimli::Dwarf<Slice<'d>>,
    format: gimli::Format,
    base: gimli::DebugStrOffsetsBase<usize>,
}

impl<'a, 'd> Strings<'a, 'd> {
    /// The strings of the unit with this header and root entry.
    fn of_unit(
        dwarf: &'a gimli::Dwarf<Slice<'d>>,
        header: &gimli::UnitHeader<Slice<'d>>,
        root: &gimli::DebuggingInformationEntry<Slice<'d>>,
    ) -> Strings<'a, 'd> {
        // DWARF 5 (clang) names things by index into `.debug_str_offsets`, from this base.
        let base = match root.attr_value(gimli::DW_AT_str_offsets_base) {
            Some(AttributeValue::DebugStrOffsetsBase(b)) => b,
            _ => gimli::DebugStrOffsetsBase(0),
        };
        Strings {
            dwarf,
            format: header.format(),
            base,
        }
    }

    fn get(
        &self,
        entry: &gimli::DebuggingInformationEntry<Slice<'d>>,
        at: gimli::DwAt,
    ) -> gimli::Result<Option<String>> {
        let dwarf = self.dwarf;
        let s = match entry.attr_value(at) {
            Some(AttributeValue::String(s)) => s,
            Some(AttributeValue::DebugStrRef(o)) => dwarf.debug_str.get_str(o)?,
            Some(AttributeValue::DebugLineStrRef(o)) => dwarf.debug_line_str.get_str(o)?,
            Some(AttributeValue::DebugStrOffsetsIndex(i)) => {
                let o = dwarf
                    .debug_str_offsets
                    .get_str_offset(self.format, self.base, i)?;
                dwarf.debug_str.get_str(o)?
            }
            _ => return Ok(None),
        };
        Ok(Some(s.to_string_lossy().into_owned()))
    }
}

/// How the layout of a type changed, for a message (`None` if it did not).
pub(crate) fn describe_change(old: &Layout, new: &Layout) -> Option<String> {
    if old == new {
        return None;
    }
    let mut parts = Vec::new();
    if old.size != new.size {
        parts.push(format!("size {} -> {} bytes", old.size, new.size));
    }
    for m in &old.members {
        match new.members.iter().find(|n| n.name == m.name) {
            None => parts.push(format!("member `{}` removed", m.name)),
            Some(n) if n.bit_offset != m.bit_offset || n.bit_size != m.bit_size => {
                parts.push(format!(
                    "member `{}` moved from {} to {}",
                    m.name,
                    position(m),
                    position(n)
                ))
            }
            Some(_) => {}
        }
    }
    for n in &new.members {
        if !old.members.iter().any(|m| m.name == n.name) {
            parts.push(format!("member `{}` added at {}", n.name, position(n)));
        }
    }
    if parts.is_empty() {
        parts.push("members reordered".into());
    }
    Some(parts.join(", "))
}

fn position(m: &Member) -> String {
    if m.bit_size == 0 && m.bit_offset.is_multiple_of(8) {
        format!("offset {}", m.bit_offset / 8)
    } else {
        format!("bit {} (width {})", m.bit_offset, m.bit_size)
    }
}

/// The debugging sections' bytes.
fn assemble(file: &AsmFile) -> Option<HashMap<String, Vec<u8>>> {
    const WANTED: &[&str] = &[
        ".debug_info",
        ".debug_abbrev",
        ".debug_str",
        ".debug_line_str",
        ".debug_str_offsets",
    ];
    // Pass 1: sizes and label offsets. Pass 2: bytes.
    let mut labels: HashMap<&str, (String, u64)> = HashMap::new();
    let mut sizes: HashMap<String, u64> = HashMap::new();
    let mut items: Vec<(String, &str, &str)> = Vec::new();
    for (_, s) in file.stmts_in(0..file.lines.len()) {
        let sec = &file.sections.get(s.section.id).name;
        if !WANTED.contains(&sec.as_str()) || s.is_section_switch() {
            continue;
        }
        let at = sizes.entry(sec.clone()).or_insert(0);
        match s.kind {
            StmtKind::Label => {
                labels.insert(s.name.as_str(), (sec.clone(), *at));
            }
            StmtKind::Directive => {
                *at = at.checked_add(directive_size(&s.name, &s.args)?)?;
                items.push((sec.clone(), s.name.as_str(), s.args.as_str()));
            }
            _ => {}
        }
    }
    let value = |expr: &str, in_section: &str| -> i128 {
        evaluate(expr.trim(), &|name| {
            labels.get(name).map(|(sec, off)| (sec == in_section, *off))
        })
    };
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    for (sec, name, args) in items {
        let bytes = out.entry(sec.clone()).or_default();
        emit(name, args, bytes, &|e| value(e, &sec))?;
    }
    Some(out)
}

fn fixed_size(directive: &str) -> Option<u64> {
    Some(match directive {
        ".byte" => 1,
        ".value" | ".2byte" | ".short" | ".hword" => 2,
        ".long" | ".4byte" | ".int" => 4,
        ".quad" | ".8byte" => 8,
        _ => return None,
    })
}

/// Bytes a data directive adds; `None` for one this reader cannot size.
fn directive_size(name: &str, args: &str) -> Option<u64> {
    if let Some(n) = fixed_size(name) {
        return Some(n * split_args(args).len() as u64);
    }
    match name {
        ".uleb128" | ".sleb128" => {
            let mut n = 0;
            for a in split_args(args) {
                n += leb_len(name == ".sleb128", plain_number(a).unwrap_or(0));
            }
            Some(n)
        }
        ".string" | ".asciz" => Some(
            split_args(args)
                .iter()
                .map(|a| string_bytes(a).len() as u64 + 1)
                .sum(),
        ),
        ".ascii" => Some(
            split_args(args)
                .iter()
                .map(|a| string_bytes(a).len() as u64)
                .sum(),
        ),
        ".zero" | ".skip" | ".space" => fill_len(split_args(args).first()?),
        _ => Some(0),
    }
}

fn emit(name: &str, args: &str, out: &mut Vec<u8>, value: &dyn Fn(&str) -> i128) -> Option<()> {
    if let Some(n) = fixed_size(name) {
        for a in split_args(args) {
            let v = value(a) as u64;
            out.extend_from_slice(&v.to_le_bytes()[..n as usize]);
        }
        return Some(());
    }
    match name {
        ".uleb128" | ".sleb128" => {
            for a in split_args(args) {
                // Sized in pass 1 from the literal alone: a symbolic value counts as 0.
                let v = plain_number(a).unwrap_or(0);
                leb(name == ".sleb128", v, out);
            }
        }
        ".string" | ".asciz" => {
            for a in split_args(args) {
                out.extend(string_bytes(a));
                out.push(0);
            }
        }
        ".ascii" => {
            for a in split_args(args) {
                out.extend(string_bytes(a));
            }
        }
        ".zero" | ".skip" | ".space" => {
            let n = fill_len(split_args(args).first()?)?;
            out.resize(out.len() + usize::try_from(n).ok()?, 0);
        }
        _ => {}
    }
    Some(())
}

/// The largest `.zero` this reader assembles: gcc's debugging sections hold no such fill,
/// and a larger one (in a damaged file) would only exhaust memory.
const MAX_FILL: u64 = 1 << 20;

/// The length of a `.zero N` fill; `None` when it is not a literal in `0..=MAX_FILL`.
fn fill_len(arg: &str) -> Option<u64> {
    u64::try_from(plain_number(arg)?)
        .ok()
        .filter(|&n| n <= MAX_FILL)
}

/// A number written as a literal (decimal, `0x` hex, octal, optionally negative).
fn plain_number(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i128::from_str_radix(h, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i128::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// The value of a data directive's operand: a literal, a label of the same debugging section
/// (its offset there, as the assembler writes section-relative offsets for these), or `a-b`
/// of two labels of one section; anything else (addresses of code) is 0.
fn evaluate(expr: &str, label: &dyn Fn(&str) -> Option<(bool, u64)>) -> i128 {
    if let Some(v) = plain_number(expr) {
        return v;
    }
    if let Some((a, b)) = expr.split_once('-') {
        if let (Some((_, x)), Some((_, y))) = (label(a.trim()), label(b.trim())) {
            return i128::from(x) - i128::from(y);
        }
        return 0;
    }
    label(expr).map_or(0, |(_, off)| i128::from(off))
}

fn leb_len(signed: bool, v: i128) -> u64 {
    let mut buf = Vec::new();
    leb(signed, v, &mut buf);
    buf.len() as u64
}

fn leb(signed: bool, mut v: i128, out: &mut Vec<u8>) {
    if !signed {
        // A negative value written as unsigned: its two's complement bits (a logical shift
        // ends; an arithmetic one would stay at -1 forever).
        let mut u = v as u128;
        loop {
            let byte = (u & 0x7f) as u8;
            u >>= 7;
            if u == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = if signed {
            (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0)
        } else {
            v == 0
        };
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The bytes of a quoted assembler string, escapes decoded.
fn string_bytes(s: &str) -> Vec<u8> {
    let s = s.trim();
    let inner = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s);
    let b = inner.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        match b[i] {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'f' => out.push(0x0c),
            b'b' => out.push(0x08),
            b'x' | b'X' => {
                let hex: Vec<u8> = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .copied()
                    .collect();
                let v =
                    u32::from_str_radix(std::str::from_utf8(&hex).unwrap_or("0"), 16).unwrap_or(0);
                out.push(v as u8);
                i += hex.len();
            }
            c if c.is_ascii_digit() => {
                let oct: Vec<u8> = b[i..]
                    .iter()
                    .take(3)
                    .take_while(|c| (b'0'..=b'7').contains(c))
                    .copied()
                    .collect();
                let v =
                    u32::from_str_radix(std::str::from_utf8(&oct).unwrap_or("0"), 8).unwrap_or(0);
                out.push(v as u8);
                i += oct.len().max(1) - 1;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers() {
        assert_eq!(string_bytes(r#""a\tb\101\x41\"""#), b"a\tbAA\"");
        assert_eq!(plain_number("0x1f"), Some(31));
        assert_eq!(plain_number("-8"), Some(-8));
        assert_eq!(plain_number("010"), Some(8));
        assert_eq!(plain_number(".LASF3"), None);
        let mut v = Vec::new();
        leb(false, 624485, &mut v);
        assert_eq!(v, [0xe5, 0x8e, 0x26]);
        v.clear();
        leb(true, -123456, &mut v);
        assert_eq!(v, [0xc0, 0xbb, 0x78]);
    }

    #[test]
    fn damaged_numbers_end() {
        // Found by the fuzz target `asm_diff`: `.uleb128 -5` looped until memory ran out, and
        // a huge `.zero` would have allocated it.
        let mut v = Vec::new();
        leb(false, -5, &mut v);
        assert_eq!(v.len(), 19, "the 128 bits of -5, 7 at a time");
        assert_eq!(v.last(), Some(&0x03));
        assert_eq!(leb_len(false, -1), 19);
        assert_eq!(directive_size(".zero", "99999999999999"), None);
        assert_eq!(directive_size(".zero", "-3"), None);
        assert_eq!(directive_size(".zero", "16"), Some(16));
        let text = "\t.section\t.debug_info,\"\",@progbits\n\t.uleb128 -5\n\t.zero 99999999999\n";
        let file = AsmFile::parse("d.s", text, crate::Dialect::x86_64()).unwrap();
        assert!(layouts(&file).is_none(), "nothing this reader understands");
    }

    #[test]
    fn changes_are_described() {
        let m = |name: &str, off: u64| Member {
            name: name.into(),
            bit_offset: off * 8,
            bit_size: 0,
        };
        let old = Layout {
            kind: "struct",
            size: 16,
            members: vec![m("id", 0), m("next", 8)],
        };
        let new = Layout {
            kind: "struct",
            size: 24,
            members: vec![m("id", 0), m("flags", 8), m("next", 16)],
        };
        assert_eq!(
            describe_change(&old, &new).unwrap(),
            "size 16 -> 24 bytes, member `next` moved from offset 8 to offset 16, member `flags` added at offset 8"
        );
        assert_eq!(describe_change(&old, &old), None);
    }
}
