#!/usr/bin/env bash
# Architecture invariants that a grep can check (README, "Architecture Invariant" lines).
# Comment lines are ignored; so are the host-only test modules, which never ship.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
fail() { echo "invariant broken: $*" >&2; status=1; }

# Matches of $1 in shipped code under $2: not comments, not in a host-only test module (a
# `#[cfg(test)]` block, or a `tests.rs` file that its parent declares under `#[cfg(test)]`).
shipped_grep() {
    { grep -rnE "$1" "$2" --include=*.rs --exclude=tests.rs --exclude-dir=tests || true; } | { grep -vE '^[^:]+:[0-9]+:\s*//' || true; } | while IFS=: read -r file line rest; do
        test_start=$(grep -n '^#\[cfg(test)\]' "$file" | head -n1 | cut -d: -f1 || true)
        if [ -z "$test_start" ] || [ "$line" -lt "$test_start" ]; then echo "$file:$line:$rest"; fi
    done
}

# The core is sans-IO: no browser, JS or async-runtime crates.
found=$(shipped_grep '\b(wasm_bindgen|js_sys|web_sys|gloo_timers|tokio|axum)\b' src/core)
[ -z "$found" ] || fail "src/core imports a browser, JS or runtime crate:
$found"
# The core never reads a clock or draws randomness (time and jitter are inputs).
found=$(shipped_grep 'Instant::now|SystemTime|thread_rng|getrandom' src/core)
[ -z "$found" ] || fail "src/core reads a clock or a random source:
$found"
# No closure is leaked by design in library code.
found=$(shipped_grep 'Closure::forget|\.forget\(\)|into_js_value|once_into_js' src)
[ -z "$found" ] || fail "library code leaks a closure:
$found"
# No formatting machinery in the shipped path (core::fmt costs kilobytes of wasm).
found=$(shipped_grep '\b(format|println|eprintln|print|write|writeln|panic|unreachable|todo|unimplemented)!' src)
[ -z "$found" ] || fail "a formatting or panicking macro in shipped code:
$found"
# No unwrap or expect in shipped code: input, the network and the browser must not panic it.
found=$(shipped_grep '\.unwrap\(\)|\.expect\(' src)
[ -z "$found" ] || fail "unwrap/expect in shipped code:
$found"
# Only the facade and the adapters touch wasm_bindgen.
found=$(shipped_grep '#\[wasm_bindgen' src | grep -vE '^src/(client|transport)/' || true)
[ -z "$found" ] || fail "#[wasm_bindgen] outside the facade and adapters:
$found"
# Every test module file is declared under #[cfg(test)] by its parent, so it never ships.
for file in $(find src www/server/src -name tests.rs -o -path '*/tests/mod.rs'); do
    case "$file" in */tests/mod.rs) parent="$(dirname "$(dirname "$file")")/mod.rs" ;; *) parent="$(dirname "$file")/mod.rs" ;; esac
    grep -qB2 '^mod tests;' "$parent" 2>/dev/null && grep -B2 '^mod tests;' "$parent" | grep -q '#\[cfg(test)\]' \
        || fail "$file is not declared under #[cfg(test)] in $parent"
done
# Modules stay small enough to read: at most 600 lines before a file's tests.
for file in $(find src www/server/src -name '*.rs' ! -name tests.rs ! -path '*/tests/*'); do
    test_start=$(grep -n '^#\[cfg(test)\]' "$file" | head -n1 | cut -d: -f1 || true)
    lines=$(( ${test_start:-$(( $(wc -l < "$file") + 1 ))} - 1 ))
    [ "$lines" -le 600 ] || fail "$file has $lines lines before its tests (at most 600)"
done
if [ "$status" -eq 0 ]; then echo "architecture invariants: ok"; fi
exit "$status"
