#!/usr/bin/env bash
# Builds seed inputs for the image fuzz targets: real images of every format qemu-img makes
# (small virtual sizes and small clusters, so the fuzzer runs fast) and the hostile catalogue
# of ../shared/reference/faults-and-hostile-inputs.md (qemu-img output corrupted by hand).
#
#   fuzz/seeds.sh OUTDIR      ->  OUTDIR/image_detect/*  (every seed)
#                                 OUTDIR/image_qcow2/*   (qcow2 seeds)
#                                 OUTDIR/image_vmdk/*    (vmdk seeds)
#
# Needs qemu-img (and qemu-io for zero clusters); only coreutils otherwise. Names say what
# each seed is; the hostile ones start with "bad-" and name the catalogue item.
set -euo pipefail

out=${1:?usage: seeds.sh OUTDIR}
command -v qemu-img >/dev/null || { echo "seeds.sh: qemu-img not found" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cd "$w"

qi() { qemu-img "$@" >/dev/null; }
qio() { qemu-io "$@" >/dev/null; }

# --- byte helpers (no python needed) ---------------------------------------------------
# put FILE OFFSET HEX: writes the bytes spelled by HEX (e.g. 00ff10) at OFFSET.
put() {
    local hex=$3 esc=""
    while [ -n "$hex" ]; do esc+="\\x${hex:0:2}"; hex=${hex:2}; done
    # shellcheck disable=SC2059
    printf "$esc" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
puts() { printf '%s' "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
be() { printf "%0$(($1 * 2))x" "$2"; }                         # be NBYTES VALUE
le() { local h; h=$(be "$1" "$2"); local r=""; while [ -n "$h" ]; do r=${h:0:2}$r; h=${h:2}; done; echo "$r"; }
rd_be() { echo $((16#$(od -An -tx1 -v -j "$2" -N "$3" "$1" | tr -d ' \n'))); }   # rd_be FILE OFF N
rd_le() { echo $((16#$(od -An -tx1 -v -j "$2" -N "$3" "$1" | tr -d ' \n' | fold -w2 | tac | tr -d '\n'))); }
# variant SRC NAME OFFSET HEX...: a copy of SRC with patches (pairs of offset and hex).
variant() {
    local src=$1 name=$2; shift 2
    cp "$src" "$name"
    while [ $# -ge 2 ]; do put "$name" "$1" "$2"; shift 2; done
}

# --- a 64 KiB source disk: text, pattern, random-looking and zero regions --------------
{ yes "ember fuzz seed: compressible text" || true; } | head -c 8192 > text.bin
truncate -s 64K src.raw
dd if=text.bin of=src.raw conv=notrunc status=none
for i in $(seq 0 63); do printf '%08x' $((i * 2654435761 % 4294967296)); done | head -c 512 > pat.bin
dd if=pat.bin of=src.raw bs=512 seek=40 conv=notrunc status=none     # 20 KiB
dd if=text.bin of=src.raw bs=1024 seek=48 count=2 conv=notrunc status=none

mkdir -p q v o
# --- qcow2 ------------------------------------------------------------------------------
c='cluster_size=512'
qi convert -f raw -O qcow2 -o compat=0.10,$c src.raw q/qcow2-v2-c512
qi convert -f raw -O qcow2 -o compat=1.1,$c src.raw q/qcow2-v3-c512
qi convert -f raw -O qcow2 -o compat=1.1,cluster_size=4096 src.raw q/qcow2-v3-c4k
qi convert -c -f raw -O qcow2 -o compat=0.10,$c src.raw q/qcow2-v2-c512-compressed
qi convert -c -f raw -O qcow2 -o compat=1.1,cluster_size=4096 src.raw q/qcow2-v3-c4k-compressed
qi convert -c -f raw -O qcow2 -o compat=1.1,$c,compression_type=zstd src.raw q/qcow2-v3-c512-zstd
qi convert -f raw -O qcow2 -o $c,refcount_bits=1,lazy_refcounts=on src.raw q/qcow2-v3-refcount1-lazy
qi create -f qcow2 -o $c,preallocation=metadata q/qcow2-v3-prealloc-metadata 16K
if command -v qemu-io >/dev/null; then
    # zero clusters (v3 zero flag, allocated and unallocated) next to data
    qi create -f qcow2 -o $c q/qcow2-v3-zero-clusters 64K
    qio -f qcow2 -c 'write -P 0x41 0 8k' -c 'write -z 2k 2k' -c 'write -z -u 16k 4k' \
        -c 'write -P 0x42 40k 1k' q/qcow2-v3-zero-clusters
    # extended L2 (subclusters), zero subclusters in it
    qi create -f qcow2 -o extended_l2=on,cluster_size=16K q/qcow2-v3-extended-l2 64K
    qio -f qcow2 -c 'write -P 0x43 0 3k' -c 'write -z 1k 1k' -c 'write -P 0x44 33k 1k' \
        q/qcow2-v3-extended-l2
fi
cp q/qcow2-v3-c512 q/qcow2-v3-snapshot
qi snapshot -c snap1 q/qcow2-v3-snapshot
cp q/qcow2-v3-c512 q/qcow2-v3-bitmap
qi bitmap --add q/qcow2-v3-bitmap bitmap0
qi create -f qcow2 -o $c -b qcow2-v3-c512 -F qcow2 q/bad-01-qcow2-backing-file 64K
qi create -f qcow2 -u -o $c -b /etc/shadow -F raw q/bad-01-qcow2-backing-etc-shadow 64K
qi create -f qcow2 -u -o $c -b 'json:{"driver":"nbd","host":"127.0.0.1"}' -F raw \
    q/bad-01-qcow2-backing-json 64K
qi create -f qcow2 -o $c,data_file=ext.raw q/bad-02-qcow2-data-file 64K
b=q/qcow2-v3-c512
variant $b q/bad-03-qcow2-unknown-incompat-bit56 72 01
variant $b q/bad-03-qcow2-unknown-incompat-bit7 79 80
variant $b q/bad-03-qcow2-corrupt-bit 79 02
variant $b q/qcow2-v3-dirty-bit 79 01
variant $b q/bad-09-qcow2-extended-l2-bit-on-plain 79 10
variant $b q/bad-08-qcow2-zstd-bit-on-zlib 79 08
variant $b q/bad-03-qcow2-unknown-compat-autoclear 80 ff 88 ff
variant $b q/bad-04-qcow2-crypt-aes 32 "$(be 4 1)"
variant $b q/bad-04-qcow2-crypt-luks 32 "$(be 4 2)"
variant $b q/bad-05-qcow2-size-2p63 24 "$(be 8 $((1 << 62)))" 24 80
variant $b q/bad-05-qcow2-cluster-bits-8 20 "$(be 4 8)"
variant $b q/bad-05-qcow2-cluster-bits-22 20 "$(be 4 22)"
variant $b q/bad-05-qcow2-cluster-bits-31 20 "$(be 4 31)"
variant $b q/bad-06-qcow2-l1-size-huge 36 "$(be 4 $((0x10000000)))"
variant $b q/bad-06-qcow2-size-and-l1-huge 24 "$(be 8 $((1 << 60)))" 36 ffffffff
variant $b q/bad-06-qcow2-refcount-clusters-huge 56 ffffffff
variant $b q/bad-06-qcow2-snapshots-huge 60 ffffffff 64 "$(be 8 $((1 << 40)))"
variant $b q/bad-06-qcow2-header-length-huge 100 ffffffff
variant $b q/bad-06-qcow2-header-length-short 100 "$(be 4 72)"
variant $b q/bad-06-qcow2-backing-size-huge 8 "$(be 8 512)" 16 "$(be 4 $((0x7fffffff)))"
variant $b q/bad-07-qcow2-l1-past-eof 40 "$(be 8 $((1 << 40)))"
rt=$(rd_be $b 48 8)
variant $b q/bad-07-qcow2-l1-on-refcount-table 40 "$(be 8 "$rt")"
variant $b q/bad-07-qcow2-l1-unaligned 40 "$(be 8 $(($(rd_be $b 40 8) + 1)))"
l1=$(rd_be $b 40 8)
l2a=$(($(rd_be $b "$l1" 8) & 0x00fffffffffffe00))
e0=$(rd_be $b "$l2a" 8)
copied=$((1 << 63))
variant $b q/bad-07-qcow2-l2-entry-into-header "$l2a" "$(be 8 $((copied | 0)))" $((l2a + 8)) "$(be 8 $((copied | 512)))"
variant $b q/bad-07-qcow2-l2-entry-at-l1 "$l2a" "$(be 8 $((copied | l1)))"
variant $b q/bad-07-qcow2-l2-entry-past-eof "$l2a" "$(be 8 $((copied | (1 << 40))))"
variant $b q/bad-07-qcow2-two-l2-entries-one-cluster $((l2a + 8)) "$(be 8 "$e0")"
variant $b q/bad-07-qcow2-l1-entries-share-l2 $((l1 + 8)) "$(be 8 "$(rd_be $b "$l1" 8)")"
variant $b q/bad-07-qcow2-l2-unaligned "$l2a" "$(be 8 $((e0 + 8)))"
# compressed cluster whose sector count runs far past EOF (c4k: count in bits 58..61)
cb=q/qcow2-v3-c4k-compressed
cl1=$(rd_be $cb 40 8)
cl2=$(($(rd_be $cb "$cl1" 8) & 0x00fffffffffffe00))
ce=$(rd_be $cb "$cl2" 8)
variant $cb q/bad-08-qcow2-compressed-size-past-eof "$cl2" "$(be 8 $((ce | (15 << 58))))"
variant $cb q/bad-08-qcow2-compressed-offset-past-eof "$cl2" "$(be 8 $(((ce & ~((1 << 58) - 1)) | (1 << 40))))"
# a deflate bomb in a compressed cluster: 64 KiB of zeros deflated, in place of the data
if command -v gzip >/dev/null; then
    head -c 65536 /dev/zero | gzip -9n | tail -c +11 | head -c -8 > bomb.bin
    cp $cb q/bad-08-qcow2-compressed-bomb
    dd if=bomb.bin of=q/bad-08-qcow2-compressed-bomb bs=1 seek=$((ce & ((1 << 58) - 1))) conv=notrunc status=none
fi
head -c 48 $b > q/bad-18-qcow2-truncated-48
head -c 104 $b > q/bad-18-qcow2-truncated-104
head -c $((l1 + 4)) $b > q/bad-18-qcow2-truncated-in-l1
head -c $((l2a + 12)) $b > q/bad-18-qcow2-truncated-in-l2
# --- vmdk -------------------------------------------------------------------------------
qi convert -f raw -O vmdk src.raw v/vmdk-monolithic-sparse
qi convert -f raw -O vmdk -o subformat=streamOptimized src.raw v/vmdk-stream-optimized
qi create -f vmdk -o zeroed_grain=on v/vmdk-sparse-zeroed-grain 64K
if command -v qemu-io >/dev/null; then
    qio -f vmdk -c 'write -z 0 64k' v/vmdk-sparse-zeroed-grain
fi
for sf in monolithicFlat twoGbMaxExtentFlat twoGbMaxExtentSparse; do
    qi create -f vmdk -o subformat=$sf x-$sf.vmdk 64K
    cp x-$sf.vmdk "v/vmdk-descriptor-$sf"
done
s=v/vmdk-monolithic-sparse
desc() { printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n%s\n' "$1"; }
desc 'createType="monolithicFlat"
RW 128 FLAT "/etc/passwd" 0' > v/bad-11-vmdk-flat-etc-passwd
desc 'createType="monolithicSparse"
RW 128 SPARSE "../disk.vmdk"' > v/bad-11-vmdk-sparse-extent-with-slash
desc 'createType="vmfs"
RW 128 VMFS "disk-flat.vmdk"' > v/bad-11-vmdk-vmfs
desc 'createType="someunknownformat"
RW 128 SPARSE "disk.vmdk"' > v/bad-14-vmdk-unknown-createtype
desc 'createType="monolithicSparse"
createtype="monolithicFlat"
RW 128 FLAT "disk-flat.vmdk" 0' > v/bad-14-vmdk-two-createtypes
tail -n +2 v/vmdk-descriptor-monolithicFlat > v/bad-11-vmdk-descriptor-no-banner
variant $s v/bad-12-vmdk-descriptor-size-2mib 36 "$(le 8 4096)"
variant $s v/bad-12-vmdk-descriptor-offset-elsewhere 28 "$(le 8 7)"
variant $s v/bad-12-vmdk-descriptor-offset-past-eof 28 "$(le 8 $((1 << 40)))"
variant $s v/bad-13-vmdk-gd-at-end-no-footer 56 ffffffffffffffff
variant $s v/bad-14-vmdk-grain-size-100 20 "$(le 8 100)"
variant $s v/bad-14-vmdk-grain-size-0 20 "$(le 8 0)"
variant $s v/bad-14-vmdk-gtes-per-gt-4096 44 "$(le 4 4096)"
variant $s v/bad-14-vmdk-gtes-per-gt-0 44 "$(le 4 0)"
variant $s v/bad-14-vmdk-capacity-2p60 12 "$(le 8 $((1 << 60)))"
variant $s v/bad-14-vmdk-gd-past-eof 56 "$(le 8 $((1 << 40)))" 48 "$(le 8 $((1 << 40)))"
gd=$(rd_le $s 56 8)
gt=$(rd_le $s $((gd * 512)) 4)
g0=$(rd_le $s $((gt * 512)) 4)
variant $s v/bad-14-vmdk-gte-past-eof $((gt * 512)) "$(le 4 $((1 << 30)))"
variant $s v/bad-14-vmdk-gte-into-header $((gt * 512)) "$(le 4 1)"
variant $s v/bad-14-vmdk-gtes-share-grain $((gt * 512 + 4)) "$(le 4 "$g0")"
variant $s v/bad-14-vmdk-gdes-share-gt $((gd * 512 + 4)) "$(le 4 "$gt")" 12 "$(le 8 $((1 << 20)))"
variant $s v/bad-14-vmdk-unknown-flags 8 ffffffff
head -c 77 $s > v/bad-18-vmdk-truncated-header
head -c $((gd * 512 + 2)) $s > v/bad-18-vmdk-truncated-in-gd
# --- other formats (detection and header checks in image_detect) -------------------------
qi convert -f raw -O vpc src.raw o/vhd-fixed -o subformat=fixed,force_size=on
qi create -f vpc o/vhd-dynamic 64K
variant o/vhd-dynamic o/bad-15-vhd-max-table-entries-huge $((512 + 28)) ffffffff
variant o/vhd-dynamic o/bad-15-vhd-block-size-0 $((512 + 32)) 00000000
variant o/vhd-dynamic o/bad-15-vhd-bat-past-eof $((512 + 16)) "$(be 8 $((1 << 40)))"
variant o/vhd-dynamic o/bad-15-vhd-differencing 60 "$(be 4 4)"
variant o/vhd-fixed o/bad-15-vhd-fixed-size-huge $((65536 + 48)) "$(be 8 $((1 << 62)))"
qi create -f vhdx -o log_size=1M,block_size=1M vhdx.img 64K
# the first 256 KiB of a real vhdx (file id, both headers, both region tables) ...
head -c 262144 vhdx.img > o/vhdx-truncated-256k
# ... and a compact copy (not readable by qemu any more) whose metadata region (64 KiB at
# 64 KiB, its items moved from +64 KiB to +32 KiB) and BAT (first 64 KiB, at 128 KiB) lie over
# the two headers, which Ember does not read, so the seed stays small.
cp o/vhdx-truncated-256k o/vhdx-compact
for i in 0 1; do
    e=$((196608 + 16 + i * 32))
    id=$(od -An -tx1 -v -j $e -N 16 vhdx.img | tr -d ' \n')
    off=$(rd_le vhdx.img $((e + 16)) 8)
    if [ "$id" = 06a27c8b90479a4bb8fe575f050f886e ]; then
        mo=65536
        dd if=vhdx.img of=o/vhdx-compact bs=32768 skip=$((off / 32768)) seek=2 count=1 conv=notrunc status=none
        dd if=vhdx.img of=o/vhdx-compact bs=32768 skip=$((off / 32768 + 2)) seek=3 count=1 conv=notrunc status=none
        for k in $(seq 0 $(($(rd_le vhdx.img $((off + 10)) 2) - 1))); do
            io=$(rd_le vhdx.img $((off + 32 + k * 32 + 16)) 4)
            put o/vhdx-compact $((mo + 32 + k * 32 + 16)) "$(le 4 $((io - 32768)))"
        done
        new=$mo
    else
        new=131072
        dd if=vhdx.img of=o/vhdx-compact bs=65536 skip=$((off / 65536)) seek=2 count=1 conv=notrunc status=none
    fi
    put o/vhdx-compact $((e + 16)) "$(le 8 $new)"
    put o/vhdx-compact $((e + 24)) "$(le 4 65536)"
done
variant o/vhdx-compact o/bad-16-vhdx-region-count-huge $((196608 + 8)) "$(le 4 4096)"
variant o/vhdx-compact o/bad-16-vhdx-duplicate-region $((196608 + 8)) "$(le 4 3)"
dd if=o/vhdx-compact of=o/bad-16-vhdx-duplicate-region bs=1 skip=$((196608 + 16)) seek=$((196608 + 80)) count=64 conv=notrunc status=none
# metadata entries: table at the metadata region, entries from +32; make entry 0 a parent
# locator, and set "has parent" in the file parameters
variant o/vhdx-compact o/bad-16-vhdx-parent-locator $((mo + 32)) 2d5fd3a80bb34d45abf7d3d84834ab0c
for k in 0 1 2 3 4; do
    if [ "$(od -An -tx1 -v -j $((mo + 32 + k * 32)) -N 16 o/vhdx-compact | tr -d ' \n')" = 3767a1ca36fa434db3b633f0aa44e76b ]; then
        fo=$(rd_le o/vhdx-compact $((mo + 32 + k * 32 + 16)) 4)
        variant o/vhdx-compact o/bad-16-vhdx-has-parent $((mo + fo + 4)) 02000000
    fi
done
qi create -f vdi o/vdi-dynamic 64K
qi create -f vdi -o static=on vdi-static.img 64K && head -c 4096 vdi-static.img > o/vdi-static-head
variant o/vdi-dynamic o/bad-15-vdi-differencing $((0x4c)) "$(le 4 4)"
variant o/vdi-dynamic o/bad-15-vdi-size-huge $((0x170)) "$(le 8 $((1 << 62)))"
variant o/vdi-dynamic o/bad-15-vdi-blocks-huge $((0x180)) ffffffff
variant o/vdi-dynamic o/bad-15-vdi-block-size-0 $((0x178)) 00000000
qi create -f qed -o cluster_size=4096 o/bad-17-qed 64K
if command -v qemu-io >/dev/null; then qio -f qed -c 'write -P 0x45 0 8k' o/bad-17-qed; fi
qi create -f luks --object secret,id=s0,data=ember -o key-secret=s0,iter-time=10 luks.img 64K &&
    head -c 4096 luks.img > o/luks1-header-4k
cp src.raw o/raw-64k
head -c 4096 /dev/zero > o/raw-zero-4k
# partition tables (raw to Ember), ISO and UDF, and format confusion (item 17)
mbr() { # mbr FILE BOOTFLAG TYPE START COUNT
    truncate -s 64K "$1"
    put "$1" 446 "$(be 1 "$2")000201$(be 1 "$3")fe3f3f$(le 4 "$4")$(le 4 "$5")"
    put "$1" 510 55aa
}
mbr o/mbr-one-partition 128 131 1 127
mbr o/bad-17-mbr-bad-boot-flag 127 131 1 127
truncate -s 64K o/bad-17-mbr-no-partitions && put o/bad-17-mbr-no-partitions 510 55aa
mbr o/gpt-protective 0 238 1 $((0xffffffff))
puts o/gpt-protective 512 'EFI PART'
put o/gpt-protective 520 00000100 && put o/gpt-protective 524 "$(le 4 92)"
cp o/gpt-protective o/bad-17-gpt-bad-start-chs && put o/bad-17-gpt-bad-start-chs 447 ffffff
truncate -s 36K o/iso9660 && put o/iso9660 32768 01 && puts o/iso9660 32769 'CD001' && put o/iso9660 32774 01
truncate -s 40K o/udf
puts o/udf 32769 BEA01 && puts o/udf 34817 NSR02 && puts o/udf 36865 TEA01
cp o/udf o/udf-nsr03 && puts o/udf-nsr03 34817 NSR03
cp q/qcow2-v3-c512 q/bad-17-qcow2-plus-iso && truncate -s 36K q/bad-17-qcow2-plus-iso
puts q/bad-17-qcow2-plus-iso 32769 CD001
cp q/qcow2-v3-c512 q/bad-17-qcow2-plus-mbr-signature && put q/bad-17-qcow2-plus-mbr-signature 510 55aa
cp q/qcow2-v3-c512 q/bad-17-qcow2-plus-udf && truncate -s 40K q/bad-17-qcow2-plus-udf
puts q/bad-17-qcow2-plus-udf 32769 BEA01 && puts q/bad-17-qcow2-plus-udf 34817 NSR02
cp v/vmdk-descriptor-monolithicFlat v/bad-17-vmdk-descriptor-plus-mbr && truncate -s 512 v/bad-17-vmdk-descriptor-plus-mbr
put v/bad-17-vmdk-descriptor-plus-mbr 510 55aa
cp o/raw-64k o/bad-10-raw-starting-qfi && put o/bad-10-raw-starting-qfi 0 514649fb00000003
head -c 7 q/qcow2-v3-c512 > o/bad-18-seven-bytes
x=12345 hex=""
for _ in $(seq 1024); do x=$(((x * 1103515245 + 12345) % 2147483648)); hex+=$(printf '%08x' $x); done
: > o/bad-18-pseudo-random-4k && put o/bad-18-pseudo-random-4k 0 "$hex"

mkdir -p "$out/image_detect" "$out/image_qcow2" "$out/image_vmdk"
cp q/* v/* o/* "$out/image_detect/"
cp q/* "$out/image_qcow2/"
cp v/* "$out/image_vmdk/"
echo "seeds.sh: $(ls q | wc -l) qcow2, $(ls v | wc -l) vmdk, $(ls o | wc -l) other seeds in $out" >&2
