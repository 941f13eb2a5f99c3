#!/usr/bin/env bash
# Process-model benchmark: what a !Supervise and a prerequisite cost, next
# to cella's own single run and to podman doing the same work in the same
# invocation. Not a test: nothing here passes or fails on a number.
#
#   bench/process.sh [RUNS]   (default 5; medians, all cella runs restored)
#
# cella:  `_run base true`; a !Supervise of two `true` children in one
#         container (one drive) and in two containers (two drives); a
#         command with one prerequisite (two VMs, one after the other).
# podman: `sh -c 'true & true; wait'` in one container (two processes in
#         one sandbox); two `podman run --rm true` one after the other.
# podman runs as in bench/snapshot.sh: a mount namespace with a cgroup2
# mount and cgroups disabled, low rlimits.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
source bench/common.sh

scripts/build.sh
cella=$PWD/target/release/cella
install_peers hyperfine podman

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CELLA_CACHE_DIR=$work/cache
make_project
cat >>"$proj/cella.yaml" <<'YAML'
  other:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Text { /etc/which: "other\n" }
commands:
  pair-same: !Supervise
    mode: wait-all
    children:
      a: !Command { container: base, run: [true] }
      b: !Command { container: base, run: [true] }
  pair-two: !Supervise
    mode: wait-all
    children:
      a: !Command { container: base, run: [true] }
      b: !Command { container: other, run: [true] }
  first: !Command { container: base, run: [true] }
  chain: !Command { container: base, run: [true], prerequisites: [first] }
YAML
cd "$proj"
echo "== first runs: build the images, boot, save a snapshot per VM shape ==" >&2
"$cella" _run base true
"$cella" pair-two 2>/dev/null

t_one=$(bench one "$runs" "$cella _run base true")
t_same=$(bench same "$runs" "$cella pair-same")
t_two=$(bench two "$runs" "$cella pair-two")
t_chain=$(bench chain "$runs" "$cella chain")

peer_ns() { # runs a command in a mount namespace with a pure cgroup2 mount
    unshare -m sh -c 'mount --make-rprivate / && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"' sh "$@"
}
t_p_pair= t_p_chain=
podman_run="podman run --rm --cgroups=disabled --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network=none cella-bench:latest"
if command -v podman >/dev/null && podman import -q "$proj/rootfs.tar" cella-bench:latest >/dev/null 2>&1; then
    if peer_ns hyperfine -N --style none --runs "$runs" --export-json "$work/p_pair.json" \
        "$podman_run sh -c 'true & true; wait'" >&2; then
        t_p_pair=$(json "$work/p_pair.json")
    else
        echo "podman failed here" >&2
    fi
    if peer_ns hyperfine --style none --runs "$runs" --export-json "$work/p_chain.json" \
        "$podman_run true && $podman_run true" >&2; then
        t_p_chain=$(json "$work/p_chain.json")
    else
        echo "podman failed here" >&2
    fi
fi

python3 - "$t_one" "$t_same" "$t_two" "$t_chain" "${t_p_pair:-0}" "${t_p_chain:-0}" <<'PY'
import sys
one, same, two, chain, p_pair, p_chain = map(float, sys.argv[1:7])
print("| measure (median) | cella | against | ratio |")
print("|---|---|---|---|")
print(f"| !Supervise, 2 children, 1 container | {same:.2f} s | cella `_run base true` {one:.2f} s | {same/one:.2f}x |")
print(f"| !Supervise, 2 children, 2 containers | {two:.2f} s | cella `_run base true` {one:.2f} s | {two/one:.2f}x |")
print(f"| a command with 1 prerequisite (2 VMs) | {chain:.2f} s | cella `_run base true` {one:.2f} s | {chain/one:.2f}x |")
if p_pair > 0:
    print(f"| !Supervise, 2 children, 1 container | {same:.2f} s | podman, 2 processes in 1 container {p_pair:.2f} s | {same/p_pair:.1f}x slower |")
if p_chain > 0:
    print(f"| a command with 1 prerequisite | {chain:.2f} s | 2 podman runs in a row {p_chain:.2f} s | {chain/p_chain:.1f}x slower |")
PY
