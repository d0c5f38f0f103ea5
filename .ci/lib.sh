# Shared shell helpers of the .ci scripts (sourced, not run).

# wait_for_address PID LOG TIMEOUT_S [PREFIX]: prints ADDR (host:port) from the first line of LOG
# that reads `PREFIXlistening on http(s)://ADDR` (PREFIX is a sed regex, default none). Fails, with
# the log on stderr, when the process exits first or TIMEOUT_S pass. Create LOG before starting the
# process: a background job opens its redirection only once it runs.
wait_for_address() {
    local pid=$1 log=$2 timeout_s=$3 prefix=${4:-} address=""
    local deadline=$((SECONDS + timeout_s))
    while [ -z "$address" ]; do
        address=$(sed -n "s#^${prefix}listening on https\{0,1\}://\([^ ]*\).*\$#\1#p" "$log" | head -n 1)
        [ -n "$address" ] && break
        if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "no '${prefix}listening on' line within ${timeout_s} s (or the process exited); its output:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    printf '%s\n' "$address"
}

# ensure_npm_tools REPO_ROOT: installs the build tools pinned in .ci/npm-tools/package-lock.json
# (binaryen's wasm-opt 12x, terser) into REPO_ROOT/.tools/npm-tools, unless that install was made
# from the same lock file, and prints the directory.
ensure_npm_tools() {
    local repo_root=$1 tools_dir lock_hash
    tools_dir=$repo_root/.tools/npm-tools
    lock_hash=$(sha256sum "$repo_root/.ci/npm-tools/package-lock.json" | cut -d' ' -f1)
    if [ ! -x "$tools_dir/node_modules/.bin/wasm-opt" ] || [ ! -d "$tools_dir/node_modules/terser" ] ||
        [ "$(cat "$tools_dir/.lock-sha256" 2>/dev/null)" != "$lock_hash" ]; then
        echo "npm tools: installing .ci/npm-tools/package-lock.json into ${tools_dir#"$repo_root"/}" >&2
        rm -rf "$tools_dir"
        mkdir -p "$tools_dir"
        cp "$repo_root/.ci/npm-tools/package.json" "$repo_root/.ci/npm-tools/package-lock.json" "$tools_dir/"
        (cd "$tools_dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
        echo "$lock_hash" >"$tools_dir/.lock-sha256"
    fi
    printf '%s\n' "$tools_dir"
}

# stop_pids PID...: SIGTERM to each, up to 5 s for it to exit, then SIGKILL; reaps them. For the
# EXIT traps of scripts that start servers (by PID, never as services).
stop_pids() {
    local pid
    for pid in "$@"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
