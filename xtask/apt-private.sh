# Sourced by the set-up scripts of `cargo xtask test-aarch64` and `test-qemu`: an apt
# configuration of their own under a cache directory, so that /etc/apt is never touched.
#
#   installed PACKAGE
#
# succeeds if PACKAGE is installed.
#
#   private_apt DIR SUITE_LINE...
#
# writes DIR/sources.list (one line per SUITE_LINE, each "TYPE SUITE", TYPE deb or deb-src,
# SUITE a bookworm suite; the mirror is the machine's own: deb822 sources, else the one-line
# format; -security suites go to the security mirror) and DIR/apt.conf (its own state and
# archive directories), exports APT_CONFIG, and downloads the package lists unless they are
# less than a day old. Extra apt.conf lines may be given in PRIVATE_APT_EXTRA.

private_apt() {
    pa_dir=$1
    shift
    mkdir -p "$pa_dir/lists/partial" "$pa_dir/archives/partial"
    pa_uris=$(
        { cat /etc/apt/sources.list.d/*.sources 2>/dev/null || :; } |
            awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}'
        { cat /etc/apt/sources.list 2>/dev/null || :; } |
            awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'
    )
    pa_main=$(echo "$pa_uris" | grep -v security | head -n 1)
    pa_sec=$(echo "$pa_uris" | grep security | head -n 1)
    [ -n "$pa_main" ] || { echo "setup: no Debian mirror in /etc/apt sources" >&2; exit 1; }
    [ -n "$pa_sec" ] || pa_sec=$pa_main-security
    pa_key=signed-by=/usr/share/keyrings/debian-archive-keyring.gpg
    : > "$pa_dir/sources.list.new"
    for pa_line in "$@"; do
        pa_type=${pa_line%% *}
        pa_suite=${pa_line#* }
        case $pa_suite in
        *-security) pa_uri=$pa_sec ;;
        *) pa_uri=$pa_main ;;
        esac
        echo "$pa_type [$pa_key] $pa_uri $pa_suite main" >> "$pa_dir/sources.list.new"
    done
    # New sources mean new lists.
    if ! cmp -s "$pa_dir/sources.list.new" "$pa_dir/sources.list"; then
        rm -f "$pa_dir"/lists/*_Packages* "$pa_dir"/lists/*_Sources*
    fi
    mv "$pa_dir/sources.list.new" "$pa_dir/sources.list"
    cat > "$pa_dir/apt.conf" <<EOS
Dir::Etc::sourcelist "$pa_dir/sources.list";
Dir::Etc::sourceparts "-";
Dir::State::lists "$pa_dir/lists";
Dir::Cache::archives "$pa_dir/archives";
APT::Sandbox::User "root";
${PRIVATE_APT_EXTRA:-}
EOS
    export APT_CONFIG="$pa_dir/apt.conf" DEBIAN_FRONTEND=noninteractive
    if [ -z "$(find "$pa_dir/lists" -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
        echo "setup: downloading package lists" >&2
        apt-get update -qq
    fi
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
