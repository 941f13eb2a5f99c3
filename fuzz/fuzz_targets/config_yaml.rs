//! The config loader on any text: YAML parsing with positions (aliases,
//! tags, merge keys, anchors bounded by `limits.config`), decoding into
//! the model (containers, setup steps, commands, mixins, volumes,
//! docopt options) and the checks of the whole config, as `cella.yaml`
//! and as `vagga.yaml`, in a temporary project directory that holds a
//! few files to include (`!*Include`, `!*IncludeSeq`, `!*IncludeMap`):
//! a list of steps, a command, a container, one that includes itself,
//! and a link out of the project.
//!
//! Checked beyond "no panic": every error can be shown.

#![no_main]

use cella::config::parse_limited;
use libfuzzer_sys::fuzz_target;

/// `limits.config`, smaller than the default 16 MiB so that inputs that
/// expand aliases to the limit stay fast.
const MAX_BYTES: u64 = 1 << 20;

/// One project for every input: parsing reads it and writes nothing.
static PROJECT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("project dir");
    let files = [
        ("steps.yaml", "- !EnsureDir /a\n- !Env { A: b }\n"),
        ("inc/cmd.yaml", "x: !Command { container: base, run: x }\n"),
        ("inc/c/base.yaml", "setup: [!*Unpack [!*Include ../../steps.yaml]]\n"),
        ("self.yaml", "!*Include self.yaml\n"),
        ("bad.yaml", "a: [\n"),
    ];
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.yaml")).expect("symlink");
    dir
}

fuzz_target!(|data: &[u8]| {
    // load() refuses what is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let project = PROJECT.get_or_init(project);
    for name in ["cella.yaml", "vagga.yaml"] {
        match parse_limited(text, &project.path().join(name), MAX_BYTES) {
            Ok(config) => drop(format!("{config:?}")),
            Err(e) => drop(e.to_string()),
        }
    }
});
