//! `cella _cache`: what the user's cache holds (snapshots, warm snapshots,
//! the apt cache, registry blobs, downloads, guest kernels), how much disk each takes, and the way
//! to drop what cella rebuilds by itself (`--drop`: the snapshots).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use super::error::CommandError;
use super::options::RunOptions;
use crate::config::settings::size_text;
use crate::launch::warm::{self, Entry};

/// Prints the cache's contents on stdout, or drops its snapshots.
pub fn cache(drop: bool, opts: &RunOptions) -> Result<i32, CommandError> {
    let Some(dir) = &opts.knobs.cache_dir else {
        eprintln!("cella: no cache: neither CELLA_CACHE_DIR, XDG_CACHE_HOME nor HOME is set");
        return Ok(0);
    };
    let plain = warm::list(&dir.join("snapshots"), false);
    let warm_dir = warm::dir(dir);
    let warm = warm::list(&warm_dir, true);
    if drop {
        let mut bytes = 0;
        let mut files = 0;
        for e in plain.iter().chain(&warm) {
            if std::fs::remove_file(&e.path).is_ok() {
                bytes += e.bytes;
                files += 1;
            }
        }
        // The markers of warm snapshots asked for once go too.
        warm::remove_markers(&warm_dir);
        eprintln!(
            "cella: removed {files} snapshot(s), {}; runs make them again as needed",
            mib(bytes)
        );
        return Ok(0);
    }
    let now = SystemTime::now();
    let mut out = format!("cache: {}\n", dir.display());
    out.push_str(&format!(
        "snapshots: {} in {} file(s): one per VM shape, kernel and guest-init; unused for 7 days, removed\n",
        mib(total(&plain)),
        plain.len()
    ));
    out.push_str(&format!(
        "warm snapshots: {} in {} file(s), at most {} (limits.warm-snapshots); least recently used removed first\n",
        mib(total(&warm)),
        warm.len(),
        size_text(opts.limits.warm_snapshots)
    ));
    for e in warm.iter().rev() {
        let image = e.image.as_deref().unwrap_or("?");
        let short = image.get(..12).unwrap_or(image);
        out.push_str(&format!(
            "  image {short}  {:>10}  used {}\n",
            mib(e.bytes),
            ago(now, e.used)
        ));
    }
    let downloads = format!(
        "files of !Tar and !Download URLs; at most {} (limits.downloads), least recently used removed first",
        size_text(opts.limits.downloads)
    );
    for (name, what) in [
        ("apt", "Debian packages downloaded by builds"),
        ("oci", "image blobs pulled from registries, by digest"),
        ("downloads", downloads.as_str()),
        ("kernel", "guest kernels built by scripts/build.sh"),
    ] {
        let bytes = du(&dir.join(name));
        out.push_str(&format!("{name}: {} ({what})\n", mib(bytes)));
    }
    out.push_str("drop the snapshots: cella _cache --drop (runs make them again as needed)\n");
    out.push_str(&format!(
        "apt, oci and downloads are fetched again when missing: remove them from {} to free the space\n",
        dir.display()
    ));
    print!("{out}");
    Ok(0)
}

fn total(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.bytes).sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// How long ago `then` was, roughly.
fn ago(now: SystemTime, then: SystemTime) -> String {
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    match secs {
        0..120 => format!("{secs} s ago"),
        120..7200 => format!("{} min ago", secs / 60),
        7200..172_800 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// Bytes of disk a directory tree takes, not following links; bounded
/// in depth, as the cache is cella's own layout.
fn du(path: &Path) -> u64 {
    fn walk(path: &Path, depth: u32) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        let own = meta.blocks() * 512;
        if !meta.is_dir() || depth == 0 {
            return own;
        }
        let children = std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| walk(&e.path(), depth - 1)).sum())
            .unwrap_or(0);
        own + children
    }
    walk(path, 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages_read_naturally() {
        let now = SystemTime::now();
        assert_eq!(ago(now, now - Duration::from_secs(5)), "5 s ago");
        assert_eq!(ago(now, now - Duration::from_secs(600)), "10 min ago");
        assert_eq!(
            ago(now, now - Duration::from_secs(3 * 86_400)),
            "3 days ago"
        );
        assert_eq!(ago(now, now + Duration::from_secs(5)), "0 s ago");
    }
}
