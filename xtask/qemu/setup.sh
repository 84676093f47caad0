#!/bin/sh
# Installs what `cargo xtask test-qemu` needs on a Debian 12 x86_64 machine (as root) and
# unpacks Debian 12's QEMU source package into CACHE_DIR/src. Idempotent: a second run
# downloads nothing.
#
# - host packages: what a minimal x86_64 TCG build of QEMU 7.2 with VNC needs (meson, ninja,
#   glib, pixman, libfdt), and qemu-utils for qemu-img and qemu-io;
# - the source: `apt-get source qemu` from bookworm (with its security updates), unpacked with
#   Debian's patches applied (the upstream stable releases, v7.2.N.diff, carry the CVE fixes).
#
# /etc/apt is never touched: a private APT_CONFIG under CACHE_DIR (xtask/apt-private.sh) adds
# the deb-src lines the source needs.
set -eu
. "$(dirname "$0")/../apt-private.sh"
CACHE=${1:?usage: setup.sh CACHE_DIR}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
P=$CACHE/apt

need=""
for pkg in gcc g++ make python3 pkg-config ninja-build meson libglib2.0-dev libpixman-1-dev \
    libfdt-dev zlib1g-dev dpkg-dev xz-utils binutils; do
    installed "$pkg" || need="$need $pkg"
done
command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 || need="$need qemu-utils"
need_src=""
[ -s "$CACHE/src/VERSION" ] && [ -d "$CACHE/src/debian/patches" ] || need_src=yes

if [ -n "$need$need_src" ]; then
    private_apt "$P" "deb bookworm" "deb bookworm-updates" "deb bookworm-security" \
        "deb-src bookworm" "deb-src bookworm-updates" "deb-src bookworm-security"
    if [ -n "$need" ]; then
        echo "setup: installing$need" >&2
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $need >"$P/install.log" 2>&1 ||
            { cat "$P/install.log" >&2; exit 1; }
    fi
    if [ -n "$need_src" ]; then
        echo "setup: downloading and unpacking Debian's qemu source package" >&2
        rm -rf "$P/source" "$CACHE/src.new" && mkdir -p "$P/source"
        (cd "$P/source" && apt-get source --download-only -qq qemu >/dev/null)
        dsc=$(ls "$P"/source/qemu_*.dsc | head -n 1)
        dpkg-source -x "$dsc" "$CACHE/src.new" >"$P/unpack.log" 2>&1 ||
            { cat "$P/unpack.log" >&2; exit 1; }
        rm -rf "$CACHE/src" && mv "$CACHE/src.new" "$CACHE/src"
        # dpkg-source leaves the upstream tarball beside the tree it unpacked.
        rm -rf "$P/source" "$CACHE"/qemu_*.orig.tar.*
    fi
fi
echo "setup: ready ($CACHE)" >&2
