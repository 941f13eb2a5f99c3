#!/usr/bin/env bash
# Snapshot-start benchmark: prints figures side by side with peers run in
# the same invocation, as ratios. Not a test: nothing here passes or fails
# on a number.
#
#   bench/snapshot.sh [RUNS]   (default 5 restored runs; cold runs: COLD_RUNS, default 3)
#
# Measures `cella _run base true` restored from a warm snapshot that holds
# the run ready (its program stopped before its first instruction), from
# the image's warm snapshot (the image mounted, the program in the page
# cache: runs with new arguments each time) and from the plain snapshot
# (CELLA_WARM=0) against a cold boot (--cold-boot), against `crun run` and
# `podman run --rm` on the same rootfs, and the host memory (PSS) of GUESTS idle guests (default 20)
# restored from one snapshot against COLD_GUESTS (default 10: twenty cold
# boots at once on two cores did not all finish here) cold-booted.
# crun and podman can't create cgroups on this host's hybrid hierarchy, so
# they run in a mount namespace with a cgroup2 mount and cgroups disabled;
# podman gets low rlimits because raising them is not permitted here.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cold_runs=${COLD_RUNS:-3}
guests=${GUESTS:-20}
cold_guests=${COLD_GUESTS:-10}
source bench/common.sh

scripts/build.sh
cella=$PWD/target/release/cella
install_peers hyperfine crun podman

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
export CELLA_CACHE_DIR=$work/cache
make_project
cd "$proj"
echo "== first run: builds the image, boots, saves the snapshot ==" >&2
"$cella" _run base true


echo "== second run: saves the warm snapshot that holds this run ready ==" >&2
"$cella" _run base true
echo "== a run with other arguments: saves the warm snapshot of \`true\` in the image ==" >&2
"$cella" _run base true x

echo "== \`cella _run base true\`: warm, restored, cold ==" >&2
t_warm=$(bench warm "$runs" "$cella _run base true")
# New arguments each run: not held ready, so from the image's warm snapshot.
t_image=$(bench image "$runs" "bash -c '$cella _run base true \$(date +%N)'")
export CELLA_WARM=0
t_restored=$(bench restored "$runs" "$cella _run base true")
phases=$(CELLA_STATS=1 "$cella" _run base true 2>&1 >/dev/null | grep -E 'restored$|workload started|workload ended' | awk '{print $2}' | paste -sd' ')
unset CELLA_WARM
t_cold=$(bench cold "$cold_runs" "$cella --cold-boot _run base true")

# Where the restored runs' time goes: the VM is ready in milliseconds, the
# rest is the guest kernel mounting the image (not in a warm run) and
# running the workload.
warm_phases=$(CELLA_STATS=1 "$cella" _run base true 2>&1 >/dev/null | grep -E 'restored warm$|workload started|workload ended' | awk '{print $2}' | paste -sd' ')
cold_phases=$(CELLA_STATS=1 "$cella" --cold-boot _run base true 2>&1 >/dev/null | grep -E 'workload started|workload ended' | awk '{print $2}' | paste -sd' ')

peer_ns() { # runs a command in a mount namespace with a pure cgroup2 mount
    unshare -m sh -c 'mount --make-rprivate / && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"' sh "$@"
}

t_crun=
if command -v crun >/dev/null; then
    bundle=$work/bundle
    mkdir -p "$bundle/rootfs"
    tar -xf "$proj/rootfs.tar" -C "$bundle/rootfs"
    (cd "$bundle" && crun spec)
    python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["true"]; c["process"]["terminal"] = False
json.dump(c, open(p, "w"))
PY
    peer_ns hyperfine -N --style none --runs "$runs" --export-json "$work/crun.json" \
        "crun --cgroup-manager=disabled run --bundle $bundle cella-bench" >&2 &&
        t_crun=$(json "$work/crun.json") || echo "crun failed here" >&2
fi

t_podman=
if command -v podman >/dev/null && podman import -q "$proj/rootfs.tar" cella-bench:latest >/dev/null 2>&1; then
    peer_ns hyperfine -N --style none --runs "$runs" --export-json "$work/podman.json" \
        "podman run --rm --cgroups=disabled --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network=none cella-bench:latest true" >&2 &&
        t_podman=$(json "$work/podman.json") || echo "podman failed here" >&2
fi

# Sum of the PSS of N cella processes whose guests idle in `sleep`.
pss_of_guests() { # n, cella options...
    local n=$1
    shift
    pids=()
    local i
    for i in $(seq "$n"); do
        "$cella" "$@" _run base sh -c 'echo ready; exec sleep 100000' >"$work/g$i.out" 2>&1 &
        pids+=($!)
    done
    for i in $(seq "$n"); do
        until grep -q ready "$work/g$i.out" 2>/dev/null; do
            kill -0 "${pids[$((i - 1))]}" 2>/dev/null || { echo "guest $i failed: $(cat "$work/g$i.out")" >&2; break; }
            sleep 1
        done
    done
    local total=0 p
    for p in "${pids[@]}"; do
        total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
    echo "$total"
}

echo "== host memory: $guests restored guests, $cold_guests cold-booted ==" >&2
pss_restored=$(pss_of_guests "$guests")
echo "warm: $t_warm s, restored: $t_restored s, cold: $t_cold s, crun: ${t_crun:-} s, podman: ${t_podman:-} s, phases: $phases / $cold_phases, PSS of $guests restored: $pss_restored KiB" >&2
# Booting many guests at once on a few cores takes longer than the usual
# boot timeout.
pss_cold=$(CELLA_BOOT_TIMEOUT=3600 pss_of_guests "$cold_guests" --cold-boot)

python3 - "$t_restored" "$t_cold" "${t_crun:-0}" "${t_podman:-0}" "$pss_restored" "$guests" "$pss_cold" "$cold_guests" "$phases" "$cold_phases" "$t_warm" "$warm_phases" "$t_image" <<'PY'
import sys
restored, cold, crun, podman = map(float, sys.argv[1:5])
pss_r, n_r, pss_c, n_c = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
phases = [float(x) for x in sys.argv[9].split()]
cold_phases = [float(x) for x in sys.argv[10].split()]
warm = float(sys.argv[11])
warm_phases = [float(x) for x in sys.argv[12].split()]
image = float(sys.argv[13])
print("| measure | cella | peer | ratio |")
print("|---|---|---|---|")
print(f"| `_run base true`, median | warm, the run held ready {warm:.3f} s | restored (`CELLA_WARM=0`) {restored:.3f} s | {restored/warm:.1f}x faster |")
print(f"| `_run base true ARG`, new ARG each run, median | warm, the image's {image:.3f} s | restored {restored:.3f} s | {restored/image:.1f}x faster |")
print(f"| `_run base true`, median | restored {restored:.3f} s | cold boot (`--cold-boot`) {cold:.3f} s | {cold/restored:.1f}x faster |")
if len(phases) == 3 and len(cold_phases) == 2 and len(warm_phases) == 3:
    print(f"| VM ready for the run spec (one run) | warm {warm_phases[0]*1000:.0f} ms, restored {phases[0]*1000:.0f} ms | - | - |")
    print(f"| workload started (one run) | warm {warm_phases[1]:.2f} s | restored {phases[1]:.2f} s, cold boot {cold_phases[0]:.2f} s | {phases[1]/warm_phases[1]:.1f}x, {cold_phases[0]/warm_phases[1]:.0f}x faster |")
for name, peer in (("crun run", crun), ("podman run --rm", podman)):
    if peer > 0:
        print(f"| `_run base true`, median | warm {warm:.3f} s, restored {restored:.3f} s | {name} {peer:.3f} s | {warm/peer:.1f}x / {restored/peer:.1f}x slower |")
    else:
        print(f"| `_run base true`, median | warm {warm:.3f} s | {name}: failed here (see stderr) | - |")
per_r, per_c = pss_r / n_r / 1024, pss_c / n_c / 1024
print(f"| host memory (PSS), idle guests | {n_r} restored: {pss_r/1024:.0f} MiB, {per_r:.1f} MiB each | {n_c} cold-booted: {pss_c/1024:.0f} MiB, {per_c:.1f} MiB each | {per_c/per_r:.1f}x less per guest |")
PY
