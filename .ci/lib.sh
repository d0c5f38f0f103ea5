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
