# Sourced by the setup scripts: `debian_mirrors` prints the URIs of the machine's own Debian
# mirrors, from its deb822 sources, else from the one-line format (read only; /etc/apt is
# never changed).
debian_mirrors() {
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null || :; } |
        awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}'
    { cat /etc/apt/sources.list 2>/dev/null || :; } |
        awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'
}
