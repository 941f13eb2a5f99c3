#!/usr/bin/env bash
# Image build benchmark: prints figures side by side with peers run in the
# same invocation, as ratios. Not a test: nothing here passes or fails on
# a number.
#
#   bench/build.sh [RUNS]   (default 5)
#
# 1. Importing a rootfs tarball of about 100 MB (Python's standard library
#    from this host: many small files, like a real rootfs) into an image
#    (`cella _build big --force`: hash, import, pack, commit) against
#    `tar -xf` of the same tarball into an empty directory on the host.
# 2. A run whose image is a cache hit (`cella _run big true`: the setup,
#    busybox plus the 100 MB tarball, is hashed and the image looked up)
#    against the same run with `--no-build` (no hashing; RUN_RUNS runs
#    each, default 10, after a warm-up), and the hit on its own
#    (`cella _build big`: config, stat-cached digests, store lookup).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
run_runs=${RUN_RUNS:-10}
source bench/common.sh

scripts/build.sh
cella=$PWD/target/release/cella
install_peers hyperfine

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CELLA_CACHE_DIR=$work/cache
make_project
cd "$proj"
tar -cf big.tar -C / usr/lib/python3.11 usr/lib/python3
cat >>cella.yaml <<'YAML'
  big:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Tar { url: ./big.tar }
YAML
size=$(stat -c %s big.tar)
files=$(tar -tf big.tar | wc -l)
echo "== tarball: $((size / 1048576)) MiB, $files entries ==" >&2

"$cella" _build big >&2
tar_x=$(hyperfine -N --style none --runs "$runs" --export-json "$work/tar.json" \
    --prepare "rm -rf $work/x" "sh -c 'mkdir $work/x && tar -xf big.tar -C $work/x'" >&2 && json "$work/tar.json")
import=$(bench import "$runs" "$cella" _build big --force)
hit_build=$(bench hit_build "$runs" "$cella" _build big)

echo "== first run: boots and saves the snapshot ==" >&2
"$cella" _run big true
run_bench() {
    local name=$1
    shift
    hyperfine -N --style none --warmup 1 --runs "$run_runs" --export-json "$work/$name.json" "$*" >&2
    json "$work/$name.json"
}
hit_run=$(run_bench hit_run "$cella" _run big true)
no_build=$(run_bench no_build "$cella" --no-build _run big true)

python3 - "$size" "$files" "$tar_x" "$import" "$hit_build" "$hit_run" "$no_build" <<'PY'
import sys
size, files = int(sys.argv[1]), int(sys.argv[2])
tar_x, imp, hit_build, hit_run, no_build = map(float, sys.argv[3:])
mib = size / 1048576
print(f"tarball: {mib:.0f} MiB, {files} entries")
print(f"| measure | cella | peer | ratio |")
print(f"|---|---|---|---|")
print(f"| import into an image | `_build --force` {imp:.2f} s ({mib / imp:.0f} MiB/s) | `tar -xf` {tar_x:.2f} s | {imp / tar_x:.2f}x |")
print(f"| run on a cache hit | `_run big true` {hit_run:.2f} s | `--no-build` {no_build:.2f} s | {hit_run / no_build:.3f}x |")
print(f"| cache hit alone, 100 MB tarball | `_build big` {hit_build * 1000:.1f} ms | | |")
PY
