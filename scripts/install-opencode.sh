#!/usr/bin/env bash
# Installs the pinned OpenCode (npm package `opencode-ai`) into a project-local, git-ignored
# folder. Idempotent: when the pinned version is already installed it does nothing.
# Prints the path of the `opencode` binary on its last line of standard output.
#
# Environment:
#   OPENCODE_VERSION     version to install (default: the pinned one below)
#   OPENCODE_INSTALL_DIR where to install (default: <repo>/.tools/opencode)
set -euo pipefail

version="${OPENCODE_VERSION:-1.18.33}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${OPENCODE_INSTALL_DIR:-$root/.tools/opencode}"
bin="$dir/node_modules/.bin/opencode"
stamp="$dir/.installed-version"

if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
  echo "opencode $version already installed" >&2
  echo "$bin"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is required to install opencode-ai@$version (install Node.js and npm first)" >&2
  exit 1
fi

mkdir -p "$dir"
if [[ ! -f "$dir/package.json" ]]; then
  printf '{\n  "name": "orch-opencode-install",\n  "private": true\n}\n' >"$dir/package.json"
fi
echo "installing opencode-ai@$version into $dir" >&2
npm install --prefix "$dir" --no-audit --no-fund --save-exact "opencode-ai@$version" >&2

if ! "$bin" --version >/dev/null 2>&1; then
  echo "error: $bin does not run after installing opencode-ai@$version" >&2
  exit 1
fi
echo "$version" >"$stamp"
echo "$bin"
