//! Errors of reading, comparing and combining assembler files.

use kpatch_names::display as shown;

/// Everything that can go wrong in this crate; each message names the file, line, function or
/// variable concerned and says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AsmError {
    #[error("{file}:{line}: {msg}")]
    Parse {
        file: String,
        line: usize,
        msg: String,
    },

    #[error(
        "{file}:{line}: function `{name}` has no `.size {name}, .-{name}` after its `.type`; \
         is the file truncated?"
    )]
    FunctionWithoutEnd {
        file: String,
        line: usize,
        name: String,
    },

    #[error(
        "variable {} is defined differently in {orig_file}:{orig_line} and \
         {patched_file}:{patched_line}; a patch cannot change a variable, because the running \
         process keeps its own copy of the data. Keep the original definition (or pass \
         --ignore-changes={name} to keep using the original one)",
        shown(.name)
    )]
    VariableChanged {
        name: String,
        orig_file: String,
        orig_line: usize,
        patched_file: String,
        patched_line: usize,
    },

    #[error(
        "changed function(s) {names} are listed in --must-adapt but not marked \
         KPGENSRC_ADAPTED in the patched source; adapt them and mark them, or drop the change"
    )]
    NotAdapted { names: String },

    #[error(
        "{file}: function {} refers to `{label}`, a local code label outside the \
         function; such code cannot be copied into a patch",
        shown(.function)
    )]
    ForeignCodeLabel {
        file: String,
        function: String,
        label: String,
    },

    #[error(
        "{file}: {} reaches data through the section anchor `{label}` (section \
         `{section}`), and the data behind it is laid out differently in the original, so the \
         copy cannot use the original's data; build both with -fno-section-anchors",
        shown(.user)
    )]
    AnchorLayoutChanged {
        file: String,
        user: String,
        label: String,
        section: String,
    },

    #[error(
        "{file}:{line}: new thread-local variable {}: a patch cannot add thread-local \
         storage (the running threads have no room for it); make it a global or drop it",
        shown(.name)
    )]
    NewTlsVariable {
        file: String,
        line: usize,
        name: String,
    },

    #[error(
        "{file}:{line}: `.size {name}, .-{name}` is missing or unusual, so the length of \
         the original function {} is unknown and it cannot be patched",
        shown(.name)
    )]
    OriginalSizeUnknown {
        file: String,
        line: usize,
        name: String,
    },

    #[error(
        "{file}: function {}: --force-gotpcrel cannot rewrite {reason}; rewrite the \
         access in C (through a pointer variable) or build without --force-gotpcrel",
        shown(.function)
    )]
    ForceGotpcrel {
        file: String,
        function: String,
        reason: String,
    },

    #[error(
        "{file}: function {} changed, but it is a start-up function (listed in \
         {section}) that the running process has already run, so replacing it would change \
         nothing. Move the change out of it, or pass --ignore-changes={name} to leave it \
         unpatched",
        shown(.name)
    )]
    StartUpFunction {
        file: String,
        name: String,
        section: String,
    },

    #[error(
        "{file}: function {} changed, but it never returns (it is main, or a loop with \
         no way out): a thread of the running process is always inside it, so the patch could \
         never be applied safely. Move the changed code into a function it calls, or pass \
         --ignore-changes={name} if the difference does not matter",
        shown(.name)
    )]
    NeverReturns { file: String, name: String },

    #[error(
        "{file}: function `{name}` changed, but gcc folded `{folded}` into it (identical code \
         folding: `{folded}` is an alias of `{name}` in the original build): patching `{name}` \
         would change `{folded}` too. Build the original with libcare-cc (it adds \
         -flive-patching=inline-clone) or -fno-ipa-icf"
    )]
    FoldedFunction {
        file: String,
        name: String,
        folded: String,
    },

    #[error(
        "{file} was compiled by `{producer}`, without -flive-patching=inline-clone: callers may \
         depend on the old bodies of {functions} (calls of a const/pure function hoisted or \
         dropped, values kept in registers across a leaf call, ranges propagated), so the \
         patch could leave them doing the old thing (--strict-ipa). Build the original with \
         libcare-cc, which adds the option, or leave out --strict-ipa to patch with a warning"
    )]
    CallersMayDepend {
        file: String,
        producer: String,
        functions: String,
    },

    #[error(
        "{file}: {kind} `{name}` has a different layout in the patched build ({change}): \
         objects of this type in the running process keep the old layout, which the patched \
         code would misread and the unchanged code would keep using. Keep the layout (put new \
         fields in a structure of their own), or pass --ignore-changes={name} if no object of \
         this type exists while the patch is applied"
    )]
    TypeLayoutChanged {
        file: String,
        kind: String,
        name: String,
        change: String,
    },

    #[error(
        "{file}: function {} was added by the earlier patch (--earlier) and is changed \
         here: a later patch cannot replace what an earlier patch added (the earlier patch's \
         own code would keep calling its version). Keep it as the earlier patch has it (add \
         a new function instead), or build one patch with both changes",
        shown(.name)
    )]
    EarlierFunctionChanged { file: String, name: String },

    #[error(
        "{file}: {} uses {}, which the earlier patch (--earlier) added as a static \
         symbol: a later patch finds what an earlier one added by name, which only works for \
         symbols with external linkage. Make {} non-static in both patches' sources",
        shown(.user),
        shown(.name),
        shown(.name)
    )]
    EarlierStaticUsed {
        file: String,
        user: String,
        name: String,
    },

    #[error(
        "{file}: the virtual functions of `{class}` changed ({} is laid out differently in the \
         patched build): objects of this class in the running process point to the original \
         vtable, whose slots the patched code would misread. A patch may change the bodies of \
         virtual functions, not add, remove or reorder them",
        shown(.vtable)
    )]
    VtableChanged {
        file: String,
        class: String,
        vtable: String,
    },

    #[error(
        "{file}: the initialisation of global object(s) {objects} changed (in {}, which runs \
         once at start-up, from {section}), but the running process constructed them before \
         any patch could exist, and a patch cannot construct them again. Keep their \
         definition, or pass --ignore-changes={function} to leave it unpatched",
        shown(.function)
    )]
    GlobalInitChanged {
        file: String,
        function: String,
        objects: String,
        section: String,
    },
}
