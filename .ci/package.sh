#!/usr/bin/env bash
# `make package`: builds the npm package `realtime-client` into pkg/ and packs it.
#
#   1. wasm-opt from npm's binaryen (pinned in .ci/npm-tools/package-lock.json with terser, installed
#      into .tools/npm-tools once; Debian's binaryen is version 108) goes first on PATH, because
#      wasm-pack runs whichever wasm-opt it finds there, with Cargo.toml's wasm-opt flags.
#   2. wasm-pack build --release --target web --out-dir pkg, with source paths remapped so that the
#      wasm holds no paths of this machine (target/package/ is its own target directory). Then the
#      post-build step (.ci/post-build.sh): short import names in the wasm and the glue, the glue
#      minified, both checked.
#   3. pkg-template/ is merged in: package.json over the generated one (name, version,
#      description, license, repository come from Cargo.toml through wasm-pack; the rest from the
#      template), the entry (index.js, index.d.ts) and the npm README.
#   4. npm pack; the tarball's file list is checked and its path printed.
#   5. The gzipped size of what a user ships (the .wasm, the generated .js and index.js, each
#      gzip -9) is printed beside the budget in .ci/size-budget; above the budget this fails.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD

say() { echo "package: $*"; }
fail() { echo "package: $*" >&2; exit 1; }

# 1. wasm-opt 12x from npm. Reinstalled only when the lock file changed.
. .ci/lib.sh
tools_dir=$(ensure_npm_tools "$repo_root")
say "npm tools in ${tools_dir#"$repo_root"/}"
export PATH="$tools_dir/node_modules/.bin:$PATH"
wasm_opt_version=$(wasm-opt --version)
say "wasm-opt on PATH: $(command -v wasm-opt): $wasm_opt_version"
case "$wasm_opt_version" in
    *"version 12"[0-9]*) ;;
    *) fail "expected wasm-opt version 12x from npm's binaryen, got: $wasm_opt_version" ;;
esac

# 2. The wasm package. Panic locations in the wasm name source files; without remapping they hold
# this machine's paths ($CARGO_HOME/registry/src/..., the toolchain's rust-src), which differ from
# machine to machine, leak home directories and make the size depend on where the build ran.
# Remapped, the package is the same wherever it is built (and 70 B gz smaller). The flags change
# the build, so it has its own target directory rather than rebuilding `make size`'s each time.
# (RUSTFLAGS replaces any rustflags in a .cargo/config.toml: keep such flags in Cargo.toml.)
sysroot=$(rustc --print sysroot)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# --keep-section=name: the function names survive strip = true (which drops the name, producers and
# target_features sections), for the post-build step, which finds the formatting methods by them
# and whose wasm-opt drops them (.ci/post-build.mjs, step 0). The target_features section stays
# out: with it wasm-bindgen would switch to externref glue (+700 B gzipped, measured).
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--remap-path-prefix=$cargo_home/registry/src/=/cargo/ --remap-path-prefix=$sysroot/lib/rustlib/src/rust/=/rust/ --remap-path-prefix=$repo_root/= -C link-arg=--keep-section=name"
export CARGO_TARGET_DIR=${PACKAGE_TARGET_DIR:-$repo_root/target/package}
rm -rf pkg
# --no-default-features: no_std with a trapping panic handler, what ships (src/lib.rs).
wasm-pack build --release --target web --out-dir pkg -- --no-default-features
if grep -aqF -e "$repo_root/" -e "$cargo_home/" -e "$sysroot/" pkg/realtime_client_bg.wasm; then
    fail "pkg/realtime_client_bg.wasm still holds a path of this machine: $(grep -aoF -e "$repo_root/" -e "$cargo_home/" -e "$sysroot/" pkg/realtime_client_bg.wasm | head -n 1)"
fi
# The post-build step, before anything is copied or packed: what is measured and packed below is
# what it wrote.
.ci/post-build.sh pkg

# 3. Merge pkg-template/. JS snippets (#[wasm_bindgen(module = ...)]: src/client/hub.js) land in
# pkg/snippets/, and the post-build step inlines them into the glue and removes the directory; one
# left behind is in neither "files" nor "sideEffects": false: fail rather than ship without it.
[ ! -e pkg/snippets ] || fail "wasm-pack wrote pkg/snippets/: add it to pkg-template/package.json's files (and review sideEffects)"
cargo_version=$(cargo metadata --no-deps --format-version 1 \
    | node -e 'const m = JSON.parse(require("fs").readFileSync(0, "utf8"));
               process.stdout.write(m.packages.find((p) => p.name === "realtime-client").version)')
cp pkg-template/index.js pkg-template/index.d.ts pkg-template/raw.d.ts pkg-template/README.md \
    pkg-template/LICENSE-MIT pkg-template/LICENSE-APACHE pkg/
node --input-type=module - "$cargo_version" <<'EOF'
import { readFileSync, writeFileSync } from 'node:fs';
const cargoVersion = process.argv[2];
const generated = JSON.parse(readFileSync('pkg/package.json', 'utf8'));
const template = JSON.parse(readFileSync('pkg-template/package.json', 'utf8'));
for (const field of ['version', 'description', 'license', 'repository']) {
    if (field in template) throw new Error(`pkg-template/package.json must not set '${field}': it comes from Cargo.toml`);
    if (!(field in generated)) throw new Error(`wasm-pack's package.json has no '${field}': set it in Cargo.toml`);
}
if (generated.version !== cargoVersion) {
    throw new Error(`wasm-pack wrote version ${generated.version}, Cargo.toml says ${cargoVersion}`);
}
const merged = {
    name: template.name,
    version: generated.version,
    description: generated.description,
    license: generated.license,
    repository: generated.repository,
    ...template,
    keywords: [...new Set([...(generated.keywords ?? []), ...(template.keywords ?? [])])],
};
writeFileSync('pkg/package.json', JSON.stringify(merged, null, 2) + '\n');
EOF
# wasm-pack's pkg/.gitignore ('*') keeps pkg/ out of git; npm pack goes by "files".
say "realtime-client $cargo_version merged with pkg-template/"

# 4. The tarball users install.
tarball=$(cd pkg && npm pack --silent --loglevel=error | tail -n 1)
tarball_path=$repo_root/pkg/$tarball
[ -f "$tarball_path" ] || fail "npm pack did not write pkg/$tarball"
expected_files=$(printf '%s\n' LICENSE-APACHE LICENSE-MIT README.md index.d.ts index.js package.json raw.d.ts realtime_client.d.ts \
    realtime_client.js realtime_client_bg.wasm realtime_client_bg.wasm.d.ts)
packed_files=$(tar -tzf "$tarball_path" | sed 's#^package/##' | sort)
if [ "$packed_files" != "$expected_files" ]; then
    fail "the tarball holds:
$packed_files
expected:
$expected_files"
fi
say "tarball: $tarball_path ($(stat -c %s "$tarball_path") B)"

# 5. Size against the budget.
gzipped_bytes() {
    local total=0 file
    for file in "$@"; do
        total=$((total + $(gzip -9 -c "$file" | wc -c)))
    done
    echo "$total"
}
wasm_bytes=$(gzipped_bytes pkg/realtime_client_bg.wasm)
js_bytes=$(gzipped_bytes pkg/realtime_client.js pkg/index.js)
size=$((wasm_bytes + js_bytes))
budget=$(grep -v '^[[:space:]]*#' .ci/size-budget | tr -d '[:space:]')
[[ "$budget" =~ ^[0-9]+$ ]] || fail ".ci/size-budget holds no byte count"
say "size (gzip -9, wasm-opt ${wasm_opt_version#wasm-opt }): wasm $wasm_bytes B + js $js_bytes B = $size B; budget $budget B (.ci/size-budget)"
if [ "$size" -gt "$budget" ]; then
    fail "the package grew past its budget by $((size - budget)) B: shrink it (twiggy top), or raise .ci/size-budget in a commit that says why"
fi
