#!/bin/sh
# Installs what `cargo xtask test-aarch64` needs on a Debian 12 x86_64 machine (as root) and
# caches the aarch64 guest files in CACHE_DIR. Idempotent: a second run downloads nothing.
#
# - host packages: the aarch64 cross compiler with its C library, and qemu-system-arm from
#   bookworm-backports (10.x, like the preinstalled qemu-utils; bookworm's 7.2 would remove
#   qemu-utils);
# - the Rust target aarch64-unknown-linux-gnu;
# - guest files: Debian's arm64 kernel Image and busybox-static, downloaded (not installed)
#   and unpacked into CACHE_DIR.
#
# /etc/apt is never touched: a private APT_CONFIG under CACHE_DIR (xtask/apt-private.sh) has
# its own sources list (the machine's own mirrors plus bookworm-backports), state and archive
# directories, and knows the arm64 architecture for downloads only.
set -eu
. "$(dirname "$0")/../apt-private.sh"
CACHE=${1:?usage: setup.sh CACHE_DIR}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
P=$CACHE/apt

need_cross=""
for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu; do
    installed "$pkg" || need_cross="$need_cross $pkg"
done
need_qemu=""
command -v qemu-system-aarch64 >/dev/null 2>&1 || need_qemu=qemu-system-arm
need_guest=""
[ -s "$CACHE/Image" ] && [ -x "$CACHE/busybox" ] || need_guest=yes

if [ -n "$need_cross$need_qemu$need_guest" ]; then
    mkdir -p "$P/debs"
    PRIVATE_APT_EXTRA='APT::Architectures { "amd64"; "arm64"; };'
    private_apt "$P" "deb bookworm" "deb bookworm-updates" "deb bookworm-security" \
        "deb bookworm-backports"
    if [ -n "$need_cross" ]; then
        echo "setup: installing$need_cross" >&2
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $need_cross >"$P/install.log" 2>&1 ||
            { cat "$P/install.log" >&2; exit 1; }
    fi
    if [ -n "$need_qemu" ]; then
        echo "setup: installing qemu-system-arm from bookworm-backports" >&2
        apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-arm \
            >"$P/install.log" 2>&1 || { cat "$P/install.log" >&2; exit 1; }
    fi
    if [ -n "$need_guest" ]; then
        echo "setup: downloading the arm64 kernel and busybox" >&2
        kpkg=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
        [ -n "$kpkg" ] || { echo "setup: no arm64 kernel package found" >&2; exit 1; }
        rm -rf "$P/debs" "$P/unpack" && mkdir -p "$P/debs" "$P/unpack/k" "$P/unpack/b"
        (cd "$P/debs" && apt-get download -qq "$kpkg" busybox-static:arm64)
        dpkg-deb -x "$P"/debs/linux-image-*_arm64.deb "$P/unpack/k"
        dpkg-deb -x "$P"/debs/busybox-static_*_arm64.deb "$P/unpack/b"
        cp "$P"/unpack/k/boot/vmlinuz-*-arm64 "$CACHE/Image.new"
        cp "$P/unpack/b/bin/busybox" "$CACHE/busybox.new"
        chmod +x "$CACHE/busybox.new"
        mv "$CACHE/Image.new" "$CACHE/Image" && mv "$CACHE/busybox.new" "$CACHE/busybox"
        rm -rf "$P/debs" "$P/unpack"
    fi
fi

if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    echo "setup: adding the Rust target aarch64-unknown-linux-gnu" >&2
    rustup target add aarch64-unknown-linux-gnu
fi
echo "setup: ready ($CACHE)" >&2
