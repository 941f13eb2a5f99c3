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
