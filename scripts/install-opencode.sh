#!/usr/bin/env bash
# Installs the pinned OpenCode generations into project-local, git-ignored folders:
#
#   v1  npm `opencode-ai@1.18.33`   -> <repo>/.tools/opencode
#   v2  npm `@opencode/cli@2.1.2`   -> <repo>/.tools/opencode2
#
# Usage: scripts/install-opencode.sh [v1|v2|all]     (default: all, V1 then V2)
#
# Idempotent: an install whose stamp (`<dir>/.installed-version`) names the wanted version and
# whose binary runs is left alone, without calling npm.
#
# Output contract: progress and npm's output go to standard error; standard output gets one
# line per generation installed (or found installed), `v1 <absolute path of the binary>` or
# `v2 <absolute path>`, the last line being the last generation handled. Exit status 0 only
# when every requested generation is installed and its binary runs.
#
# Environment (for embedding the script elsewhere, as `task_cli` does; one generation only):
#   OPENCODE_GENERATION   v1 or v2, when no argument is given. Without it (and without an
#                         argument) a set OPENCODE_VERSION picks the generation by its major
#                         (1.x: v1, 2.x: v2); with OPENCODE_INSTALL_DIR alone it is v1, as it
#                         was before OpenCode 2.
#   OPENCODE_VERSION      version to install instead of the pinned one.
#   OPENCODE_INSTALL_DIR  where to install instead of <repo>/.tools/opencode[2].
# Both of the last two apply to one generation: they are an error when both are installed.
#
# npm prints a warning for V2 that the `postinstall` script of `@opencode/cli` is not approved;
# the binary (from the platform's optional dependency) works without it.
set -euo pipefail

V1_VERSION="1.18.33"
V2_VERSION="2.1.2"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  echo "error: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 [v1|v2|all]   (or OPENCODE_GENERATION=v1|v2)" >&2
  exit 2
}

generation_arg="${1:-}"
[[ $# -le 1 ]] || usage
if [[ -z "$generation_arg" ]]; then
  if [[ -n "${OPENCODE_GENERATION:-}" ]]; then
    generation_arg="$OPENCODE_GENERATION"
  elif [[ -n "${OPENCODE_VERSION:-}" ]]; then
    case "$OPENCODE_VERSION" in
      0.* | 1.*) generation_arg="v1" ;;
      *) generation_arg="v2" ;;
    esac
  elif [[ -n "${OPENCODE_INSTALL_DIR:-}" ]]; then
    generation_arg="v1"
  else
    generation_arg="all"
  fi
fi

case "$generation_arg" in
  v1 | V1 | 1) generations=(v1) ;;
  v2 | V2 | 2) generations=(v2) ;;
  all | both) generations=(v1 v2) ;;
  -h | --help) usage ;;
  *) echo "error: unknown generation \`$generation_arg\` (v1, v2 or all)" >&2; usage ;;
esac

if [[ ${#generations[@]} -gt 1 && (-n "${OPENCODE_VERSION:-}" || -n "${OPENCODE_INSTALL_DIR:-}") ]]; then
  die "OPENCODE_VERSION and OPENCODE_INSTALL_DIR apply to one generation; pass v1 or v2 (or set OPENCODE_GENERATION)"
fi

# install GENERATION PACKAGE VERSION DIR: installs and prints `GENERATION <binary>`.
install() {
  local generation="$1" package="$2" version="$3" dir="$4"
  local bin="$dir/node_modules/.bin/opencode"
  local stamp="$dir/.installed-version"

  if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]] && "$bin" --version >/dev/null 2>&1; then
    echo "$package@$version already installed in $dir" >&2
    echo "$generation $bin"
    return 0
  fi

  command -v npm >/dev/null 2>&1 ||
    die "npm is required to install $package@$version (install Node.js and npm first)"

  mkdir -p "$dir"
  if [[ ! -f "$dir/package.json" ]]; then
    printf '{\n  "name": "orch-opencode-install",\n  "private": true\n}\n' >"$dir/package.json"
  fi
  rm -f "$stamp"
  echo "installing $package@$version into $dir" >&2
  npm install --prefix "$dir" --no-audit --no-fund --save-exact "$package@$version" >&2 ||
    die "npm install $package@$version into $dir failed"

  local printed
  printed="$("$bin" --version 2>/dev/null)" ||
    die "$bin does not run after installing $package@$version"
  # V1 prints `1.18.33`, V2 `opencode v2.1.2`.
  case "$printed" in
    "$version" | "opencode v$version") ;;
    *) die "$bin --version printed \`$printed\`, expected $version" ;;
  esac
  echo "$version" >"$stamp"
  echo "$package@$version installed: $bin" >&2
  echo "$generation $bin"
}

for generation in "${generations[@]}"; do
  case "$generation" in
    v1)
      install v1 opencode-ai "${OPENCODE_VERSION:-$V1_VERSION}" \
        "$(realpath -m "${OPENCODE_INSTALL_DIR:-$root/.tools/opencode}")"
      ;;
    v2)
      install v2 @opencode/cli "${OPENCODE_VERSION:-$V2_VERSION}" \
        "$(realpath -m "${OPENCODE_INSTALL_DIR:-$root/.tools/opencode2}")"
      ;;
  esac
done
