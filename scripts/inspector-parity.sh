#!/usr/bin/env bash
# Differential test of `ember image` against OpenStack's format inspector (oslo.utils), see
# tests/inspector_parity.py. Installs oslo.utils + cryptography into build/oslo-venv when missing.
# Without them (no network, no python3-venv) or without qemu-img it skips with the reason, unless
# EMBER_REQUIRE_SYSTEM_TESTS=1: then that is a failure. Extra arguments go to the Python program
# (--only NAME, --keep DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/oslo-venv
skip() {
  if [ "${EMBER_REQUIRE_SYSTEM_TESTS:-0}" = 1 ]; then
    echo "inspector-parity: FAILED to set up: $*" >&2
    exit 1
  fi
  echo "inspector-parity: skipped: $*"
  exit 0
}
command -v qemu-img >/dev/null || skip "qemu-img is not installed"
if ! "$venv/bin/python" -c 'import oslo_utils.imageutils.format_inspector, cryptography' 2>/dev/null; then
  python3 -m venv "$venv" || skip "cannot create the venv $venv (python3-venv missing?)"
  "$venv/bin/pip" install -q oslo.utils cryptography || skip "cannot install oslo.utils and cryptography into $venv"
fi
cargo build -q --bin ember
target_dir="${CARGO_TARGET_DIR:-build}"
"$venv/bin/python" -c 'import importlib.metadata as m; print("inspector-parity: oslo.utils", m.version("oslo.utils"))'
exec "$venv/bin/python" tests/inspector_parity.py --ember "$target_dir/debug/ember" "$@"
