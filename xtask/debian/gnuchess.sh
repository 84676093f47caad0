#!/bin/sh
# A real C++ program from Debian, patched live: GNU Chess (Debian's source package gnuchess)
# is built from source with libcare-patch-make (g++ through libcare-cc, -O2 -g), started, and
# driven through its standard input; the patch changes `cmd_version()` (src/frontend/cmd.cc),
# the C++ function that answers the `version` command. The program's answer is checked before
# the patch, with it, and after `libcare-ctl unpatch`.
#
# usage: gnuchess.sh CACHE_DIR TOOLS_DIR
#
# The source package is downloaded once into CACHE_DIR/src through a private APT_CONFIG
# (xtask/apt-private.sh: a deb-src line for the machine's own Debian mirror; /etc/apt is never
# touched) and unpacked with dpkg-source (dpkg-dev is installed if missing). Each run builds in
# CACHE_DIR/work.
set -eu
CACHE=${1:?usage: gnuchess.sh CACHE_DIR TOOLS_DIR}
TOOLS=${2:?usage: gnuchess.sh CACHE_DIR TOOLS_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
TOOLS=$(cd "$TOOLS" && pwd)
SRC=$CACHE/src
DEADLINE=30

say() { echo "gnuchess: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

source_dir() { ls -d "$SRC"/gnuchess-*/ 2>/dev/null | head -n 1; }

if [ -z "$(source_dir)" ] || [ ! -x "$(source_dir)configure" ]; then
    if ! command -v dpkg-source >/dev/null 2>&1; then
        say "installing dpkg-dev (dpkg-source unpacks the source package)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev \
            >/dev/null
    fi
    mkdir -p "$SRC"
    . "$HERE/../apt-private.sh"
    private_apt "$CACHE/apt" "deb-src bookworm"
    say "downloading the gnuchess source package"
    (cd "$SRC" && apt-get source -qq gnuchess >/dev/null)
fi
DIR=$(source_dir)
[ -x "${DIR}configure" ] || fail "no unpacked source under $SRC"

WORK=$CACHE/work
rm -rf "$WORK"
# -a keeps the timestamps: otherwise make would want to rerun automake.
cp -a "$DIR" "$WORK"
cd "$WORK"
say "configuring (cc and c++, which libcare-patch-make points at libcare-cc)"
./configure -q CC=cc CXX=c++ CFLAGS="-O2 -g" CXXFLAGS="-O2 -g" >configure.log 2>&1 ||
    { cat configure.log >&2; fail "configure failed"; }
cd src
say "building the original and the patched program with libcare-patch-make"
PATH=$TOOLS:$PATH libcare-patch-make -s .. -i 0001 -j 2 "$HERE/gnuchess-version.diff" \
    >"$WORK/patch-make.log" 2>&1 || { cat "$WORK/patch-make.log" >&2; fail "libcare-patch-make"; }
# What the patch replaces, named demangled.
grep -qxF "  replaces cmd_version() (_Z11cmd_versionv): cmd.cc: changed" "$WORK/patch-make.log" ||
    { cat "$WORK/patch-make.log" >&2; fail "libcare-patch-make does not list cmd_version()"; }
PROG=$WORK/src/lpmake/usr/local/bin/gnuchess
[ -x "$PROG" ] || fail "no installed program at $PROG"

IN=$WORK/stdin
OUT=$WORK/stdout
rm -f "$IN" "$OUT"
mkfifo "$IN"
"$PROG" <"$IN" >"$OUT" 2>&1 &
PID=$!
exec 7>"$IN"
trap 'exec 7>&-; kill $PID 2>/dev/null || :; wait $PID 2>/dev/null || :' EXIT

# Sends a command and waits for a line of its answer to be exactly `want` (after the prompt).
ask() {
    before=$(wc -c <"$OUT")
    echo "$1" >&7
    waited=0
    while :; do
        if tail -c +"$((before + 1))" "$OUT" | sed 's/^White ([0-9]*) : //' | grep -qxF "$2"; then
            return 0
        fi
        kill -0 $PID 2>/dev/null || fail "gnuchess exited; output: $(cat "$OUT")"
        [ "$waited" -lt "$((DEADLINE * 10))" ] || fail "no \"$2\" after \"$1\"; output: $(tail -c 400 "$OUT")"
        sleep 0.1
        waited=$((waited + 1))
    done
}

ctl() {
    "$TOOLS/libcare-ctl" "$@" >>"$WORK/ctl.log" 2>&1 || { cat "$WORK/ctl.log" >&2; fail "libcare-ctl $*"; }
}

VERSION=$(sed -n 's/^PACKAGE_VERSION = //p' "$WORK/Makefile")
ask version "GNU Chess $VERSION"
say "running (pid $PID) and answering \"GNU Chess $VERSION\"; patching"
ctl patch -p "$PID" "$WORK/src/patchroot"
ask version "GNU Chess $VERSION (patched live by libcare)"
say "patched: it answers \"GNU Chess $VERSION (patched live by libcare)\"; unpatching"
ctl info -p "$PID"
ctl unpatch -p "$PID"
ask version "GNU Chess $VERSION"
echo quit >&7
waited=0
while kill -0 $PID 2>/dev/null; do
    [ "$waited" -lt "$((DEADLINE * 10))" ] || fail "gnuchess did not quit"
    sleep 0.1
    waited=$((waited + 1))
done
wait $PID || fail "gnuchess exited with status $?"
trap - EXIT
say "PASS: patched and unpatched live; it quit normally"
