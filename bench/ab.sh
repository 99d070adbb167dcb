#!/usr/bin/env bash
# A/B of two sudo-agent binaries, alternated in one run (for before/after figures of a
# source change): exec latency of /bin/true through a no_pin rule, rejected requests/s
# with 16 keep-alive connections, and /health p99 meanwhile. Medians of --reps runs.
#
# usage: bash bench/ab.sh [--reps N] [--n SAMPLES] [--secs FLOOD_S] BIN_A BIN_B
# e.g.:  git stash; cargo build --release; cp target/release/sudo-agent /tmp/before
#        git stash pop; cargo build --release
#        bash bench/ab.sh /tmp/before target/release/sudo-agent
# Uses bench/loadgen (built here if missing). Servers on CPU 0, clients on CPU 1.
set -euo pipefail
REPS=5 N=1000 SECS=2
while [ $# -gt 2 ]; do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        --n) N="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 2 ] || { sed -n '2,10p' "$0"; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/sudo-agent-ab.XXXXXX)
chmod 700 "$WORK"
PID=""
trap '[ -n "$PID" ] && kill -9 $PID 2>/dev/null; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

(cd "$ROOT/bench/loadgen" && cargo build --release --quiet) || exit 1
LOADGEN="$ROOT/bench/loadgen/target/release/loadgen"
SRV=() CLI=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then SRV=(taskset -c 0) CLI=(taskset -c 1); fi
echo GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ >"$WORK/secret"
chmod 600 "$WORK/secret"
kv() { grep -o "\(^\| \)$2=[^ ]*" <<<"$1" | head -1 | cut -d= -f2; }
declare -A M
add() { M[$1]="${M[$1]:-} $2"; }
median() { tr ' ' '\n' <<<"${M[$1]}" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

one() { # label binary
    local d="$WORK/$1" port out i
    rm -rf "$d"
    mkdir -m 700 "$d"
    port=$("$LOADGEN" freeport)
    cat >"$d/config.json" <<EOF
{"listen": "127.0.0.1:$port", "secret_file": "$WORK/secret", "log_file": "$d/audit.log",
 "state_dir": "$d/state", "results": {"dir": "$d/results"},
 "rules": [{"name": "true", "argv": ["/bin/true"], "no_pin": true}]}
EOF
    chmod 600 "$d/config.json"
    "${SRV[@]}" "$2" serve --config "$d/config.json" 2>"$d/stderr" &
    PID=$!
    for i in $(seq 200); do
        "$LOADGEN" http --addr "127.0.0.1:$port" --method GET --path /health --n 1 --warmup 0 >/dev/null 2>&1 && break
        sleep 0.05
    done
    out=$("${CLI[@]}" "$LOADGEN" http --addr "127.0.0.1:$port" --path /run --body '{"command":"/bin/true"}' --n "$N")
    add "$1.p50" "$(kv "$out" p50_us)"
    add "$1.p99" "$(kv "$out" p99_us)"
    out=$("${CLI[@]}" "$LOADGEN" reject --addr "127.0.0.1:$port" --secs "$SECS" --body '{"pin":"000000","command":"/bin/true"}')
    add "$1.rps" "$(kv "$out" rps)"
    add "$1.hp99" "$(kv "$out" health_p99_us)"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
}

for rep in $(seq "$REPS"); do
    echo "== rep $rep/$REPS" >&2
    one a "$A"
    one b "$B"
done
floor=$("${SRV[@]}" "$LOADGEN" spawn --setup same --n "$N")
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); medians of $REPS; floor (same setup) p50 $(kv "$floor" p50_us) us"
printf '| | A: %s | B: %s |\n|---|---|---|\n' "$1" "$2"
printf '| exec /bin/true p50 (us) | %s | %s |\n' "$(median a.p50)" "$(median b.p50)"
printf '| exec /bin/true p99 (us) | %s | %s |\n' "$(median a.p99)" "$(median b.p99)"
printf '| rejected req/s | %s | %s |\n' "$(median a.rps)" "$(median b.rps)"
printf '| /health p99 during flood (us) | %s | %s |\n' "$(median a.hp99)" "$(median b.hp99)"
