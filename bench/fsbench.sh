#!/bin/sh
# The file operations of bench/volumes.sh, run the same way on the host
# (with busybox from the test image) and inside guests: fsbench.sh DIR
# with DIR holding big (256 MiB), tree/ (20,000 files) and repo/ (a git
# checkout of 10,000 files). Prints "NAME SECONDS" per operation.
set -e
d=$1
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
lap read_256m

start=$(now)
dd if="$d/big" of="$d/out" bs=1M conv=fsync 2>/dev/null
lap write_256m_fsync
rm -f "$d/out"

rm -rf "$d/small"
mkdir "$d/small"
start=$(now)
i=0
while [ $i -lt 5000 ]; do
    echo x >"$d/small/f$i"
    i=$((i + 1))
done
lap create_5000
rm -rf "$d/small"

start=$(now)
n=$(find "$d/tree" | wc -l)
lap find_20000
[ "$n" -gt 20000 ] || { echo "find saw $n entries" >&2; exit 1; }

if command -v git >/dev/null; then
    git -C "$d/repo" status --porcelain >/dev/null # the index may need a refresh once
    start=$(now)
    git -C "$d/repo" status --porcelain >/dev/null
    lap git_status_10000
fi
