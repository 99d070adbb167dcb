# Helpers shared by bench/run.sh, bench/ab.sh and bench/where.sh (sourced, not run).

# The value of key $2 in a `k=v k=v` line $1 (what loadgen prints).
kv() { grep -o "\(^\| \)$2=[^ ]*" <<<"$1" | head -1 | cut -d= -f2; }

declare -A M # metric name -> space-separated samples, one per rep
add() { M[$1]="${M[$1]:-} $2"; }

median() { # of the samples of metric $1, or n/a
    local v=${M[$1]:-}
    [ -z "${v// /}" ] && { echo n/a; return; }
    tr ' ' '\n' <<<"$v" | grep -v '^$' | sort -g |
        awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

# A wrapper (root only) that runs its command in a mount namespace of its own where
# every cgroup2 mount is read-only: the agent finds no writable cgroup v2 and runs jobs
# in process groups, as on a box without one (its /health then reads "cgroup":null).
NO_CGROUP=(unshare -m --propagation private sh -c 'grep -w cgroup2 /proc/self/mounts |
    while read -r _ m _; do mount -o remount,bind,ro "$m"; done; exec "$@"' sh)

# The agents' TOTP secret, in $WORK/secret (mode 0600) once `bench_secret` ran.
SECRET=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ
bench_secret() {
    echo "$SECRET" >"$WORK/secret"
    chmod 600 "$WORK/secret"
}

wait_http() { # addr path: until it answers 200, at most 10 s
    local i
    for i in $(seq 200); do
        "$LOADGEN" http --addr "$1" --method GET --path "$2" --n 1 --warmup 0 >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}

# For ab.sh and where.sh: ROOT, a private WORK dir (removed on exit, with the server in
# PID and the tracer in TRACER killed) holding the secret, and LOADGEN built if missing.
# $1 names the dir.
bench_init() {
    ROOT=$(cd "$(dirname "$0")/.." && pwd)
    WORK=$(mktemp -d "/tmp/sudo-agent-$1.XXXXXX")
    chmod 700 "$WORK"
    PID="" TRACER=""
    trap '[ -n "$PID" ] && kill -9 $PID 2>/dev/null; [ -n "$TRACER" ] && kill $TRACER 2>/dev/null; rm -rf "$WORK"' EXIT
    trap 'exit 130' INT TERM
    (cd "$ROOT/bench/loadgen" && cargo build --release --quiet) || exit 1
    LOADGEN="$ROOT/bench/loadgen/target/release/loadgen"
    bench_secret
}
