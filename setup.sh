#!/usr/bin/env bash
# First command on a fresh Debian 12 machine: install what is missing,
# build kernel, guest-init and cella, and run the demo.
set -euo pipefail
cd "$(dirname "$0")"
scripts/build.sh
echo "+ target/release/cella" >&2
target/release/cella
echo "+ target/release/cella hello" >&2
target/release/cella hello
