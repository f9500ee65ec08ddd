#!/usr/bin/env bash
# Runs every end-to-end benchmark of issue #10 and prints the table.
# Usage: crates/orch-bench/run.sh [--only 1,2,..] [--tmp DIR]
# Benchmarks 4-6 use the OpenCode that OPENCODE_BIN selects; benchmark 7 (OpenCode 2 beside
# OpenCode 1) needs both generations: OPENCODE_BIN_V1 and OPENCODE_BIN_V2, or what
# scripts/install-opencode.sh installed into .tools/opencode and .tools/opencode2.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# The Node baseline of benchmark 3: the pinned SDK from package-lock.json.
if command -v npm >/dev/null 2>&1; then
  (cd "$here/node" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
else
  echo "npm not found: benchmark 3 runs without its Node baseline" >&2
fi
cd "$root"
cargo build --release -p orch-bench --bin e2e
exec "$root/target/release/e2e" "$@"
