#!/usr/bin/env bash
# What issue 18's checks cost: this cella against the one before them (a
# git revision, built here), side by side in one invocation, as ratios.
# Not a test: nothing here passes or fails on a number.
#
#   bench/checks.sh [RUNS]   (default 5; BEFORE=<git rev>, default 15d11f2)
#
# 1. A cache hit (`cella _build big`) of a container whose inputs are a
#    100 MB tarball and a `!Copy` of a 4,700-file tree: every input is
#    stat'ed (now beneath the project's descriptor, no symlink followed)
#    and the digest cache and store looked up.
# 2. /work file I/O in a guest: 200 small files created, a 4 MiB file
#    written with fsync and read back, through virtio-fs (now with the
#    write quota counted on every write). Each cella with its own
#    guest-init and the same kernel; restored runs after a first one.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
before_rev=${BEFORE:-15d11f2}
source bench/common.sh

scripts/build.sh
install_peers hyperfine
after=$PWD/target/release/cella
kernel=$PWD/target/release/cella-vmlinux
after_init=$PWD/target/release/cella-guest-init

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

build_revision "$before_rev"

# One project per cella: their stores and digest caches stay apart.
for side in before after; do
    proj=$work/$side
    mkdir -p "$proj/src"
    cp images/busybox.tar "$proj/rootfs.tar"
    tar -cf "$proj/big.tar" -C / usr/lib/python3.11 2>/dev/null
    cp -r /usr/lib/python3.11/. "$proj/src/"
    cat >"$proj/cella.yaml" <<'YAML'
containers:
  base:
    setup:
    - !Tar { url: ./rootfs.tar }
  big:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Tar { url: ./big.tar }
    - !Copy { source: src, path: /src }
commands:
  io: !Command
    container: base
    run:
    - sh
    - -c
    - |
      mkdir -p /work/io && cd /work/io
      i=0; while [ $i -lt 200 ]; do echo x > f$i; i=$((i+1)); done
      dd if=/dev/zero of=big bs=64k count=64 conv=fsync 2>/dev/null
      cat big > /dev/null
      cd / && rm -rf /work/io
YAML
done
files=$(find "$work/after/src" | wc -l)

side_env() {
    local side=$1
    local init=$after_init
    [[ $side == before ]] && init=$before_init
    echo "CELLA_KERNEL=$kernel CELLA_GUEST_INIT=$init CELLA_CACHE_DIR=$work/cache-$side CELLA_SETTINGS=/nonexistent"
}

hit() {
    local side=$1 bin=$2
    (cd "$work/$side" && env $(side_env "$side") "$bin" _build big >&2)
    (cd "$work/$side" && bench "hit-$side" "$runs" env $(side_env "$side") "$bin" _build big)
}
io() {
    local side=$1 bin=$2
    echo "== $side: first /work run (boots, saves the snapshot) ==" >&2
    (cd "$work/$side" && env $(side_env "$side") "$bin" io >&2)
    (cd "$work/$side" && bench "io-$side" "$runs" env $(side_env "$side") "$bin" io)
}

hit_before=$(hit before "$before")
hit_after=$(hit after "$after")
io_before=$(io before "$before")
io_after=$(io after "$after")

python3 - "$files" "$hit_before" "$hit_after" "$io_before" "$io_after" "$before_rev" <<'PY'
import sys
files = int(sys.argv[1])
hb, ha, ib, ia = map(float, sys.argv[2:6])
rev = sys.argv[6]
print(f"| measure (median) | before ({rev}) | with the checks | ratio |")
print("|---|---|---|---|")
print(f"| cache-hit `_build big` (100 MB tarball + `!Copy` of {files} files) | {hb * 1000:.1f} ms | {ha * 1000:.1f} ms | {ha / hb:.2f}x |")
print(f"| /work I/O in a guest (200 files, 4 MiB write + fsync + read) | {ib:.2f} s | {ia:.2f} s | {ia / ib:.2f}x |")
PY
