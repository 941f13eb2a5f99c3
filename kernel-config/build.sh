#!/bin/bash
# Build (or reuse) cella's guest kernel: an uncompressed, stripped x86_64
# vmlinux booted through its PVH ELF note, from the source pinned in
# source.pin, reproducibly (the same inputs give the same bytes).
#
# stdout: exactly one line, the absolute path of vmlinux. Progress: stderr.
# Cache:  $CACHE/kernel/<sha256>/{vmlinux,config}, where
#         CACHE=${CELLA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cella}
#         and the key hashes source.pin, config.fragment, patches/*.patch
#         and this script; the verified source tarball is kept in
#         $CACHE/kernel-source/<sha256>.tar.xz, so a rebuild needs no archive.
# Source: $CELLA_KERNEL_SOURCE if set, else the cached tarball, else
#         Debian's linux-source-6.12 package; each must have the pinned sha256.
# CELLA_KERNEL_REPRO=1: after a build, build again in another directory
#         and fail unless both give the same vmlinux.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src_pkg=linux-source-6.12
src_tar=/usr/src/linux-source-6.12.tar.xz
deps=(build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils patch binutils)

log() { echo "cella-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- (0) the pin ---------------------------------------------------------------
pin() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ +/, ""); print; exit }' "$here/source.pin"; }
pin_version=$(pin version)
pin_sha256=$(pin sha256)
pin_timestamp=$(pin timestamp)
[[ -n $pin_version && $pin_sha256 =~ ^[0-9a-f]{64}$ && -n $pin_timestamp ]] ||
	die "kernel-config/source.pin must have a version, a sha256 (64 hex digits) and a timestamp line"

# --- (b) cache key -----------------------------------------------------------
shopt -s nullglob
patches=("$here"/patches/*.patch)
shopt -u nullglob
key=$(
	{
		echo "== source.pin"; cat "$here/source.pin"
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
# --- (a2) the source, verified ------------------------------------------------
src_cached="$cache/kernel-source/$pin_sha256.tar.xz"
if [ -n "${CELLA_KERNEL_SOURCE:-}" ]; then
	src=$CELLA_KERNEL_SOURCE
elif [ -f "$src_cached" ]; then
	src=$src_cached
else
	if ! dpkg-query -W -f='${Status}\n' "$src_pkg" 2>/dev/null | grep -q '^install ok installed$'; then
		[ "$(id -u)" -eq 0 ] || die "$src_pkg is missing; run as root: apt-get install -y $src_pkg, or set CELLA_KERNEL_SOURCE to the tarball"
		log "installing $src_pkg"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$src_pkg" >&2 ||
			{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$src_pkg" >&2; }
	fi
	src=$src_tar
fi
[ -f "$src" ] || die "$src: no such file (the kernel source tarball)"
log "checking $src against source.pin"
actual=$(sha256sum <"$src" | cut -d' ' -f1)
if [ "$actual" != "$pin_sha256" ]; then
	installed=$(dpkg-query -W -f='${Version}' "$src_pkg" 2>/dev/null || echo none)
	die "$src has sha256 $actual, but kernel-config/source.pin pins $src_pkg $pin_version (sha256 $pin_sha256; installed: $installed). Set CELLA_KERNEL_SOURCE to that tarball, or move the pin to this one in a reviewed change"
fi
if [ "$src" != "$src_cached" ]; then
	mkdir -p "$cache/kernel-source"
	cp "$src" "$src_cached.tmp$$"
	mv "$src_cached.tmp$$" "$src_cached"
	log "kept the verified source as $src_cached"
fi

# Fixed build time, user and host; an in-tree build, so no build
# directory in the output: the same inputs give the same vmlinux.
export KBUILD_BUILD_TIMESTAMP="$pin_timestamp" KBUILD_BUILD_USER=cella KBUILD_BUILD_HOST=cella KBUILD_BUILD_VERSION=1
export LC_ALL=C TZ=UTC

# --- (d) build -----------------------------------------------------------------
# build_in DIR: extracts, patches, configures and builds in DIR; the stripped
# vmlinux and its config end up in DIR/out.
build_in() {
	local dir=$1
	log "extracting $src_cached in $dir"
	tar -C "$dir" -xJf "$src_cached"
	local ksrc="$dir/linux-source-6.12"
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
	local bad=0 line opt want got
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

	local stage="$dir/out"
	mkdir -p "$stage"
	strip --strip-all -o "$stage/vmlinux" "$ksrc/vmlinux"
	cp "$ksrc/.config" "$stage/config"
	# The PVH entry point is an ELF note (Xen, type 0x12 PHYS32_ENTRY); make sure
	# stripping kept it.
	readelf -n "$stage/vmlinux" | grep -q 'Xen.*0x00000012\|PHYS32_ENTRY\|Unknown note type: (0x00000012)' ||
		die "stripped vmlinux has no PVH (XEN_ELFNOTE_PHYS32_ENTRY) note"
}

tmp=$(mktemp -d "$cache/kernel/.build-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building $src_pkg $pin_version in $tmp (key $key)"
build_in "$tmp"
stage="$tmp/out"

if [ "${CELLA_KERNEL_REPRO:-}" = 1 ]; then
	# The same inputs in another directory must give the same bytes.
	again=$(mktemp -d "$cache/kernel/.repro-$key.XXXXXXXX")
	trap 'rm -rf "$tmp" "$again"' EXIT
	log "CELLA_KERNEL_REPRO=1: building again in $again"
	build_in "$again"
	first=$(sha256sum <"$stage/vmlinux" | cut -d' ' -f1)
	second=$(sha256sum <"$again/out/vmlinux" | cut -d' ' -f1)
	[ "$first" = "$second" ] ||
		die "the kernel build is not reproducible: vmlinux sha256 $first in $tmp, $second in $again"
	log "reproducible: both builds give vmlinux sha256 $first"
fi

if ! mv -T "$stage" "$out" 2>/dev/null; then
	# Lost a race against a concurrent build of the same key: use theirs.
	[ -f "$out/vmlinux" ] || die "could not move $stage to $out"
fi
log "built $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes, sha256 $(sha256sum <"$out/vmlinux" | cut -d' ' -f1))"
echo "$out/vmlinux"
