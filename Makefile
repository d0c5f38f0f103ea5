# Two commands on a fresh Debian machine with the Rust toolchain, git, make, Node/npm and apt:
#   make demo   install what is missing, build the wasm package, serve the demo on DEMO_ADDR
#   make test   install what is missing, run every test, build the release package, print its size
# Installs live in .ci/setup.sh; each is skipped when already present.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# TLS=1: serve the demo over HTTPS (HTTP/2 by ALPN) with a development certificate.
TLS ?=
ifeq ($(TLS),1)
DEMO_ADDR ?= 127.0.0.1:8443
DEMO_SCHEME := https
DEMO_FLAGS := --tls-self-signed
else
DEMO_ADDR ?= 127.0.0.1:8080
DEMO_SCHEME := http
DEMO_FLAGS :=
endif
# The channel the server publishes a clock tick to once per second (--demo-feed): the demo page's
# live feed, beside its chat rooms (www/public/demo.js subscribes to `clock`).
DEMO_FEED := clock
# The demo's admin token (made at each `make demo`; see the demo target).
DEMO_TOKEN_FILE := $(or $(CARGO_TARGET_DIR),target)/demo-admin-token
# --no-default-features: the shipped wasm is no_std with a trapping panic handler (src/lib.rs).
WASM_PACK_BUILD := wasm-pack build --release --target web --out-dir www/public/pkg -- --no-default-features

.PHONY: help setup demo test test-host test-proxies soak test-browser size clean

help:
	@echo "make demo          build the client and serve the demo page on http://127.0.0.1:8080/"
	@echo "make demo TLS=1    the same over HTTPS and HTTP/2 on https://127.0.0.1:8443/, with a development"
	@echo "                   certificate made at start; prints its SPKI fingerprint and the Chromium flag"
	@echo "                   that trusts it (--ignore-certificate-errors-spki-list=...)"
	@echo "make test          host tests, browser tests (headless Chromium), release size"
	@echo "make test-host     cargo test --workspace, the post-build step's tests and hub.js's (node --test)"
	@echo "make test-proxies  the nginx and haproxy configs of www/deploy/ in front of a release server"
	@echo "make soak          the attacks at full size against a release server (minutes; not in make test)"
	@echo "make test-browser  wasm-pack test --headless --chrome against a reference server"
	@echo "make size          release build into www/public/pkg (post-build step included) and its gzipped size"
	@echo "make package       the npm package in pkg/ and its tarball; checks the size budget"
	@echo "make test-consumers  the tarball in Vite, webpack, a plain page and tsc --strict"
	@echo "make test-demo     the demo clicked through by Playwright (screenshots in target/)"
	@echo "make bench         benchmarks: browser (vs raw WebSocket, socket.io), server, size, targets"
	@echo "make bench-profile the round trip cases under the JS Self-Profiling API: where the samples fell"
	@echo "make setup         install missing tools only"
	@echo "make clean         remove build output (target/, www/public/pkg/, pkg/, npm installs)"

setup:
	.ci/setup.sh

demo: setup
	$(WASM_PACK_BUILD)
	.ci/post-build.sh www/public/pkg
	cargo build --profile server -p realtime-server
	@# The "Drop connection" button calls POST /realtime/kick, which needs --allow-kick and the
	@# admin token: a fresh random one at every start, in a file only this user reads. The page
	@# gets it in the URL's fragment (#admin=...), which a browser never sends to the server.
	@# LOOPBACK DEMO ONLY: never give a public server's admin token to a page.
	@# --demo-auth (loopback only, refused elsewhere): the page signs in with a name through
	@# POST /realtime/demo-token, and every message shows its verified sender. It authenticates
	@# no one (anyone may sign in as any name): never on a production server.
	@mkdir -p $(dir $(DEMO_TOKEN_FILE)) && (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d " \n" >$(DEMO_TOKEN_FILE))
	@echo
	@echo "  Demo: open $(DEMO_SCHEME)://$(DEMO_ADDR)/#admin=$$(cat $(DEMO_TOKEN_FILE))"
	@echo "  (a multi-room chat and a live feed over one connection: two tabs chat with each other;"
	@echo "  each signs in with its name through --demo-auth, and messages show the verified sender;"
	@echo "  the #admin= part makes \"Drop connection\" work)."
	@echo "  Stop the server with Ctrl-C."
	@echo
ifeq ($(TLS),1)
	@# The certificate is new at every start: show how to trust this one, as soon as it exists.
	cargo run --profile server -p realtime-server -- --listen $(DEMO_ADDR) --static-dir www/public --allow-kick \
		--admin-token-file $(DEMO_TOKEN_FILE) --demo-feed $(DEMO_FEED) --demo-auth $(DEMO_FLAGS) | \
		awk -v token="$$(cat $(DEMO_TOKEN_FILE))" '{ print; fflush() } /^spki sha256 / { \
			print ""; \
			print "  Development certificate, SPKI sha256 " $$3 ". Let Chromium trust it (and nothing else new):"; \
			print "    chromium --user-data-dir=$$(mktemp -d) --ignore-certificate-errors-spki-list=" $$3 " $(DEMO_SCHEME)://$(DEMO_ADDR)/#admin=" token; \
			print "  (other browsers: accept the warning once; HTTP/2 then carries every stream on one connection)"; \
			print ""; fflush() }'
else
	cargo run --profile server -p realtime-server -- --listen $(DEMO_ADDR) --static-dir www/public --allow-kick \
		--admin-token-file $(DEMO_TOKEN_FILE) --demo-feed $(DEMO_FEED) --demo-auth $(DEMO_FLAGS)
endif

# The sub-steps run in sequence, in this order, whatever -j says.
test: setup
	$(MAKE) --no-print-directory test-host
	$(MAKE) --no-print-directory test-proxies
	$(MAKE) --no-print-directory test-browser
	$(MAKE) --no-print-directory size
	$(MAKE) --no-print-directory test-consumers
	$(MAKE) --no-print-directory test-demo
	$(MAKE) --no-print-directory bench-build

test-host:
	.ci/check-invariants.sh
	cargo test --workspace
	.ci/post-build.sh --test
	node --test src/client/hub.test.mjs

# www/deploy/nginx.conf and haproxy.cfg in front of a release server: WebSocket, SSE within
# 100 ms, long poll, send and the forwarded headers through each (.ci/proxy-tests.sh).
test-proxies:
	.ci/proxy-tests.sh

# The issue's attacks at full size, one after another against a fresh release server each, plus
# 5,000 sessions with traffic for 60 s: peak RSS, refusals (/metrics) and a legitimate client's
# p99 per attack (.ci/soak.sh). Not part of 'make test' (minutes, not seconds). SOAK_SCALE=0.1 for
# a tenth of every size, SOAK_SERVER_FLAGS for extra server flags.
soak:
	.ci/soak.sh

test-browser:
	.ci/browser-tests.sh

size:
	.ci/package-size.sh

clean:
	cargo clean
	rm -rf www/public/pkg pkg .tools tests/consumers/*/node_modules tests/consumers/app/dist \
		tests/demo/node_modules tests/bench/node_modules tests/bench-server/node_modules

# The npm package: wasm-pack into pkg/ (wasm-opt 12x from npm), the post-build step (short import
# names, minified glue: .ci/post-build.sh), pkg-template/ merged in, npm pack;
# prints the tarball's path and the gzipped size against .ci/size-budget (fails above it).
.PHONY: package test-consumers
package: setup
	.ci/package.sh

# The packed tarball in real consumers: Vite, webpack, a plain module page (headless Chromium
# against a reference server) and tsc --strict on typed usage and on misspellings.
test-consumers: package
	.ci/consumer-tests.sh

# The demo page in headless Chromium (tests/demo, playwright-core), the server with --demo-auth:
# two pages sign in as alice and bob and see each other's verified subject on every message, chat in two rooms
# (unread counts), watch the live feed (--demo-feed), one drops its connection (--allow-kick),
# resumes, and no message is lost or doubled in any room; a session reset shows every room
# recovered, a server restart every room with a gap; screenshots in target/demo-screenshots/.
.PHONY: test-demo
test-demo: setup
	.ci/demo-test.sh

# Browser benchmarks (tests/bench): realtime-client on each transport vs socket.io 4 vs the raw
# WebSocket in headless Chromium, all on loopback; a table of ratios and target/bench/results.json.
# BENCH_ROUNDS=N (default 3) rounds of every browser case in one run, each ratio the median over
# them; BENCH_QUICK=1 for 10x fewer messages. Then the servers and the size; last, every target
# beside its ratio (tests/bench/targets.mjs, from the JSON files). Not part of 'make test', which
# runs only bench-build (installs, bundles and type-checks the harness so it cannot rot; runs no
# benchmark).
.PHONY: bench bench-build bench-profile
bench: package
	.ci/bench.sh
	.ci/bench-server.sh
	.ci/bench-size.sh
	node tests/bench/targets.mjs

# Where a round trip's time goes: the round trip cases alone, under the JS Self-Profiling API.
bench-profile: package
	BENCH_PROFILE=1 BENCH_ONLY='^rtt-p50/(raw|sio-ws|rc-websocket)$$' .ci/bench.sh

bench-build:
	.ci/bench.sh build
	cargo build -p loadgen
	bash -n .ci/bench-server.sh
	bash -n .ci/bench-size.sh
	for file in tests/bench-server/*.mjs; do node --check "$$file"; done
