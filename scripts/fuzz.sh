#!/usr/bin/env bash
# Builds every fuzz target (fuzz/fuzz_targets/) with libFuzzer on stable
# Rust and runs each for SECONDS (default 20) on a scratch copy of its
# committed corpus (fuzz/corpus/NAME/), one at a time. Exits non-zero if
# any target crashes, leaks past the RSS limit or hangs, printing the
# input that did it. `scripts/fuzz.sh 0` only builds.
#
# Stable rustc has no -Zsanitizer, but sanitizer coverage is an LLVM pass
# any rustc can run: these are cargo-fuzz's flags minus the nightly -Z
# ones (no AddressSanitizer; the code under test is safe Rust apart from
# a few audited blocks, and debug assertions and overflow checks are on).
# --target keeps build scripts and proc macros uninstrumented.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
triple=x86_64-unknown-linux-gnu
# The build is kept outside the checkout (cargo keys it by its inputs),
# so a CI's fresh clone pays the 5.5-minute cold build once per machine.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cella/fuzz-target}
bin=$CARGO_TARGET_DIR/$triple/release
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
start=$SECONDS
# The root's Cargo.lock pins every version cella builds with; the fuzz
# crate adds only libFuzzer (pinned in fuzz/Cargo.toml) on top of it, so
# its lock is made from the root's each time rather than kept in step.
cp ../Cargo.lock Cargo.lock
cargo build --release --target "$triple" --bins -q
echo "fuzz: built in $((SECONDS - start)) s" >&2
((seconds > 0)) || exit 0

# The longest input each target takes: its corpus files stay well below.
declare -A max_len=(
    [fuse_server]=16384 [virtqueue]=24576 [control_protocol]=16384
    [build_export]=65536 [tar_import]=65536 [config_yaml]=16384
    [snapshot_load]=16384 [oci_image]=32768 [project_state]=65536
)
# The targets make and remove temporary directories for every input: on
# tmpfs that is ten times faster than on a disk.
shm=/dev/shm
[[ -d $shm && -w $shm ]] || shm=${TMPDIR:-/tmp}
scratch=$(mktemp -d -p "$shm" cella-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/tmp"
failed=()
for target in $(ls fuzz_targets | sed 's/\.rs$//'); do
    corpus="$scratch/corpus-$target"
    artifacts="$scratch/artifacts-$target/"
    mkdir -p "$corpus" "$artifacts"
    cp corpus/"$target"/* "$corpus"/ 2>/dev/null || true
    log="$scratch/$target.log"
    if TMPDIR="$scratch/tmp" "$bin/$target" "$corpus" \
        -max_total_time="$seconds" -max_len="${max_len[$target]:-16384}" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts" >"$log" 2>&1; then
        stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed -E 's/^#([0-9]+)[[:space:]]+DONE[[:space:]]+/\1 runs, /' || true)
        echo "fuzz: $target ok: $stats" >&2
    else
        failed+=("$target")
        keep="${TMPDIR:-/tmp}/cella-fuzz-$target"
        rm -rf "$keep"
        cp -r "$artifacts" "$keep"
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2 || true
        for f in "$keep"/*; do
            [[ -e $f ]] && echo "fuzz: $target failed on $f" >&2
        done
        tail -20 "$log" >&2
    fi
done
total=$(ls fuzz_targets | wc -l)
echo "fuzz: built and ran in $((SECONDS - start)) s" >&2
echo "fuzz: $((total - ${#failed[@]})) passed, ${#failed[@]} failed"
if ((${#failed[@]})); then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
