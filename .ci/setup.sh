#!/usr/bin/env bash
# Installs what `make demo` and `make test` need and skips whatever is already there,
# so a second run installs nothing. Assumes a Debian machine with rustup, cargo, git,
# make and apt; runs as root (CI does) or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }

# The Rust target the client is compiled for.
if rustup target list --installed | grep -qx 'wasm32-unknown-unknown'; then
    say "wasm32-unknown-unknown target present"
else
    rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly: the CLI
# refuses to process a module built by another version, and wasm-pack would otherwise
# try to download a prebuilt copy (this machine has no network but the registries).
wasm_bindgen_version=$(awk '
    $0 == "name = \"wasm-bindgen\"" { in_entry = 1; next }
    in_entry && /^version = / { gsub(/"/, "", $3); print $3; exit }
    /^\[\[package\]\]/ { in_entry = 0 }
' Cargo.lock)
if [ -z "$wasm_bindgen_version" ]; then
    echo "setup: cannot find the wasm-bindgen package in Cargo.lock" >&2
    exit 1
fi
installed_bindgen=$( (wasm-bindgen --version 2>/dev/null || true) | awk '{print $2}')
installed_runner=$(command -v wasm-bindgen-test-runner || true)
if [ "$installed_bindgen" = "$wasm_bindgen_version" ] && [ -n "$installed_runner" ]; then
    say "wasm-bindgen-cli $wasm_bindgen_version present"
else
    say "installing wasm-bindgen-cli $wasm_bindgen_version (found: ${installed_bindgen:-none})"
    cargo install wasm-bindgen-cli --version "$wasm_bindgen_version" --locked --force
    installed_bindgen=$(wasm-bindgen --version | awk '{print $2}')
    if [ "$installed_bindgen" != "$wasm_bindgen_version" ]; then
        echo "setup: wasm-bindgen on PATH ($(command -v wasm-bindgen)) is $installed_bindgen," \
            "not $wasm_bindgen_version: put ~/.cargo/bin first on PATH" >&2
        exit 1
    fi
fi

if command -v wasm-pack >/dev/null; then
    say "$(wasm-pack --version) present"
else
    cargo install wasm-pack --locked
fi

# Browser tests drive Debian's Chromium through its chromedriver; wasm-opt comes
# from binaryen. wasm-pack finds all three on PATH and downloads nothing.
missing_packages=()
command -v chromium >/dev/null || missing_packages+=(chromium)
command -v chromedriver >/dev/null || missing_packages+=(chromium-driver)
command -v wasm-opt >/dev/null || missing_packages+=(binaryen)
# The reverse-proxy tests (.ci/proxy-tests.sh) run Debian's nginx and haproxy in the foreground
# on loopback ports; both live in /usr/sbin.
PATH=$PATH:/usr/sbin:/sbin command -v nginx >/dev/null || missing_packages+=(nginx)
PATH=$PATH:/usr/sbin:/sbin command -v haproxy >/dev/null || missing_packages+=(haproxy)
# The cluster tests start Debian's redis-server themselves on a loopback port.
command -v redis-server >/dev/null || missing_packages+=(redis-server)
if [ ${#missing_packages[@]} -eq 0 ]; then
    say "chromium, chromedriver, wasm-opt, nginx, haproxy and redis-server present"
else
    sudo_prefix=()
    if [ "$(id -u)" -ne 0 ]; then sudo_prefix=(sudo); fi
    say "installing Debian packages: ${missing_packages[*]}"
    # nginx, haproxy and redis must not start as system services (port 80, left running): a
    # policy-rc.d that denies every start, only for this install, unless one is already there.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo_prefix[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo_prefix[@]}" chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    "${sudo_prefix[@]}" apt-get update
    "${sudo_prefix[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y "${missing_packages[@]}"
    if [ -n "$own_policy" ]; then "${sudo_prefix[@]}" rm -f /usr/sbin/policy-rc.d; fi
fi
