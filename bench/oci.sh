#!/usr/bin/env bash
# OCI image benchmark (issue 21): figures side by side with peers run in
# the same invocation, as ratios. Not a test: nothing here passes or fails
# on a number. No VM is booted: `!Image` builds on the host.
#
#   bench/oci.sh [RUNS]   (default 5)
#
# An image of about 100 MB in four gzip layers (busybox, then three of
# incompressible data in files of 1 MiB) is pushed to Debian's
# docker-registry on 127.0.0.1. Then, medians of RUNS:
# 1. pull and import: `cella _build --force --pull` with an empty blob
#    cache (download, verify, import, pack), against `skopeo copy` to an
#    OCI layout plus `umoci unpack` (what a user would otherwise run), and
#    against `podman pull` (then `podman rmi`);
# 2. import alone, the blobs cached: `cella _build --force`;
# 3. export: `cella _pack_image --format oci-archive` against `podman save
#    --format oci-archive` of the same image.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
source bench/common.sh

scripts/build.sh >/dev/null
cella=$PWD/target/release/cella
install_peers hyperfine skopeo umoci podman docker-registry

work=$(mktemp -d /tmp/cella-bench.XXXXXX)
registry_pid=
cleanup() {
    [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null
    podman rmi -f "127.0.0.1:$port/bench:1" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
export CELLA_CACHE_DIR=$work/cache
make_project
cd "$proj"

echo "== making a 4-layer image of about 100 MB ==" >&2
python3 - img <<'PY'
import gzip, hashlib, io, json, os, random, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return f"sha256:{d}"
def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()
rng = random.Random(1)
layers = [open("rootfs.tar", "rb").read()]
for i in range(3):
    layers.append(tar_of([(f"data/{i}/{j}", rng.randbytes(1 << 20)) for j in range(32)]))
descs, diff_ids = [], []
for layer in layers:
    z = gzip.compress(layer, mtime=0)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  "digest": blob(z), "size": len(z)})
    diff_ids.append("sha256:" + hashlib.sha256(layer).hexdigest())
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "config": {"Cmd": ["/bin/sh"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
manifest = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": blob(config), "size": len(config)},
    "layers": descs}).encode()
index = {"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": blob(manifest), "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": "1"}}]}
open(f"{out}/index.json", "w").write(json.dumps(index))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
size=$(du -sb img/blobs | cut -f1)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry/data}}
http: {addr: 127.0.0.1:$port}
EOF
docker-registry serve "$work/registry/config.yml" >/dev/null 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null && break
    sleep 0.1
done
skopeo copy -q --dest-tls-verify=false oci:img:1 "docker://127.0.0.1:$port/bench:1"

cat >"$work/settings.yaml" <<EOF
network: {allow-addresses: [127.0.0.1/32]}
registries: {insecure: ['127.0.0.1:$port']}
EOF
export CELLA_SETTINGS=$work/settings.yaml
cat >>cella.yaml <<EOF
  pulled:
    setup:
    - !Image docker://127.0.0.1:$port/bench:1
EOF

echo "== cella: pull and import, empty blob cache ==" >&2
pull=$(hyperfine -N --style none --runs "$runs" --export-json "$work/pull.json" \
    --prepare "rm -rf $work/cache/oci" "$cella _build --force --pull pulled" >&2 && json "$work/pull.json")
echo "== cella: import, blobs cached ==" >&2
import=$(bench import "$runs" "$cella" _build --force pulled)
echo "== skopeo copy + umoci unpack ==" >&2
umoci=$(hyperfine -N --style none --runs "$runs" --export-json "$work/umoci.json" \
    --prepare "rm -rf $work/layout $work/bundle" \
    "sh -c 'skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$port/bench:1 oci:$work/layout:1 && umoci unpack --rootless --image $work/layout:1 $work/bundle >/dev/null'" >&2 &&
    json "$work/umoci.json")
echo "== podman pull ==" >&2
podman_pull=$(hyperfine -N --style none --runs "$runs" --export-json "$work/podman.json" \
    --prepare "podman rmi -f 127.0.0.1:$port/bench:1" \
    "podman pull -q --tls-verify=false 127.0.0.1:$port/bench:1" >&2 && json "$work/podman.json")
echo "== export ==" >&2
export_cella=$(bench export_cella "$runs" "$cella" _pack_image --format oci-archive -f "$work/cella-out.tar" pulled)
export_podman=$(hyperfine -N --style none --runs "$runs" --export-json "$work/save.json" \
    --prepare "rm -f $work/podman-out.tar" \
    "podman save -q --format oci-archive -o $work/podman-out.tar 127.0.0.1:$port/bench:1" >&2 && json "$work/save.json")

python3 - "$size" "$pull" "$import" "$umoci" "$podman_pull" "$export_cella" "$export_podman" <<'PY'
import sys
size = int(sys.argv[1])
pull, imp, umoci, podman, exp_c, exp_p = map(float, sys.argv[2:])
mib = size / 1048576
print(f"image: {mib:.0f} MiB of blobs in 4 gzip layers, from docker-registry on 127.0.0.1")
print("| measure | cella | peer | ratio |")
print("|---|---|---|---|")
print(f"| pull and import, nothing cached | `_build --force --pull` {pull:.2f} s | `skopeo copy` + `umoci unpack` {umoci:.2f} s | {pull / umoci:.2f}x |")
print(f"| pull and import, nothing cached | `_build --force --pull` {pull:.2f} s | `podman pull` {podman:.2f} s | {pull / podman:.2f}x |")
print(f"| import, blobs cached | `_build --force` {imp:.2f} s | | |")
print(f"| export an OCI archive | `_pack_image --format oci-archive` {exp_c:.2f} s | `podman save --format oci-archive` {exp_p:.2f} s | {exp_c / exp_p:.2f}x |")
PY
