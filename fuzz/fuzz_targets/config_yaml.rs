//! The config loader on any text: YAML parsing with positions (aliases,
//! tags, merge keys, anchors bounded by `limits.config`), decoding into
//! the model (containers, setup steps, commands, mixins, volumes,
//! docopt options) and the checks of the whole config, as `cella.yaml`
//! and as `vagga.yaml`, in an empty temporary project directory.
//!
//! Checked beyond "no panic": every error can be shown.

#![no_main]

use cella::config::parse_limited;
use libfuzzer_sys::fuzz_target;

/// `limits.config`, smaller than the default 16 MiB so that inputs that
/// expand aliases to the limit stay fast.
const MAX_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // load() refuses what is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let project = tempfile::tempdir().expect("project dir");
    for name in ["cella.yaml", "vagga.yaml"] {
        match parse_limited(text, &project.path().join(name), MAX_BYTES) {
            Ok(config) => drop(format!("{config:?}")),
            Err(e) => drop(e.to_string()),
        }
    }
});
