# Shared by the bench/ scripts (sourced from the repository root): peer
# installation, a throwaway project on the busybox rootfs, hyperfine medians.

# Installs the Debian packages given when missing (as root only).
install_peers() {
    [[ $(id -u) -eq 0 ]] || return 0
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >&2
    done
}

# Makes $proj under $work: cella.yaml with a `base` container on a copy of
# images/busybox.tar.
make_project() {
    proj=$work/proj
    mkdir -p "$proj"
    cp images/busybox.tar "$proj/rootfs.tar"
    cat >"$proj/cella.yaml" <<'YAML'
containers:
  base:
    setup:
    - !Tar { url: ./rootfs.tar }
YAML
}

# The median of a hyperfine JSON export, in seconds.
json() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(r["median"])' "$1"; }

# bench NAME RUNS COMMAND...: the median of RUNS runs of COMMAND.
bench() {
    local name=$1 n=$2
    shift 2
    hyperfine -N --style none --runs "$n" --export-json "$work/$name.json" "$*" >&2
    json "$work/$name.json"
}

# build_revision REV: builds cella and guest-init as they were at git
# revision REV (cached in ~/.cache/cella/bench-before-REV, or
# $BEFORE_TARGET) and sets $before and $before_init to them. Needs $work.
build_revision() {
    local rev=$1
    echo "== building cella at $rev ==" >&2
    mkdir -p "$work/before-src"
    git archive "$rev" | tar -x -C "$work/before-src"
    local target=${BEFORE_TARGET:-$HOME/.cache/cella/bench-before-$rev}
    (
        cd "$work/before-src"
        CARGO_TARGET_DIR=$target cargo build --release --locked -q -p cella >&2
        CARGO_TARGET_DIR=$target RUSTFLAGS="-C target-feature=+crt-static" \
            cargo build --profile guest --locked -q -p guest-init --target x86_64-unknown-linux-gnu >&2
    )
    before=$target/release/cella
    before_init=$target/x86_64-unknown-linux-gnu/guest/guest-init
}
