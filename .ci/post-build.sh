#!/usr/bin/env bash
# The post-build step of a wasm-pack output directory (`--target web`), in place:
#
#   .ci/post-build.sh DIR      (pkg for `make package`, www/public/pkg for `make size`, `make demo` and the demo test)
#   .ci/post-build.sh --test   its tests (.ci/post-build.test.mjs, node --test; `make test-host` runs them)
#
# gives wasm-bindgen's imports short names in the wasm and in the glue, inlines the JS snippets
# (src/client/hub.js) into the glue and removes DIR/snippets, and minifies the glue
# (.ci/post-build.mjs says how, and what it checks before and after). Run it once, right after
# wasm-pack: a second run fails, since the imports are no longer wasm-bindgen's.
#
# Its tools: terser from .ci/npm-tools (installed once into .tools/npm-tools), and the
# wasm-import-names helper of this workspace (.ci/wasm-import-names, a debug build in target/, the
# directory `cargo test --workspace` uses; the RUSTFLAGS and CARGO_TARGET_DIR of the package build
# are not meant for it).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
repo_root=$PWD
[ $# -eq 1 ] && { [ "$1" = --test ] || [ -d "$1" ]; } ||
    { echo "usage: .ci/post-build.sh DIR (a wasm-pack output directory) | --test" >&2; exit 2; }

npm_tools=$(ensure_npm_tools "$repo_root")
helper_target=$repo_root/target
env -u RUSTFLAGS CARGO_TARGET_DIR="$helper_target" cargo build --quiet -p wasm-import-names
helper=$helper_target/debug/wasm-import-names
if [ "$1" = --test ]; then
    WASM_IMPORT_NAMES_BIN=$helper NPM_TOOLS_DIR=$npm_tools node --test .ci/post-build.test.mjs
else
    node .ci/post-build.mjs "$1" "$helper" "$npm_tools"
fi
