#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (real sockets), the Autobahn
# WebSocket conformance cases (scripts/autobahn.sh), every criterion
# benchmark once in quick mode, the instruction-count regression guard (valgrind), and the
# browser tests in headless Chromium, and the JavaScript client library's tests (clients/js).
# Installs missing system packages and npm modules first
# (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# The browser tests start these binaries as child processes (the relay; the loadgen writes
# the HTML report that tests/browser/loadgen-report.test.mjs opens).
cargo build -p relay -p loadgen
export RELAY_BIN="$PWD/target/debug/relay"
export LOADGEN_BIN="$PWD/target/debug/loadgen"

cargo test --workspace

# RFC 6455 conformance of the relay's own framing: the Autobahn cases (PyPI kosoku, sections
# 1-7, 9, 10) against relay/examples/echo.rs, which `cargo test` just built. About 15 s;
# writes results/autobahn-summary.md and fails on any FAILED or UNIMPLEMENTED case.
scripts/autobahn.sh

# A longer fuzzing pass (proptest) over the client-command decoder and the frame reader, on
# random input and mutations of fuzz/corpus/: bounded by the case count (8,000 per property,
# about 18 s on the 2-core machine) and by a timeout.
PROPTEST_CASES=8000 timeout 120 cargo test -p relay --test fuzz

# Benchmarks run as checks here (quick mode: each is compiled and executed); their timings
# mean little on a shared machine, so the guard below counts instructions instead.
cargo bench -p benches --bench hot_path -- --quick
python3 benches/instr_guard.py

node --test tests/browser/

# The JavaScript client library (clients/js) against relay processes it starts itself: two
# clients, a relay killed amid 200 sends, edits/reads, resume into a hole, the 4000 and 4401
# closes, and `tsc --noEmit` over its types. About 10 s.
node --test clients/js/test/
