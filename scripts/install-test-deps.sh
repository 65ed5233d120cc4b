#!/usr/bin/env bash
# Installs the system tools Ember's tests drive for real: lvm2, tgt, libiscsi's initiator tools,
# nbdkit/nbdfuse for fault injection, fio/libnbd for the benchmark peers, xfs/btrfs for reflink tests.
set -euo pipefail
pkgs=(lvm2 tgt libiscsi-bin libiscsi-dev fio libnbd-bin nbdkit nbdfuse fuse3 xfsprogs btrfs-progs
      qemu-utils util-linux e2fsprogs coreutils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
