#!/usr/bin/env bash
# /work benchmark: file operations inside the guest on /work (virtio-fs
# served by cella) against the same operations on the host, and against
# QEMU's 9p share (-virtfs) of the same directory with the same kernel and
# guest-init when QEMU is installed. Prints ratios; nothing passes or fails
# on a number.
#
#   bench/volumes.sh [RUNS]   (default 3; the median of each operation)
#   SCALE=10 bench/volumes.sh  (every size divided by 10)
#
# The operations (bench/fsbench.sh, the same script everywhere, with
# busybox's dd/find/sh on the host too): read a 256 MiB file; copy it to
# a new file (256 MiB written) and fsync; create 5,000 small files;
# `find` over 20,000 files; `git status` in a checkout of 10,000 files
# (the guest image gets the host's git binary and its libraries). On an
# emulating host every guest kernel instruction is emulated and the full
# sizes take hours in a guest: SCALE shrinks them all alike.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
scale=${SCALE:-1}
big_mib=$((256 / scale)) small=$((5000 / scale)) tree_dirs=$((100 / scale)) repo_dirs=$((100 / scale))
source bench/common.sh

scripts/build.sh
repo=$PWD
cella=$PWD/target/release/cella
install_peers qemu-system-x86 git

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CELLA_CACHE_DIR=$work/cache
make_project
cd "$proj"

# busybox's applets first in PATH on the host, as in the guest.
mkdir -p "$work/bb"
tar -xf rootfs.tar -C "$work/bb" ./bin/busybox
for applet in sh dd find wc rm mkdir awk cut; do ln -sf busybox "$work/bb/bin/$applet"; done

# A container with git: the busybox rootfs plus the host's git and its libraries.
git=$(command -v git)
tar -chf git.tar "$git" $(ldd "$git" | grep -o '/[^ ]*')
cat >>cella.yaml <<YAML
  gitbox:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Tar { url: ./git.tar }
    environ: { HOME: /tmp }
YAML

echo "== data: a $big_mib MiB file, $small files to create, $((tree_dirs * 200))-file tree, $((repo_dirs * 100))-file git checkout ==" >&2
data=$proj/data
mkdir -p "$data/tree" "$data/repo"
head -c "${big_mib}M" /dev/urandom >"$data/big"
(cd "$data/tree" && for d in $(seq "$tree_dirs"); do mkdir "d$d" && (cd "d$d" && seq 200 | xargs touch); done)
(
    cd "$data/repo" && git init -q && for d in $(seq "$repo_dirs"); do
        mkdir "d$d" && (cd "d$d" && for f in $(seq 100); do echo "$d $f" >"f$f"; done)
    done
    git add -A && git -c user.name=b -c user.email=b@b commit -qm init
)
cp "$repo/bench/fsbench.sh" "$data/fsbench.sh"
"$cella" _build gitbox >&2

# run_n NAME CMD...: runs CMD $runs times, collecting its "OP SECONDS" lines.
run_n() {
    local name=$1
    shift
    for _ in $(seq "$runs"); do
        # Line by line, so a peer stopped halfway keeps what it measured.
        "$@" | sed -u "s/^/$name /" >>"$work/results" || echo "$name: failed (see above)" >&2
    done
}
: >"$work/results"
echo "== host ==" >&2
run_n host env PATH="$work/bb/bin:$PATH" sh "$data/fsbench.sh" "$data" "$small"
echo "== cella: /work ==" >&2
"$cella" _run gitbox true >&2 # makes the snapshot
run_n cella "$cella" _run gitbox sh /work/data/fsbench.sh /work/data "$small"
if command -v qemu-system-x86_64 >/dev/null; then
    echo "== QEMU microvm, 9p (-virtfs, cache=none, msize 512 KiB) ==" >&2
    image=$(readlink -f .cella/images/gitbox.latest)/rootfs.erofs
    run_n qemu9p python3 "$repo/bench/qemu_peer.py" --kernel "$repo/target/release/cella-vmlinux" \
        --init "$repo/target/release/cella-guest-init" --rootfs "$image" --virtfs "$data" --timeout 3600 -- \
        sh -c 'mkdir /tmp/w && mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 peer /tmp/w && sh /tmp/w/fsbench.sh /tmp/w '"$small"
fi

python3 - "$work/results" "$big_mib" "$small" "$((tree_dirs * 200))" "$((repo_dirs * 100))" <<'PY'
import statistics, sys
big, small, tree, repo = sys.argv[2:6]
from collections import defaultdict
times = defaultdict(list)
for line in open(sys.argv[1]):
    who, op, secs = line.split()
    times[(who, op)].append(float(secs))
med = {k: statistics.median(v) for k, v in times.items()}
ops = {
    "read": f"read a {big} MiB file",
    "copy_fsync": f"copy it ({big} MiB written) and fsync",
    "create": f"create {small} small files",
    "find": f"`find` over {tree} files",
    "git_status": f"`git status`, {repo} files",
}
print("| operation (median) | host | cella /work | cella / host | QEMU 9p | cella / QEMU 9p |")
print("|---|---|---|---|---|---|")
for op, label in ops.items():
    h, c, q = med.get(("host", op)), med.get(("cella", op)), med.get(("qemu9p", op))
    if c is None:
        continue
    cell = lambda v: f"{v:.2f} s" if v is not None else "-"
    ratio = lambda a, b: f"{a / b:.1f}x" if a is not None and b else "-"
    print(f"| {label} | {cell(h)} | {cell(c)} | {ratio(c, h)} | {cell(q)} | {ratio(c, q)} |")
PY
