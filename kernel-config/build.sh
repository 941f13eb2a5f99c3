#!/bin/bash
# Build (or reuse) cella's guest kernel: an uncompressed, stripped x86_64
# vmlinux booted through its PVH ELF note.
#
# stdout: exactly one line, the absolute path of vmlinux. Progress: stderr.
# Cache:  $CACHE/kernel/<sha256>/{vmlinux,config}, where
#         CACHE=${CELLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cella}
#         and the key hashes config.fragment, patches/*.patch, this script
#         and the version of Debian's linux-source-6.12 package.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src_pkg=linux-source-6.12
src_tar=/usr/src/linux-source-6.12.tar.xz
deps=(build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils patch binutils "$src_pkg")

log() { echo "cella-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- (a) build dependencies ------------------------------------------------
missing=()
for p in "${deps[@]}"; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	cmd="apt-get install -y --no-install-recommends ${missing[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		log "missing packages: ${missing[*]}"
		log "run as root: apt-get update && DEBIAN_FRONTEND=noninteractive $cmd"
		exit 1
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! $cmd >&2; then
		log "apt-get install failed; running apt-get update first"
		apt-get update >&2
		$cmd >&2
	fi
fi
[ -f "$src_tar" ] || die "$src_tar missing although $src_pkg is installed"
src_version=$(dpkg-query -W -f='${Version}' "$src_pkg")

# --- (b) cache key -----------------------------------------------------------
shopt -s nullglob
patches=("$here"/patches/*.patch)
shopt -u nullglob
key=$(
	{
		echo "linux-source-6.12 $src_version"
		echo "== config.fragment"; cat "$here/config.fragment"
		for p in $(printf '%s\n' "${patches[@]}" | LC_ALL=C sort); do
			echo "== patch $(basename "$p")"; cat "$p"
		done
		echo "== build.sh"; cat "$here/build.sh"
	} | sha256sum | cut -d' ' -f1
)
cache=${CELLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cella}
mkdir -p "$cache/kernel"
cache=$(cd "$cache" && pwd)
out="$cache/kernel/$key"

# --- (c) cache hit -------------------------------------------------------------
if [ -f "$out/vmlinux" ]; then
	log "cached: $out"
	echo "$out/vmlinux"
	exit 0
fi

# --- (d) build -----------------------------------------------------------------
tmp=$(mktemp -d "$cache/kernel/.build-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building $src_pkg $src_version in $tmp (key $key)"

log "extracting $src_tar"
tar -C "$tmp" -xJf "$src_tar"
ksrc="$tmp/linux-source-6.12"
[ -d "$ksrc" ] || die "unexpected tarball layout"

for p in $(printf '%s\n' "${patches[@]}" | LC_ALL=C sort); do
	log "applying $(basename "$p")"
	patch -d "$ksrc" -p1 --forward --batch --quiet < "$p" >&2
done

mk() { make -C "$ksrc" ARCH=x86_64 "$@" >&2; }
log "configuring: tinyconfig + config.fragment + olddefconfig"
mk -s tinyconfig
(cd "$ksrc" && scripts/kconfig/merge_config.sh -m -O . .config "$here/config.fragment" >/dev/null)
mk -s olddefconfig

# Kconfig silently drops options whose dependencies are not met: check that
# every option of the fragment has the requested value.
bad=0
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		opt=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
		if ! grep -qxF "$opt=$want" "$ksrc/.config"; then
			got=$(grep -E "^(# )?$opt[= ]" "$ksrc/.config" || echo "(absent)")
			log "config: wanted $opt=$want, got: $got"
			bad=1
		fi
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
		opt=${BASH_REMATCH[1]}
		if grep -qE "^$opt=" "$ksrc/.config"; then
			log "config: wanted $opt off, got: $(grep -E "^$opt=" "$ksrc/.config")"
			bad=1
		fi
	fi
done < "$here/config.fragment"
[ "$bad" -eq 0 ] || die "config.fragment not fully applied (see above)"

log "make -j$(nproc) vmlinux"
mk -j"$(nproc)" vmlinux

stage="$tmp/out"
mkdir -p "$stage"
strip --strip-all -o "$stage/vmlinux" "$ksrc/vmlinux"
cp "$ksrc/.config" "$stage/config"
# The PVH entry point is an ELF note (Xen, type 0x12 PHYS32_ENTRY); make sure
# stripping kept it.
readelf -n "$stage/vmlinux" | grep -q 'Xen.*0x00000012\|PHYS32_ENTRY\|Unknown note type: (0x00000012)' ||
	die "stripped vmlinux has no PVH (XEN_ELFNOTE_PHYS32_ENTRY) note"

if ! mv -T "$stage" "$out" 2>/dev/null; then
	# Lost a race against a concurrent build of the same key: use theirs.
	[ -f "$out/vmlinux" ] || die "could not move $stage to $out"
fi
log "built $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes)"
echo "$out/vmlinux"
