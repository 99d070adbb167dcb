#!/usr/bin/env bash
# Booted Debian containers for tests/fleet/run.sh: a debootstrapped bookworm tree,
# cached outside the clone, and systemd-nspawn containers on copy-on-write overlays
# of it. No machined here, hence --register=no --keep-unit; commands run inside
# with nsenter on the container's systemd. Sourced, not run.

CACHE=${SUDO_AGENT_CI_CACHE:-/var/cache/sudo-agent-ci}
SUITE=bookworm
# sudo: the fleet logs in as an ordinary user and becomes root, as on a Pi. strace: the
# integration tests tests/vm runs in a VM of this tree inject faults with it.
INCLUDE=systemd,systemd-sysv,dbus,openssh-server,python3,sudo,strace
BASE="$CACHE/$SUITE-minbase"

say() { printf '  %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# A loud skip of the script that sourced this, or a failure with CI=true.
skip() {
    if [ "${CI:-}" = true ]; then
        fail "$* (CI=true: every check must run)"
    fi
    echo "SKIPPED: $0: $*" >&2
    exit 0
}

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

# The bootstrapped tree, built once per machine (a stamp beside it names what it
# holds; a lock keeps two runs from building it at once). Host keys are removed from
# it: each container makes its own.
ensure_base() {
    local stamp="$SUITE minbase $INCLUDE"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/lock"
    flock 9
    if [ ! -d "$BASE" ] || [ "$(cat "$BASE.stamp" 2>/dev/null)" != "$stamp" ]; then
        local mirror t0=$SECONDS
        mirror=$(debian_mirror)
        say "debootstrap $SUITE from $mirror into $BASE (once; later runs reuse it)"
        rm -rf "$BASE.tmp" "$BASE" "$BASE.stamp"
        debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$BASE.tmp" "$mirror" \
            >"$CACHE/debootstrap.log" 2>&1 ||
            { tail -n 20 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
        rm -f "$BASE.tmp"/etc/ssh/ssh_host_*
        # Empty: systemd makes a fresh machine id in each container at boot.
        : >"$BASE.tmp/etc/machine-id"
        mv "$BASE.tmp" "$BASE"
        echo "$stamp" >"$BASE.stamp"
        say "debootstrap took $((SECONDS - t0)) s"
    else
        say "reusing $BASE"
    fi
    flock -u 9
}

# Containers of this run live under $WORK (set by start_fleet); cleanup_fleet stops
# every one of them, unmounts their overlays and removes $WORK, also after a failure.
WORK=""
CONTAINERS=()

start_fleet() {
    WORK=$(mktemp -d /tmp/sudo-agent-fleet.XXXXXX)
    trap cleanup_fleet EXIT
    trap 'exit 130' INT TERM
}

# boot NAME [systemd-nspawn options...]: a copy-on-write overlay of the cached tree
# with its own host name and its own SSH host keys, booted until systemd is up.
boot() {
    local name=$1 dir="$WORK/$1"
    shift
    mkdir -p "$dir/upper" "$dir/work" "$dir/root"
    mount -t overlay overlay \
        -o "lowerdir=$BASE,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
    CONTAINERS+=("$name")
    echo "$name" >"$dir/root/etc/hostname"
    ssh-keygen -q -A -f "$dir/root"
    systemd-nspawn -b -D "$dir/root" --register=no --keep-unit -M "$name" "$@" \
        >"$dir/console.log" 2>&1 </dev/null &
    echo $! >"$dir/nspawn.pid"
    local leader=""
    for _ in $(seq 100); do
        leader=$(pgrep -P "$(cat "$dir/nspawn.pid")" -x systemd || true)
        [ -n "$leader" ] && break
        sleep 0.1
    done
    [ -n "$leader" ] || { tail -n 20 "$dir/console.log" >&2; fail "container $name did not start"; }
    echo "$leader" >"$dir/leader"
    # Until its bus is up, systemctl cannot ask; then --wait waits for the boot. Five
    # minutes in all (a boot here takes seconds).
    local state="" deadline=$((SECONDS + 300))
    while [ "$SECONDS" -lt "$deadline" ]; do
        state=$(in_ "$name" timeout "$((deadline - SECONDS + 1))" systemctl is-system-running --wait 2>/dev/null || true)
        case "$state" in
            running | degraded) break ;;
        esac
        sleep 0.5
    done
    case "$state" in
        running | degraded) ;;
        *) tail -n 20 "$dir/console.log" >&2; fail "container $name: systemd is ${state:-not answering}" ;;
    esac
}

# in_ NAME COMMAND...: runs COMMAND inside the container (all its namespaces), with a
# clean environment as a login would have.
in_() {
    local name=$1
    shift
    nsenter -t "$(cat "$WORK/$name/leader")" -a \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        HOME=/root "$@"
}

# The container's root directory as seen from here.
root_of() { echo "$WORK/$1/root"; }

cleanup_fleet() {
    local rc=$? name pid
    for name in "${CONTAINERS[@]}"; do
        pid=$(cat "$WORK/$name/nspawn.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            # nspawn asks the container's systemd to power off, then waits for it.
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for name in "${CONTAINERS[@]}"; do
        mountpoint -q "$WORK/$name/root" && umount "$WORK/$name/root"
    done
    # FLEET_LOGS=DIR keeps the playbook logs and the containers' consoles.
    if [ -n "${FLEET_LOGS:-}" ] && [ -n "$WORK" ]; then
        mkdir -p "$FLEET_LOGS"
        cp "$WORK"/ansible/*.log "$FLEET_LOGS"/ 2>/dev/null || true
        for name in "${CONTAINERS[@]}"; do
            cp "$WORK/$name/console.log" "$FLEET_LOGS/console-$name.log" 2>/dev/null || true
        done
    fi
    # Ansible's SSH connection masters (ControlPersist) of this run.
    local sock
    for sock in "$WORK"/ansible/cp/*; do
        [ -S "$sock" ] && ssh -o ControlPath="$sock" -O exit fleet >/dev/null 2>&1
    done
    # Never into a mount that is still there (the cached tree lies below it).
    [ -n "$WORK" ] && rm -rf --one-file-system "$WORK"
    CONTAINERS=()
    WORK=""
    return $rc
}
