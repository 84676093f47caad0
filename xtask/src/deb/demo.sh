#!/bin/sh
# The demo's steps (cargo xtask demo) with the package's binaries, then the same patch through
# libcare-server as libcare.service runs it: with only the unit's capabilities, no new
# privileges, `--self-load`, and `update` applying the storage; a program started then runs
# patched from its first line. Run as pid 1 of a new PID namespace, so that `update` (patch -p
# all) and the self-load service see only the processes started here, and everything dies
# with it.
# Usage: demo.sh BINDIR WORKDIR SOCKET CAPS (CAPS as setpriv --bounding-set takes them).
set -eu
bin=$1 work=$2 sock=$3 caps=$4
export PATH="$bin:$PATH"
cd "$work"
# The lock files and the self-load marker here, not in the machine's /run/libcare.
export LIBCARE_LOCK_DIR="$work/locks"

step() { echo "== $*"; }
# Runs "$@" every 50 ms until it succeeds, 30 s at most.
retry() {
    n=0
    until "$@"; do
        n=$((n + 1))
        [ "$n" -le 600 ] || return 1
        sleep 0.05
    done
}
has_line() { tail -n "+$2" out.log | grep -q "$1"; }
# Waits for a line of out.log from line $2 on that matches $1.
wait_for() {
    retry has_line "$1" "$2" || {
        echo "no line matching '$1' in out.log from line $2 on:"
        cat out.log
        exit 1
    }
}
next_line() { echo $(($(wc -l <out.log) + 1)); }

step "diff -up foo.c bar.c > foo.patch"
diff -up foo.c bar.c >foo.patch || [ $? -eq 1 ]
step "libcare-patch-make --clean -i 0001 foo.patch"
libcare-patch-make --clean -i 0001 foo.patch
step "lpmake/foo &"
./lpmake/foo >out.log &
pid=$!
wait_for '^Hello world!$' 1

step "libcare-ctl -v patch -p $pid patchroot"
from=$(next_line)
libcare-ctl -v patch -p "$pid" patchroot
wait_for 'being patched' "$from"
step "libcare-ctl info -p $pid"
libcare-ctl info -p "$pid" | tee info.log
grep -q 'Patch id: *0001' info.log
step "libcare-ctl unpatch -p $pid"
libcare-ctl unpatch -p "$pid"
from=$(next_line)
wait_for '^Hello world!$' "$from"

step "setpriv --no-new-privs --bounding-set=$caps libcare-server --self-load $sock patchroot &"
setpriv --no-new-privs --bounding-set="$caps" libcare-server -v --self-load "$sock" patchroot >server.log 2>&1 &
server=$!
retry test -S "$sock" || {
    echo "libcare-server did not listen on $sock:"
    cat server.log
    exit 1
}
step "libcare-client $sock update"
from=$(next_line)
libcare-client "$sock" update
wait_for 'being patched' "$from"
step "lpmake/foo & (started after the server)"
./lpmake/foo >started.log &
started=$!
retry grep -q . started.log
first=$(head -n 1 started.log)
[ "$first" = "Hello world being patched!" ] || {
    echo "a foo started with the self-load service running first printed '$first':"
    cat server.log
    exit 1
}
kill "$started"
step "libcare-client $sock unpatch -p $pid"
libcare-client "$sock" unpatch -p "$pid"
from=$(next_line)
wait_for '^Hello world!$' "$from"
step "libcare-client $sock stop"
libcare-client "$sock" stop
wait "$server"
kill "$pid"
