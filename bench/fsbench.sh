#!/bin/sh
# The file operations of bench/volumes.sh, run the same way on the host
# (with busybox from the test image) and inside guests: fsbench.sh DIR
# SMALL with DIR holding big, tree/ and repo/ (a git checkout) made by
# bench/volumes.sh, and SMALL the number of small files to create.
# Prints "NAME SECONDS" per operation.
set -e
d=$1
small=$2
# GNU date where there is one (the host); busybox's lacks %N: /proc/uptime.
if [ "$(date +%N)" != "%N" ]; then
    now() { date +%s.%N; }
else
    now() { cut -d' ' -f1 /proc/uptime; }
fi
lap() {
    end=$(now)
    echo "$1 $(echo "$start $end" | awk '{printf "%.3f", $2 - $1}')"
}

start=$(now)
dd if="$d/big" of=/dev/null bs=1M 2>/dev/null
lap read

start=$(now)
dd if="$d/big" of="$d/out" bs=1M conv=fsync 2>/dev/null
lap copy_fsync
rm -f "$d/out"

rm -rf "$d/small"
mkdir "$d/small"
start=$(now)
i=0
while [ $i -lt "$small" ]; do
    echo x >"$d/small/f$i"
    i=$((i + 1))
done
lap create
rm -rf "$d/small"

start=$(now)
n=$(find "$d/tree" | wc -l)
lap find
echo "find saw $n entries" >&2

if command -v git >/dev/null; then
    git -C "$d/repo" status --porcelain >/dev/null # the index may need a refresh once
    start=$(now)
    git -C "$d/repo" status --porcelain >/dev/null
    lap git_status
fi
