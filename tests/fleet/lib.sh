#!/usr/bin/env bash
# Booted Debian containers for tests/fleet/run.sh: a debootstrapped bookworm tree,
# cached outside the clone, and systemd-nspawn containers on copy-on-write overlays
# of it. No machined here, hence --register=no --keep-unit; commands run inside
# with nsenter on the container's systemd. Sourced, not run.

CACHE=${SUDO_AGENT_CI_CACHE:-/var/cache/sudo-agent-ci}
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,openssh-server,python3
BASE="$CACHE/$SUITE-minbase"

say() { printf '  %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# The Debian mirror this machine's apt uses (deb822 or one-line sources), not the
# security archive.
debian_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
            -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' |
        grep -v -e security -e nodesource -e google | grep -m1 debian || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# The bootstrapped tree, built once per machine (a stamp names what it holds; a
# lock keeps two runs from building it at once). Host keys are removed from it: each
# container makes its own.
ensure_base() {
    local stamp="$SUITE minbase $INCLUDE"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/lock"
    flock 9
    if [ "$(cat "$BASE/.sudo-agent-ci" 2>/dev/null)" != "$stamp" ]; then
        local mirror t0=$SECONDS
        mirror=$(debian_mirror)
        say "debootstrap $SUITE from $mirror into $BASE (once; later runs reuse it)"
        rm -rf "$BASE.tmp" "$BASE"
        debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$BASE.tmp" "$mirror" \
            >"$CACHE/debootstrap.log" 2>&1 ||
            { tail -n 20 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
        rm -f "$BASE.tmp"/etc/ssh/ssh_host_*
        # Empty: systemd makes a fresh machine id in each container at boot.
        : >"$BASE.tmp/etc/machine-id"
        echo "$stamp" >"$BASE.tmp/.sudo-agent-ci"
        mv "$BASE.tmp" "$BASE"
        say "debootstrap took $((SECONDS - t0)) s"
    else
        say "reusing $BASE"
    fi
    flock -u 9
}
