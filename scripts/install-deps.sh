#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, only when it is missing:
# Debian's chromium (browser tests), redis-server (cluster tests), valgrind (instruction-count
# guard), python3-venv (the Autobahn runner's venv), and the npm packages of the browser
# tests and of the client library's tests (clients/js: ws, typescript, esbuild). Safe to run
# repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# scripts/autobahn.sh puts PyPI's kosoku in a venv; Debian's python3 needs python3-venv for it.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  echo "installing: ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

for rustup_component in rustfmt clippy; do
  if command -v rustup >/dev/null 2>&1 && ! rustup component list --installed 2>/dev/null | grep -q "^$rustup_component"; then
    rustup component add "$rustup_component"
  fi
done

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -d clients/js/node_modules/ws ] || [ ! -d clients/js/node_modules/typescript ]; then
  (cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi
