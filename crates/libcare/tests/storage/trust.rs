//! Who may patch, and what may be loaded (docs: README "Trust"): signed patches accepted,
//! unsigned, changed and foreign ones refused with the process untouched; files another user
//! could have written refused as root; `libcare-server` serving root and refusing an
//! unprivileged client (run as `nobody`) for every command; socket modes; the audit lines.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::server::*;
use crate::support::*;

const NOBODY: &str = "65534";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `ssh-keygen -t ed25519` in `dir`; returns the private key.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", name])
            .current_dir(dir)
            .stdin(Stdio::null()),
    );
    dir.join(name)
}

/// `libcare-ctl` with the audit trail in `dir/audit.log` and the keys of `keys`.
fn ctl(dir: &Path, keys: &Path) -> Command {
    let mut c = tool("libcare-ctl", dir);
    c.env("LIBCARE_AUDIT_LOG", dir.join("audit.log"))
        .arg("--keys")
        .arg(keys);
    c
}

fn audit_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The process still runs its original code: it prints its original line, and has no
/// patch mapping.
fn assert_untouched(t: &mut Proc, tag: &str) {
    t.drain();
    t.wait_line(&format!("{tag}: original"));
    assert!(
        rx_anonymous_regions(t.pid()).is_empty(),
        "no patch region in the process"
    );
}

/// The first `total_size` bytes of a patch file and the rest.
fn split(file: &[u8]) -> (&[u8], &[u8]) {
    let total = u32::from_le_bytes(file[160..164].try_into().unwrap()) as usize;
    file.split_at(total)
}

#[test]
fn only_patches_signed_by_a_listed_key_are_applied() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (exe, bid) = build_target(dir, "greet", ORIGINAL);
    let unsigned = build_patch(dir, "greet", "level 1", "0001");
    let good = keygen(dir, "good");
    let other = keygen(dir, "other");
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(dir.join("good.pub"), keys.join("good.pub")).unwrap();
    let make = |key: &Path, out: &str| {
        run_ok(
            tool("kpatch_make", dir)
                .args(["-b", &bid, "-i", "0001"])
                .args([
                    "greet-0001.stripped".as_ref(),
                    "--sign".as_ref(),
                    key.as_os_str(),
                    "-o".as_ref(),
                    out.as_ref(),
                ]),
        );
        dir.join(out)
    };
    let signed = make(&good, "signed.kpatch");
    let foreign = make(&other, "foreign.kpatch");
    let bytes = std::fs::read(&signed).unwrap();
    let (contents, sig) = split(&bytes);
    assert_eq!(
        contents.len() as u64,
        std::fs::metadata(&unsigned).unwrap().len(),
        "the signature comes after the contents"
    );

    // OpenSSH checks it: `ssh-keygen -Y verify` with the signer listed.
    std::fs::write(dir.join("contents"), contents).unwrap();
    std::fs::write(dir.join("contents.sig"), sig).unwrap();
    let public = std::fs::read_to_string(dir.join("good.pub")).unwrap();
    std::fs::write(dir.join("allowed"), format!("release {public}")).unwrap();
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-Y", "verify", "-f", "allowed", "-I", "release", "-n", "libcare",
            ])
            .args(["-s", "contents.sig"])
            .current_dir(dir)
            .stdin(std::fs::File::open(dir.join("contents")).unwrap()),
    );

    let mut flipped = bytes.clone();
    flipped[contents.len() / 2] ^= 0x40;
    let tampered = dir.join("tampered.kpatch");
    std::fs::write(&tampered, &flipped).unwrap();
    // A storage with one good patch and one unsigned file for another object.
    let storage = dir.join("storage");
    put_flat(&storage, &bid, &signed);
    put_flat(&storage, &"f".repeat(40), &unsigned);

    let mut t = Proc::spawn(&exe, &["t"]);
    t.wait_line("t: original");
    let pid = t.pid().to_string();
    let stray = storage.join(format!("{}.kpatch", "f".repeat(40)));
    for (file, reason) in [
        (&unsigned, "it is not signed"),
        (&tampered, "does not match its contents"),
        (&foreign, "which is not in"),
        (&storage, "it is not signed"),
    ] {
        let out = run(ctl(dir, &keys).args(["patch", "-p", &pid]).arg(file));
        assert_status(&out, 255);
        let named = if file == &storage { &stray } else { file };
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}: refused: ", named.display())) && err.contains(reason),
            "{}: {err}",
            file.display()
        );
        assert!(
            stdout(&out).contains(&format!("Failed to apply patch '{}'", file.display())),
            "{}",
            stdout(&out)
        );
        assert!(!stdout(&out).contains("targeting"), "nothing was attached");
        assert_untouched(&mut t, "t");
    }

    run_ok(ctl(dir, &keys).args(["patch", "-p", &pid]).arg(&signed));
    t.wait_line("t: level 1");
    run_ok(ctl(dir, &keys).args(["unpatch", "-p", &pid]));
    assert_untouched(&mut t, "t");

    // The audit trail: three refusals of files, the storage's, the patch, the unpatch.
    let lines = audit_lines(dir);
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("action=patch result=refused"))
        .collect();
    assert_eq!(refused.len(), 4, "{lines:#?}");
    for l in &refused {
        assert!(l.contains(&format!(" pid={pid} ")), "{l}");
        assert!(l.contains(" by_uid=0 by_user=root "), "{l}");
    }
    assert!(refused[0].contains(&format!("file={}", unsigned.display())));
    let applied = format!(
        "action=patch result=ok pid={pid} patch_id=0001 file={} by_uid=0",
        signed.display()
    );
    assert!(lines.iter().any(|l| l.contains(&applied)), "{lines:#?}");
    let removed = format!("action=unpatch result=ok pid={pid} patch_id=0001 by_uid=0");
    assert!(lines.iter().any(|l| l.contains(&removed)), "{lines:#?}");
    assert!(lines
        .iter()
        .all(|l| l.contains(" libcare-ctl[") && l.contains(" by_pid=")));
}

#[test]
fn as_root_files_other_users_could_write_are_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests run as root"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (exe, bid) = build_target(dir, "greet", ORIGINAL);
    let patch = build_patch(dir, "greet", "level 1", "0001");
    let no_keys = no_keys_dir();
    let mut t = Proc::spawn(&exe, &["w"]);
    t.wait_line("w: original");
    let pid = t.pid().to_string();

    chmod(&patch, 0o664);
    let out = run(ctl(dir, &no_keys).args(["patch", "-p", &pid]).arg(&patch));
    assert_status(&out, 255);
    let want = format!(
        "{}: refused: it is writable by its group (mode 0664)",
        patch.display()
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-strict-modes"));
    assert_untouched(&mut t, "w");

    // A storage whose `before` script belongs to another user.
    let storage = dir.join("storage");
    chmod(&patch, 0o644);
    put_flat(&storage, &bid, &patch);
    let script = put_script(&storage, "before", "exit 0");
    nix::unistd::chown(&script, Some(NOBODY.parse::<u32>().unwrap().into()), None).unwrap();
    let out = run(ctl(dir, &no_keys).args(["patch", "-p", &pid]).arg(&storage));
    assert_status(&out, 255);
    assert!(
        stderr(&out).contains(&format!(
            "{}: refused: it is owned by uid 65534",
            script.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_untouched(&mut t, "w");
    assert!(audit_lines(dir)
        .iter()
        .any(|l| l.contains("action=patch result=refused") && l.contains("owned by uid 65534")));

    // The opt-out.
    chmod(&patch, 0o664);
    run_ok(
        ctl(dir, &no_keys)
            .args(["--no-strict-modes", "patch", "-p", &pid])
            .arg(&patch),
    );
    t.wait_line("w: level 1");
}

/// `libcare-client SOCKET ARGS...` run as `nobody` (setpriv), from `/`.
fn client_as_nobody(socket: &str, args: &[&str]) -> Output {
    run(Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(bin("libcare-client"))
        .arg(socket)
        .args(args)
        .current_dir("/"))
}

#[test]
fn the_server_refuses_an_unprivileged_client_for_every_command_and_unsigned_patches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_, bid) = build_target(dir, "greet", ORIGINAL);
    build_patch(dir, "greet", "level 1", "0001");
    let key = keygen(dir, "release");
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(dir.join("release.pub"), keys.join("release.pub")).unwrap();
    let audit = dir.join("audit.log");
    // An abstract socket has no file permissions: the credential check is all there is.
    let socket = format!("@libcare-rs-trust-{}", std::process::id());
    let mut server = Server::start_with(
        dir,
        &socket,
        dir,
        &["--keys", keys.to_str().unwrap()],
        &[("LIBCARE_AUDIT_LOG", &audit)],
    );
    let pid = server.run("exec ./greet s >s.out 2>&1");
    let mut out = OutFile::new(dir.join("s.out"));
    out.wait_line("s: original");

    let marker = dir.join("id.out");
    let marker_cmd = format!("id > {}", marker.display());
    let commands: [&[&str]; 8] = [
        &["patch", "-p", &pid, "greet-0001.kpatch"],
        &["unpatch", "-p", &pid],
        &["info", "-p", &pid],
        &["run", &marker_cmd],
        &["kill", &pid],
        &["storage", "/tmp"],
        &["update"],
        &["stop"],
    ];
    for args in commands {
        let r = client_as_nobody(&socket, args);
        assert_status(&r, 255);
        let text = stdout(&r);
        assert_eq!(text.lines().count(), 1, "one line: {text:?}");
        assert!(
            text.starts_with(
                "libcare-server: error: permission denied: uid 65534 (nobody) may not use this \
                 server (it serves root)"
            ),
            "{args:?}: {text:?}"
        );
    }
    assert!(!marker.exists(), "run was not done");
    out.drain();
    out.wait_line("s: original");

    // Root is served, and the server went on; it verifies what root asks it to load.
    let r = server.client(&["info", "-p", &pid]);
    assert_status(&r, 0);
    assert_eq!(stdout(&r), "", "no patch applied");
    let r = server.client(&["patch", "-p", &pid, "greet-0001.kpatch"]);
    assert_status(&r, 255);
    assert!(
        stdout(&r).contains("greet-0001.kpatch: refused: it is not signed"),
        "{}",
        stdout(&r)
    );
    out.drain();
    out.wait_line("s: original");
    run_ok(
        tool("kpatch_make", dir)
            .args(["-b", &bid, "-i", "0001", "greet-0001.stripped", "--sign"])
            .arg(&key)
            .args(["-o", "signed.kpatch"]),
    );
    assert_status(&server.client(&["patch", "-p", &pid, "signed.kpatch"]), 0);
    out.wait_line("s: level 1");
    let log = server.log_text();
    assert_eq!(
        log.matches("refused: uid 65534 (nobody)").count(),
        8,
        "{log}"
    );
    let audited = std::fs::read_to_string(&audit).unwrap_or_default();
    let refusals: Vec<&str> = audited
        .lines()
        .filter(|l| l.contains("action=request result=refused") && l.contains("by_uid=65534"))
        .collect();
    assert_eq!(refusals.len(), 8, "{audited}");
    assert!(audited.contains("action=run result=ok"), "{audited}");
    assert!(
        audited.contains("action=patch result=refused")
            && audited.contains("action=patch result=ok"),
        "{audited}"
    );
    assert_status(&server.client(&["stop"]), 0);
    assert!(server.wait_exit().success());
}

#[test]
fn a_path_socket_is_private_or_shared_with_one_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // nobody may reach the sockets' directory; the sockets' own modes decide.
    chmod(dir, 0o755);
    let private = dir.join("private.sock");
    let mut server = Server::start(dir, private.to_str().unwrap(), dir);
    let meta = std::fs::metadata(&private).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), 0);
    let r = client_as_nobody(private.to_str().unwrap(), &["info", "-p", "1"]);
    assert_status(&r, 1);
    assert!(stderr(&r).contains("Permission denied"), "{}", stderr(&r));
    assert_status(&server.client(&["stop"]), 0);
    server.wait_exit();

    // nobody's group may use the shared one, but not the server's process control.
    let group = String::from_utf8(run_ok(Command::new("id").args(["-gn", "nobody"])).stdout)
        .unwrap()
        .trim()
        .to_owned();
    let shared = dir.join("shared.sock");
    let mut server = Server::start_with(
        dir,
        shared.to_str().unwrap(),
        dir,
        &["--group", &group],
        &[],
    );
    let meta = std::fs::metadata(&shared).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), 65534);
    let s = shared.to_str().unwrap();
    let r = client_as_nobody(s, &["info", "-h"]);
    assert_status(&r, 0);
    assert!(stdout(&r).contains("usage: libcare-ctl info"));
    for args in [&["run", "true"][..], &["stop"]] {
        let r = client_as_nobody(s, args);
        assert_status(&r, 255);
        assert!(
            stdout(&r).contains(&format!(
                "permission denied: only root may send {} (uid 65534 (nobody) asked)",
                args[0]
            )),
            "{}",
            stdout(&r)
        );
    }
    assert_status(&server.client(&["stop"]), 0);
    assert!(server.wait_exit().success());
}
