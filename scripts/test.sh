#!/usr/bin/env bash
# Runs every check and every test of the workspace. This is the README's test command, and
# .ci/run calls exactly this. On a fresh machine it first installs what the tests need.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install the pinned OpenCode (idempotent)"
OPENCODE_BIN="$(./scripts/install-opencode.sh | tail -n 1)"
export OPENCODE_BIN
echo "using $OPENCODE_BIN ($("$OPENCODE_BIN" --version))"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

# `--all-targets` runs unit and integration tests, examples, and the criterion benches in
# test mode (each benchmark once), so benches cannot rot. Real-server test binaries share one
# OpenCode server per binary, which is why this is `cargo test` and not one process per test.
step "cargo test (all targets: tests, examples, benches in test mode)"
cargo test --workspace --all-targets --locked

step "doc tests"
cargo test --workspace --doc --locked

# The loom model of orch-queue's one unsafe site, with bounded preemptions, in its own target
# directory (cfg(loom) would otherwise rebuild everything). It must run at least one model.
step "loom model of orch-queue (bounded)"
mkdir -p target/loom
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test -p orch-queue --lib --release --locked -- tests::loom_ 2>&1 | tee target/loom/last-run.log
loom_ran=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' target/loom/last-run.log)
echo "loom models run: ${loom_ran:-0}"
[ "${loom_ran:-0}" -ge 1 ] || { echo "error: no loom model ran" >&2; exit 1; }

step "all checks passed"
