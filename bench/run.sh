#!/usr/bin/env bash
# Side-by-side benchmarks of sudo-agent on loopback, in ONE run, against:
#   - adnanh/webhook (/usr/bin/webhook, Debian) running /bin/true with its output in the
#     response (what sudo-agent replaces as "a daemon that runs a command per request"),
#   - bench/python_agent.py, a stand-in for the old Python agent (reconstructed from the
#     SPEC, not the original),
#   - a bare fork+exec+wait of /bin/true from a Rust loop (the floor), and the same
#     behind the least an HTTP server can do (`loadgen httpfloor`, the HTTP floor).
# The agent's exec latency is measured twice: as it runs by default (a cgroup per job)
# and on the bare path (as root: no cgroup, jobs in process groups).
# Every figure is repeated (--reps, default 5) and the median is reported; ratios are
# of medians measured in the same run, so they survive a noisy machine.
#
# The agent is also measured on a slow disk: every fsync/fdatasync of the agent takes
# --sync-ms (default 100 ms, what an SD card often gives). Two ways (--slow-disk):
#   fuse    the state dir (the only files the agent syncs) on ext4 on a loop device
#           whose image is on bench/slowfs.py, a FUSE pass-through whose fsync takes
#           half of that (an fdatasync on ext4 is two flushes): a device with slow
#           flushes, one at a time, as dm-delay would give (this kernel has no
#           device-mapper). Nothing is traced; "one sync" is measured on that disk.
#           The default as root when /dev/fuse, python3's fusepy (libfuse2) and
#           mkfs.ext4 are there.
#   strace  strace's delay injection, attached to the agent's threads that sync after
#           start-up (the journal thread, and the job thread while code-bearing requests
#           come; a census in the same run counts syncs per thread to show there are no
#           others). A traced thread stops at every system call, which costs the job
#           threads 1-2 ms a job: the code's cost is then judged against a no-code
#           request traced alike.
#
# usage: bash bench/run.sh [--quick] [--reps N] [--no-pin] [--work-dir DIR]
#                          [--sync-ms MS] [--slow-disk fuse|strace] [--no-slow-disk]
#                          [--out FILE]
#   --quick         3 reps, 2 000 jobs, 500 latency samples, 2 s floods (a smoke run)
#   --no-pin        do not split servers (CPU 0) and load clients (CPU 1) with taskset
#   --work-dir DIR  where the agents' state, results and logs go (default /tmp): put
#                   it on the disk (or SD card, or tmpfs) to be measured
#   --sync-ms MS    the slow disk's fsync, in ms (default 100)
#   --slow-disk M   how the disk is slowed: fuse or strace (above)
#   --no-slow-disk  skip the slow-disk figures (they need FUSE or strace)
#   --out F         also write the Markdown report to F
# Needs: cargo (+ the musl targets if installed), python3 with pyotp, /usr/bin/webhook
# (optional: its columns read n/a without it), FUSE + fusepy or strace for the slow disk
# (apt-get install libfuse2 strace; pip install fusepy), strace for the census, root and
# unshare for the bare path. Exit status is non-zero only on real errors; a missed target
# is printed as MISSED in the table.
set -euo pipefail

ARGS="$*"
REPS=5 JOBS=10000 LAT_N=2000 WARMUP=50 REJ_SECS=3 IDLE_N=256 PIN=1 OUT=""
WORK_PARENT=/tmp SYNC_MS=100 SLOW=1 SLOW_MODE="" CODES_N=8 SLOW_LAT_N=500 CONC=8 CONC_N=250
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) REPS=3 JOBS=2000 LAT_N=500 REJ_SECS=2 CODES_N=5 SLOW_LAT_N=300 CONC_N=100 ;;
        --reps) REPS="$2"; shift ;;
        --no-pin) PIN=0 ;;
        --work-dir) WORK_PARENT="$2"; shift ;;
        --sync-ms) SYNC_MS="$2"; shift ;;
        --slow-disk) SLOW_MODE="$2"; shift ;;
        --no-slow-disk) SLOW=0 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$WORK_PARENT" ] || { echo "run.sh: --work-dir $WORK_PARENT is not a directory" >&2; exit 2; }
WORK=$(mktemp -d "$WORK_PARENT/sudo-agent-bench.XXXXXX")
chmod 700 "$WORK"
# What this machine lacks, said on stderr and in the report's header: a fresh machine
# otherwise yields a glibc build's figures and n/a columns without a word.
MISSING=()
HAVE_FUSE=0
# The loop mount needs root.
[ "$(id -u)" = 0 ] && [ -c /dev/fuse ] && python3 -c 'import fuse' 2>/dev/null &&
    command -v mkfs.ext4 >/dev/null && HAVE_FUSE=1
NO_FUSE="FUSE (root, /dev/fuse, libfuse2 with pip's fusepy, mkfs.ext4)"
case "$SLOW_MODE" in
    "") if [ "$HAVE_FUSE" = 1 ]; then
            SLOW_MODE=fuse
        else
            SLOW_MODE=strace
            [ "$SLOW" = 0 ] || MISSING+=("$NO_FUSE: the slow disk is strace's, which stops the job threads")
        fi ;;
    fuse) [ "$HAVE_FUSE" = 1 ] || { echo "run.sh: --slow-disk fuse needs $NO_FUSE" >&2; exit 2; } ;;
    strace) ;;
    *) echo "run.sh: --slow-disk $SLOW_MODE: fuse or strace" >&2; exit 2 ;;
esac
if [ "$SLOW" = 1 ] && [ "$SLOW_MODE" = strace ] && ! command -v strace >/dev/null; then
    MISSING+=("strace: no slow-disk figures (apt-get install strace)")
    SLOW=0
fi
PIDS=() MOUNTS=()

cleanup() {
    local p i
    # The newest first: the loop-mounted ext4 before the FUSE file system under it.
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- build

ARCH=$(uname -m)
HOST_MUSL="$ARCH-unknown-linux-musl"
INSTALLED_TARGETS=$(rustup target list --installed 2>/dev/null || true)
if grep -qx "$HOST_MUSL" <<<"$INSTALLED_TARGETS"; then
    TARGET_ARGS=(--target "$HOST_MUSL") TARGET_DIR="target/$HOST_MUSL/release"
    BUILD_KIND="static ($HOST_MUSL)"
else
    TARGET_ARGS=() TARGET_DIR="target/release" BUILD_KIND="host default target (musl not installed)"
fi

# A musl build: plain cargo first (.cargo/config.toml may set the linker), then rust-lld.
build_target() {
    local dir=$1 triple=$2
    (cd "$dir" && cargo build --release --quiet --target "$triple") 2>>"$WORK/build.log" ||
        (cd "$dir" && RUSTFLAGS='-C linker=rust-lld' cargo build --release --quiet --target "$triple") 2>>"$WORK/build.log"
}

log "building sudo-agent: $BUILD_KIND"
if [ ${#TARGET_ARGS[@]} -gt 0 ]; then
    build_target "$ROOT" "$HOST_MUSL" || { cat "$WORK/build.log" >&2; die "cargo build failed"; }
else
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build failed"
fi
AGENT="$ROOT/$TARGET_DIR/sudo-agent"
[ -x "$AGENT" ] || die "no binary at $AGENT"

log "building bench/loadgen"
if [ ${#TARGET_ARGS[@]} -gt 0 ]; then
    build_target "$ROOT/bench/loadgen" "$HOST_MUSL" || { cat "$WORK/build.log" >&2; die "loadgen build failed"; }
else
    (cd "$ROOT/bench/loadgen" && cargo build --release --quiet) || die "loadgen build failed"
fi
LOADGEN="$ROOT/bench/loadgen/$TARGET_DIR/loadgen"

AARCH64_SIZE="n/a"
if grep -qx aarch64-unknown-linux-musl <<<"$INSTALLED_TARGETS"; then
    if [ "$ARCH" = aarch64 ]; then
        AARCH64_SIZE=$(stat -c %s "$AGENT")
    else
        log "building sudo-agent for aarch64-unknown-linux-musl"
        if build_target "$ROOT" aarch64-unknown-linux-musl; then
            AARCH64_SIZE=$(stat -c %s "$ROOT/target/aarch64-unknown-linux-musl/release/sudo-agent")
        else
            log "aarch64 build failed (see below); size reads n/a"
            tail -5 "$WORK/build.log" >&2
        fi
    fi
fi
X86_SIZE="n/a"
[ "$ARCH" = x86_64 ] && X86_SIZE=$(stat -c %s "$AGENT")

WEBHOOK=$(command -v webhook || true)
WEBHOOK_SIZE="n/a"
[ -n "$WEBHOOK" ] && WEBHOOK_SIZE=$(stat -c %s "$WEBHOOK")
HAVE_PYOTP=0
python3 -c 'import pyotp' 2>/dev/null && HAVE_PYOTP=1

[ "${#TARGET_ARGS[@]}" -gt 0 ] || MISSING+=("the $HOST_MUSL target: the agent measured is a glibc build, not the static one users run (rustup target add $HOST_MUSL)")
[ "$ARCH" = aarch64 ] || grep -qx aarch64-unknown-linux-musl <<<"$INSTALLED_TARGETS" ||
    MISSING+=("the aarch64-unknown-linux-musl target: its size reads n/a (rustup target add aarch64-unknown-linux-musl)")
[ -n "$WEBHOOK" ] || MISSING+=("webhook: its column reads n/a (apt-get install webhook)")
[ "$HAVE_PYOTP" = 1 ] || MISSING+=("pyotp: the Python stand-in reads n/a (pip install pyotp)")
BARE=0
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then BARE=1; else
    MISSING+=("root and unshare: the bare path (no cgroup per job) reads n/a"); fi
for m in "${MISSING[@]}"; do echo "run.sh: WARNING: missing $m" >&2; done

# Servers (and the spawn floor) on CPU 0, load clients on CPU 1, so a client with 17
# threads cannot starve a single-threaded server of CPU time.
SRV=() CLI=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SRV=(taskset -c 0) CLI=(taskset -c 1)
    PINNING="servers and the spawn floor on CPU 0, load clients on CPU 1 (taskset)"
else
    PINNING="none"
fi
lg() { "${CLI[@]}" "$LOADGEN" "$@"; }

# ---------------------------------------------------------------- helpers

. "$ROOT/bench/lib.sh"
bench_secret

stop() { # pid: SIGTERM, then SIGKILL after 5 s
    local p=$1 i
    kill "$p" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

agent_config() { # dir port [history [state dir]]
    cat >"$1/config.json" <<EOF
{
  "listen": "127.0.0.1:$2",
  "jobs": {"history": ${3:-1000}},
  "secret_file": "$WORK/secret",
  "log_file": "$1/audit.log",
  "state_dir": "${4:-$1/state}",
  "results": {"dir": "$1/results"},
  "totp": {"step_s": 1},
  "rules": [
    {"name": "true", "argv": ["/bin/true"], "no_pin": true},
    {"name": "echo", "argv": ["/bin/echo", "**"]}
  ]
}
EOF
    chmod 600 "$1/config.json"
}

cat >"$WORK/hooks.json" <<'EOF'
[{"id": "true", "execute-command": "/bin/true", "include-command-output-in-response": true}]
EOF

RUN_BODY='{"command":"/bin/true"}'
BAD_BODY='{"pin":"000000","command":"/bin/true"}'
FILL=$((JOBS - LAT_N - WARMUP))
[ "$FILL" -ge 0 ] || FILL=0

# sequential jobs on one keep-alive connection: latency sample, then fill up to $JOBS
exec_phase() { # name addr path body [jobs after the sample, default: up to $JOBS]
    local out fill=${5:-$FILL}
    out=$(lg http --addr "$2" --path "$3" --body "$4" --n "$LAT_N" --warmup "$WARMUP") || die "$1: latency run failed"
    [ "$(kv "$out" bad)" = 0 ] || die "$1: unexpected status $(kv "$out" last_bad_status): $out"
    add "$1.p50" "$(kv "$out" p50_us)"
    add "$1.p99" "$(kv "$out" p99_us)"
    add "$1.max" "$(kv "$out" max_us)"
    add "$1.connects" "$(kv "$out" connects)"
    if [ "$fill" -gt 0 ]; then
        out=$(lg http --addr "$2" --path "$3" --body "$4" --n "$fill" --warmup 0) || die "$1: fill run failed"
    fi
}

# Several clients at once, as a home lab's assistants and automations may send: $CONC
# keep-alive connections, each sending $CONC_N jobs back to back; the latency over all of
# them (p50, p99, max) and the jobs per second.
conc_phase() { # name addr path body
    local i out t0 t1 pids=()
    t0=$(date +%s%N)
    for i in $(seq "$CONC"); do
        lg http --addr "$2" --path "$3" --body "$4" --n "$CONC_N" --warmup 5 \
            --times "$WORK/conc-$1-$i.times" >"$WORK/conc-$1-$i.out" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "$1: concurrent clients failed"; done
    t1=$(date +%s%N)
    for i in $(seq "$CONC"); do
        out=$(cat "$WORK/conc-$1-$i.out")
        [ "$(kv "$out" bad)" = 0 ] || die "$1: concurrent clients: unexpected status: $out"
    done
    out=$(sort -n "$WORK"/conc-"$1"-*.times | awk -v ns=$((t1 - t0)) '{ a[NR] = $1 }
        END { printf "p50=%d p99=%d max=%d jps=%d", a[int(NR * 0.5) + 1], a[int(NR * 0.99) + 1],
              a[NR], NR * 1e9 / ns }')
    add "$1.cp50" "$(kv "$out" p50)"
    add "$1.cp99" "$(kv "$out" p99)"
    add "$1.cmax" "$(kv "$out" max)"
    add "$1.cjps" "$(kv "$out" jps)"
    rm -f "$WORK"/conc-"$1"-*
}

mem_point() { # name point pid
    local out
    out=$("$LOADGEN" procstat --pid "$3") || die "$1: procstat failed"
    add "$1.rss.$2" "$(kv "$out" rss_kib)"
    add "$1.thr.$2" "$(kv "$out" threads)"
}

idle_point() { # name addr pid
    local out
    out=$(lg idle --addr "$2" --pid "$3" --n "$IDLE_N") || die "$1: idle connections failed"
    add "$1.rss.conns" "$(kv "$out" rss_kib)"
    add "$1.thr.conns" "$(kv "$out" threads)"
    add "$1.open" "$(kv "$out" open)"
    sleep 0.3 # let the server notice the closes
}

# code-bearing /bin/true, one per 1 s time step, /health probed every 2 ms meanwhile
codes_phase() { # name addr
    local out
    out=$(lg codes --addr "$2" --secret "$SECRET" --step 1 --n "$CODES_N") || die "$1: codes run failed"
    [ "$(kv "$out" s200)" = "$CODES_N" ] || die "$1: code-bearing requests not all 200: $out"
    add "$1.code_p50" "$(kv "$out" p50_us)"
    add "$1.code_max" "$(kv "$out" max_us)"
    add "$1.cold_p50" "$(kv "$out" plain_p50_us)"
    add "$1.chp99" "$(kv "$out" health_p99_us)"
    add "$1.chmax" "$(kv "$out" health_max_us)"
    add "$1.chn" "$(kv "$out" health_n)"
}

reject_phase() { # name addr
    local out s
    out=$(lg reject --addr "$2" --conns 16 --secs "$REJ_SECS" --path /run --body "$BAD_BODY") || die "$1: reject run failed"
    add "$1.rps" "$(kv "$out" rps)"
    add "$1.hp50" "$(kv "$out" health_p50_us)"
    add "$1.hp99" "$(kv "$out" health_p99_us)"
    add "$1.hn" "$(kv "$out" health_n)"
    add "$1.errors" "$(kv "$out" errors)"
    add "$1.connects" "$(kv "$out" connects)"
    for s in 401 429; do add "$1.s$s" "$(kv "$out" "s$s" || true)"; done
    echo "$out" >>"$WORK/reject-$1.txt"
}

# Starts the agent with a config in dir $1 (made here), under the wrapper in $2... if
# any, and waits for /health: AGENT_PORT and AGENT_PID name it.
start_agent() {
    local d="$1"
    shift
    mkdir -m 700 "$d"
    AGENT_PORT=$("$LOADGEN" freeport)
    agent_config "$d" "$AGENT_PORT"
    "${SRV[@]}" "$@" "$AGENT" serve --config "$d/config.json" 2>"$d/stderr" &
    AGENT_PID=$!
    PIDS+=("$AGENT_PID")
    wait_http "127.0.0.1:$AGENT_PORT" /health || { cat "$d/stderr" >&2; die "sudo-agent did not start"; }
}

rep_agent() {
    local d="$WORK/agent-$1" addr pid
    start_agent "$d"
    addr="127.0.0.1:$AGENT_PORT" pid=$AGENT_PID
    sleep 0.2
    mem_point agent idle "$pid"
    idle_point agent "$addr" "$pid"
    exec_phase agent "$addr" /run "$RUN_BODY"
    mem_point agent jobs "$pid"
    conc_phase agent "$addr" /run "$RUN_BODY"
    codes_phase agent "$addr"
    reject_phase agent "$addr"
    stop "$pid"
    rm -rf "$d"
}

# The bare path, as the issue asks it measured: the same agent with no cgroup per job
# (process groups, the cgroup2 mount read-only in its own mount namespace); the no_pin
# rule keeps its read-only namespace, which a no_pin rule cannot turn off. Latency only.
rep_agent_bare() {
    [ "$BARE" = 1 ] || return 0
    local d="$WORK/bare-$1" health
    start_agent "$d" "${NO_CGROUP[@]}"
    # /health says where jobs go: "cgroup":null is the bare path. At most 5 s.
    health=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
        printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && cat <&3' sh "$AGENT_PORT") || true
    grep -q '"cgroup":null' <<<"$health" || die "bare path: the agent still found a cgroup: $health"
    exec_phase bare "127.0.0.1:$AGENT_PORT" /run "$RUN_BODY" 0
    stop "$AGENT_PID"
    rm -rf "$d"
}

# The agent on a slow disk: its state dir on bench/slowfs.py, or strace delaying every
# fsync/fdatasync of the threads that sync once it serves (the journal thread; a job
# thread for a code; see the census). The watchdog is armed
# (WatchdogSec 4 s: a ping every 2 s) and its pings counted meanwhile.
rep_agent_slow() {
    local d="$WORK/slow-$1" port pid tid t listener out secs fs="" tracers=() state=""
    mkdir -m 700 "$d"
    port=$("$LOADGEN" freeport)
    if [ "$SLOW_MODE" = fuse ]; then
        # ext4 on a loop device whose image is on slowfs: the device's flushes are slow
        # and one at a time, as on an SD card. An fdatasync there is two flushes (the
        # data, then ext4's journal commit), so each flush takes half of --sync-ms.
        mkdir -m 700 "$d/disk" "$d/fuse" "$d/ext"
        MOUNTS+=("$d/fuse")
        python3 "$ROOT/bench/slowfs.py" "$d/disk" "$d/fuse" "$((SYNC_MS / 2))" 2>"$d/slowfs.err" &
        fs=$!
        PIDS+=("$fs")
        for t in $(seq 100); do
            grep -q " $d/fuse fuse" /proc/mounts && break
            sleep 0.05
        done
        grep -q " $d/fuse fuse" /proc/mounts || { cat "$d/slowfs.err" >&2; die "slowfs did not mount"; }
        truncate -s 64M "$d/fuse/disk.img"
        mkfs.ext4 -q -F "$d/fuse/disk.img" || die "slow disk: mkfs.ext4 failed"
        MOUNTS+=("$d/ext")
        mount -o loop "$d/fuse/disk.img" "$d/ext" || die "slow disk: the loop mount failed"
        chmod 700 "$d/ext"
        out=$(lg syncfloor --dir "$d/ext" --n 5) || die "slow disk: sync floor failed"
        add slow.sync "$(kv "$out" p50_us)"
        # And in the codes' rhythm: a flush after a pause costs the device more.
        out=$(lg syncfloor --dir "$d/ext" --n 5 --gap-ms 500) || die "slow disk: sync floor failed"
        add slow.sync_cold "$(kv "$out" p50_us)"
        # Over zeros synced before, as the journal writes a code: one flush, not two.
        out=$(lg syncfloor --dir "$d/ext" --n 5 --write over-zeros) || die "slow disk: sync floor failed"
        add slow.sync_oz "$(kv "$out" p50_us)"
        state="$d/ext/state"
    fi
    # A history of 100: a compaction every 50 jobs, so the latency run below meets
    # several, each with its rewrite synced on the slow disk.
    agent_config "$d" "$port" 100 "$state"
    secs=$((CODES_N + 8))
    "$LOADGEN" notify --path "$d/notify.sock" --secs "$secs" >"$d/notify.out" &
    listener=$!
    PIDS+=("$listener")
    sleep 0.2
    NOTIFY_SOCKET="$d/notify.sock" WATCHDOG_USEC=4000000 \
        "${SRV[@]}" "$AGENT" serve --config "$d/config.json" 2>"$d/stderr" &
    pid=$!
    PIDS+=("$pid")
    wait_http "127.0.0.1:$port" /health || { cat "$d/stderr" >&2; die "sudo-agent did not start"; }
    # Another process may have taken the port freeport found (a shared machine): then
    # what answered is not ours.
    kill -0 "$pid" 2>/dev/null || { cat "$d/stderr" >&2; die "sudo-agent exited (port $port taken?)"; }
    if [ "$SLOW_MODE" = strace ]; then
        tid=""
        for t in /proc/"$pid"/task/*; do
            [ "$(cat "$t/comm" 2>/dev/null)" = journal ] && tid=${t##*/}
        done
        [ -n "$tid" ] || { cat "$d/stderr" >&2; die "no journal thread in sudo-agent $pid"; }
        strace -qq -p "$tid" -o /dev/null -e trace=fsync,fdatasync \
            -e inject=fsync,fdatasync:delay_enter=$((SYNC_MS * 1000)) &
        tracers+=("$!")
        PIDS+=("$!")
        sleep 0.5
    fi
    out=$(lg http --addr "127.0.0.1:$port" --path /run --body "$RUN_BODY" --n "$SLOW_LAT_N" --warmup "$WARMUP") ||
        die "slow disk: latency run failed"
    add slow.p50 "$(kv "$out" p50_us)"
    add slow.p99 "$(kv "$out" p99_us)"
    add slow.max "$(kv "$out" max_us)"
    # A code-bearing job that can start at once has its job thread sync the code:
    # with strace, slow those threads too (the one the latency run left, kept by the
    # codes coming each second). Not before: tracing them stops every job's every
    # system call.
    for t in /proc/"$pid"/task/*; do
        if [ "$SLOW_MODE" = strace ] && [ "$(cat "$t/comm" 2>/dev/null)" = job ]; then
            strace -qq -p "${t##*/}" -o /dev/null -e trace=fsync,fdatasync \
                -e inject=fsync,fdatasync:delay_enter=$((SYNC_MS * 1000)) &
            PIDS+=("$!")
            tracers+=("$!")
        fi
    done
    sleep 0.5
    codes_phase slow "127.0.0.1:$port"
    wait "$listener" 2>/dev/null || true
    out=$(cat "$d/notify.out")
    add slow.pings "$(kv "$out" pings)"
    add slow.wdgap "$(kv "$out" max_gap_us)"
    for t in "${tracers[@]}"; do
        kill "$t" 2>/dev/null || true
        wait "$t" 2>/dev/null || true
    done
    stop "$pid"
    if [ -n "$fs" ]; then
        umount "$d/ext" "$d/fuse"
        wait "$fs" 2>/dev/null || true
        MOUNTS=()
    fi
    rm -rf "$d"
}

# Which threads of the agent call fsync/fdatasync: jobs, codes and a bad code under
# strace -f, thread names from their prctl(PR_SET_NAME).
sync_census() {
    local d="$WORK/census" port pid out
    mkdir -m 700 "$d"
    port=$("$LOADGEN" freeport)
    agent_config "$d" "$port"
    strace -f -qq -e signal=none -e trace=fsync,fdatasync,prctl -o "$d/trace" \
        "$AGENT" serve --config "$d/config.json" 2>"$d/stderr" &
    pid=$!
    PIDS+=("$pid")
    wait_http "127.0.0.1:$port" /health || { cat "$d/stderr" >&2; die "census: sudo-agent did not start"; }
    lg http --addr "127.0.0.1:$port" --path /run --body "$RUN_BODY" --n 200 --warmup 0 >/dev/null || die "census: jobs failed"
    lg codes --addr "127.0.0.1:$port" --secret "$SECRET" --step 1 --n 2 --probe-ms 0 >/dev/null || die "census: codes failed"
    lg http --addr "127.0.0.1:$port" --path /run --body "$BAD_BODY" --n 2 --warmup 0 --expect 401 >/dev/null || true
    sleep 0.5
    # strace is $pid; the agent is its child.
    for t in $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do kill "$t" 2>/dev/null || true; done
    stop "$pid"
    # "TID prctl(PR_SET_NAME, "name")" names a thread; the main thread keeps "main".
    CENSUS=$(awk '
        /PR_SET_NAME/ { if (match($0, /"[^"]*"/)) name[$1] = substr($0, RSTART + 1, RLENGTH - 2) }
        / f(data)?sync\(/ { n[$1]++ }
        END { for (t in n) { who = (t in name) ? name[t] : "main (start-up)"; c[who] += n[t] }
              for (w in c) printf "%s %d, ", w, c[w] }' "$d/trace" | sed 's/, $//')
    rm -rf "$d"
}

rep_webhook() {
    [ -n "$WEBHOOK" ] || return 0
    local d="$WORK/webhook-$1" port pid
    mkdir -m 700 "$d"
    port=$("$LOADGEN" freeport)
    (cd "$d" && exec "${SRV[@]}" "$WEBHOOK" -ip 127.0.0.1 -port "$port" -hooks "$WORK/hooks.json" >"$d/log" 2>&1) &
    pid=$!
    PIDS+=("$pid")
    wait_http "127.0.0.1:$port" / || { cat "$d/log" >&2; die "webhook did not start"; }
    sleep 0.2
    mem_point webhook idle "$pid"
    idle_point webhook "127.0.0.1:$port" "$pid"
    exec_phase webhook "127.0.0.1:$port" /hooks/true ""
    mem_point webhook jobs "$pid"
    conc_phase webhook "127.0.0.1:$port" /hooks/true ""
    stop "$pid"
    rm -rf "$d"
}

rep_python() {
    [ "$HAVE_PYOTP" = 1 ] || return 0
    local d="$WORK/python-$1" port pid
    mkdir -m 700 "$d" "$d/results"
    port=$("$LOADGEN" freeport)
    "${SRV[@]}" python3 "$ROOT/bench/python_agent.py" --port "$port" --secret-file "$WORK/secret" \
        --log "$d/agent.log" --results "$d/results" 2>"$d/stderr" &
    pid=$!
    PIDS+=("$pid")
    wait_http "127.0.0.1:$port" /health || { cat "$d/stderr" >&2; die "python agent did not start"; }
    sleep 0.2
    mem_point python idle "$pid"
    reject_phase python "127.0.0.1:$port"
    stop "$pid"
    rm -rf "$d"
}

rep_floor() {
    local out
    out=$("${SRV[@]}" "$LOADGEN" spawn --setup plain --n "$LAT_N" --warmup "$WARMUP") || die "spawn floor failed"
    add floor_plain.p50 "$(kv "$out" p50_us)"
    add floor_plain.p99 "$(kv "$out" p99_us)"
    out=$("${SRV[@]}" "$LOADGEN" spawn --setup same --n "$LAT_N" --warmup "$WARMUP") || die "spawn floor failed"
    add floor_same.p50 "$(kv "$out" p50_us)"
    add floor_same.p99 "$(kv "$out" p99_us)"
    # The same in the code-bearing requests' rhythm: one spawn after each half-second
    # pause, as cold (caches, an idle CPU woken) as those requests are.
    out=$("${SRV[@]}" "$LOADGEN" spawn --setup same --n "$CODES_N" --warmup 1 --gap-ms 500) || die "spawn floor failed"
    add floor_cold.p50 "$(kv "$out" p50_us)"
    # The least any HTTP server can do for a job: read the request, the same spawn,
    # answer (`loadgen httpfloor`: no journal, result file, log or check).
    local port pid
    port=$("$LOADGEN" freeport)
    "${SRV[@]}" "$LOADGEN" httpfloor --port "$port" --max-secs 600 &
    pid=$!
    PIDS+=("$pid")
    wait_http "127.0.0.1:$port" / || die "loadgen httpfloor did not start"
    exec_phase floor_http "127.0.0.1:$port" /run "$RUN_BODY" 0
    # And in the code-bearing requests' rhythm: what the exchange alone adds to a cold
    # spawn (a woken CPU on each side, cold caches), beside the floor's rhythm above.
    out=$(lg http --addr "127.0.0.1:$port" --path /run --body "$RUN_BODY" --n "$CODES_N" \
        --warmup 1 --gap-ms 500) || die "HTTP floor in the codes' rhythm failed"
    add floor_http_cold.p50 "$(kv "$out" p50_us)"
    stop "$pid"
}

# ---------------------------------------------------------------- run

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T0=$SECONDS
for rep in $(seq "$REPS"); do
    log "rep $rep/$REPS: spawn floor, sudo-agent (default, bare path), webhook, python stand-in"
    rep_floor
    rep_agent "$rep"
    rep_agent_bare "$rep"
    rep_webhook "$rep"
    rep_python "$rep"
    out=$(lg syncfloor --dir "$WORK" --n 50) || die "sync floor failed"
    add sync.p50 "$(kv "$out" p50_us)"
    out=$(lg syncfloor --dir "$WORK" --n "$CODES_N" --gap-ms 500) || die "sync floor failed"
    add sync_cold.p50 "$(kv "$out" p50_us)"
    out=$(lg syncfloor --dir "$WORK" --n 50 --write over-zeros) || die "sync floor failed"
    add sync_oz.p50 "$(kv "$out" p50_us)"
    if [ "$SLOW" = 1 ] && [ "$rep" -le 3 ]; then
        log "rep $rep: sudo-agent on a slow disk (fsync ${SYNC_MS} ms)"
        rep_agent_slow "$rep"
    fi
done
CENSUS="n/a (no strace)"
[ "$SLOW" = 1 ] && command -v strace >/dev/null && { log "sync census"; sync_census; }

log "start-up times"
d="$WORK/startup"
mkdir -m 700 "$d"
port=$("$LOADGEN" freeport)
agent_config "$d" "$port"
out=$(lg startup --addr "127.0.0.1:$port" --n "$REPS" --log "$d/stderr" -- "${SRV[@]}" "$AGENT" serve --config "$d/config.json") ||
    die "start-up run failed"
START_AGENT=$(kv "$out" p50_us)
START_ACT="n/a (no LISTEN_FDS support in src/)"
if grep -rqs LISTEN_FDS "$ROOT/src"; then
    if out=$(lg startup --addr "127.0.0.1:$port" --n "$REPS" --activate 1 --log "$d/stderr" -- "$AGENT" serve --config "$d/config.json"); then
        START_ACT=$(kv "$out" p50_us)
    else
        START_ACT="n/a (socket-activated start failed)"
    fi
fi
START_WEBHOOK="n/a"
if [ -n "$WEBHOOK" ]; then
    out=$(cd "$d" && lg startup --addr "127.0.0.1:$port" --path / --n "$REPS" -- "${SRV[@]}" "$WEBHOOK" -ip 127.0.0.1 -port "$port" -hooks "$WORK/hooks.json") &&
        START_WEBHOOK=$(kv "$out" p50_us)
fi
START_PYTHON="n/a"
if [ "$HAVE_PYOTP" = 1 ]; then
    mkdir -m 700 "$d/pyresults"
    out=$(lg startup --addr "127.0.0.1:$port" --n "$REPS" -- "${SRV[@]}" python3 "$ROOT/bench/python_agent.py" --port "$port" \
        --secret-file "$WORK/secret" --log "$d/py.log" --results "$d/pyresults") && START_PYTHON=$(kv "$out" p50_us)
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$((SECONDS - T0))

# ---------------------------------------------------------------- report

calc() { awk "BEGIN { printf \"%s\", ($1) }" 2>/dev/null; }
num() { [[ "$1" =~ ^-?[0-9.]+$ ]]; } # a difference of two figures may be negative
ms() { num "$1" && calc "sprintf(\"%.2f ms\", $1/1000)" || echo "$1"; }
mib() { num "$1" && calc "sprintf(\"%.2f MiB\", $1/1024)" || echo "$1"; }
bytes() { num "$1" && calc "sprintf(\"%.0f KiB (%.2f MiB)\", $1/1024, $1/1048576)" || echo "$1"; }
ratio() { num "$1" && num "$2" && calc "$2 > 0 ? sprintf(\"%.2f×\", $1/$2) : \"n/a\"" || echo "n/a"; }
verdict() { # awk condition over numbers
    num "$2" || { echo "n/a"; return; }
    [ "$(calc "($1) ? 1 : 0")" = 1 ] && echo "met" || echo "**MISSED**"
}

A_IDLE=$(median agent.rss.idle) A_CONNS=$(median agent.rss.conns) A_JOBS=$(median agent.rss.jobs)
W_IDLE=$(median webhook.rss.idle) W_CONNS=$(median webhook.rss.conns) W_JOBS=$(median webhook.rss.jobs)
P_IDLE=$(median python.rss.idle)
# One sync on the slow disk: measured there (a write + fdatasync) on the device, the
# injected delay with strace (its real sync is a fraction of a millisecond).
S_SYNC=$((SYNC_MS * 1000)) S_SYNC_COLD=$((SYNC_MS * 1000))
S_SYNC_OZ=n/a
[ "$SLOW_MODE" = fuse ] && S_SYNC=$(median slow.sync) S_SYNC_COLD=$(median slow.sync_cold) \
    S_SYNC_OZ=$(median slow.sync_oz)
if [ "$SLOW_MODE" = fuse ]; then
    SLOW_HOW="a device with $((SYNC_MS / 2)) ms flushes" SLOW_ALIKE=""
    SLOW_NOTE="On the slow disk the state dir (the journal and \`auth.json\`, the only files the agent
syncs) is on ext4 on a loop device whose image is on \`bench/slowfs.py\`, a FUSE pass-through
whose fsync takes $((SYNC_MS / 2)) ms: the device flushes slowly and one flush at a time, as an SD card
does, and an \`fdatasync\` there is two flushes (the data, then ext4's journal commit): one sync
(a 200-byte write + \`fdatasync\`) measured on it took $(ms "$S_SYNC") back to back and $(ms "$S_SYNC_COLD")
after a half-second pause, as each code comes (both verdicts are shown); written over zeros
synced before, as the journal writes a code (its size unchanged: one flush), $(ms "$S_SYNC_OZ"). Nothing is traced. A code
that arrives while a group commit is being flushed waits for it: that is the device's, as on
a card."
else
    SLOW_HOW="injected by strace" SLOW_ALIKE=" (job thread traced alike)"
    SLOW_NOTE="On the slow disk the job threads are traced too (a code's sync is theirs), and \`strace\` then
stops each of their system calls, which added 1–2 ms to every job here whether or not it
synced: the code-bearing figure is compared with the no-code request timed half a step later
under the same tracing, so only the code's own cost is left."
fi
A_P50=$(median agent.p50) A_P99=$(median agent.p99) A_MAX=$(median agent.max)
B_P50=$(median bare.p50) B_P99=$(median bare.p99)
W_P50=$(median webhook.p50) W_P99=$(median webhook.p99)
FP_P50=$(median floor_plain.p50) FP_P99=$(median floor_plain.p99)
FS_P50=$(median floor_same.p50) FS_P99=$(median floor_same.p99) FC_P50=$(median floor_cold.p50)
FH_P50=$(median floor_http.p50) FHC_P50=$(median floor_http_cold.p50)
A_RPS=$(median agent.rps) P_RPS=$(median python.rps)
A_HP50=$(median agent.hp50) A_HP99=$(median agent.hp99)
P_HP50=$(median python.hp50) P_HP99=$(median python.hp99)
A_CODE=$(median agent.code_p50) SYNC_P50=$(median sync.p50) A_COLD=$(median agent.cold_p50)
SYNC_COLD=$(median sync_cold.p50) SYNC_OZ=$(median sync_oz.p50)
A_CHP99=$(median agent.chp99) A_CHMAX=$(median agent.chmax)
S_P50=$(median slow.p50) S_P99=$(median slow.p99) S_MAX=$(median slow.max) S_CODE=$(median slow.code_p50)
S_CHP99=$(median slow.chp99) S_CHMAX=$(median slow.chmax) S_COLD=$(median slow.cold_p50)
S_PINGS=$(median slow.pings) S_WDGAP=$(median slow.wdgap)
WORK_FS=$(df -T "$WORK" | awk 'NR==2 {print $2}')

{
cat <<EOF
### Results ($STARTED)

Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r),
load average $LOAD_BEFORE before and $LOAD_AFTER after (1/5/15 min), work dir $WORK_PARENT on $WORK_FS.
Binary: $BUILD_KIND. Medians of $REPS runs; CPU pinning: $PINNING. Run took ${ELAPSED} s.
$(for m in "${MISSING[@]}"; do echo "**Missing here**: $m."; done)
Command: \`bash bench/run.sh${ARGS:+ $ARGS}\` (reps=$REPS, jobs=$JOBS, latency samples=$LAT_N after $WARMUP warm-up, floods of ${REJ_SECS} s).

| figure | sudo-agent | webhook | Python stand-in | ratio | target | verdict |
|---|---|---|---|---|---|---|
| stripped binary, x86-64 | $(bytes "$X86_SIZE") | $(bytes "$WEBHOOK_SIZE") | – | webhook/agent $(ratio "$WEBHOOK_SIZE" "$X86_SIZE") | | |
| stripped binary, aarch64 | $(bytes "$AARCH64_SIZE") | (x86-64 only here) | – | webhook/agent $(ratio "$WEBHOOK_SIZE" "$AARCH64_SIZE") | ≤ 1.25 MiB (SPEC) | $(verdict "$AARCH64_SIZE <= 1310720" "$AARCH64_SIZE") |
| RSS idle | $(mib "$A_IDLE") | $(mib "$W_IDLE") | $(mib "$P_IDLE") | webhook/agent $(ratio "$W_IDLE" "$A_IDLE") | ≤ 2 MiB | $(verdict "$A_IDLE <= 2048" "$A_IDLE") |
| RSS, $IDLE_N half-open connections | $(mib "$A_CONNS") (open: $(median agent.open)) | $(mib "$W_CONNS") (open: $(median webhook.open)) | | webhook/agent $(ratio "$W_CONNS" "$A_CONNS") | ≤ 4 MiB | $(verdict "$A_CONNS <= 4096" "$A_CONNS") |
| RSS after $JOBS jobs | $(mib "$A_JOBS") | $(mib "$W_JOBS") | | webhook/agent $(ratio "$W_JOBS" "$A_JOBS") | | |
| threads idle / $IDLE_N conns / after jobs | $(median agent.thr.idle) / $(median agent.thr.conns) / $(median agent.thr.jobs) | $(median webhook.thr.idle) / $(median webhook.thr.conns) / $(median webhook.thr.jobs) | $(median python.thr.idle) / – / – | | | |
| exec /bin/true, p50, bare path (process groups, no cgroup; the no_pin read-only namespace) | $(ms "$B_P50") | $(ms "$W_P50") | | agent/floor(same) $(ratio "$B_P50" "$FS_P50"), agent/webhook $(ratio "$B_P50" "$W_P50") | ≤ 1.2× floor, < webhook | $(verdict "$B_P50 <= 1.2 * $FS_P50 && $B_P50 < ${W_P50/n\/a/1e18}" "$B_P50") |
| exec /bin/true, p50, default (a cgroup per job + the read-only namespace) | $(ms "$A_P50") | $(ms "$W_P50") | | agent/floor(same) $(ratio "$A_P50" "$FS_P50"), agent/floor(plain) $(ratio "$A_P50" "$FP_P50"), agent/webhook $(ratio "$A_P50" "$W_P50"), default/bare $(ratio "$A_P50" "$B_P50") | < webhook | $(verdict "$A_P50 < ${W_P50/n\/a/1e18}" "$A_P50") |
| exec /bin/true, p99, bare / default | $(ms "$B_P99") / $(ms "$A_P99") | $(ms "$W_P99") | | default/floor(same) $(ratio "$A_P99" "$FS_P99"), default/webhook $(ratio "$A_P99" "$W_P99") | | |
| exec /bin/true, $CONC clients at once ($CONC_N jobs each, back to back), p50 / p99 / max; jobs/s | $(ms "$(median agent.cp50)") / $(ms "$(median agent.cp99)") / $(ms "$(median agent.cmax)"); $(median agent.cjps) | $(ms "$(median webhook.cp50)") / $(ms "$(median webhook.cp99)") / $(ms "$(median webhook.cmax)"); $(median webhook.cjps) | | agent/webhook p50 $(ratio "$(median agent.cp50)" "$(median webhook.cp50)"), p99 $(ratio "$(median agent.cp99)" "$(median webhook.cp99)") | | |
| floor: fork+exec+wait, plain / same setup, p50 | $(ms "$FP_P50") / $(ms "$FS_P50") | | | same/plain $(ratio "$FS_P50" "$FP_P50") | | |
| floor: p99, plain / same setup | $(ms "$FP_P99") / $(ms "$FS_P99") | | | | | |
| HTTP floor (\`loadgen httpfloor\`: a request read, the same-setup spawn, an answer; nothing else), p50 | $(ms "$FH_P50") | | | this/floor(same) $(ratio "$FH_P50" "$FS_P50"); bare agent/this $(ratio "$B_P50" "$FH_P50") | | |
| rejected requests/s, 16 keep-alive conns | $(median agent.rps) (401: $(median agent.s401), 429: $(median agent.s429)) | – | $(median python.rps) (401: $(median python.s401); $(median python.connects) connects) | agent/python $(ratio "$A_RPS" "$P_RPS") | ≥ 30 000/s, ≥ 10× Python | $(verdict "$A_RPS >= 30000 && $A_RPS >= 10 * ${P_RPS/n\/a/0}" "$A_RPS") |
| /health during the flood, p50 / p99 | $(ms "$A_HP50") / $(ms "$A_HP99") ($(median agent.hn) probes) | – | $(ms "$P_HP50") / $(ms "$P_HP99") | | p99 < 5 ms | $(verdict "$A_HP99 < 5000" "$A_HP99") |
| start-up: exec to first answered request | $(ms "$START_AGENT") | $(ms "$START_WEBHOOK") | $(ms "$START_PYTHON") | webhook/agent $(ratio "$START_WEBHOOK" "$START_AGENT") | | |
| start-up, socket-activated (LISTEN_FDS) | $(ms "$START_ACT") | | | | | |
| floor in the same rhythm (one spawn after each 0.5 s pause), p50 | $(ms "$FC_P50") | | | this/floor(same) back to back $(ratio "$FC_P50" "$FS_P50") | | |
| HTTP floor in the same rhythm (one request after each 0.5 s pause), p50 | $(ms "$FHC_P50") | | | this − floor(same rhythm) $(num "$FHC_P50" && num "$FC_P50" && ms "$(calc "$FHC_P50 - $FC_P50")" || echo n/a): the exchange's share of the 0.5 ms below | | |
| code-bearing /bin/true, p50 | $(ms "$A_CODE") | | | one sync here $(ms "$SYNC_P50") (over zeros, as the journal writes a code: $(ms "$SYNC_OZ")); agent − floor(same) − sync $(num "$A_CODE" && num "$FS_P50" && num "$SYNC_P50" && ms "$(calc "$A_CODE - $FS_P50 - $SYNC_P50")" || echo n/a) | ≤ floor + one sync + 0.5 ms (back-to-back floor) | $(verdict "$A_CODE <= $FS_P50 + $SYNC_P50 + 500" "$A_CODE") |
| code-bearing, against the floor and the sync in its rhythm | | | | one sync after a 0.5 s pause $(ms "$SYNC_COLD"); agent − floor(same rhythm) − that sync $(num "$A_CODE" && num "$FC_P50" && num "$SYNC_COLD" && ms "$(calc "$A_CODE - $FC_P50 - $SYNC_COLD")" || echo n/a); agent − HTTP floor (same rhythm) − that sync $(num "$A_CODE" && num "$FHC_P50" && num "$SYNC_COLD" && ms "$(calc "$A_CODE - $FHC_P50 - $SYNC_COLD")" || echo n/a) | ≤ floor (same rhythm) + one sync (same rhythm) + 0.5 ms | $(verdict "$A_CODE <= $FC_P50 + $SYNC_COLD + 500" "$A_CODE") |
| same, no code, same rhythm (one a second), p50 | $(ms "$A_COLD") | | | code-bearing − this $(num "$A_CODE" && num "$A_COLD" && ms "$(calc "$A_CODE - $A_COLD")" || echo n/a) | ≤ one sync + 0.5 ms (back to back / same rhythm) | $(verdict "$A_CODE <= $A_COLD + $SYNC_P50 + 500" "$A_CODE") / $(verdict "$A_CODE <= $A_COLD + $SYNC_COLD + 500" "$A_CODE") |
| /health while codes arrive, p99 / max | $(ms "$A_CHP99") / $(ms "$A_CHMAX") ($(median agent.chn) probes) | | | | | |

#### Slow disk: every fsync/fdatasync ${SYNC_MS} ms, $SLOW_HOW (medians of $([ "$SLOW" = 1 ] && echo "$((REPS < 3 ? REPS : 3))" || echo 0) runs)

| figure | normal disk | slow disk | ratio | target | verdict |
|---|---|---|---|---|---|
| exec /bin/true (no_pin), p50 | $(ms "$A_P50") | $(ms "$S_P50") | slow/normal $(ratio "$S_P50" "$A_P50") | ≤ 2× | $(verdict "$S_P50 <= 2 * $A_P50" "$S_P50") |
| exec /bin/true (no_pin), p99 | $(ms "$A_P99") | $(ms "$S_P99") | slow/normal $(ratio "$S_P99" "$A_P99") | | |
| exec /bin/true (no_pin), max (compactions: every 500 jobs / every 50 on the slow disk) | $(ms "$A_MAX") | $(ms "$S_MAX") | | | |
| code-bearing /bin/true, p50 | $(ms "$A_CODE") | $(ms "$S_CODE") | slow − normal $(num "$S_CODE" && num "$A_CODE" && ms "$(calc "$S_CODE - $A_CODE")" || echo n/a) | ≤ floor + one sync + 0.5 ms, one sync $(ms "$S_SYNC") / $(ms "$S_SYNC_COLD") (back to back / same rhythm) | $(verdict "$S_CODE <= $FS_P50 + $S_SYNC + 500" "$S_CODE") / $(verdict "$S_CODE <= $FC_P50 + $S_SYNC_COLD + 500" "$S_CODE") |
| same, no code, same rhythm, p50$SLOW_ALIKE | $(ms "$A_COLD") | $(ms "$S_COLD") | code-bearing − this, slow disk $(num "$S_CODE" && num "$S_COLD" && ms "$(calc "$S_CODE - $S_COLD")" || echo n/a) | code's cost ≤ one sync + 0.5 ms (back to back / same rhythm) | $(verdict "$S_CODE <= $S_COLD + $S_SYNC + 500" "$S_CODE") / $(verdict "$S_CODE <= $S_COLD + $S_SYNC_COLD + 500" "$S_CODE") |
| /health while codes arrive, p99 | $(ms "$A_CHP99") | $(ms "$S_CHP99") | | < 5 ms | $(verdict "$S_CHP99 < 5000" "$S_CHP99") |
| /health while codes arrive, max | $(ms "$A_CHMAX") | $(ms "$S_CHMAX") | | < 20 ms | $(verdict "$S_CHMAX < 20000" "$S_CHMAX") |
| watchdog pings (due every 2 s), longest gap | | $(ms "$S_WDGAP") ($S_PINGS pings) | | < 4 s (WatchdogSec) | $(verdict "$S_WDGAP < 4000000" "$S_WDGAP") |

$SLOW_NOTE

Syncs by thread (census under \`strace -f\`: 200 jobs, 2 codes, 2 bad codes, start-up): $CENSUS.

Exec latency: submit (\`POST /run {"command":"/bin/true"}\`, a \`no_pin\` rule, default \`wait\`) to
the full 200 response with the job record, sequential requests on one keep-alive connection;
webhook: \`POST /hooks/true\` with \`include-command-output-in-response\`, same client.
The default path gives each job a cgroup of its own and the \`no_pin\` rule's read-only mount
namespace (lent, made ahead); the bare path is the same agent where no cgroup v2 is
writable (the cgroup2 mount read-only in a mount namespace of its own), so jobs run in
process groups; a \`no_pin\` rule cannot turn its read-only namespace off, so that stays.
Floor "plain": \`Command::new("/bin/true").status()\`; "same setup": cleared env + the 9 job
variables, stdin null, stdout/stderr piped and read to EOF, \`process_group(0)\`.
Several clients at once: $CONC keep-alive connections sending the same request back to back,
$CONC_N each (the agent's default \`max_concurrent\` 4 runs four jobs and queues the rest),
latency over all of them; a client's request waits for the CPU with everyone else's.
Rejections: \`POST /run {"pin":"000000",...}\` back to back on 16 connections; after
\`max_failures\` (5) bad codes the agent answers 429 without looking at the code, so the mix is
a few 401s and then 429s. The Python stand-in answers HTTP/1.0 and closes each connection, so its
client reconnects per request (as any client of it would). /health is timed every 2 ms on a 17th
connection meanwhile. Half-open connections: request line and one header sent, head never ended.
Code-bearing: \`POST /run {"pin":CODE,"argv":["/bin/true"]}\`, one per 1 s TOTP step (a code is
accepted once), on one keep-alive connection, 50 ms into the step, and half a second later the
same without a code ("same rhythm": as cold as the code-bearing one, unlike the back-to-back
exec figure); /health timed every 2 ms on another connection meanwhile. "One sync": a 200-byte
write appended + fdatasync in the work dir (the verdicts use it); the agent writes a code's line
over zeros its journal synced before, so the file's size stays and ext4 has no new size to
commit: "over zeros" times that. The floor "in the same rhythm" is the same-setup spawn, one
after each half-second pause (each code-bearing request follows one); it is given beside the
back-to-back floor, and both verdicts are shown; so is the sync, timed alike (one after each
half-second pause) beside the back-to-back one. The HTTP floor is timed in that rhythm too
(one request after each half-second pause): the part of the 0.5 ms that any HTTP server
spends on the exchange alone when both CPUs have been idle.
Where the exec time goes, task by task (the command, each thread, idle), beside webhook's and
the floor's: \`bash bench/where.sh AGENT_BINARY\` (needs perf).
EOF
} | tee "$WORK/report.md"
[ -n "$OUT" ] && cp "$WORK/report.md" "$OUT"
exit 0
