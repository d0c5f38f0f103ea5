#!/usr/bin/env bash
# Builds the release package into www/public/pkg, runs the post-build step on it (short import names,
# minified glue: .ci/post-build.sh, as `make package` does, so that the demo runs what ships), and
# prints the gzipped size of what a user ships: the .wasm plus the JavaScript glue (snippets
# included), each gzip -9.
set -euo pipefail
cd "$(dirname "$0")/.."

wasm-pack build --release --target web --out-dir www/public/pkg -- --no-default-features
.ci/post-build.sh www/public/pkg

gzipped_bytes() {
    local total=0 file
    for file in "$@"; do
        total=$((total + $(gzip -9 -c "$file" | wc -c)))
    done
    echo "$total"
}

mapfile -t wasm_files < <(find www/public/pkg -name '*.wasm' | sort)
mapfile -t js_files < <(find www/public/pkg -name '*.js' | sort)
if [ ${#wasm_files[@]} -eq 0 ] || [ ${#js_files[@]} -eq 0 ]; then
    echo "package-size: www/public/pkg has no .wasm or no .js after the build" >&2
    exit 1
fi
wasm_bytes=$(gzipped_bytes "${wasm_files[@]}")
js_bytes=$(gzipped_bytes "${js_files[@]}")
echo "package files: ${wasm_files[*]} ${js_files[*]}"
echo "package size (gzip -9): wasm $wasm_bytes B + js $js_bytes B = $((wasm_bytes + js_bytes)) B"
