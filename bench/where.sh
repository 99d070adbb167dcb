#!/usr/bin/env bash
# Where a request's time goes: CPU time per request of every task on the servers' CPU,
# from the scheduler's own accounting (`perf sched record` on CPU 0, then `perf sched
# timehist`), for sudo-agent, webhook and the bare spawn floor, side by side in one run.
# With everything on one CPU, a back-to-back request costs what that CPU did for it:
# the command's own process (`true`), the server's threads, and the idle time spent
# waiting for the client on CPU 1. Unlike a sampling profile it only logs context
# switches (about 1 µs each, 2–3 % of a request), so the rows add up to the mean
# request as recorded; the p50 printed is from the same requests, not recorded.
#
# usage: bash bench/where.sh [--reps N] [--n REQUESTS] [--bare] AGENT_BINARY [MORE_BINARIES...]
# e.g.:  cargo build --release --target x86_64-unknown-linux-musl
#        bash bench/where.sh target/x86_64-unknown-linux-musl/release/sudo-agent
# Each binary serves POST /run {"command":"/bin/true"} through a no_pin rule (its
# default sandbox), as in bench/run.sh. Medians of --reps (default 3) runs of --n
# (default 1000) requests each. Needs perf (apt-get install linux-perf), root (perf
# sched reads the scheduler's tracepoints), taskset and 2 CPUs; webhook is optional.
# --bare: the agents find no writable cgroup v2 (lib.sh's NO_CGROUP), so jobs run in
# process groups: the bare path issue 13's target is measured on.
# Beside them, "http floor" is `loadgen httpfloor`: one thread that reads a request,
# runs the floor's spawn and answers, with no journal, result file, log or check: the
# least any HTTP server can do for a job here.
set -euo pipefail
usage() { sed -n '2,/^set -e/p' "$0" | sed '$d'; } # this comment block
REPS=3 N=1000 BARE="" WRAP=()
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        --n) N="$2"; shift 2 ;;
        --bare) BARE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { usage; exit 2; }
command -v perf >/dev/null || { echo "where.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "where.sh: needs 2 CPUs (servers on 0, client on 1)" >&2; exit 2; }
BINS=()
for b in "$@"; do BINS+=("$(realpath "$b")"); done
. "$(dirname "$0")/lib.sh"
[ -z "$BARE" ] || WRAP=("${NO_CGROUP[@]}")
bench_init where
WEBHOOK=$(command -v webhook || true)
echo '[{"id": "true", "execute-command": "/bin/true", "include-command-output-in-response": true}]' >"$WORK/hooks.json"

declare -A ROWS # every task seen, in any column

# Per-task run time per request from a `perf sched` recording, added to M. Tasks are
# named by comm: a thread's name (sudo-agent's `job`, `journal`, `audit`), the program
# (`true`), `<idle>`; the server's main thread (or webhook's whole process, or the
# floor's loop) is shown as "loop (main thread)", kernel threads and perf in one row.
split_times() { # label data main_comm requests
    local task us
    while IFS=$'\t' read -r task us; do
        add "$1|$task" "$us"
        ROWS["$task"]=1
    done < <(perf sched timehist -i "$2" 2>/dev/null | awk -v main="$3" -v n="$4" '
        NR > 3 { t = $3; sub(/\[.*/, "", t); sub(/-[0-9]+$/, "", t)
                 if (t == main) t = "loop (main thread)"
                 else if (t ~ /^(kworker|ksoftirqd|rcu_|kdamond|migration|cpuhp|perf)/) t = "kernel threads, perf"
                 run[t] += $6 }
        END { for (t in run) printf "%s\t%.0f\n", t, run[t] * 1000 / n }')
}

# The p50 comes from a run without the recording (which costs about 1 µs a context
# switch, 25 µs a request here), the rows from the same requests recorded right after.
measure() { # label addr path body main_comm
    local out
    out=$(taskset -c 1 "$LOADGEN" http --addr "$2" --path "$3" --body "$4" --n "$N")
    # Only 200s are timed: say which server answered otherwise or dropped a connection.
    [ "$(kv "$out" bad)$(kv "$out" errors)" = 00 ] || echo "where.sh: $1, rep $rep: $out" >&2
    add "$1|p50" "$(kv "$out" p50_us)"
    perf sched record -q -C 0 -o "$WORK/sched.data" -- \
        taskset -c 1 "$LOADGEN" http --addr "$2" --path "$3" --body "$4" --n "$N" --warmup 0 >/dev/null 2>&1
    split_times "$1" "$WORK/sched.data" "$5" "$N"
}

agent() { # label binary
    local d="$WORK/agent" port
    rm -rf "$d"
    mkdir -m 700 "$d"
    port=$("$LOADGEN" freeport)
    cat >"$d/config.json" <<EOF
{"listen": "127.0.0.1:$port", "secret_file": "$WORK/secret", "log_file": "$d/audit.log",
 "state_dir": "$d/state", "results": {"dir": "$d/results"},
 "rules": [{"name": "true", "argv": ["/bin/true"], "no_pin": true}]}
EOF
    chmod 600 "$d/config.json"
    taskset -c 0 "${WRAP[@]}" "$2" serve --config "$d/config.json" 2>"$d/stderr" &
    PID=$!
    wait_http "127.0.0.1:$port" /health || { cat "$d/stderr" >&2; exit 1; }
    measure "$1" "127.0.0.1:$port" /run '{"command":"/bin/true"}' "$(basename "$2" | cut -c1-15)"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

webhook() {
    local port
    port=$("$LOADGEN" freeport)
    (cd "$WORK" && exec taskset -c 0 "$WEBHOOK" -ip 127.0.0.1 -port "$port" -hooks "$WORK/hooks.json" >"$WORK/webhook.log" 2>&1) &
    PID=$!
    wait_http "127.0.0.1:$port" / || { cat "$WORK/webhook.log" >&2; exit 1; }
    measure webhook "127.0.0.1:$port" /hooks/true "" webhook
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

# The least any HTTP server can do for a job: `loadgen httpfloor`, one thread that reads
# a request, runs the floor's spawn and answers (no journal, result file or log).
httpfloor() {
    local port
    port=$("$LOADGEN" freeport)
    taskset -c 0 "$LOADGEN" httpfloor --port "$port" --max-secs 600 &
    PID=$!
    wait_http "127.0.0.1:$port" / || { echo "where.sh: loadgen httpfloor did not start" >&2; exit 1; }
    measure "http floor" "127.0.0.1:$port" /run '{"command":"/bin/true"}' loadgen
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

floor() { # as `measure`
    local out
    out=$(taskset -c 0 "$LOADGEN" spawn --setup same --n "$N")
    add "floor|p50" "$(kv "$out" p50_us)"
    perf sched record -q -C 0 -o "$WORK/sched.data" -- \
        taskset -c 0 "$LOADGEN" spawn --setup same --n "$N" --warmup 0 >/dev/null 2>&1
    split_times floor "$WORK/sched.data" loadgen "$N"
}

LABELS=()
for i in "${!BINS[@]}"; do LABELS+=("agent$((i + 1))"); done
[ -n "$WEBHOOK" ] && LABELS+=(webhook) || echo "where.sh: no webhook (apt-get install webhook): its column is left out" >&2
LABELS+=("http floor" floor)
for rep in $(seq "$REPS"); do
    echo "== rep $rep/$REPS" >&2
    for i in "${!BINS[@]}"; do agent "agent$((i + 1))" "${BINS[$i]}"; done
    [ -z "$WEBHOOK" ] || webhook
    httpfloor
    floor
done

echo "CPU 0's time per request (µs; median of $REPS runs of $N requests; the client on CPU 1)"
for i in "${!BINS[@]}"; do echo "agent$((i + 1)): ${BINS[$i]}"; done
printf '| task |'; for l in "${LABELS[@]}"; do printf ' %s |' "$l"; done; echo
printf '|---|'; for _ in "${LABELS[@]}"; do printf -- '---|'; done; echo
printf '%s\n' "${!ROWS[@]}" | while IFS= read -r task; do
    printf '| %s |' "$task"
    for l in "${LABELS[@]}"; do printf ' %s |' "$(median "$l|$task")"; done
    echo
done | sort -t'|' -k3 -g -r
printf '| **p50 latency** |'; for l in "${LABELS[@]}"; do printf ' %s |' "$(median "$l|p50")"; done; echo
