#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then formatting, lints and every test.
# Set EMBER_REQUIRE_SYSTEM_TESTS=1 (as .ci/run does) to turn a missing tool or root into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
bash scripts/inspector-parity.sh      # ember image vs OpenStack's format inspector (oslo.utils venv in build/)
bash scripts/cinder-driver-tests.sh   # ember-cinder: unit, Cinder's functional suites, cinderlib (venv in build/)
bash tests/cinder/run.sh              # the whole Cinder stack (scripts/cinder-stack.sh): issue 15's scenarios through the clients
cargo bench -p ember-bench --no-run
