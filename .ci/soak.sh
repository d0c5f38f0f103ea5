#!/usr/bin/env bash
# `make soak`: the issue's attacks at full size against a release reference server, one after
# another (tests/soak/src/soak.rs), plus 5,000 sessions with traffic for 60 s; a table of the
# server's peak RSS, the refusals counted in /metrics and a legitimate client's p99 per attack.
# Everything on 127.0.0.1 (attacker) and 127.0.0.2 (legitimate client); a few minutes in all.
#   SOAK_SCALE=0.1          a tenth of every count (a quick run)
#   SOAK_TRAFFIC_SECS=10    a shorter traffic phase
#   SOAK_SERVER_FLAGS="..." extra server flags (the limits' own flags, for example)
#   SOAK_SERVER_NOFILE=N    the server's ulimit -n (default 65536; the idle-socket attack uses 1024)
#   REALTIME_SERVER_BIN     the server executable (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
server_bin=${REALTIME_SERVER_BIN:-}
if [ -z "$server_bin" ]; then
    cargo build --release -p realtime-server
    server_bin=$target_dir/release/realtime-server
fi
# The attacker is built in release too: thousands of sockets from a debug build would measure it.
cargo build --release -p soak
# The attacker side holds ~10,000 sockets at once: its own descriptor limit up to the hard one
# (the server's is set separately by the harness, per attack).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$target_dir/release/soak" run --server-bin "$server_bin"
