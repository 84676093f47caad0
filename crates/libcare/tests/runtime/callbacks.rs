//! The kernel's livepatch callback tests (tools/testing/selftests/livepatch/test-callbacks.sh,
//! ../shared/seeds/kernel-livepatch-callback-tests.txt) in user space: vmlinux is the program
//! (tests/fixtures/runtime/callbacks.c), the target modules are libcallbacks_mod.so and
//! libcallbacks_busy.so, insmod of the livepatch is `libcare-ctl patch`, its disable
//! `libcare-ctl unpatch`. A library loaded or unloaded while a patch is applied is reported to
//! the engine as the self-load service will ([`Engine::object_loaded`],
//! [`Engine::object_unloading`]), between its loading and its initialiser, between its
//! finaliser and its unloading.
//!
//! Each test writes the seed's expected output (its callback and module lines, the livepatch
//! core's own lines left out) and compares what the process prints with its transposition.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kpatch_engine::{Engine, Options, Report};

use crate::support::*;

const MOD: &str = "libcallbacks_mod.so";
const BUSY: &str = "libcallbacks_busy.so";

/// The program, its two patches and the libraries, built once for every test.
struct Fixture {
    dir: PathBuf,
    program: Built,
    busy: Built,
    /// demo2 made cumulative (`kpatch_make --replace`).
    demo2_replace: PathBuf,
}

impl Fixture {
    /// A storage holding the program's patch `version` (and the busy library's patch when
    /// `busy`), under a new directory `name`.
    fn storage(&self, name: &str, version: u32, busy: bool) -> PathBuf {
        let dir = self.dir.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("storage");
        put_flat(&dir, &self.program.build_id, self.program.patch(version));
        if busy {
            put_flat(&dir, &self.busy.build_id, self.busy.patch(1));
        }
        dir
    }
}

/// The `-I` that finds `<libcare/livepatch.h>` in the source tree.
pub fn include_flag() -> String {
    let dir = fixtures().join("../../include");
    format!("-I{}", dir.canonicalize().expect("include dir").display())
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = bin_dir()
            .join("test-fixtures")
            .join(format!("callbacks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let include = include_flag();
        let cflags = [include.as_str()];
        let gensrc_flags = ["--force-gotpcrel"];
        let program = build(
            &dir,
            &Recipe {
                cflags: &cflags,
                ldflags: &["-ldl"],
                gensrc_flags: &gensrc_flags,
                ..Recipe::exe("callbacks", "-O2")
            },
            &[1, 2],
        );
        let lib = |name: &str, versions: &[u32]| {
            let soname = format!("-Wl,-soname,{name}.so");
            let ldflags = ["-pthread", soname.as_str()];
            build(
                &dir,
                &Recipe {
                    shared: true,
                    ldflags: &ldflags,
                    ..Recipe::exe(name, "-O2")
                },
                versions,
            )
        };
        lib("libcallbacks_mod", &[]);
        let busy = lib("libcallbacks_busy", &[1]);
        let demo2_replace = dir.join("callbacks.v2.replace.kpatch");
        run_ok(tool("kpatch_make", &dir).args([
            "--replace",
            "-b",
            &program.build_id,
            "-i",
            "0002",
            "callbacks.v2.stripped",
            "-o",
            demo2_replace.to_str().unwrap(),
        ]));
        Fixture {
            dir,
            program,
            busy,
            demo2_replace,
        }
    })
}

/// The seed's lines, transposed: the livepatch modules are the patches `demo` and `demo2`,
/// vmlinux the program, the target modules the libraries; a module's state is not shown.
fn transpose(seed: &[&str]) -> Vec<String> {
    seed.iter()
        .map(|l| {
            let l = l
                .replace("$MOD_LIVEPATCH2", "demo2")
                .replace("$MOD_LIVEPATCH", "demo")
                .replace("${MOD_TARGET_BUSY}_init", "init")
                .replace("${MOD_TARGET_BUSY}_exit", "exit")
                .replace("${MOD_TARGET}_init", "init")
                .replace("${MOD_TARGET}_exit", "exit")
                .replace("$MOD_TARGET_BUSY", BUSY)
                .replace("$MOD_TARGET", MOD)
                .replace("vmlinux", "program");
            match l.find(" -> [MODULE_STATE_") {
                Some(i) => l[..i].to_owned(),
                None => l,
            }
        })
        .collect()
}

/// Engine progress, kept for failure messages.
#[derive(Default)]
struct Lines(Vec<String>);

impl Report for Lines {
    fn info(&mut self, msg: &str) {
        self.0.push(msg.to_owned());
    }
    fn detail(&mut self, msg: &str) {
        self.0.push(msg.to_owned());
    }
}

/// The program running, and what drives it.
struct Run {
    p: Proc,
    dir: PathBuf,
    marks: u32,
    /// Lines of the callbacks and libraries read while waiting for something else.
    seen: Vec<String>,
    engine: Engine,
}

/// Whether the callbacks or the libraries printed `line`.
fn relevant(line: &str) -> bool {
    line.starts_with("demo") || line.starts_with("libcallbacks_")
}

impl Run {
    fn start() -> Run {
        let f = fixture();
        let mut cmd = std::process::Command::new(&f.program.binary);
        cmd.current_dir(&f.dir).stdin(std::process::Stdio::piped());
        let mut p = Proc::start(&mut cmd);
        p.wait_line("ready");
        Run {
            p,
            dir: f.dir.clone(),
            marks: 0,
            seen: Vec::new(),
            engine: Engine::new(Options {
                lock_dir: lock_dir(),
                ..Options::default()
            }),
        }
    }

    fn pid(&self) -> String {
        self.p.pid_arg()
    }

    /// The lines the callbacks and the libraries printed since the last step must be `seed`'s,
    /// transposed, and nothing else.
    fn step(&mut self, seed: &[&str]) {
        self.marks += 1;
        let mark = format!("mark {}", self.marks);
        self.p.send(&mark);
        self.wait(&mark);
        let got = std::mem::take(&mut self.seen);
        assert_eq!(got, transpose(seed), "step {}", self.marks);
    }

    /// Reads the output up to `want`, keeping the relevant lines (`want` too) for the next
    /// step.
    fn wait(&mut self, want: &str) {
        loop {
            let line = self.p.next_line();
            let done = line == want;
            if relevant(&line) {
                self.seen.push(line);
            }
            if done {
                return;
            }
        }
    }

    fn send(&mut self, line: &str) {
        self.p.send(line);
    }

    /// dlopen of a library, waited for.
    fn load(&mut self, lib: &str) {
        let path = self.dir.join(lib);
        self.send(&format!("load {}", path.display()));
        self.wait(&format!("loaded {lib}"));
    }

    fn unload(&mut self, lib: &str) {
        self.send(&format!("unload {lib}"));
        self.wait(&format!("unloaded {lib}"));
    }

    /// `libcare-ctl ARGS -p PID ...`.
    fn ctl(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let pid = self.pid();
        let mut all = vec![args[0], "-p", &pid];
        all.extend(&args[1..]);
        ctl(&self.dir, &all, env)
    }

    fn patch(&self, storage: &Path) {
        ok(&self.ctl(&["patch", storage.to_str().unwrap()], &[]));
    }

    fn unpatch(&self, id: Option<&str>) {
        match id {
            Some(id) => ok(&self.ctl(&["unpatch", "-i", id], &[])),
            None => ok(&self.ctl(&["unpatch"], &[])),
        };
    }

    /// What the self-load service does when `lib` has been loaded; the error it reports.
    fn coming(&mut self, lib: &str) -> Option<String> {
        let mut lines = Lines::default();
        let pid = self.p.pid() as i32;
        let r = self.engine.object_loaded(pid, lib, None, &mut lines);
        r.err().map(|e| e.to_string())
    }

    /// What the self-load service does when `lib` is about to be unloaded.
    fn going(&mut self, lib: &str) {
        let mut lines = Lines::default();
        let pid = self.p.pid() as i32;
        if let Err(e) = self.engine.object_unloading(pid, lib, &mut lines) {
            panic!("object_unloading({lib}): {e}\n{}", lines.0.join("\n"));
        }
    }
}

/// The seed's lines for recurring steps. The livepatch enabled, then disabled, with only
/// vmlinux loaded:
const PATCH_VMLINUX: &[&str] = &[
    "$MOD_LIVEPATCH: pre_patch_callback: vmlinux",
    "$MOD_LIVEPATCH: post_patch_callback: vmlinux",
];
const UNPATCH_VMLINUX: &[&str] = &[
    "$MOD_LIVEPATCH: pre_unpatch_callback: vmlinux",
    "$MOD_LIVEPATCH: post_unpatch_callback: vmlinux",
];
/// ... with the target loaded too:
const PATCH_BOTH: &[&str] = &[
    "$MOD_LIVEPATCH: pre_patch_callback: vmlinux",
    "$MOD_LIVEPATCH: pre_patch_callback: $MOD_TARGET -> [MODULE_STATE_LIVE] Normal state",
    "$MOD_LIVEPATCH: post_patch_callback: vmlinux",
    "$MOD_LIVEPATCH: post_patch_callback: $MOD_TARGET -> [MODULE_STATE_LIVE] Normal state",
];
const UNPATCH_BOTH: &[&str] = &[
    "$MOD_LIVEPATCH: pre_unpatch_callback: vmlinux",
    "$MOD_LIVEPATCH: pre_unpatch_callback: $MOD_TARGET -> [MODULE_STATE_LIVE] Normal state",
    "$MOD_LIVEPATCH: post_unpatch_callback: vmlinux",
    "$MOD_LIVEPATCH: post_unpatch_callback: $MOD_TARGET -> [MODULE_STATE_LIVE] Normal state",
];
/// The target loaded, and unloaded, while the livepatch is enabled:
const TARGET_COMING: &[&str] = &[
    "$MOD_LIVEPATCH: pre_patch_callback: $MOD_TARGET -> [MODULE_STATE_COMING] Full formed, running module_init",
    "$MOD_LIVEPATCH: post_patch_callback: $MOD_TARGET -> [MODULE_STATE_COMING] Full formed, running module_init",
    "$MOD_TARGET: ${MOD_TARGET}_init",
];
const TARGET_GOING: &[&str] = &[
    "$MOD_LIVEPATCH: pre_unpatch_callback: $MOD_TARGET -> [MODULE_STATE_GOING] Going away",
    "$MOD_LIVEPATCH: post_unpatch_callback: $MOD_TARGET -> [MODULE_STATE_GOING] Going away",
];

impl Run {
    /// insmod of the target before the livepatch.
    fn insmod_target(&mut self) {
        self.load(MOD);
        self.send(&format!("init {MOD}"));
        self.step(&["$MOD_TARGET: ${MOD_TARGET}_init"]);
    }

    /// rmmod of the target when no livepatch cares.
    fn rmmod_target(&mut self) {
        self.send(&format!("exit {MOD}"));
        self.unload(MOD);
        self.step(&["$MOD_TARGET: ${MOD_TARGET}_exit"]);
    }

    /// insmod of the target while the livepatch is enabled.
    fn target_coming(&mut self) {
        self.load(MOD);
        assert_eq!(self.coming(MOD), None);
        self.send(&format!("init {MOD}"));
        self.step(TARGET_COMING);
    }

    /// rmmod of the target while the livepatch is enabled.
    fn target_going(&mut self) {
        self.send(&format!("exit {MOD}"));
        self.step(&["$MOD_TARGET: ${MOD_TARGET}_exit"]);
        self.going(MOD);
        self.unload(MOD);
        self.step(TARGET_GOING);
    }

    /// insmod of the livepatch `demo`.
    fn patch_demo(&mut self, seed: &[&str]) {
        self.patch(fixture().program.patch(1));
        self.step(seed);
    }

    /// Disabling every livepatch.
    fn unpatch_all(&mut self, seed: &[&str]) {
        self.unpatch(None);
        self.step(seed);
    }
}

/// "target module before livepatch": load the target, then the livepatch; disable it, then
/// unload the target.
#[test]
fn target_loaded_before_the_patch() {
    let mut r = Run::start();
    r.insmod_target();
    r.patch_demo(PATCH_BOTH);
    r.unpatch_all(UNPATCH_BOTH);
    r.rmmod_target();
}

/// "module_coming notifier": the livepatch first; the target loaded later gets its own
/// pre/post-patch callbacks then.
#[test]
fn target_loaded_after_the_patch() {
    let mut r = Run::start();
    r.patch_demo(PATCH_VMLINUX);
    r.target_coming();
    r.unpatch_all(UNPATCH_BOTH);
    r.rmmod_target();
}

/// "module_going notifier": the target unloaded while patched gets its pre/post-unpatch
/// callbacks then; disabling the livepatch later runs the program's.
#[test]
fn target_unloaded_while_patched() {
    let mut r = Run::start();
    r.insmod_target();
    r.patch_demo(PATCH_BOTH);
    r.target_going();
    r.unpatch_all(UNPATCH_VMLINUX);
}

/// "module_coming and module_going notifiers": the target comes and goes while patched.
#[test]
fn target_loaded_and_unloaded_while_patched() {
    let mut r = Run::start();
    r.patch_demo(PATCH_VMLINUX);
    r.target_coming();
    r.target_going();
    r.unpatch_all(UNPATCH_VMLINUX);
}

/// "target module not present": only the program's callbacks run.
#[test]
fn target_never_loaded() {
    let mut r = Run::start();
    r.patch_demo(PATCH_VMLINUX);
    r.unpatch_all(UNPATCH_VMLINUX);
}

/// "pre-patch callback -ENODEV": the program's pre-patch fails; the patch is refused with its
/// value and nothing changes.
#[test]
fn a_failing_pre_patch_refuses_the_patch() {
    let mut r = Run::start();
    r.insmod_target();
    r.send("ret -19");
    r.wait("ret -19");
    let before = maps(r.p.pid());
    let patch = fixture().program.patch(1).to_path_buf();
    let out = r.ctl(&["patch", patch.to_str().unwrap()], &[]);
    fails(
        &out,
        &["pre-patch callback of the program (patch 0001) returned -19"],
    );
    r.step(&["$MOD_LIVEPATCH: pre_patch_callback: vmlinux"]);
    assert_eq!(maps(r.p.pid()), before);
    assert!(info_ids(&r.dir, r.p.pid()).is_empty());
    r.rmmod_target();
}

/// "module_coming + pre-patch callback -ENODEV": the pre-patch of a library loaded later
/// fails. The kernel refuses to load the module; a library cannot be refused, so it loads
/// unpatched, and `info` shows why.
#[test]
fn a_failing_pre_patch_leaves_a_library_loaded_later_unpatched() {
    let mut r = Run::start();
    r.patch_demo(PATCH_VMLINUX);
    r.send("ret -19");
    r.wait("ret -19");
    r.load(MOD);
    let err = r.coming(MOD).expect("the pre-patch fails");
    assert!(
        err.contains("pre-patch callback of libcallbacks_mod.so (patch 0001) returned -19"),
        "{err}"
    );
    r.step(&[
        "$MOD_LIVEPATCH: pre_patch_callback: $MOD_TARGET -> [MODULE_STATE_COMING] Full formed, running module_init",
    ]);
    let info = ok(&r.ctl(&["info"], &[]));
    assert!(
        info.contains("libcallbacks_mod.so: pre-patch failed (-19)"),
        "{info}"
    );
    r.unpatch_all(UNPATCH_VMLINUX);
    r.unload(MOD);
}

/// "multiple target modules": a busy module whose work function is patched (returning at
/// once), the livepatch, then another target.
#[test]
fn several_targets() {
    let f = fixture();
    let mut r = Run::start();
    r.send(&format!("busy {} 0", f.dir.join(BUSY).display()));
    r.step(&[
        "$MOD_TARGET_BUSY: ${MOD_TARGET_BUSY}_init",
        "$MOD_TARGET_BUSY: busymod_work_func enter",
        "$MOD_TARGET_BUSY: busymod_work_func exit",
    ]);
    r.patch(&f.storage("several", 1, true));
    r.step(&[
        "$MOD_LIVEPATCH: pre_patch_callback: vmlinux",
        "$MOD_LIVEPATCH: pre_patch_callback: $MOD_TARGET_BUSY -> [MODULE_STATE_LIVE] Normal state",
        "$MOD_LIVEPATCH: post_patch_callback: vmlinux",
        "$MOD_LIVEPATCH: post_patch_callback: $MOD_TARGET_BUSY -> [MODULE_STATE_LIVE] Normal state",
    ]);
    r.target_coming();
    r.unpatch(None);
    r.step(&[
        "$MOD_LIVEPATCH: pre_unpatch_callback: vmlinux",
        "$MOD_LIVEPATCH: pre_unpatch_callback: $MOD_TARGET -> [MODULE_STATE_LIVE] Normal state",
        "$MOD_LIVEPATCH: pre_unpatch_callback: $MOD_TARGET_BUSY -> [MODULE_STATE_LIVE] Normal state",
        "$MOD_LIVEPATCH: post_unpatch_callback: vmlinux",
        "$MOD_LIVEPATCH: post_unpatch_callback: $MOD_TARGET -> [MODULE_STATE_LIVE] Normal state",
        "$MOD_LIVEPATCH: post_unpatch_callback: $MOD_TARGET_BUSY -> [MODULE_STATE_LIVE] Normal state",
    ]);
    r.send(&format!("exit {MOD}"));
    r.unload(MOD);
    r.send(&format!("exit {BUSY}"));
    r.step(&[
        "$MOD_TARGET: ${MOD_TARGET}_exit",
        "$MOD_TARGET_BUSY: ${MOD_TARGET_BUSY}_exit",
    ]);
}

/// "busy target module": a thread sits in the function the patch replaces, so the switch
/// waits; no post-patch callback runs meanwhile, and when the wait ends (the kernel's disable
/// of a livepatch in transition; here the safety timeout) the objects whose pre-patch ran get
/// their post-unpatch. The seed also loads and unloads a target during the transition: that
/// needs the self-load service to act while `libcare-ctl patch` waits (lines left out here).
#[test]
fn a_busy_target_stalls_the_switch() {
    let f = fixture();
    let mut r = Run::start();
    r.send(&format!("busy {} 1", f.dir.join(BUSY).display()));
    r.wait("libcallbacks_busy.so: busymod_work_func enter");
    r.step(&[
        "$MOD_TARGET_BUSY: ${MOD_TARGET_BUSY}_init",
        "$MOD_TARGET_BUSY: busymod_work_func enter",
    ]);
    let before = maps(r.p.pid());
    let storage = f.storage("busy", 1, true);
    let out = r.ctl(
        &["patch", storage.to_str().unwrap()],
        &[("LIBCARE_SAFETY_TIMEOUT", SHORT_TIMEOUT)],
    );
    fails(&out, &["busymod_work_func"]);
    r.step(&[
        "$MOD_LIVEPATCH: pre_patch_callback: vmlinux",
        "$MOD_LIVEPATCH: pre_patch_callback: $MOD_TARGET_BUSY -> [MODULE_STATE_LIVE] Normal state",
        // Loaded and unloaded during the transition in the seed:
        // "$MOD_LIVEPATCH: pre_patch_callback: $MOD_TARGET -> [MODULE_STATE_COMING] ...",
        // "$MOD_TARGET: ${MOD_TARGET}_init",
        // "$MOD_TARGET: ${MOD_TARGET}_exit",
        // "$MOD_LIVEPATCH: post_unpatch_callback: $MOD_TARGET -> [MODULE_STATE_GOING] ...",
        "$MOD_LIVEPATCH: post_unpatch_callback: vmlinux",
        "$MOD_LIVEPATCH: post_unpatch_callback: $MOD_TARGET_BUSY -> [MODULE_STATE_LIVE] Normal state",
    ]);
    assert_eq!(maps(r.p.pid()), before);
}

/// "multiple livepatches": two patches, enabled and disabled in turn, each with its own
/// callbacks.
#[test]
fn two_patches() {
    let f = fixture();
    let mut r = Run::start();
    r.patch_demo(PATCH_VMLINUX);
    r.patch(f.program.patch(2));
    r.step(&[
        "$MOD_LIVEPATCH2: pre_patch_callback: vmlinux",
        "$MOD_LIVEPATCH2: post_patch_callback: vmlinux",
    ]);
    r.unpatch(Some("0002"));
    r.step(&[
        "$MOD_LIVEPATCH2: pre_unpatch_callback: vmlinux",
        "$MOD_LIVEPATCH2: post_unpatch_callback: vmlinux",
    ]);
    r.unpatch(Some("0001"));
    r.step(UNPATCH_VMLINUX);
}

/// "atomic replace": the second patch replaces the first; the first's unpatch callbacks never
/// run, the second's do when it is disabled.
#[test]
fn an_atomic_replace_skips_the_replaced_patch_callbacks() {
    let f = fixture();
    let mut r = Run::start();
    r.patch_demo(PATCH_VMLINUX);
    r.patch(&f.demo2_replace);
    r.step(&[
        "$MOD_LIVEPATCH2: pre_patch_callback: vmlinux",
        "$MOD_LIVEPATCH2: post_patch_callback: vmlinux",
    ]);
    assert_eq!(info_ids(&r.dir, r.p.pid()), ["0002"]);
    r.unpatch(None);
    r.step(&[
        "$MOD_LIVEPATCH2: pre_unpatch_callback: vmlinux",
        "$MOD_LIVEPATCH2: post_unpatch_callback: vmlinux",
    ]);
    assert!(info_ids(&r.dir, r.p.pid()).is_empty());
}
