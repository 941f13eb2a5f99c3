#!/usr/bin/env bash
# Network benchmark: TCP throughput guest → host over `network: user`, next
# to QEMU's microvm with the same kernel, guest-init and passt backend in
# the same invocation; and the time to build a Debian minbase container
# from a warm package cache, next to mmdebstrap alone. Not a test: nothing
# here passes or fails on a number.
#
#   bench/net.sh [RUNS] [KIB]   (default 3 runs, 256 KiB per transfer)
#   BENCH_DEBIAN=0 bench/net.sh  skips the Debian part
#
# Throughput is timed by the host's receiver, from the connection to EOF,
# so boots and restores are not in it. The guest sends KIB KiB of zeroes
# with busybox `dd | nc` to 10.0.2.2 (the host's loopback through passt).
# Small by default: on an emulating host the guest moves tens of KB/s and
# Debian 12's passt resets a guest → host stream after about 24 s (QEMU's
# NIC with the same passt too), so a bigger transfer measures the reset.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
kib=${2:-256}
source bench/common.sh

scripts/build.sh
repo=$PWD
cella=$repo/target/release/cella
install_peers hyperfine qemu-system-x86 passt mmdebstrap

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"; pkill -f "$work/sink.py" 2>/dev/null || true' EXIT
export CELLA_CACHE_DIR=$work/cache
make_project
cat >>"$proj/cella.yaml" <<'YAML'
  debian:
    setup:
    - !Debian { suite: bookworm }
YAML
cat >"$work/sink.py" <<'PY'
# Accepts one connection at a time, reads to EOF, prints "KiB seconds".
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(4)
out = open(sys.argv[2], "a", buffering=1)
while True:
    conn, _ = srv.accept()
    total, start = 0, None
    while True:
        data = conn.recv(1 << 20)
        if start is None:
            start = time.monotonic()
        if not data:
            break
        total += len(data)
    conn.close()
    out.write(f"{total / 1024:.1f} {time.monotonic() - start:.3f}\n")
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$work/sink.py" "$port" "$work/sink.log" &
# A few tries; the sink logs only connections. Inside this script the
# QEMU peer's connections have failed with "No route to host" (ARP
# unanswered) while the same commands by hand work: not understood yet.
send="for i in 1 2 3; do dd if=/dev/zero bs=1k count=$kib 2>/dev/null | nc 10.0.2.2 $port && break; sleep 2; done"

cd "$proj"
echo "== cella: network: user, $kib KiB guest → host, $runs runs ==" >&2
"$cella" --network user _run base true # builds the image, makes the snapshot
: >"$work/sink.log"
# The sink is on the host's loopback: the user's grant, which cella asks for.
for _ in $(seq "$runs"); do "$cella" --network user --allow-address 127.0.0.1 _run base sh -c "$send"; done
cp "$work/sink.log" "$work/cella.log"

: >"$work/sink.log"
if command -v qemu-system-x86_64 >/dev/null; then
    echo "== QEMU microvm + the same passt, $runs runs ==" >&2
    image=$(readlink -f .cella/images/base.latest)/rootfs.erofs
    for _ in $(seq "$runs"); do
        sock=$work/passt.sock
        rm -f "$sock"
        passt -f -q -1 -4 --no-dhcp -a 10.0.2.15 -n 24 -g 10.0.2.2 --dns-forward 10.0.2.3 \
            --mtu 65520 -s "$sock" >/dev/null 2>&1 &
        passt_pid=$!
        for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
        python3 "$repo/bench/qemu_peer.py" --kernel "$repo/target/release/cella-vmlinux" \
            --init "$repo/target/release/cella-guest-init" --rootfs "$image" \
            --passt-socket "$sock" --timeout 1200 -- sh -c "$send" || echo "qemu peer failed" >&2
        kill "$passt_pid" 2>/dev/null || true
        wait "$passt_pid" 2>/dev/null || true
    done
fi
cp "$work/sink.log" "$work/qemu.log"

t_build=0 t_mm=1
if [[ ${BENCH_DEBIAN:-1} != 0 ]]; then
echo "== Debian minbase: a warm cache, then cella _build --force vs mmdebstrap ==" >&2
"$cella" _build debian >&2 # fills the cache
t_build=$(bench debian "$runs" "$cella _build --force debian")
t_mm=$(bench mmdebstrap "$runs" "mmdebstrap --mode=unshare --variant=minbase --format=tar --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p \"\$1\"/var/cache/apt/archives/' \
    --setup-hook='sync-in $CELLA_CACHE_DIR/apt/archives /var/cache/apt/archives/' \
    --customize-hook='sync-out /var/cache/apt/archives $CELLA_CACHE_DIR/apt/archives' \
    bookworm $work/mm.tar http://deb.debian.org/debian")
fi

python3 - "$work/cella.log" "$work/qemu.log" "$t_build" "$t_mm" <<'PY'
import statistics, sys
def rate(path):
    rates = [float(k) / float(s) for k, s in (l.split() for l in open(path)) if float(s) > 0]
    return statistics.median(rates) if rates else 0.0
cella, qemu = rate(sys.argv[1]), rate(sys.argv[2])
build, mm = float(sys.argv[3]), float(sys.argv[4])
print("| measure (median) | cella | against | ratio |")
print("|---|---|---|---|")
if qemu > 0:
    print(f"| TCP guest → host, network: user | {cella:.1f} KiB/s | QEMU microvm + passt {qemu:.1f} KiB/s | {cella / qemu:.2f}x |")
else:
    print(f"| TCP guest → host, network: user | {cella:.1f} KiB/s | (QEMU peer did not run) | |")
if build > 0:
    print(f"| Debian bookworm minbase, warm .deb cache | {build:.1f} s (`_build --force`) | mmdebstrap alone {mm:.1f} s | {build / mm:.2f}x |")
PY
