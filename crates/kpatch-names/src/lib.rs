//! Symbol names as people read them: a C++ name demangled (`_ZN6shapes5scaleEi` is
//! `shapes::scale(int)`), with the suffixes compilers add to the clones and copies of a
//! function (`.isra.0`, `.cold`, `.kpatch`) kept readable. Every message naming a symbol
//! goes through [`display`].

use cpp_demangle::{DemangleOptions, Symbol};

/// The demangled form of `name`, if it is a mangled C++ name. A suffix after the mangled
/// part (`_Z1fv.cold`, `_Z1fv.kpatch`) is shown after the demangled name.
pub fn demangle(name: &str) -> Option<String> {
    if !name.starts_with("_Z") {
        return None;
    }
    // The mangled part ends where a compiler's `.suffix` starts (mangled names have no dots).
    let (mangled, suffix) = match name.find('.') {
        Some(i) => name.split_at(i),
        None => (name, ""),
    };
    let sym = Symbol::new(mangled).ok()?;
    let text = sym
        .demangle_with_options(&DemangleOptions::default())
        .ok()?;
    // cpp_demangle writes a vtable as `{vtable(T)}`; c++filt's wording is what people know.
    let text = match text
        .strip_prefix("{vtable(")
        .and_then(|t| t.strip_suffix(")}"))
    {
        Some(t) => format!("vtable for {t}"),
        None => text,
    };
    Some(if suffix.is_empty() {
        text
    } else {
        format!("{text} [{}]", suffix.trim_start_matches('.'))
    })
}

/// `name` for a message: `` `shapes::scale(int)` (_ZN6shapes5scaleEi) `` for a C++ name,
/// `` `name` `` otherwise.
pub fn display(name: &str) -> String {
    match demangle(name) {
        Some(d) => format!("`{d}` ({name})"),
        None => format!("`{name}`"),
    }
}

/// `name` as plain text: `shapes::scale(int) (_ZN6shapes5scaleEi)` for a C++ name, `name`
/// otherwise (for messages that do not quote names).
pub fn plain(name: &str) -> String {
    match demangle(name) {
        Some(d) => format!("{d} ({name})"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cxx_names_are_demangled_and_c_names_kept() {
        assert_eq!(
            demangle("_ZN6shapes5scaleEi").as_deref(),
            Some("shapes::scale(int)")
        );
        assert_eq!(
            demangle("_ZNK3BoxIiE7doubledEv.isra.0").as_deref(),
            Some("Box<int>::doubled() const [isra.0]")
        );
        assert_eq!(
            demangle("_ZTVN6shapes5ShapeE").as_deref(),
            Some("vtable for shapes::Shape")
        );
        assert_eq!(demangle("compute"), None);
        assert_eq!(demangle("_Zfoo"), None);
        assert_eq!(display("compute"), "`compute`");
        assert_eq!(plain("compute"), "compute");
        assert_eq!(plain("_Z1fv"), "f() (_Z1fv)");
        assert_eq!(display("_ZN2ns5limitE"), "`ns::limit` (_ZN2ns5limitE)");
    }
}
