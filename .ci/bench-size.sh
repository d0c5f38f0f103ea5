#!/usr/bin/env bash
# `make bench` (size part): what a user ships, realtime-client beside socket.io-client 4,
# @microsoft/signalr 8 and centrifuge 5, each bundled by esbuild (minified, ESM, browser) and
# compressed the same way (each file gzip -9 and brotli -q 11); prints a table with the ratios,
# the package by the `make package` formula and the size targets (tests/bench/targets.mjs), and
# writes target/bench/size.json. Method: tests/bench-server/size.mjs.
#
#   .ci/bench-size.sh         needs pkg/ from `make package` (make bench builds it first)
#
# The npm packages (esbuild, socket.io-client, @microsoft/signalr, centrifuge; pinned by
# tests/bench-server/package-lock.json) are installed into tests/bench-server/node_modules once,
# and again only when the lock file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench-size: $*"; }
fail() { echo "bench-size: $*" >&2; exit 1; }

for file in pkg/realtime_client_bg.wasm pkg/realtime_client.js pkg/index.js; do
    [ -f "$file" ] || fail "$file is missing: run 'make package' first (make bench does)"
done

bench_dir=tests/bench-server
lock_hash=$(sha256sum "$bench_dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$bench_dir/node_modules/.lock-sha256" 2>/dev/null)" != "$lock_hash" ]; then
    say "installing $bench_dir's npm packages (npm ci)"
    (cd "$bench_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$bench_dir/node_modules/.lock-sha256"
fi

export BENCH_DATE BENCH_NPROC BENCH_CPU BENCH_COMMAND
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
BENCH_NPROC=$(nproc)
BENCH_CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
BENCH_COMMAND=${BENCH_COMMAND:-.ci/bench-size.sh}
say "$BENCH_DATE, $BENCH_NPROC x ${BENCH_CPU:-unknown CPU}, node $(node --version), command: $BENCH_COMMAND"
mkdir -p target/bench
node "$bench_dir/size.mjs" pkg target/bench/size.json

# The number .ci/package.sh checks against .ci/size-budget (the files as packed, not minified by a
# bundler; gzip -9 of each file by name, so each gzip header also holds the file name), for
# comparison with the table.
packaged=0
for file in pkg/realtime_client_bg.wasm pkg/realtime_client.js pkg/index.js; do
    packaged=$((packaged + $(gzip -9 -c "$file" | wc -c)))
done
say "as .ci/package.sh counts it (unbundled files, gzip -9 each): $packaged B (budget $(grep -v '^[[:space:]]*#' .ci/size-budget | tr -d '[:space:]') B)"
say "wrote target/bench/size.json"
