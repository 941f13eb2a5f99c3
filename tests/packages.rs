//! vagga's language package steps (`!Py3Install`, `!Py3Requirements`,
//! `!NpmInstall`, `!GemInstall` with their config steps) in one build VM.
//! The package managers are a recording stand-in (`python-exe`,
//! `npm-exe`, `gem_exe`), so the test needs no index and no minutes of
//! dpkg: it checks what each step runs, with which cache and network, that
//! the caches are the project's, that a requirements file versions the
//! image, and, as an attacker, that a spec
//! reaches the tool as one argument (no shell runs it) and that the CI
//! setting `network.allow: false` refuses the steps before any build.

mod common;

use std::fs;

use common::{assets, cella_with, tar_member, Project};

/// Records its arguments, its cache variables and the VM's NICs.
const STAND_IN: &str = r#"#!/bin/sh
{
  echo "tool: $(basename "$0")"
  for a in "$@"; do echo "arg: $a"; done
  echo "env: $PIP_CACHE_DIR $PIP_BREAK_SYSTEM_PACKAGES"
  echo "nics: $(ls /sys/class/net | tr '\n' ' ')"
  p=; for a in "$@"; do [ "$p" = -r ] && sed 's/^/req: /' "$a"; p=$a; done
} >> /standin.log
for c in /tmp/pip-cache /tmp/npm-cache; do
  [ -d $c ] && echo ran >> $c/runs
done
exit 0
"#;

/// A tarball of the stand-in as fakepy, fakenpm and fakegem, mode 755.
fn stand_ins() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for name in ["fakepy", "fakenpm", "fakegem"] {
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("usr/bin/{name}")).expect("path");
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(STAND_IN.len() as u64);
        h.set_cksum();
        b.append(&h, STAND_IN.as_bytes()).expect("append");
    }
    b.into_inner().expect("tar")
}

#[test]
fn language_steps_run_their_tool_with_cache_and_network() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    fs::write(p.path().join("tools.tar"), stand_ins()).expect("tools");
    let yaml = "containers:\n  py:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n    \
         - !Tar { url: ./tools.tar }\n    \
         - !PipConfig { install-python: false, python-exe: /usr/bin/fakepy, dependencies: true }\n    \
         - !Py3Requirements reqs.txt\n    \
         - !Py3Install [flask==3.0, 'x; touch /work/pwned', '$(touch /work/pwned2)']\n    \
         - !NpmConfig { install-node: false, npm-exe: /usr/bin/fakenpm }\n    \
         - !NpmInstall [left-pad@1.3.0]\n    \
         - !GemConfig { install_ruby: false, gem_exe: /usr/bin/fakegem }\n    \
         - !GemInstall [rake]\n";
    fs::write(p.path().join("vagga.yaml"), yaml).expect("yaml");
    fs::remove_file(p.path().join("cella.yaml")).expect("rm");
    fs::write(p.path().join("reqs.txt"), "requests==2.31\n").expect("reqs");
    // The shared cache: its VM snapshots spare each run a cold boot.
    let cache = p.cache.clone();
    let open = p.path().join("open.yaml");
    fs::write(&open, "").expect("settings");
    let closed = p.path().join("closed.yaml");
    fs::write(&closed, "network: {allow: false}\n").expect("settings");

    // The CI setting: refused before anything builds, at the step.
    let (status, _, err) = cella_with(&p, &closed, &cache, &["_build", "py"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(
        err.contains("vagga.yaml:7:7: containers.py.setup")
            && err.contains("runs a language package manager"),
        "{err}"
    );
    assert!(!p.path().join(".cella/images").exists());

    let (status, _, err) = cella_with(&p, &open, &cache, &["_build", "py"]);
    assert_eq!(status, Some(0), "{err}");
    assert!(err.contains("!Py3Install flask==3.0"), "{err}");
    let root = p.path().join("root.tar");
    let root_arg = root.to_str().expect("utf-8");
    let (status, _, err) = cella_with(&p, &open, &cache, &["_pack_image", "-f", root_arg, "py"]);
    assert_eq!(status, Some(0), "{err}");
    let log = tar_member(&root, "standin.log").expect("the stand-in ran");
    for want in [
        "tool: fakepy\narg: -m\narg: pip\narg: install\n",
        "arg: --no-input\n",
        "arg: flask==3.0\narg: x; touch /work/pwned\narg: $(touch /work/pwned2)\n",
        "env: /tmp/pip-cache 1\n",
        "arg: -r\narg: /work/reqs.txt\n",
        "req: requests==2.31\n",
        "tool: fakenpm\narg: install\narg: --global\narg: --prefix\narg: /usr\narg: --cache\n\
         arg: /tmp/npm-cache\n",
        "arg: left-pad@1.3.0\n",
        "tool: fakegem\narg: install\narg: --bindir\narg: /usr/local/bin\narg: --no-document\n\
         arg: rake\n",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    // Each tool ran in a VM with a NIC.
    assert_eq!(log.matches("nics: ").count(), 4, "{log}");
    assert_eq!(log.matches("nics: eth0 lo \n").count(), 4, "{log}");
    // The caches are the project's, and nothing of them is in the image.
    let runs = |name: &str| {
        fs::read_to_string(p.path().join(".cella/cache").join(name).join("runs"))
            .unwrap_or_default()
    };
    // The pip cache is there for the three tools after it, npm's for two.
    assert_eq!(runs("pip-cache"), "ran\n".repeat(4));
    assert_eq!(runs("npm-cache"), "ran\n".repeat(2));
    assert_eq!(tar_member(&root, "tmp/pip-cache/runs"), None);
    fs::remove_file(&root).expect("rm");

    // The requirements file versions the image (vagga's `_version_hash`).
    let hash = || {
        let (status, out, err) = cella_with(&p, &open, &cache, &["_version_hash", "py"]);
        assert_eq!(status, Some(0), "{err}");
        out
    };
    let before = hash();
    fs::write(p.path().join("reqs.txt"), "requests==2.32\n").expect("reqs");
    assert_ne!(hash(), before);

    // No spec ran as shell.
    assert!(!p.path().join("pwned").exists());
    assert!(!p.path().join("pwned2").exists());
}
