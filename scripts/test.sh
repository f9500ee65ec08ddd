#!/usr/bin/env bash
# Runs every check and every test of the workspace. This is the README's test command, and
# .ci/run calls exactly this. On a fresh machine it first installs what the tests need.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> [%4ds] %s\n' "$SECONDS" "$*"; }

step "install both pinned OpenCode generations (idempotent)"
installed="$(./scripts/install-opencode.sh all)"
OPENCODE_BIN_V1="$(sed -n 's/^v1 //p' <<<"$installed")"
OPENCODE_BIN_V2="$(sed -n 's/^v2 //p' <<<"$installed")"
[ -x "$OPENCODE_BIN_V1" ] && [ -x "$OPENCODE_BIN_V2" ] || {
  echo "error: the installer did not report both binaries: $installed" >&2
  exit 1
}
export OPENCODE_BIN_V1 OPENCODE_BIN_V2
echo "OpenCode 1: $OPENCODE_BIN_V1 ($("$OPENCODE_BIN_V1" --version))"
echo "OpenCode 2: $OPENCODE_BIN_V2 ($("$OPENCODE_BIN_V2" --version))"
# The first pass runs on OpenCode 2 (what new users install); the tests that drive whole
# missions run again on OpenCode 1 below. Tests of both generations at once (orch-opencode's
# clients, the scripted model's) find each through OPENCODE_BIN_V1/V2.
export OPENCODE_BIN="$OPENCODE_BIN_V2"

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

# The same missions on OpenCode 1: every test binary that runs missions on the generation
# OPENCODE_BIN selects. orch-agents' and task_cli's run side by side (each test has its own
# server or shares its binary's, its own directories and sessions; they wait on turns far
# more than they compute), which keeps the whole command under 20 minutes on 2 cores; the
# randomized fault test runs 4 sequences here (6 on OpenCode 2 above). `--workspace` keeps
# the features of the pass above: `-p <one crate>` unifies fewer features and rebuilt tokio,
# reqwest and every crate of ours twice (2.5 minutes of both cores).
step "missions again on OpenCode 1 (orch-agents and task_cli side by side)"
mkdir -p target
v1_agents_log=target/opencode1-orch-agents.log
OPENCODE_BIN="$OPENCODE_BIN_V1" cargo test --locked --workspace \
  --test opencode_mission --test opencode_multi --test opencode_resilience --test git_missions \
  >"$v1_agents_log" 2>&1 &
v1_agents=$!
v1_cli_status=0
OPENCODE_BIN="$OPENCODE_BIN_V1" FAULT_RUNS=4 cargo test --locked --workspace \
  --test cli --test faults --test lifecycle --test servers --test git || v1_cli_status=$?
v1_agents_status=0
wait "$v1_agents" || v1_agents_status=$?
echo "--- orch-agents on OpenCode 1 ($v1_agents_log) ---"
cat "$v1_agents_log"
if [ "$v1_cli_status" -ne 0 ] || [ "$v1_agents_status" -ne 0 ]; then
  echo "error: missions on OpenCode 1 failed (task_cli exit $v1_cli_status, orch-agents exit $v1_agents_status)" >&2
  exit 1
fi

# The /task plugin's own tests (Node's test runner, offline, a stand-in engine); its
# end-to-end tests on both generations are task_cli's `tests/plugin.rs`, run above.
step "the /task plugin's Node tests"
(cd integrations/opencode-plugin && node --test test/*.test.js)

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
