#!/usr/bin/env bash
# `make test-demo`: the demo page (www/) clicked through in headless Chromium by
# tests/demo/run-demo.mjs (playwright-core driving /usr/bin/chromium; never `playwright install`):
# two pages chat in two rooms over one connection each (unread counts), the live feed ticks
# (--demo-feed clock, as `make demo` starts it), one page drops its connection (POST
# /realtime/kick), resumes, and no message is lost or doubled in either room; then a session reset
# (every room recovered from history) and a restart of the server (every room shows a gap). Each page
# signs in with a name (--demo-auth) and shows the other's messages under its verified subject.
# Screenshots go to target/demo-screenshots/.
#
# - npm ci runs only when tests/demo/node_modules is missing or was installed from another lock.
# - The wasm package in www/public/pkg is reused when it is newer than every input of the crate (at the end
#   of `make test`, `make size` has just built it); otherwise it is built here, as `make demo` does
#   (wasm-pack, then the post-build step of .ci/post-build.sh: the demo runs what ships).
# - The reference server (debug build; REALTIME_SERVER_BIN overrides it) listens on a free port with
#   --allow-kick and a random admin token (kick needs both; the pages get the token in the URL's
#   fragment, as from `make demo`), --demo-feed clock and --demo-auth (the pages sign in with a name
#   through POST /realtime/demo-token, as from `make demo`), and is stopped on exit, failures included.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
repo_root=$PWD
demo=$repo_root/tests/demo
shots=$repo_root/target/demo-screenshots

say() { echo "demo-test: $*"; }
fail() { echo "demo-test: $*" >&2; exit 1; }
step_started=$SECONDS
timed() { # LABEL: prints how long the step since the last call took
    say "$1: $((SECONDS - step_started))s"
    step_started=$SECONDS
}

lock_hash=$(sha256sum "$demo/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$demo/node_modules/.lock-sha256" 2>/dev/null)" = "$lock_hash" ]; then
    say "tests/demo: dependencies present"
else
    say "tests/demo: npm ci"
    (cd "$demo" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$demo/node_modules/.lock-sha256"
fi
timed "npm"

wasm=www/public/pkg/realtime_client_bg.wasm
if [ -f "$wasm" ] && [ -f www/public/pkg/realtime_client.js ] &&
    [ -z "$(find src Cargo.toml Cargo.lock -newer "$wasm" -print -quit)" ]; then
    say "www/public/pkg is up to date: reusing it"
else
    wasm-pack build --release --target web --out-dir www/public/pkg -- --no-default-features
    .ci/post-build.sh www/public/pkg
fi
timed "wasm package"

server_bin=${REALTIME_SERVER_BIN:-}
if [ -z "$server_bin" ]; then
    cargo build -p realtime-server
    server_bin=${CARGO_TARGET_DIR:-$repo_root/target}/debug/realtime-server
fi
timed "server build"

server_log=$(mktemp -t realtime-demo-server.XXXXXX)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -f "$server_log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

admin_token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
REALTIME_ADMIN_TOKEN=$admin_token "$server_bin" --listen 127.0.0.1:0 --static-dir www/public --allow-kick --demo-feed clock --demo-auth >"$server_log" 2>&1 &
server_pid=$!
address=$(wait_for_address "$server_pid" "$server_log" 20) || fail "the server did not start"
say "server on http://$address (--allow-kick, admin token, --demo-feed clock, --demo-auth)"

# SERVER_*: run-demo.mjs restarts the server (SIGTERM, then the same flags on the same address;
# it stops the new one when it exits) to show the rooms coming back without their history.
if ! ADMIN_TOKEN=$admin_token SERVER_BIN=$server_bin SERVER_PID=$server_pid SERVER_LOG=$server_log \
    node "$demo/run-demo.mjs" "http://$address" "$shots"; then
    echo "demo-test: server log (last 40 lines):" >&2
    tail -n 40 "$server_log" >&2
    fail "FAILED (screenshots, if any, in $shots)"
fi
timed "browser run"
say "screenshots: $shots/chat.png (Alice after her dropped connection resumed; chat-full-page.png: the whole page), $shots/chat-bob.png (Bob), $shots/chat-restart-bob.png (Bob after the server restart), $shots/chat-narrow.png (Alice at a phone's width)"
