#!/usr/bin/env bash
# `make test-consumers` (after `make package`): real consumers of the packed tarball
# pkg/realtime-client-<version>.tgz, each installing it with npm like a user would.
#
#   tests/consumers/app     a Vite 7 build and a webpack 5 build of the same source (src/main.js:
#                           `import { RealtimeClient } from 'realtime-client'`, no init()), and the
#                           same source in Vite's dev server
#   tests/consumers/plain   a page with <script type="module"> importing index.js from a copy of
#                           the unpacked tarball, no bundler
#   tests/consumers/types   tsc --noEmit --strict: good.ts (every option, method and event, named
#                           events) must compile under bundler and NodeNext resolution; bad.ts (a
#                           misspelt event and a misspelt option) must fail, naming both
#
# The built pages are served by a reference server started here (--static-dir on a temporary
# site), the dev page by Vite, and tests/consumers/app/run-pages.mjs opens each in headless Chromium (playwright-core
# driving /usr/bin/chromium): it connects, sends a message and a named event and receives both.
#
# npm dependencies are pinned by each consumer's package-lock.json; `npm ci` runs only when
# node_modules is missing or was installed from another lock file. The tarball is installed
# with --no-save every time (it changes with every build; the lock files do not mention it).
# REALTIME_SERVER_BIN overrides the server (default: the debug build of realtime-server).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
repo_root=$PWD
consumers=$repo_root/tests/consumers

say() { echo "consumer-tests: $*"; }
fail() { echo "consumer-tests: $*" >&2; exit 1; }
step_started=$SECONDS
timed() { # LABEL: prints how long the step since the last call took
    say "$1: $((SECONDS - step_started))s"
    step_started=$SECONDS
}
all_started=$SECONDS

version=$(node -p 'require("./pkg/package.json").version' 2>/dev/null) ||
    fail "no pkg/package.json: run 'make package' first"
tarball=$repo_root/pkg/realtime-client-$version.tgz
[ -f "$tarball" ] || fail "no $tarball: run 'make package' first"
say "testing $tarball"

server_bin=${REALTIME_SERVER_BIN:-}
if [ -z "$server_bin" ]; then
    cargo build -p realtime-server
    server_bin=${CARGO_TARGET_DIR:-$repo_root/target}/debug/realtime-server
fi
timed "server build"

site=$(mktemp -d -t realtime-consumers.XXXXXX)
# The logs exist before the processes start: a background job opens its redirection only once
# it runs, and the readiness loop must not race it.
server_log=$(mktemp -t realtime-consumers-server.XXXXXX.log)
vite_log=$(mktemp -t realtime-consumers-vite.XXXXXX.log)
server_pid=""
vite_pid=""
stop_pid() {
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$vite_pid"
    stop_pid "$server_pid"
    rm -rf "$site" "$server_log" "$vite_log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# install DIR: the pinned dependencies (skipped when present), then the tarball.
install() {
    local dir=$1 lock_hash
    lock_hash=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$dir/node_modules/.lock-sha256" 2>/dev/null)" = "$lock_hash" ]; then
        say "${dir#"$repo_root"/}: dependencies present"
    else
        say "${dir#"$repo_root"/}: npm ci"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$lock_hash" >"$dir/node_modules/.lock-sha256"
    fi
    (cd "$dir" && npm install --no-save --no-audit --no-fund --prefer-offline --loglevel=error "$tarball")
    local installed
    installed=$(cd "$dir" && node -p 'require("./node_modules/realtime-client/package.json").version')
    [ "$installed" = "$version" ] || fail "${dir#"$repo_root"/} has realtime-client $installed, not $version"
}
install "$consumers/app"
install "$consumers/types"
timed "installs"

# TypeScript.
tsc=$consumers/types/node_modules/.bin/tsc
for config in tsconfig.json tsconfig.node.json; do
    (cd "$consumers/types" && "$tsc" -p "$config" --noEmit --strict) ||
        fail "tests/consumers/types/good.ts does not compile with $config"
    say "tsc --strict -p $config (good.ts): compiles"
done
bad_status=0
bad_output=$(cd "$consumers/types" && "$tsc" -p tsconfig.bad.json --noEmit --strict 2>&1) || bad_status=$?
echo "$bad_output" | sed 's/^/    /'
[ "$bad_status" -ne 0 ] || fail "tests/consumers/types/bad.ts compiled: misspelt names are not caught"
# Each misspelt name: an error on its line of bad.ts, and the name in tsc's message.
for misspelt in conectTimeoutMs opne; do
    line=$(grep -n "$misspelt" "$consumers/types/bad.ts" | grep -v '^[0-9]*:[[:space:]]*//' | cut -d: -f1)
    { [ -n "$line" ] && grep -q "^bad\.ts($line,[0-9]*): error" <<<"$bad_output" && grep -q "$misspelt" <<<"$bad_output"; } ||
        fail "tsc did not report the misspelt '$misspelt' on its line of bad.ts"
done
if grep -E '^[^ ].*\([0-9]+,[0-9]+\): error' <<<"$bad_output" | grep -qv '^bad\.ts('; then
    fail "tsc reported errors outside bad.ts"
fi
say "tsc --strict -p tsconfig.bad.json (bad.ts): fails (exit $bad_status) on 'opne' and 'conectTimeoutMs', as it must"
timed "typescript"

# Bundlers.
(cd "$consumers/app" && node_modules/.bin/vite build)
timed "vite build"
(cd "$consumers/app" && node_modules/.bin/webpack --config webpack.config.js --no-stats)
timed "webpack build"

# The site: both builds and the plain page with the unpacked tarball beside it.
cp -r "$consumers/app/dist/vite" "$consumers/app/dist/webpack" "$site/"
mkdir -p "$site/plain/realtime-client"
cp "$consumers/plain/index.html" "$consumers/app/src/probe.js" "$site/plain/"
tar -xzf "$tarball" -C "$site/plain/realtime-client" --strip-components=1

"$server_bin" --listen 127.0.0.1:0 --allow-loopback-origins --static-dir "$site" >"$server_log" 2>&1 &
server_pid=$!
address=$(wait_for_address "$server_pid" "$server_log" "${SERVER_STARTUP_TIMEOUT:-60}") || fail "the reference server did not start"
say "reference server at http://$address/ serving $site"
realtime="server=http://$address/realtime"

# The same app in Vite's dev server (another loopback origin: the server allows loopback origins),
# where dependency pre-bundling would break the wasm URL without vite.config.js's optimizeDeps.
vite_port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
# NO_COLOR: with CI set, Vite's colour library turns colours on and splits the URL with escapes.
(cd "$consumers/app" && NO_COLOR=1 exec node_modules/.bin/vite --host 127.0.0.1 --port "$vite_port" --strictPort --logLevel info) >"$vite_log" 2>&1 &
vite_pid=$!
deadline=$((SECONDS + 60))
until sed 's/\x1b\[[0-9;]*m//g' "$vite_log" | grep -q "http://127.0.0.1:$vite_port/"; do
    if ! kill -0 "$vite_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        cat "$vite_log" >&2
        fail "the Vite dev server did not start"
    fi
    sleep 0.2
done
say "vite dev server at http://127.0.0.1:$vite_port/"

status=0
(cd "$consumers/app" && node run-pages.mjs \
    "vite=http://$address/vite/?$realtime" \
    "vite-dev=http://127.0.0.1:$vite_port/?$realtime" \
    "webpack=http://$address/webpack/?$realtime" \
    "plain=http://$address/plain/?$realtime" \
    "plain-long-polling=http://$address/plain/?$realtime&transport=long-polling") || status=$?
timed "browser"
if [ "$status" -ne 0 ]; then
    echo "consumer-tests: reference server output:" >&2
    cat "$server_log" >&2
    echo "consumer-tests: vite dev server output:" >&2
    cat "$vite_log" >&2
    fail "a consumer page failed"
fi
say "all consumers passed in $((SECONDS - all_started))s"
