#!/usr/bin/env bash
# The reverse-proxy configurations of www/deploy/ tested for real: a release reference server,
# then nginx and haproxy (Debian's, installed by .ci/setup.sh) each on a free loopback port with a
# config generated from www/deploy/nginx.conf or www/deploy/haproxy.cfg (only the listen and
# upstream addresses substituted), started in the foreground and stopped by PID (never as system
# services). Through each proxy:
#   - tests/soak's proxy-check: a WebSocket upgrade reaches the hello (and a ping its pong); SSE
#     events published after the stream opened arrive within 100 ms, measured; a long poll, a held
#     poll answered by a publish, and a POST /realtime/send whose echo and ack come back;
#   - curl: a poll answers 200 with the frames content type and a hello; the admin paths
#     (/metrics, /realtime/stats, /realtime/kick, %-encoded too) answer 404 at the proxy;
#   - curl from 127.0.0.2 through a second instance of the same config whose upstream is a header
#     echo (node): X-Forwarded-For carries the client address after what the client sent,
#     X-Forwarded-Host the public host, X-Forwarded-Proto the scheme, Host the upstream address.
# REALTIME_SERVER_BIN overrides the server executable (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
repo_root=$PWD
target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
say() { echo "proxy-tests: $*"; }
fail() { echo "proxy-tests: FAILED: $*" >&2; exit 1; }

export PATH=$PATH:/usr/sbin:/sbin
command -v nginx >/dev/null || fail "nginx is missing (make setup installs it)"
command -v haproxy >/dev/null || fail "haproxy is missing (make setup installs it)"

server_bin=${REALTIME_SERVER_BIN:-}
if [ -z "$server_bin" ]; then
    cargo build --release -p realtime-server
    server_bin=$target_dir/release/realtime-server
fi
cargo build -p soak
soak_bin=$target_dir/debug/soak

work=$(mktemp -d -t realtime-proxy-tests.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    stop_pids "${pids[@]}"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

on_failure() { # shows every log of this run
    local log
    for log in "$work"/*.log "$work"/*/*.log; do
        [ -f "$log" ] || continue
        echo "--- $log" >&2
        tail -n 30 "$log" >&2
    done
}

# The server as deployed behind a proxy: on loopback, trusting that proxy's forwarded headers,
# with an admin token (so that the admin paths are really open on the server itself, and the
# proxy is what closes them). Behind a proxy, loopback is public to the startup rule: this test
# of the proxies' transports runs without tokens, so it says --insecure-open.
admin_token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
: >"$work/server.log"
REALTIME_ADMIN_TOKEN=$admin_token "$server_bin" --listen 127.0.0.1:0 --trusted-proxy 127.0.0.1 --insecure-open >"$work/server.log" 2>&1 &
pids+=($!)
server=$(wait_for_address "${pids[-1]}" "$work/server.log" 30) || fail "the server did not start"
say "server on http://$server"
answer=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $admin_token" "http://$server/metrics")
[ "$answer" = 200 ] || fail "GET /metrics on the server itself answered $answer"

# A header echo: answers every request with its headers as JSON.
: >"$work/echo.log"
node -e '
const server = require("node:http").createServer((request, response) => {
  response.setHeader("content-type", "application/json");
  response.end(JSON.stringify(request.headers));
});
server.listen(0, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${server.address().port}`));
' >"$work/echo.log" 2>&1 &
pids+=($!)
echo_server=$(wait_for_address "${pids[-1]}" "$work/echo.log" 30) || fail "the header echo did not start"

read -r -d '' -a ports < <("$soak_bin" free-ports 4 && printf '\0') || true
[ "${#ports[@]}" -eq 4 ] || fail "no free ports"

# wait_port PORT PID NAME: until something accepts on 127.0.0.1:PORT (at most 10 s).
wait_port() {
    local deadline=$((SECONDS + 10))
    until curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; do
        kill -0 "$2" 2>/dev/null || { on_failure; fail "$3 exited at start"; }
        [ "$SECONDS" -lt "$deadline" ] || { on_failure; fail "$3 not listening on $1 within 10 s"; }
        sleep 0.1
    done
}

# substitute FILE LISTEN_SED LISTEN_ADDRESS UPSTREAM OUT: the deploy file with this test's
# addresses (LISTEN_SED rewrites the listen line to LISTEN_ADDRESS); fails unless both happened.
substitute() {
    sed -e "$2" -e "s|127\.0\.0\.1:8080|$4|g" "$1" >"$5"
    grep -qF "$4" "$5" && grep -qF "$3" "$5" || fail "could not substitute the addresses in $1"
}

start_nginx() { # NAME PORT UPSTREAM
    local dir=$work/$1
    mkdir -p "$dir"
    substitute www/deploy/nginx.conf "s|^\( *\)listen 80;|\1listen 127.0.0.1:$2;|" "127.0.0.1:$2" "$3" "$dir/site.conf"
    # Test wrapper only: foreground, one process, everything under $dir.
    cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/site.conf;
}
CONF
    nginx -t -q -p "$dir" -c "$dir/nginx.conf" || fail "nginx refuses the config generated from www/deploy/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    pids+=($!)
    wait_port "$2" "${pids[-1]}" "nginx ($1)"
}

start_haproxy() { # NAME PORT UPSTREAM
    local dir=$work/$1
    mkdir -p "$dir"
    substitute www/deploy/haproxy.cfg "s|bind :80\$|bind 127.0.0.1:$2|" "127.0.0.1:$2" "$3" "$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" || fail "haproxy refuses the config generated from www/deploy/haproxy.cfg"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    pids+=($!)
    wait_port "$2" "${pids[-1]}" "haproxy ($1)"
}

# check_proxy NAME PORT ECHO_PORT
check_proxy() {
    local name=$1 port=$2 echo_port=$3 answer headers
    say "$name: realtime through 127.0.0.1:$port"
    "$soak_bin" proxy-check --proxy "127.0.0.1:$port" --direct "$server" | sed "s/^/proxy-tests: $name: /" ||
        { on_failure; fail "$name: proxy-check"; }
    [ "${PIPESTATUS[0]}" -eq 0 ] || { on_failure; fail "$name: proxy-check"; }
    answer=$(curl -sS --max-time 10 -o "$work/poll-body" -w '%{http_code} %{content_type}' \
        "http://127.0.0.1:$port/realtime/poll?room=curl-$name&rt_v=2&rt_conn=1")
    [ "$answer" = "200 application/x-realtime-frames" ] || { on_failure; fail "$name: curl poll answered '$answer'"; }
    head -c 6 "$work/poll-body" | grep -q '^hello ' || fail "$name: the poll body does not start with a hello"
    say "$name: curl GET /realtime/poll -> $answer, hello"
    for path in /metrics /realtime/stats /%6detrics; do
        answer=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $admin_token" \
            "http://127.0.0.1:$port$path")
        [ "$answer" = 404 ] || fail "$name: the admin path $path answered $answer through the proxy (expected 404)"
    done
    answer=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/realtime/kick?sid=x")
    [ "$answer" = 404 ] || fail "$name: POST /realtime/kick answered $answer through the proxy (expected 404)"
    say "$name: the admin paths answer 404 through the proxy, even with the token"
    headers=$(curl -sS --max-time 10 --interface 127.0.0.2 -H 'X-Forwarded-For: 203.0.113.9' \
        "http://127.0.0.1:$echo_port/realtime/x")
    for expected in "\"x-forwarded-for\":\"203.0.113.9, 127.0.0.2\"" "\"x-forwarded-host\":\"127.0.0.1:$echo_port\"" \
        "\"x-forwarded-proto\":\"http\"" "\"host\":\"$echo_server\""; do
        case "$headers" in
        *"$expected"*) ;;
        *) fail "$name: the upstream did not get $expected; it got $headers" ;;
        esac
    done
    say "$name: the upstream got X-Forwarded-For 203.0.113.9, 127.0.0.2 (client from 127.0.0.2), X-Forwarded-Host, -Proto and Host $echo_server"
}

start_nginx nginx "${ports[0]}" "$server"
start_nginx nginx-echo "${ports[1]}" "$echo_server"
check_proxy nginx "${ports[0]}" "${ports[1]}"
start_haproxy haproxy "${ports[2]}" "$server"
start_haproxy haproxy-echo "${ports[3]}" "$echo_server"
check_proxy haproxy "${ports[2]}" "${ports[3]}"
say "passed: nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), haproxy $(haproxy -v | head -n 1 | awk '{print $3}')"
