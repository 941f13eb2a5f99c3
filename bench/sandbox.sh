#!/usr/bin/env bash
# What the second wall costs: the VM's own process (a fork per VM), its
# dropped capabilities and namespaces, and the seccomp filters of its
# threads. Prints medians side by side, as ratios; not a test.
#
#   bench/sandbox.sh [RUNS]   (default 5; BEFORE=REV, default fdf0452, is
#                              the last revision without the sandbox)
#
# Three cellas in the same invocation, same kernel, guest-init and cache:
# this one; this one with CELLA_SECCOMP=off (no filters: what the
# filters cost); and cella at BEFORE (no VM process: what it all costs).
# Each runs `_run base true` (held ready in a warm snapshot) and a /work
# workload: a 1 MiB file written and read back, then 8 small files
# written, read and removed, all through virtio-fs (a guest system call
# costs about 7 ms on this emulating host: more would take minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
rev=${BEFORE:-fdf0452}
source bench/common.sh

scripts/build.sh
cella=$PWD/target/release/cella
# Both cellas boot the same kernel and guest-init (the protocol did not change).
export CELLA_KERNEL=$PWD/target/release/cella-vmlinux
export CELLA_GUEST_INIT=$PWD/target/release/cella-guest-init
install_peers hyperfine

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CELLA_CACHE_DIR=$work/cache
build_revision "$rev"
make_project
cd "$proj"
io='dd if=/dev/zero of=/work/big bs=64k count=16 2>/dev/null && cat /work/big >/dev/null && rm /work/big && for i in 1 2 3 4 5 6 7 8; do echo $i >/work/s$i; done && cat /work/s? >/dev/null && rm /work/s?'
echo "== first runs: build the image, boot, save the snapshots ==" >&2
# Two builds of cella do not share snapshots (each keeps the newest of
# its own and drops the other's), so the old one gets a cache of its own.
old() { CELLA_CACHE_DIR=$work/cache-before "$@"; }
for c in "$cella" "old $before"; do
    $c _run base true
    $c _run base true
    $c _run base sh -c "$io"
    $c _run base sh -c "$io"
done

t_on=$(bench on "$runs" "$cella _run base true")
t_off=$(CELLA_SECCOMP=off bench off "$runs" "$cella _run base true")
t_before=$(CELLA_CACHE_DIR=$work/cache-before bench before "$runs" "$before _run base true")
io_on=$(bench io_on "$runs" "$cella _run base sh -c '$io'")
io_off=$(CELLA_SECCOMP=off bench io_off "$runs" "$cella _run base sh -c '$io'")
io_before=$(CELLA_CACHE_DIR=$work/cache-before bench io_before "$runs" "$before _run base sh -c '$io'")

ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.2f}x")' "$1" "$2"; }
printf '%-34s %10s %10s %10s %14s %14s\n' measure sandbox no-filter "at $rev" "filters cost" "sandbox cost"
printf '%-34s %9.3fs %9.3fs %9.3fs %14s %14s\n' "_run base true (held ready)" "$t_on" "$t_off" "$t_before" "$(ratio "$t_on" "$t_off")" "$(ratio "$t_on" "$t_before")"
printf '%-34s %9.3fs %9.3fs %9.3fs %14s %14s\n' "/work: 1 MiB + 8 files" "$io_on" "$io_off" "$io_before" "$(ratio "$io_on" "$io_off")" "$(ratio "$io_on" "$io_before")"
