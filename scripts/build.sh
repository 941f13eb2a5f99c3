#!/usr/bin/env bash
# Builds everything cella needs to boot guests: installs missing Debian
# packages (as root), builds the guest kernel (cached outside the repo),
# guest-init as a static binary, cella itself, and the busybox base rootfs.
# Kernel and guest-init end up beside target/release/cella, where cella
# looks for them.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: libfuzzer-sys compiles libFuzzer for scripts/fuzz.sh.
packages=(gcc g++ make flex bison bc libelf-dev libssl-dev cpio xz-utils erofs-utils linux-source-6.12 passt mmdebstrap uidmap git python3 skopeo podman runc umoci docker-registry)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

kernel=$(kernel-config/build.sh)

# guest-init, reproducibly: no path of this machine lands in the binary
# (the sources' and cargo's directories are remapped), so the same
# sources give the same bytes in any directory, for any user.
# build_guest_init SRC TARGET_DIR CARGO_HOME
build_guest_init() {
    (cd "$1" && CARGO_HOME="$3" CARGO_TARGET_DIR="$2" \
        RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$3=/cargo --remap-path-prefix=$1=/src" \
        cargo build --profile guest --locked -q -p guest-init --target x86_64-unknown-linux-gnu >&2)
}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
guest_init=target/x86_64-unknown-linux-gnu/guest/guest-init
echo "building guest-init (static)" >&2
build_guest_init "$PWD" "$PWD/target" "$cargo_home"
# CELLA_GUEST_INIT_REPRO=1 (test.sh): build it again from a copy of the
# sources in another directory, with another target and cargo directory,
# offline, and fail unless the bytes are the same.
if [[ ${CELLA_GUEST_INIT_REPRO:-} == 1 ]]; then
    other=$(mktemp -d)
    trap 'rm -rf "$other"' EXIT
    mkdir "$other/src" "$other/cargo"
    # The tracked sources; outside a git checkout, the tree less target/.
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z | xargs -0 cp --parents -t "$other/src"
    else
        tar --exclude=./target -cf - . | tar -xf - -C "$other/src"
    fi
    ln -s "$cargo_home/registry" "$other/cargo/registry"
    echo "building guest-init again in $other to compare" >&2
    CARGO_NET_OFFLINE=true build_guest_init "$other/src" "$other/target" "$other/cargo"
    a=$(sha256sum <"$guest_init" | cut -d' ' -f1)
    b=$(sha256sum <"$other/target/x86_64-unknown-linux-gnu/guest/guest-init" | cut -d' ' -f1)
    if [[ $a != "$b" ]]; then
        echo "guest-init is not reproducible: $a here, $b in $other" >&2
        exit 1
    fi
    echo "guest-init reproducible: sha256 $a" >&2
fi
echo "building cella" >&2
cargo build --release --locked -q -p cella >&2

# Copied only when changed: snapshots are keyed by these files' identity
# (inode, size, times), so an untouched copy keeps them valid.
install_if_changed() {
    cmp -s "$2" "$3" || install -m "$1" "$2" "$3"
}
install_if_changed 0644 "$kernel" target/release/cella-vmlinux
install_if_changed 0755 "$guest_init" target/release/cella-guest-init

if [[ ! -s images/busybox.tar ]]; then
    echo "building images/busybox.tar" >&2
    images/busybox.sh images/busybox.tar.tmp
    mv images/busybox.tar.tmp images/busybox.tar
fi
echo "built: target/release/cella (+ cella-vmlinux, cella-guest-init), images/busybox.tar" >&2
