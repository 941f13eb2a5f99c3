#!/usr/bin/env bash
# Boot and stream benchmark: prints figures side by side with peers run in
# the same invocation, as ratios. Not a test: nothing here passes or fails
# on a number.
#
#   bench/boot.sh [RUNS]     (default 5 runs per variant)
#
# Peer: the same kernel, initramfs and rootfs under QEMU's microvm machine
# (bench/qemu_peer.py speaks cella's guest protocol to guest-init), so
# cella boots cold here (--cold-boot); bench/snapshot.sh measures restored
# starts against crun and podman. Installs the peers with apt when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
source bench/common.sh

scripts/build.sh
cella=$PWD/target/release/cella
install_peers hyperfine qemu-system-x86

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
make_project
cd "$proj"
"$cella" _run base true # builds the image once

echo "== boot to exit: \`cella --cold-boot _run base true\`, median of $runs ==" >&2
t_cella=$(bench cella "$runs" "$cella --cold-boot _run base true")

t_qemu=
if command -v qemu-system-x86_64 >/dev/null; then
    image=$(ls "$proj"/.cella/images/* | head -n1)
    peer="python3 $OLDPWD/bench/qemu_peer.py --kernel $OLDPWD/target/release/cella-vmlinux --init $OLDPWD/target/release/cella-guest-init --rootfs $image -- true"
    t_qemu=$(bench qemu "$runs" "$peer") || t_qemu=
fi

echo "== stdout throughput ==" >&2
mib=32
# Restored from a snapshot: the stream's time is what a `true` run lacks.
t_true=$(bench true "$runs" "$cella _run base true")
t_big=$(bench stream "$runs" "$cella _run base dd if=/dev/zero bs=32k count=$((mib * 32))")
t_cat=$(bench cat "$runs" "sh -c 'head -c ${mib}m /dev/zero | cat >/dev/null'")

echo "== memory ==" >&2
stats=$(CELLA_STATS=1 "$cella" --cold-boot _run base true 2>&1 >/dev/null | grep peak_rss || true)

python3 - "$t_cella" "${t_qemu:-0}" "$t_true" "$t_big" "$t_cat" "$mib" "$stats" <<'PY'
import re, sys
cella, qemu, true, big, cat = map(float, sys.argv[1:6])
mib, stats = int(sys.argv[6]), sys.argv[7]
print("| measure | cella | peer | ratio (cella / peer) |")
print("|---|---|---|---|")
def row(name, peer_name, peer):
    if peer > 0:
        print(f"| `--cold-boot _run base true`, median | {cella:.3f} s | {peer_name} {peer:.3f} s | {cella/peer:.2f}x |")
    else:
        print(f"| `--cold-boot _run base true`, median | {cella:.3f} s | {peer_name}: failed or not installed (see stderr) | - |")
row("", "QEMU microvm, same kernel+initramfs+rootfs", qemu)
stream = big - true
rate = mib / stream if stream > 0 else float("inf")
host = mib / cat
print(f"| stdout throughput ({mib} MiB) | {rate:.2f} MiB/s | host `cat` {host:.0f} MiB/s | {rate/host:.5f}x |")
m = re.search(r"peak_rss_kib=(\d+) guest_touched_kib=(\d+)", stats)
if m:
    peak, guest = int(m[1]), int(m[2])
    print(f"| peak RSS minus guest RAM touched | {(peak-guest)/1024:.1f} MiB | (peak {peak/1024:.1f} MiB, guest {guest/1024:.1f} MiB) | - |")
PY
