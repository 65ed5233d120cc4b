#!/usr/bin/env bash
# Ember under a whole running Cinder (issue 15): brings scripts/cinder-stack.sh up, runs the
# scenarios of tests/cinder/test_stack.py through the cinder/glance clients, and brings the stack
# down again whatever happened. Needs root; without it, or when the stack's tools cannot be
# installed (apt, PyPI) or are missing, it skips with a reason, unless
# EMBER_REQUIRE_SYSTEM_TESTS=1 (CI, scripts/test.sh), where that is a failure.
# Arguments name tests, e.g. `tests/cinder/run.sh test_stack.Stack.test_3_iscsi_attach`
# (default: test_sqlite, the sqlite plugin's own test, then every scenario of test_stack).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
S=$ROOT/build/cinder-stack
skip() {
  if [ "${EMBER_REQUIRE_SYSTEM_TESTS:-0}" = 1 ]; then
    echo "tests/cinder: FAILED: $*" >&2
    exit 1
  fi
  echo "tests/cinder: skipped: $*"
  exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, lvm2, tgtd)"
[ -e /dev/loop-control ] || skip "no loop devices"
[ -d "$ROOT/drivers/cinder/ember_cinder" ] || skip "no Cinder driver in drivers/cinder"
"$ROOT/scripts/cinder-stack.sh" install ||
  skip "could not install the stack (apt: rabbitmq-server, tgt, lvm2, libiscsi, qemu-utils; PyPI: cinder, glance)"
for t in /usr/lib/rabbitmq/bin/rabbitmq-server tgtd tgtadm lvcreate losetup qemu-img iscsi-inq \
  iscsi-readcapacity16 cc curl; do
  command -v "$t" >/dev/null || skip "needs $t"
done

down() { "$ROOT/scripts/cinder-stack.sh" down || true; }
trap down EXIT
# A stack left over from an interrupted run goes first.
"$ROOT/scripts/cinder-stack.sh" down
"$ROOT/scripts/cinder-stack.sh" up
# The tests' own libiscsi initiator: reads a LUN's bytes (libiscsi-bin only inquires).
cc -O2 -Wall -o "$S/iscsi_read" "$ROOT/tests/cinder/iscsi_read.c" -liscsi
cd "$ROOT/tests/cinder"
[ $# -gt 0 ] || set -- test_sqlite test_stack
PYTHONDONTWRITEBYTECODE=1 "$S/venv/bin/python" -m unittest -v "$@"
