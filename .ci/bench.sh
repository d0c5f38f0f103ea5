#!/usr/bin/env bash
# `make bench` and `make bench-build`: the browser benchmarks in tests/bench (see bench.mjs there
# for the method). Everything runs on 127.0.0.1; nothing is downloaded but the npm packages pinned
# by tests/bench/package-lock.json (Chromium is Debian's /usr/bin/chromium; no browser download).
#
#   .ci/bench.sh build   npm ci when node_modules is missing or from another lock file, the packed
#                        tarball pkg/realtime-client-<version>.tgz installed (built by
#                        .ci/package.sh when missing), socket.io-client bundled, scripts
#                        syntax-checked, the page type-checked. Fast; runs no benchmark.
#   .ci/bench.sh         the same, then builds target/server/realtime-server and the fault proxy
#                        and runs every benchmark: a table on stdout, JSON in
#                        target/bench/results.json (BENCH_OUT overrides). BENCH_QUICK=1: 10x fewer
#                        messages and connections. BENCH_ROUNDS=N (default 3): every case N times,
#                        round after round; each ratio is the median over the rounds, with its
#                        spread, and the targets (tests/bench/targets.mjs) are judged on it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
bench=$repo_root/tests/bench
say() { echo "bench: $*"; }
fail() { echo "bench: $*" >&2; exit 1; }

mode=${1:-run}
case "$mode" in build | run) ;; *) fail "usage: .ci/bench.sh [build]" ;; esac

# The npm package users install. `make test` has built it by the time it runs bench-build.
version=$(node -p 'require("./pkg/package.json").version' 2>/dev/null || true)
tarball=$repo_root/pkg/realtime-client-$version.tgz
if [ -z "$version" ] || [ ! -f "$tarball" ]; then
    say "no packed tarball in pkg/: running .ci/package.sh"
    .ci/package.sh
    version=$(node -p 'require("./pkg/package.json").version')
    tarball=$repo_root/pkg/realtime-client-$version.tgz
fi

lock_hash=$(sha256sum "$bench/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$bench/node_modules/.lock-sha256" 2>/dev/null)" = "$lock_hash" ]; then
    say "tests/bench: dependencies present"
else
    say "tests/bench: npm ci"
    (cd "$bench" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$bench/node_modules/.lock-sha256"
fi
# Reinstalled only when the tarball changed (a new build), so a warm bench-build stays fast.
tarball_hash=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ "$(cat "$bench/node_modules/.tarball-sha256" 2>/dev/null)" = "$tarball_hash" ] && [ -f "$bench/node_modules/realtime-client/index.js" ]; then
    say "tests/bench: realtime-client $version present"
else
    (cd "$bench" && npm install --no-save --no-audit --no-fund --prefer-offline --loglevel=error "$tarball")
    echo "$tarball_hash" >"$bench/node_modules/.tarball-sha256"
fi
installed=$(cd "$bench" && node -p 'require("./node_modules/realtime-client/package.json").version')
[ "$installed" = "$version" ] || fail "tests/bench has realtime-client $installed, not $version"
(cd "$bench" && node build.mjs)
[ "$mode" = build ] && exit 0

cargo build --profile server -p realtime-server
cargo build -p fault-proxy
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
export REALTIME_SERVER_BIN=${REALTIME_SERVER_BIN:-$target_dir/server/realtime-server}
export FAULT_PROXY_BIN=${FAULT_PROXY_BIN:-$target_dir/debug/fault-proxy}
export BENCH_COMMAND=${BENCH_COMMAND:-"${BENCH_QUICK:+BENCH_QUICK=$BENCH_QUICK }${BENCH_ROUNDS:+BENCH_ROUNDS=$BENCH_ROUNDS }make bench"}
say "realtime-server $REALTIME_SERVER_BIN, fault-proxy $FAULT_PROXY_BIN, Chromium ${CHROMIUM:-/usr/bin/chromium}"
cd "$bench"
exec node bench.mjs
