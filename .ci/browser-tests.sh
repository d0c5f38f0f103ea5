#!/usr/bin/env bash
# Runs the browser tests (`wasm-pack test --headless --chrome`) against a reference
# server that this script starts on a free loopback port and always stops again.
#
# A browser has no environment, so the tests get the server URL at compile time:
# REALTIME_TEST_URL=http://127.0.0.1:PORT/realtime, read with option_env!.
# The test page is served by wasm-bindgen-test-runner from another loopback port,
# hence --allow-loopback-origins (a test-only server flag).
#
# REALTIME_SERVER_BIN overrides the server executable (default: a debug build of
# realtime-server, which shares most of its dependencies with `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD

server_startup_timeout_s=${SERVER_STARTUP_TIMEOUT:-60}
# Each wasm-bindgen-test-runner run (one per test binary) gets this many seconds
# before it gives up; the default 20 is tight for a cold browser on 2 cores.
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-60}
# Chrome capabilities (flags for headless Chromium as root on a closed network).
# wasm-bindgen-test-runner opens $WASM_BINDGEN_TEST_WEBDRIVER_JSON, else ./webdriver.json,
# so the file stays in .ci/ and nothing is copied into the work tree.
export WASM_BINDGEN_TEST_WEBDRIVER_JSON=${WASM_BINDGEN_TEST_WEBDRIVER_JSON:-$repo_root/.ci/webdriver.json}

if [ -n "${REALTIME_SERVER_BIN:-}" ]; then
    server_bin=$REALTIME_SERVER_BIN
else
    cargo build -p realtime-server
    server_bin=${CARGO_TARGET_DIR:-$repo_root/target}/debug/realtime-server
fi

server_log=$(mktemp -t realtime-server.XXXXXX.log)
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        # Give it a moment for graceful shutdown, then insist.
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -f "$server_log"
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$server_bin" --listen 127.0.0.1:0 --allow-loopback-origins >"$server_log" 2>&1 &
server_pid=$!

# The server prints `listening on http://ADDR` once it has bound its socket.
port=""
deadline=$((SECONDS + server_startup_timeout_s))
while [ -z "$port" ]; do
    port=$(sed -n 's#^.*listening on http://[^ ]*:\([0-9][0-9]*\).*$#\1#p' "$server_log" | head -n 1)
    [ -n "$port" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "browser-tests: the server exited before listening; its output:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "browser-tests: no 'listening on' line from the server within ${server_startup_timeout_s}s; its output:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    sleep 0.2
done

export REALTIME_TEST_URL="http://127.0.0.1:$port/realtime"
echo "browser-tests: reference server at $REALTIME_TEST_URL (pid $server_pid)"

status=0
wasm-pack test --headless --chrome "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "browser-tests: failed (exit $status); server output:" >&2
    cat "$server_log" >&2
fi
exit "$status"
