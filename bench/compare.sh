#!/usr/bin/env bash
# This cella against another revision of it, built here, side by side in
# one invocation, as ratios: for a change that should cost nothing (issue
# 19's move-and-name refactor). Not a test: nothing passes or fails here.
#
#   bench/compare.sh [RUNS]   (default 10; BEFORE=<git rev>, default 3f2c745)
#
# 1. A restored `cella _run base true`: the whole run path, from the
#    command line through the launch to the exit status.
# 2. `cella _build --force base`: a build from a 3 MB tarball (read,
#    tree, erofs written, committed to the store).
# Each cella with its own guest-init, cache and project, the same kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
before_rev=${BEFORE:-3f2c745}
source bench/common.sh

scripts/build.sh
install_peers hyperfine
after=$PWD/target/release/cella
kernel=$PWD/target/release/cella-vmlinux
after_init=$PWD/target/release/cella-guest-init

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

build_revision "$before_rev"

for side in before after; do
    mkdir -p "$work/$side"
    cp images/busybox.tar "$work/$side/rootfs.tar"
    printf 'containers:\n  base:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n' >"$work/$side/cella.yaml"
done

side_env() {
    local side=$1
    local init=$after_init
    [[ $side == before ]] && init=$before_init
    echo "CELLA_KERNEL=$kernel CELLA_GUEST_INIT=$init CELLA_CACHE_DIR=$work/cache-$side CELLA_SETTINGS=/nonexistent"
}
bin_of() { if [[ $1 == before ]]; then echo "$before"; else echo "$after"; fi; }

declare -A result
for side in before after; do
    echo "== $side: first run (builds, boots, saves the snapshot) ==" >&2
    (cd "$work/$side" && env $(side_env "$side") "$(bin_of "$side")" _run base true >&2)
done
# One side after the other, each with its own warm snapshot and store.
for side in before after; do
    result[run-$side]=$(cd "$work/$side" && bench "run-$side" "$runs" env $(side_env "$side") "$(bin_of "$side")" _run base true)
done
for side in before after; do
    result[build-$side]=$(cd "$work/$side" && bench "build-$side" "$runs" env $(side_env "$side") "$(bin_of "$side")" _build --force base)
done

python3 - "$before_rev" "${result[run-before]}" "${result[run-after]}" "${result[build-before]}" "${result[build-after]}" <<'PY'
import sys
rev = sys.argv[1]
rb, ra, bb, ba = map(float, sys.argv[2:6])
print(f"| measure (median) | {rev} | this tree | ratio |")
print("|---|---|---|---|")
print(f"| restored `_run base true` | {rb * 1000:.0f} ms | {ra * 1000:.0f} ms | {ra / rb:.2f}x |")
print(f"| `_build --force base` (busybox tarball) | {bb * 1000:.0f} ms | {ba * 1000:.0f} ms | {ba / bb:.2f}x |")
PY
