#!/usr/bin/env bash
# `make bench` (server part): the reference server beside socket.io 4 (Node), same machine, same
# run, same load generator (tests/loadgen). Prints the machine, the date, the command and a table
# of both servers' numbers with their ratios; writes target/bench/server.json.
#
#   .ci/bench-server.sh                 full run: 10,000 idle sessions; fan-out 1,000 sessions x
#                                       1,000 messages, 3 rounds per server (about 3 minutes)
#   BENCH_QUICK=1 .ci/bench-server.sh   1,000 idle sessions; fan-out 1,000 x 50, 1 round
#   Overrides: BENCH_IDLE_SESSIONS, BENCH_FANOUT_SESSIONS, BENCH_FANOUT_MESSAGES, BENCH_FANOUT_ROUNDS,
#   BENCH_FANOUT_BATCH (messages per request in the batch variant, default 100)
#
# 1. Idle sessions: RSS (VmRSS) of the server before and after `loadgen idle` opened the sessions
#    (realtime: hello received; socket.io: namespace connect answered) and every session went
#    through one heartbeat (both servers ping every 5 s here instead of 25 s, so that the reading
#    comes after each session has been pinged and answered); per session = difference / sessions
#    still open at the reading. The socket.io server runs a full GC before each reading.
# 2. Fan-out: `loadgen fanout` puts the sessions in one room and 8 keep-alive HTTP connections
#    publish the messages, one request per message (the reference server has no bulk publish:
#    POST /realtime/publish; socket.io: POST /bench/publish, which runs io.to(room).emit); the
#    rate is sessions x messages over the time from the first publish to the last delivery.
#    Then the same with BENCH_FANOUT_BATCH messages per request (reference: its batch publish,
#    msg frames as application/x-realtime-frames; socket.io: POST /bench/publish-batch, one
#    io.to(room).emit per element), which takes HTTP out of the way on both sides.
#    Every round gets a fresh server; the median round counts.
#
# Everything listens on and connects to 127.0.0.1 only; every process started here is stopped on
# exit (also on failure or Ctrl-C); the load generator is bounded by its own timeouts and by
# `timeout`. The reference server is target/server/realtime-server exactly as
# `cargo build --profile server -p realtime-server` builds it (RUST_LOG=warn: no log line per session).
# The load generator is built with opt-level 3 in its own target directory (target/loadgen), so
# that it takes as little as possible of the CPU it shares with the server under test.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
. .ci/lib.sh

say() { echo "bench-server: $*"; }
fail() { echo "bench-server: $*" >&2; exit 1; }

if [ "${BENCH_QUICK:-}" = 1 ]; then
    idle_sessions=${BENCH_IDLE_SESSIONS:-1000}
    fanout_messages=${BENCH_FANOUT_MESSAGES:-50}
    fanout_rounds=${BENCH_FANOUT_ROUNDS:-1}
else
    idle_sessions=${BENCH_IDLE_SESSIONS:-10000}
    fanout_messages=${BENCH_FANOUT_MESSAGES:-1000}
    fanout_rounds=${BENCH_FANOUT_ROUNDS:-3}
fi
fanout_sessions=${BENCH_FANOUT_SESSIONS:-1000}
fanout_batch=${BENCH_FANOUT_BATCH:-100}
heartbeat_ms=5000
settle_ms=$((heartbeat_ms + 1500))
loadgen_timeout_s=150

# Every socket is a file descriptor: the server and the load generator each hold one per session.
need_fds=$((idle_sessions + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
    if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need_fds" ]; then
        ulimit -Hn "$need_fds" 2>/dev/null || fail "cannot raise the hard open-file limit from $(ulimit -Hn) to $need_fds (needs root); lower BENCH_IDLE_SESSIONS"
    fi
    ulimit -n "$need_fds" || fail "cannot raise the open-file limit to $need_fds"
fi
say "open-file limit $(ulimit -n) (need $need_fds)"

# Processes started here and still running, stopped on any exit. A pid leaves the list once it
# has been waited for, so that cleanup never signals a pid that another process may reuse.
started_pids=()
forget_pid() {
    local kept=() pid
    for pid in "${started_pids[@]}"; do
        [ "$pid" = "$1" ] || kept+=("$pid")
    done
    started_pids=("${kept[@]}")
}
work=$(mktemp -d)
cleanup() {
    stop_pids "${started_pids[@]}"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Builds and installs (each a no-op when up to date).
say "building the reference server (cargo build --profile server -p realtime-server)"
cargo build --profile server -p realtime-server
say "building the load generator (opt-level 3, target/loadgen)"
CARGO_TARGET_DIR=$repo_root/target/loadgen CARGO_PROFILE_RELEASE_OPT_LEVEL=3 cargo build --release -p loadgen
realtime_server=$repo_root/target/server/realtime-server
loadgen=$repo_root/target/loadgen/release/loadgen
bench_dir=tests/bench-server
lock_hash=$(sha256sum "$bench_dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$bench_dir/node_modules/.lock-sha256" 2>/dev/null)" != "$lock_hash" ]; then
    say "installing $bench_dir's npm packages (npm ci)"
    (cd "$bench_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$bench_dir/node_modules/.lock-sha256"
fi
socketio_version=$(node -p "require('./$bench_dir/node_modules/socket.io/package.json').version")

# The run, as printed and recorded.
export BENCH_DATE BENCH_NPROC BENCH_CPU BENCH_KERNEL BENCH_COMMAND BENCH_QUICK BENCH_REALTIME_SERVER BENCH_SOCKETIO_SERVER \
    BENCH_LOADAVG_START BENCH_LOADAVG_END
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
BENCH_NPROC=$(nproc)
BENCH_CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
BENCH_KERNEL=$(uname -r)
BENCH_COMMAND="${BENCH_QUICK:+BENCH_QUICK=$BENCH_QUICK }.ci/bench-server.sh"
BENCH_QUICK=${BENCH_QUICK:-0}
BENCH_REALTIME_SERVER="$("$realtime_server" --version) (git $(git rev-parse --short HEAD)), --heartbeat-ms $heartbeat_ms"
BENCH_SOCKETIO_SERVER="socket.io $socketio_version on node $(node --version), pingInterval $heartbeat_ms"
# Other work on the machine skews both servers' numbers: the load average goes into the record.
BENCH_LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "$BENCH_DATE, $BENCH_NPROC x ${BENCH_CPU:-unknown CPU}, kernel $BENCH_KERNEL, load average $BENCH_LOADAVG_START, command: $BENCH_COMMAND"
say "idle: $idle_sessions sessions; fan-out: $fanout_sessions sessions x $fanout_messages messages, 1 and $fanout_batch per request, $fanout_rounds round(s) each per server"

# Starts a server on 127.0.0.1:0 and sets server_pid and server_addr.
# Each start has its own log files: reusing one would race the new server's truncation against
# the read of the old address.
server_starts=0
start_server() {
    server_starts=$((server_starts + 1))
    local kind=$1 log=$work/server-$server_starts-$1
    # The logs exist before the server starts: the readiness loop must not race the redirection.
    : >"$log.out"
    : >"$log.err"
    case "$kind" in
        realtime)
            # Every loadgen session comes from 127.0.0.1: the per-IP caps and rates of a public
            # server (256 connections, sessions and streams per IP, 10 new sessions/s, 200
            # messages/s and 1 MiB/s per session) are lifted here (TEST-ONLY loosening); the
            # total caps and the fd limit still hold.
            RUST_LOG=warn "$realtime_server" --listen 127.0.0.1:0 --heartbeat-ms "$heartbeat_ms" \
                --max-connections-per-ip 1000000 --max-sessions-per-ip 1000000 --max-streams-per-ip 1000000 \
                --new-sessions-per-sec 1000000 --new-sessions-burst 1000000 \
                --messages-per-sec 1000000 --messages-burst 1000000 \
                --bytes-per-sec 1073741824 --bytes-burst 1073741824 >"$log.out" 2>"$log.err" &
            ;;
        socketio)
            node --expose-gc "$bench_dir/socketio-server.mjs" --listen 127.0.0.1:0 --ping-interval-ms "$heartbeat_ms" >"$log.out" 2>"$log.err" &
            ;;
    esac
    server_pid=$!
    started_pids+=("$server_pid")
    server_addr=
    for _ in $(seq 100); do
        server_addr=$(sed -n 's#^listening on http://##p' "$log.out")
        [ -n "$server_addr" ] && return 0
        kill -0 "$server_pid" 2>/dev/null || fail "the $kind server exited at start: $(tail -n 5 "$log.err")"
        sleep 0.1
    done
    fail "the $kind server did not print its address within 10 s"
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    forget_pid "$server_pid"
}

# Runs the load generator against the current server, its JSON into $1.
run_loadgen() {
    local out=$1
    shift
    timeout --kill-after=5 $((loadgen_timeout_s + 30)) "$loadgen" "$@" --addr "$server_addr" --timeout-s "$loadgen_timeout_s" \
        >"$out" 2>"$out.log" &
    local pid=$!
    started_pids+=("$pid")
    local status=0
    wait "$pid" || status=$?
    forget_pid "$pid"
    cat "$out.log" >&2
    [ "$status" -eq 0 ] || fail "loadgen $* failed (exit $status)"
}

results=$work/results
mkdir -p "$results"
for kind in realtime socketio; do
    say "idle: $kind, $idle_sessions sessions"
    start_server "$kind"
    gc=()
    [ "$kind" = socketio ] && gc=(--gc-path /bench/gc)
    run_loadgen "$results/idle-$kind.json" idle --protocol "$kind" --sessions "$idle_sessions" --server-pid "$server_pid" \
        --settle-ms "$settle_ms" "${gc[@]}"
    stop_server
done
for round in $(seq "$fanout_rounds"); do
    for kind in realtime socketio; do
        for batch in 1 "$fanout_batch"; do
            name=fanout-$kind-$round
            [ "$batch" = 1 ] || name=fanout-batch-$kind-$round
            say "fan-out: $kind, $batch message(s) per request, round $round of $fanout_rounds"
            start_server "$kind"
            run_loadgen "$results/$name.json" fanout --protocol "$kind" --sessions "$fanout_sessions" \
                --messages "$fanout_messages" --batch "$batch"
            stop_server
        done
    done
done

BENCH_LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p target/bench
node "$bench_dir/server-report.mjs" "$results" target/bench/server.json
say "load average at start $BENCH_LOADAVG_START, at end $BENCH_LOADAVG_END (1, 5, 15 min; this run's own load included)"
say "wrote target/bench/server.json"
