#!/usr/bin/env bash
# A/B of two sudo-agent binaries, alternated in one run (for before/after figures of a
# source change): exec latency of /bin/true through a no_pin rule, rejected requests/s
# with 16 keep-alive connections, and /health p99 meanwhile. Medians of --reps runs.
#
# usage: bash bench/ab.sh [--reps N] [--n SAMPLES] [--secs FLOOD_S] [--cold N] [--contain]
#                         [--history H] [--slow-sync MS] [--quiet N] [--sandbox JSON]
#                         BIN_A BIN_B
# e.g.:  git stash; cargo build --release; cp target/release/sudo-agent /tmp/before
#        git stash pop; cargo build --release
#        bash bench/ab.sh /tmp/before target/release/sudo-agent
# --contain (as root; BIN_A from before job cgroups, BIN_B after): exec latency only, of
# four set-ups side by side: A with B's config (a binary from before job cgroups and
# sandboxes runs it in a process group, unsandboxed; a newer one as B); B in a mount namespace where
# the cgroup2 mount is read-only (process group, the no_pin rule's read_only sandbox);
# B (own cgroup + read_only); B with the whole sandbox (read_only, network false,
# private_tmp, no_new_privileges).
# --cold N: also N requests one per second (a 1 s TOTP step), the way a home lab sends
# them, each after a pause: code-bearing (`{"pin",...}`, its code synced before it runs)
# and, half a second later, the same without a code; p50 of each. Work done after an
# answer (cleanup, what is made ahead for the next job) is off these, not off the
# back-to-back figures, where it shares CPU 0 with the next request.
# --quiet N: also N no_pin /bin/true requests 6 s apart (p50), and the same spawn floor:
# after 5 s without work the job thread is gone, so these take the path a home lab's
# occasional request takes (a new thread, cold caches). Adds N × 6 s per binary and rep.
# --history H: the agents keep H jobs (jobs.history, default 1000; the journal is
# compacted every H/2 jobs). --slow-sync MS (needs strace): every fsync/fdatasync of the
# journal thread takes MS longer, as on an SD card; the exec figures then also give the
# longest request (a compaction's rewrite is synced there).
# --sandbox JSON: the rule of A and B gets this "sandbox" (e.g. '{"private_tmp": true}'),
# to compare what one sandbox setting costs before and after a change.
# Uses bench/loadgen (built here if missing). Servers on CPU 0, clients on CPU 1.
set -euo pipefail
REPS=5 N=1000 SECS=2 CONTAIN=0 COLD=0 QUIET=0 HISTORY=1000 SLOW_SYNC=0 SANDBOX=""
while [ $# -gt 2 ]; do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        --n) N="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --contain) CONTAIN=1; shift ;;
        --cold) COLD="$2"; shift 2 ;;
        --quiet) QUIET="$2"; shift 2 ;;
        --history) HISTORY="$2"; shift 2 ;;
        --slow-sync) SLOW_SYNC="$2"; shift 2 ;;
        --sandbox) SANDBOX=", \"sandbox\": $2"; shift 2 ;;
        *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 2 ] || { sed -n '2,31p' "$0"; exit 2; }
[ "$SLOW_SYNC" = 0 ] || command -v strace >/dev/null ||
    { echo "ab.sh: --slow-sync needs strace (apt-get install strace)" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
. "$(dirname "$0")/lib.sh"
bench_init ab
SRV=() CLI=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then SRV=(taskset -c 0) CLI=(taskset -c 1); fi

one() { # label binary [rule keys [wrapper...]]
    local d="$WORK/$1" bin="$2" extra="${3:-}" label="$1" port out
    shift 2; shift $(( $# > 0 ? 1 : 0 ))
    rm -rf "$d"
    mkdir -m 700 "$d"
    port=$("$LOADGEN" freeport)
    cat >"$d/config.json" <<EOF
{"listen": "127.0.0.1:$port", "secret_file": "$WORK/secret", "log_file": "$d/audit.log",
 "state_dir": "$d/state", "results": {"dir": "$d/results"}, "totp": {"step_s": 1},
 "jobs": {"history": $HISTORY},
 "rules": [{"name": "true", "argv": ["/bin/true"], "no_pin": true $extra}]}
EOF
    chmod 600 "$d/config.json"
    "${SRV[@]}" "$@" "$bin" serve --config "$d/config.json" 2>"$d/stderr" &
    PID=$!
    wait_http "127.0.0.1:$port" /health || true
    kill -0 "$PID" 2>/dev/null || { echo "ab.sh: $label did not start:" >&2; cat "$d/stderr" >&2; exit 1; }
    if [ "$SLOW_SYNC" -gt 0 ]; then
        local t tid=""
        for t in /proc/"$PID"/task/*; do
            [ "$(cat "$t/comm" 2>/dev/null)" = journal ] && tid=${t##*/}
        done
        [ -n "$tid" ] || { echo "ab.sh: no journal thread in $label" >&2; exit 1; }
        strace -qq -p "$tid" -o /dev/null -e trace=fsync,fdatasync \
            -e inject=fsync,fdatasync:delay_enter=$((SLOW_SYNC * 1000)) &
        TRACER=$!
        sleep 0.5
    fi
    out=$("${CLI[@]}" "$LOADGEN" http --addr "127.0.0.1:$port" --path /run --body '{"command":"/bin/true"}' --n "$N")
    add "$label.p50" "$(kv "$out" p50_us)"
    add "$label.p99" "$(kv "$out" p99_us)"
    add "$label.max" "$(kv "$out" max_us)"
    [ "$CONTAIN" = 0 ] || { stop; return; }
    if [ "$QUIET" -gt 0 ]; then
        out=$("${CLI[@]}" "$LOADGEN" http --addr "127.0.0.1:$port" --path /run --body '{"command":"/bin/true"}' --n "$QUIET" --warmup 0 --gap-ms 6000)
        add "$label.quiet" "$(kv "$out" p50_us)"
    fi
    # Before the flood of bad codes, which locks codes out.
    if [ "$COLD" -gt 0 ]; then
        out=$("${CLI[@]}" "$LOADGEN" codes --addr "127.0.0.1:$port" --secret "$SECRET" --step 1 --n "$COLD" --probe-ms 0)
        add "$label.code" "$(kv "$out" p50_us)"
        add "$label.plain" "$(kv "$out" plain_p50_us)"
    fi
    out=$("${CLI[@]}" "$LOADGEN" reject --addr "127.0.0.1:$port" --secs "$SECS" --body '{"pin":"000000","command":"/bin/true"}')
    add "$label.rps" "$(kv "$out" rps)"
    add "$label.hp99" "$(kv "$out" health_p99_us)"
    stop
}
stop() {
    if [ -n "$TRACER" ]; then
        kill "$TRACER" 2>/dev/null || true
        wait "$TRACER" 2>/dev/null || true
        TRACER=""
    fi
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
}

FULL=', "sandbox": {"network": false, "private_tmp": true, "no_new_privileges": true}'
variant() {
    case "$1" in
        a) one a "$A" "$SANDBOX" ;;
        b) one b "$B" "$SANDBOX" ;;
        c) one c "$B" "" "${NO_CGROUP[@]}" ;;
        d) one d "$B" "$FULL" ;;
    esac
}
ORDER=(a b)
[ "$CONTAIN" = 0 ] || ORDER=(a c b d)
for rep in $(seq "$REPS"); do
    echo "== rep $rep/$REPS" >&2
    # Each rep starts one further along, so no set-up always follows the same one (the
    # kernel tears network namespaces down in the background, after their job ended).
    for i in "${!ORDER[@]}"; do
        variant "${ORDER[$(( (i + rep) % ${#ORDER[@]} ))]}"
    done
done
floor=$("${SRV[@]}" "$LOADGEN" spawn --setup same --n "$N")
echo "load average: $(cut -d" " -f1-3 /proc/loadavg); medians of $REPS; history $HISTORY; journal syncs +$SLOW_SYNC ms; floor (same setup) p50 $(kv "$floor" p50_us) us"
if [ "$QUIET" -gt 0 ]; then
    floor=$("${SRV[@]}" "$LOADGEN" spawn --setup same --n "$QUIET" --warmup 0 --gap-ms 6000)
    echo "floor (same setup), 6 s apart: p50 $(kv "$floor" p50_us) us"
fi
if [ "$CONTAIN" = 1 ]; then
    printf '| exec /bin/true through a no_pin rule | p50 (us) | p99 (us) |\n|---|---|---|\n'
    for v in "a:A, configured as B (a binary from before job cgroups: process group, no sandbox)" \
        "c:B: process group + read_only" \
        "b:B: own cgroup + read_only" "d:B: own cgroup + whole sandbox"; do
        printf '| %s | %s | %s |\n' "${v#*:}" "$(median "${v%%:*}.p50")" "$(median "${v%%:*}.p99")"
    done
    exit 0
fi
printf '| | A: %s | B: %s |\n|---|---|---|\n' "$1" "$2"
printf '| exec /bin/true p50 (us) | %s | %s |\n' "$(median a.p50)" "$(median b.p50)"
printf '| exec /bin/true p99 (us) | %s | %s |\n' "$(median a.p99)" "$(median b.p99)"
printf '| exec /bin/true max (us) | %s | %s |\n' "$(median a.max)" "$(median b.max)"
printf '| rejected req/s | %s | %s |\n' "$(median a.rps)" "$(median b.rps)"
printf '| /health p99 during flood (us) | %s | %s |\n' "$(median a.hp99)" "$(median b.hp99)"
if [ "$QUIET" -gt 0 ]; then
    printf '| 6 s apart: exec /bin/true p50 (us) | %s | %s |\n' "$(median a.quiet)" "$(median b.quiet)"
fi
if [ "$COLD" -gt 0 ]; then
    printf '| one a second: code-bearing p50 (us) | %s | %s |\n' "$(median a.code)" "$(median b.code)"
    printf '| one a second: no code p50 (us) | %s | %s |\n' "$(median a.plain)" "$(median b.plain)"
fi
