//! vagga's mixins: the cases of vagga's own tests/mixins (the main file
//! wins, a later mixin over an earlier one, nested mixins relative to
//! their file), local mixins, and mixins that are missing, broken, a link
//! or outside the project: skipped with a warning.

use std::fs;
use std::path::Path;

use super::*;

pub(super) fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
}

pub(super) fn command_text(config: &Config, name: &str) -> String {
    match &config.commands[name].kind {
        CommandKind::Command(c) => c.run.last().cloned().unwrap_or_default(),
        CommandKind::Supervise(_) => panic!("{name} is a !Supervise"),
    }
}

const BASE: &str = "containers:\n  base:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n";

#[test]
fn mixins_merge_as_vagga_merges_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "rootfs.tar", "");
    write(
        d,
        "vagga.yaml",
        &format!(
            "mixins: [m1.yaml, sub/m2.yaml, missing.yaml, broken.yaml, ../out.yaml, link.yaml]\n\
             {BASE}commands:\n  top: !Command {{ container: base, run: echo top }}\n"
        ),
    );
    write(
        d,
        "m1.yaml",
        "commands:\n  top: !Command { container: base, run: echo overrides }\n  \
         m1: !Command { container: base, run: echo m1 }\n  \
         m1x: !Command { container: base, run: echo m1 }\n",
    );
    write(
        d,
        "sub/m2.yaml",
        "mixins: [m3.yaml]\ncommands:\n  m1x: !Command { container: base, run: echo m2 }\n  \
         m2: !Command { container: other, run: echo m2 }\n",
    );
    write(
        d,
        "sub/m3.yaml",
        "containers:\n  other:\n    setup:\n    - !Container base\n\
         commands:\n  m3: !Command { container: base, run: echo m3 }\n",
    );
    write(d, "broken.yaml", "commands: [\n");
    write(
        d,
        "vagga.local.yaml",
        "commands:\n  local: !Command { container: base, run: echo local }\n",
    );
    std::os::unix::fs::symlink("/etc/passwd", d.join("link.yaml")).unwrap();
    let config = load(&d.join("vagga.yaml"), 1 << 20).expect("loads");
    assert_eq!(
        command_text(&config, "top"),
        "echo top",
        "the main file wins"
    );
    assert_eq!(
        command_text(&config, "m1x"),
        "echo m2",
        "a later mixin wins"
    );
    assert_eq!(command_text(&config, "m1"), "echo m1");
    assert_eq!(command_text(&config, "m2"), "echo m2");
    assert_eq!(
        command_text(&config, "m3"),
        "echo m3",
        "nested, relative to its file"
    );
    assert_eq!(command_text(&config, "local"), "echo local");
    assert!(config.containers.contains_key("other"));
    assert_eq!(config.containers["other"].file, d.join("sub/m3.yaml"));
    assert_eq!(config.containers["base"].file, d.join("vagga.yaml"));
}

#[test]
fn a_cella_yaml_has_its_own_local_mixins() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "rootfs.tar", "");
    write(d, "cella.yaml", BASE);
    write(
        d,
        "cella.local.yaml",
        "commands:\n  mine: !Command { container: base, run: echo mine }\n",
    );
    write(
        d,
        "vagga.local.yaml",
        "commands:\n  not-mine: !Command { container: base, run: x }\n",
    );
    let config = load(&d.join("cella.yaml"), 1 << 20).expect("loads");
    assert_eq!(command_text(&config, "mine"), "echo mine");
    assert!(!config.commands.contains_key("not-mine"));
    // An error in the main file is still an error.
    write(
        d,
        "cella.yaml",
        &format!("{BASE}commands:\n  x: !Command {{ container: nope, run: x }}\n"),
    );
    assert!(load(&d.join("cella.yaml"), 1 << 20).is_err());
}
