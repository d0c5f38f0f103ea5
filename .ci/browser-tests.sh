#!/usr/bin/env bash
# Runs the browser tests (`wasm-pack test --headless --chrome`) against a reference
# server and a fault proxy in front of it, plus a second "chaos" proxy that runs its own
# reference server (short heartbeat) and can crash and restart it, plus a third reference server
# over TLS (HTTP/2 by ALPN, --tls-self-signed); all started here on free loopback ports and always
# stopped again. Then the behaviour suite (tests/browser.rs) runs a second time, against the TLS
# server, so every transport is also tested over HTTP/2.
#
# A browser has no environment, so the tests get the addresses at compile time, read with
# option_env!:
#   REALTIME_TEST_URL=http://127.0.0.1:PORT/realtime         the server, direct
#   REALTIME_PROXY_URL=http://127.0.0.1:PROXYPORT/realtime   the same server through the proxy
#   REALTIME_PROXY_CONTROL=http://127.0.0.1:CONTROLPORT      the proxy's control port
#                                                            (POST /mode?..., /reset, /cut, ...)
#   REALTIME_CHAOS_URL=http://127.0.0.1:PROXY2PORT/realtime  a second server (--heartbeat-ms 1000
#                                                            --resume-window-ms 60000) through a
#                                                            second proxy that runs it itself
#   REALTIME_CHAOS_CONTROL=http://127.0.0.1:CONTROL2PORT     that proxy's control port: the same
#                                                            API plus POST /restart-upstream (SIGKILL
#                                                            the server, cut every connection, start a
#                                                            fresh one, all sessions lost, same port)
#                                                            and GET /upstream
#   REALTIME_CHAOS_UPSTREAM=http://127.0.0.1:UPSTREAMPORT/realtime   that server, direct (for
#                                                            publishing around the proxy)
#   REALTIME_ADMIN_TOKEN=HEX                                  the admin token of every server here
#                                                            (GET /realtime/stats needs it); the
#                                                            servers read the same variable
#   REALTIME_TLS_URL=https://127.0.0.1:TLSPORT/realtime      a server over TLS with a development
#                                                            certificate (tests/h2.rs); Chromium
#                                                            trusts it only through its SPKI
#                                                            fingerprint, given in a temporary copy
#                                                            of the webdriver capabilities
#                                                            (--ignore-certificate-errors-spki-list)
# The test page is served by wasm-bindgen-test-runner from another loopback port,
# hence --allow-loopback-origins (a test-only server flag; and --max-connections-per-ip, since
# every browser and proxy connection comes from 127.0.0.1); the proxy's control port
# answers CORS for loopback origins by itself.
#
# REALTIME_SERVER_BIN and FAULT_PROXY_BIN override the executables (default: debug builds
# of realtime-server and fault-proxy, which share most of their dependencies with `cargo test`).
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

target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
build_packages=()
[ -n "${REALTIME_SERVER_BIN:-}" ] || build_packages+=(-p realtime-server)
[ -n "${FAULT_PROXY_BIN:-}" ] || build_packages+=(-p fault-proxy)
if [ "${#build_packages[@]}" -gt 0 ]; then
    cargo build "${build_packages[@]}"
fi
server_bin=${REALTIME_SERVER_BIN:-$target_dir/debug/realtime-server}
proxy_bin=${FAULT_PROXY_BIN:-$target_dir/debug/fault-proxy}

# The tests read the server's own counters (GET /realtime/stats), an admin endpoint: one random
# admin token for every server started here (exported, so the chaos proxy's server inherits it),
# compiled into the tests by option_env!. Kept in the target directory so that it stays the same
# from run to run: a new value would recompile the test crates each time. Loopback test servers
# only.
admin_token_file=$target_dir/browser-tests-admin-token
if [ ! -s "$admin_token_file" ]; then
    mkdir -p "$target_dir"
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$admin_token_file")
fi
REALTIME_ADMIN_TOKEN=$(cat "$admin_token_file")
export REALTIME_ADMIN_TOKEN

server_log=$(mktemp -t realtime-server.XXXXXX.log)
tls_log=$(mktemp -t realtime-server-tls.XXXXXX.log)
tls_webdriver_json=$(mktemp -t webdriver-tls.XXXXXX.json)
proxy_log=$(mktemp -t fault-proxy.XXXXXX.log)
chaos_log=$(mktemp -t fault-proxy-chaos.XXXXXX.log)
server_pid=""
proxy_pid=""
chaos_pid=""
auth_pid=""
auth_log=""
tls_pid=""
stop_pid() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        # Give it a moment for graceful shutdown, then insist.
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
stop_all() {
    # The chaos proxy kills its server when it exits (and, on Linux, if it dies).
    stop_pid "$chaos_pid"
    stop_pid "$auth_pid"
    stop_pid "$proxy_pid"
    stop_pid "$server_pid"
    stop_pid "$tls_pid"
    rm -f "$server_log" "$proxy_log" "$chaos_log" "$tls_log" "$tls_webdriver_json" ${auth_log:+"$auth_log"}
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for_port NAME PID LOG PREFIX: prints the port of the first line of LOG that matches
# `^PREFIXlistening on http(s)://ADDR` (PREFIX is a sed regex), waiting at most
# $server_startup_timeout_s; fails with the process's output if it exits or stays silent.
wait_for_port() {
    local name=$1 pid=$2 log=$3 prefix=$4 port=""
    local deadline=$((SECONDS + server_startup_timeout_s))
    while :; do
        port=$(sed -n "s#^${prefix}listening on https\{0,1\}://[^ ]*:\([0-9][0-9]*\).*\$#\1#p" "$log" | head -n 1)
        [ -n "$port" ] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "browser-tests: the $name exited before listening; its output:" >&2
            cat "$log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "browser-tests: no '${prefix#.\*}listening on' line from the $name within ${server_startup_timeout_s}s; its output:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "$port"
}

# TEST-ONLY loosening: every browser, proxy and test connection comes from 127.0.0.1, and the
# suites open many sessions and send bursts quickly, so the per-IP caps and rates of a public
# server (256 connections, sessions and streams; 10 new sessions/s; 200 messages/s and 1 MiB/s per
# session) are lifted here. The total caps still hold.
test_limits=(--max-connections-per-ip 100000 --max-sessions-per-ip 100000 --max-streams-per-ip 100000
    --new-sessions-per-sec 100000 --new-sessions-burst 100000 --messages-per-sec 1000000 --messages-burst 1000000
    --bytes-per-sec 1073741824 --bytes-burst 1073741824)

"$server_bin" --listen 127.0.0.1:0 --allow-loopback-origins --allow-kick "${test_limits[@]}" >"$server_log" 2>&1 &
server_pid=$!
# The server prints `listening on http://ADDR` once it has bound its socket.
port=$(wait_for_port server "$server_pid" "$server_log" '.*')

"$proxy_bin" --listen 127.0.0.1:0 --control 127.0.0.1:0 --upstream "127.0.0.1:$port" >"$proxy_log" 2>&1 &
proxy_pid=$!
# The proxy prints `proxy listening on http://ADDR`, then `control listening on http://ADDR`.
proxy_port=$(wait_for_port "fault proxy" "$proxy_pid" "$proxy_log" 'proxy ')
control_port=$(wait_for_port "fault proxy" "$proxy_pid" "$proxy_log" 'control ')

export REALTIME_TEST_URL="http://127.0.0.1:$port/realtime"
echo "browser-tests: reference server at $REALTIME_TEST_URL (pid $server_pid)"
export REALTIME_PROXY_URL="http://127.0.0.1:$proxy_port/realtime"
export REALTIME_PROXY_CONTROL="http://127.0.0.1:$control_port"
echo "browser-tests: fault proxy at $REALTIME_PROXY_URL, control $REALTIME_PROXY_CONTROL (pid $proxy_pid)"

# The chaos proxy starts its own server and prints a third line,
# `upstream listening on http://ADDR`; the server's output goes to the proxy's stderr.
"$proxy_bin" --listen 127.0.0.1:0 --control 127.0.0.1:0 --spawn-upstream -- \
    "$server_bin" --listen 127.0.0.1:0 --allow-loopback-origins "${test_limits[@]}" --heartbeat-ms 1000 --resume-window-ms 60000 \
    >"$chaos_log" 2>&1 &
chaos_pid=$!
chaos_proxy_port=$(wait_for_port "chaos proxy" "$chaos_pid" "$chaos_log" 'proxy ')
chaos_control_port=$(wait_for_port "chaos proxy" "$chaos_pid" "$chaos_log" 'control ')
chaos_upstream_port=$(wait_for_port "chaos proxy" "$chaos_pid" "$chaos_log" 'upstream ')
export REALTIME_CHAOS_URL="http://127.0.0.1:$chaos_proxy_port/realtime"
export REALTIME_CHAOS_CONTROL="http://127.0.0.1:$chaos_control_port"
export REALTIME_CHAOS_UPSTREAM="http://127.0.0.1:$chaos_upstream_port/realtime"
echo "browser-tests: chaos proxy at $REALTIME_CHAOS_URL, control $REALTIME_CHAOS_CONTROL (pid $chaos_pid), its server at $REALTIME_CHAOS_UPSTREAM"

# The auth setup (tests/auth.rs): a third proxy running its own server that verifies HS256 JWTs
# signed with a test secret (RT_JWT_SECRET, in its environment only; the tests sign with it in
# the browser), no clock-skew leeway (so a token expired 2 minutes ago is refused), and a 1 s
# heartbeat. TEST-ONLY: a fixed secret of a loopback server.
export REALTIME_JWT_SECRET=browser-tests-jwt-secret-0123456789abcdef
auth_log=$(mktemp -t fault-proxy-auth.XXXXXX.log)
RT_JWT_SECRET=$REALTIME_JWT_SECRET "$proxy_bin" --listen 127.0.0.1:0 --control 127.0.0.1:0 --spawn-upstream -- \
    "$server_bin" --listen 127.0.0.1:0 --allow-loopback-origins "${test_limits[@]}" --heartbeat-ms 1000 --resume-window-ms 60000 \
    --jwt-leeway-secs 0 >"$auth_log" 2>&1 &
auth_pid=$!
auth_proxy_port=$(wait_for_port "auth proxy" "$auth_pid" "$auth_log" 'proxy ')
auth_control_port=$(wait_for_port "auth proxy" "$auth_pid" "$auth_log" 'control ')
auth_upstream_port=$(wait_for_port "auth proxy" "$auth_pid" "$auth_log" 'upstream ')
export REALTIME_AUTH_URL="http://127.0.0.1:$auth_proxy_port/realtime"
export REALTIME_AUTH_CONTROL="http://127.0.0.1:$auth_control_port"
export REALTIME_AUTH_UPSTREAM="http://127.0.0.1:$auth_upstream_port/realtime"
echo "browser-tests: auth proxy at $REALTIME_AUTH_URL, control $REALTIME_AUTH_CONTROL (pid $auth_pid), its JWT-verifying server at $REALTIME_AUTH_UPSTREAM"

# The TLS server prints `spki sha256 <BASE64>` (its development certificate's fingerprint), then
# `listening on https://ADDR`.
"$server_bin" --tls-self-signed --listen 127.0.0.1:0 --allow-loopback-origins "${test_limits[@]}" >"$tls_log" 2>&1 &
tls_pid=$!
tls_port=$(wait_for_port "TLS server" "$tls_pid" "$tls_log" '.*')
spki=$(sed -n 's#^spki sha256 \([A-Za-z0-9+/=]\{44\}\)$#\1#p' "$tls_log" | head -n 1)
if [ -z "$spki" ]; then
    echo "browser-tests: no 'spki sha256' line from the TLS server; its output:" >&2
    cat "$tls_log" >&2
    exit 1
fi
export REALTIME_TLS_URL="https://127.0.0.1:$tls_port/realtime"
echo "browser-tests: TLS server at $REALTIME_TLS_URL (pid $tls_pid), certificate SPKI sha256 $spki"
# The same capabilities plus trust in that one key (never all certificate checks off) and no
# QUIC, for every run: the flag changes nothing for plain http.
if ! grep -q '"args": \[' "$WASM_BINDGEN_TEST_WEBDRIVER_JSON"; then
    echo "browser-tests: $WASM_BINDGEN_TEST_WEBDRIVER_JSON has no goog:chromeOptions \"args\": [ to extend" >&2
    exit 1
fi
sed 's|"args": \[|"args": [\n      "--ignore-certificate-errors-spki-list='"$spki"'",\n      "--disable-quic",|' \
    "$WASM_BINDGEN_TEST_WEBDRIVER_JSON" >"$tls_webdriver_json"
export WASM_BINDGEN_TEST_WEBDRIVER_JSON=$tls_webdriver_json

status=0
started=$SECONDS
wasm-pack test --headless --chrome "$@" || status=$?
echo "browser-tests: all test files against plain http (and tests/h2.rs over TLS): $((SECONDS - started))s"
# The behaviour suite again, against the TLS server: REALTIME_TEST_URL is read at compile time,
# so this recompiles tests/browser.rs (only it). Skipped when arguments select something else.
# The TLS server's own record (GET /realtime/stats, read with curl pinned to the same key) shows
# the suite really ran there, and over h2.
# (--insecure only lets the pin stand in for the CA check: a certificate with another key fails.)
tls_stats() {
    curl -sS --http2 --insecure --pinnedpubkey "sha256//$spki" -H "Authorization: Bearer $REALTIME_ADMIN_TOKEN" \
        "$REALTIME_TLS_URL/stats"
}
tls_h2_count() { # ENDPOINT: its http2 counter
    tls_stats | sed -n "s/.*\"$1\":{\"http1\":[0-9]*,\"http2\":\([0-9]*\)}.*/\1/p"
}
if [ "$status" -eq 0 ] && [ "$#" -eq 0 ]; then
    started=$SECONDS
    sse_before=$(tls_h2_count sse)
    poll_before=$(tls_h2_count poll)
    REALTIME_TEST_URL=$REALTIME_TLS_URL wasm-pack test --headless --chrome --test browser || status=$?
    echo "browser-tests: tests/browser.rs against $REALTIME_TLS_URL (HTTP/2): $((SECONDS - started))s"
    sse_after=$(tls_h2_count sse)
    poll_after=$(tls_h2_count poll)
    echo "browser-tests: TLS server requests by HTTP version: $(tls_stats)"
    if [ "$status" -eq 0 ] && ! { [ "${sse_after:-0}" -gt "${sse_before:-0}" ] && [ "${poll_after:-0}" -gt "${poll_before:-0}" ]; }; then
        echo "browser-tests: the TLS run of tests/browser.rs left no SSE and poll requests over h2 on the TLS server" >&2
        status=1
    fi
fi
if [ "$status" -ne 0 ]; then
    echo "browser-tests: failed (exit $status); server output:" >&2
    cat "$server_log" >&2
    echo "browser-tests: TLS server output:" >&2
    cat "$tls_log" >&2
    echo "browser-tests: fault proxy output:" >&2
    cat "$proxy_log" >&2
    echo "browser-tests: chaos proxy output (with its server's):" >&2
    cat "$chaos_log" >&2
    echo "browser-tests: auth proxy output (with its server's):" >&2
    cat "$auth_log" >&2
fi
exit "$status"
