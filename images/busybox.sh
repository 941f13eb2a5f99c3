#!/bin/sh
# Builds a small busybox rootfs tarball from Debian's busybox-static package.
#
#   images/busybox.sh OUT.tar
#
# The same package version gives the same bytes: entries sorted by name,
# mtime 0, owner root:root (numeric), GNU format, modes set explicitly.
# Nothing is installed on the host; progress goes to stderr.
# BUSYBOX_DEB=path/to/busybox-static_*.deb skips the download.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi
case "$1" in
    /*) out=$1 ;;
    *) out=$(pwd)/$1 ;;
esac

umask 022
export LC_ALL=C
work=$(mktemp -d "${TMPDIR:-/tmp}/cella-busybox.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
say() { echo "busybox.sh: $*" >&2; }

# 1. The package.
if [ -n "${BUSYBOX_DEB:-}" ]; then
    deb=$BUSYBOX_DEB
else
    mkdir "$work/dl"
    chmod 0755 "$work"
    chmod 0777 "$work/dl" # apt downloads as the _apt user when run as root
    say "downloading busybox-static"
    if ! (cd "$work/dl" && apt-get download busybox-static >&2); then
        if [ "$(id -u)" -ne 0 ]; then
            say "apt-get download failed; run 'apt-get update' as root, or set BUSYBOX_DEB"
            exit 1
        fi
        say "apt-get download failed, running apt-get update and retrying"
        apt-get update >&2
        (cd "$work/dl" && apt-get download busybox-static >&2)
    fi
    deb=$(ls "$work"/dl/busybox-static_*.deb)
fi
say "using $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
dpkg-deb -x "$deb" "$work/pkg"

# 2. The tree: /bin/busybox, a symlink per applet, a few files and dirs.
root=$work/root
mkdir -p "$root/bin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" \
    "$root/work" "$root/root" "$root/tmp"
cp "$work/pkg/bin/busybox" "$root/bin/busybox"
chmod 0755 "$root" "$root/bin/busybox"
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"

applets=0
for applet in $("$root/bin/busybox" --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
    applets=$((applets + 1))
done
say "$applets applet links"

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# 3. The tarball, reproducibly.
tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --format=gnu -cf "$out.tmp" .
mv "$out.tmp" "$out"
say "wrote $out ($(wc -c < "$out") bytes)"
