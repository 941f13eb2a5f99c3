#!/usr/bin/env bash
# Second command: the whole test suite (unit, KVM end-to-end, lints).
# With CELLA_REQUIRE_KVM=1 (as .ci/run sets) a machine that cannot boot
# guests fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")"
# A kernel built from a cold cache is built twice, in two directories, and
# must come out the same (kernel-config/README.md); guest-init is built
# twice every time (about 15 s), as is cella's initramfs by its unit tests.
CELLA_KERNEL_REPRO=1 CELLA_GUEST_INIT_REPRO=1 scripts/build.sh
export CELLA_KERNEL="$PWD/target/release/cella-vmlinux"
export CELLA_GUEST_INIT="$PWD/target/release/cella-guest-init"
export CELLA_TEST_ROOTFS="$PWD/images/busybox.tar"
cargo fmt --all --check
python3 scripts/check-imports.py --self-test
python3 scripts/check-imports.py
cargo clippy --locked --workspace --all-targets -q -- -D warnings
cargo test --locked --workspace
# Every fuzz target, briefly, on its committed corpus (fuzz/README.md).
scripts/fuzz.sh 15
