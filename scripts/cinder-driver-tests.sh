#!/usr/bin/env bash
# The ember-cinder driver's proof, against a real Cinder 29 from PyPI:
#   1. its unit tests (python -m unittest),
#   2. Cinder's own functional suites (VolumesTest, GroupsTest, GroupSnapshotsTest: API,
#      scheduler and volume manager in one process) on the file and the LVM backend, the driver
#      running `ember` through cinder-rootwrap with its own filters file,
#   3. cinderlib 5.2's driver-agnostic suite (test_basic: attach with real I/O, extend attached,
#      clone, snapshots...) on both backends.
# Installs what it needs into build/cinder-venv (a fresh clone installs from the registries).
# The LVM backend runs on a VG over loop devices with a private LVM_SYSTEM_DIR (activation = 0).
# Usage: scripts/cinder-driver-tests.sh [unit|functional|cinderlib ...]  (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
V=$ROOT/build/cinder-venv
PY=$V/bin/python
WORK=$ROOT/build/cinder-tests
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(unit functional cinderlib)

require() { # a missing prerequisite skips, or fails under EMBER_REQUIRE_SYSTEM_TESTS=1
  echo "cinder-driver-tests: $1" >&2
  if [ "${EMBER_REQUIRE_SYSTEM_TESTS:-}" = 1 ]; then exit 1; fi
  echo "cinder-driver-tests: skipped" >&2
  exit 0
}
[ "$(id -u)" = 0 ] || require "needs root (loop devices, lvm2)"
for t in losetup lvcreate qemu-img python3; do
  command -v "$t" >/dev/null || require "needs $t (scripts/install-test-deps.sh)"
done

cargo build --release --quiet
EMBER_BIN=$ROOT/build/release/ember

if ! "$PY" -c 'import cinder, cinderlib, ddt, oslotest' 2>/dev/null ||
   [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("cinder"))')" != 29.0.0 ]; then
  rm -rf "$V"
  python3 -m venv "$V"
  "$V/bin/pip" install -q cinder==29.0.0
  "$V/bin/pip" install -q --no-deps cinderlib==5.2.0
  "$V/bin/pip" install -q ddt oslotest stestr fixtures testtools
fi
"$V/bin/pip" install -q --force-reinstall --no-deps ./drivers/cinder
SITE=$("$PY" -c 'import cinder, os; print(os.path.dirname(os.path.dirname(cinder.__file__)))')
# Cinder's functional tests look for api-paste.ini under SITE/etc/cinder.
[ -e "$SITE/etc/cinder" ] || { mkdir -p "$SITE/etc"; ln -s "$V/etc/cinder" "$SITE/etc/cinder"; }

rm -rf "$WORK"
mkdir -p "$WORK/bin" "$WORK/rootwrap.d" "$WORK/lvm/etc" "$WORK/scratch"
LOOPS=()
VG=""
cleanup() {
  set +e
  if [ -n "$VG" ]; then
    LVM_SYSTEM_DIR=$WORK/lvm/etc vgremove -q -f "$VG" >/dev/null 2>&1
  fi
  # Loop devices left over any file of this run (volumes attached by a failed test), then PVs.
  for d in $(losetup -n -O NAME,BACK-FILE -l 2>/dev/null | awk -v w="$WORK" 'index($2, w) == 1 {print $1}'); do
    losetup -d "$d"
  done
  for d in "${LOOPS[@]}"; do
    for o in $(losetup -n -O NAME -j "$d" 2>/dev/null); do losetup -d "$o"; done
    losetup -d "$d"
  done
  # Wipes of thick LVs (BLKZEROOUT: zero-range on the loop's file) allocate the PV images.
  rm -f "$WORK"/lvm/pv*.img
}
trap cleanup EXIT

# Cinder runs `sudo cinder-rootwrap CONF ember ...`; there is no sudo here, we are root already.
printf '#!/bin/sh\nexec "$@"\n' > "$WORK/bin/sudo"
chmod +x "$WORK/bin/sudo"
cp drivers/cinder/etc/cinder/rootwrap.d/ember.filters "$WORK/rootwrap.d/"
cat > "$WORK/rootwrap.conf" <<EOF
[DEFAULT]
filters_path=$WORK/rootwrap.d
exec_dirs=$(dirname "$EMBER_BIN"),/usr/sbin,/usr/bin,/sbin,/bin
use_syslog=False
EOF
export PATH=$WORK/bin:$V/bin:$(dirname "$EMBER_BIN"):$PATH
# processutils skips the root helper when it already runs as root (as here), so prove the
# shipped filters file with cinder-rootwrap itself: `ember` is allowed, anything else is not.
cinder-rootwrap "$WORK/rootwrap.conf" ember --version >/dev/null
if cinder-rootwrap "$WORK/rootwrap.conf" losetup -a >/dev/null 2>&1; then
  echo "cinder-driver-tests: rootwrap let losetup through: the filters allow too much" >&2
  exit 1
fi

# The LVM backend's VG: two sparse 20 GiB PVs on loop devices (cinderlib keeps every volume and its
# full-copy snapshots until the end of its suite). Each part starts on an empty VG
# (Cinder's functional tests leave volumes of stopped services behind).
for i in 0 1; do
  truncate -s 20G "$WORK/lvm/pv$i.img"
  LOOPS+=("$(losetup -f --show "$WORK/lvm/pv$i.img")")
done
filter=$(printf '"a|^%s$|", ' "${LOOPS[@]}")
cat > "$WORK/lvm/etc/lvm.conf" <<EOF
devices { filter = [ ${filter}"r|.*|" ] obtain_device_list_from_udev = 0 }
activation { udev_sync = 0 udev_rules = 0 }
global { activation = 0 locking_dir = "$WORK/lvm/lock" }
EOF
VG=ember-cinder-ft-$$
LVM_SYSTEM_DIR=$WORK/lvm/etc pvcreate -q "${LOOPS[@]}"
LVM_SYSTEM_DIR=$WORK/lvm/etc vgcreate -q "$VG" "${LOOPS[@]}"

export EMBER_FT_ROOTWRAP=$WORK/rootwrap.conf EMBER_FT_DIR=$WORK/scratch
export EMBER_FT_VG=$VG EMBER_FT_LVM_CONF=$WORK/lvm/etc/lvm.conf
export PYTHONWARNINGS=ignore

for part in "${parts[@]}"; do
  LVM_SYSTEM_DIR=$WORK/lvm/etc lvremove -q -f "$VG" >/dev/null 2>&1 || true
  case $part in
  unit)
    (cd drivers/cinder && "$PY" -m unittest -v ember_cinder.tests.unit.test_driver)
    ;;
  functional)
    "$PY" ${EMBER_FT_RUNNER:--m unittest} ${EMBER_FT_TESTS:-ember_cinder.tests.functional.test_cinder_functional}
    ;;
  cinderlib)
    for kind in file lvm; do
      cfg=$WORK/ftest-$kind.yaml
      {
        echo "logs: false"
        echo "debug: false"
        echo "size_precision: 0"
        echo "backends:"
        echo "- volume_backend_name: ember-$kind"
        echo "  volume_driver: ember_cinder.driver.EmberVolumeDriver"
        echo "  ember_backend: $kind"
        echo "  ember_binary: $EMBER_BIN"
        echo "  ember_connection: local"
        echo "  ember_data_dir: $WORK/scratch/cinderlib-$kind"
        if [ "$kind" = lvm ]; then
          echo "lvm_conf_file = \"$EMBER_FT_LVM_CONF\"" > "$WORK/ember-extra-lvm.toml"
          echo "  ember_volume_group: $VG"
          echo "  ember_config: $WORK/ember-extra-lvm.toml"
        fi
      } > "$cfg"
      echo "== cinderlib test_basic on the $kind backend"
      (cd "$WORK/scratch" && CL_FTEST_CFG=$cfg CL_FTEST_ROOT_HELPER=env \
        "$PY" -m ember_cinder.tests.functional.run_cinderlib)
    done
    ;;
  *) echo "unknown part $part (unit, functional, cinderlib)" >&2; exit 2 ;;
  esac
done
