#!/usr/bin/env bash
# Builds everything cella needs to boot guests: installs missing Debian
# packages (as root), builds the guest kernel (cached outside the repo),
# guest-init as a static binary, cella itself, and the busybox base rootfs.
# Kernel and guest-init end up beside target/release/cella, where cella
# looks for them.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(gcc make flex bison bc libelf-dev libssl-dev cpio xz-utils erofs-utils linux-source-6.12 passt mmdebstrap uidmap python3)
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

echo "building guest-init (static)" >&2
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile guest --locked -q -p guest-init --target x86_64-unknown-linux-gnu >&2
echo "building cella" >&2
cargo build --release --locked -q -p cella >&2

# Copied only when changed: snapshots are keyed by these files' identity
# (inode, size, times), so an untouched copy keeps them valid.
install_if_changed() {
    cmp -s "$2" "$3" || install -m "$1" "$2" "$3"
}
install_if_changed 0644 "$kernel" target/release/cella-vmlinux
install_if_changed 0755 target/x86_64-unknown-linux-gnu/guest/guest-init target/release/cella-guest-init

if [[ ! -s images/busybox.tar ]]; then
    echo "building images/busybox.tar" >&2
    images/busybox.sh images/busybox.tar.tmp
    mv images/busybox.tar.tmp images/busybox.tar
fi
echo "built: target/release/cella (+ cella-vmlinux, cella-guest-init), images/busybox.tar" >&2
