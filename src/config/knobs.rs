//! The environment variables cella reads, resolved once at start into a
//! `Knobs` value that travels with the run's options: no layer below
//! `main` reads the environment itself. (The settings file's own location,
//! `CELLA_SETTINGS` or the XDG directory, is settings.rs's to find.)

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

/// What the environment says, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Knobs {
    /// `CELLA_KERNEL`: the guest kernel, instead of the one beside cella.
    pub kernel: Option<PathBuf>,
    /// `CELLA_GUEST_INIT`: guest-init, instead of the one beside cella.
    pub guest_init: Option<PathBuf>,
    /// Snapshots and the apt cache: `$CELLA_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/cella`, else `~/.cache/cella`; none without a home.
    pub cache_dir: Option<PathBuf>,
    /// `CELLA_BOOT_TIMEOUT` in seconds, over the default for this host.
    pub boot_timeout: Option<Duration>,
    /// `CELLA_KERNEL_ARGS`, a debugging aid: appended to the kernel's
    /// command line, last, so it wins.
    pub kernel_args: Option<String>,
    /// `CELLA_COLD_BOOT` set and not `0`: boot, never restore a snapshot.
    pub cold_boot: bool,
    /// `CELLA_WARM=0`: restore only the plain snapshot, never a warm one
    /// (a run's image mounted and its program read), nor make one.
    pub no_warm: bool,
    /// `CELLA_SECCOMP=log`: the VM process's seccomp filters log what they
    /// would forbid (in the kernel's log) instead of stopping the VM, for
    /// finding what a filter lacks; `off`: no filters, for bench/ (cella
    /// warns on every run)
    pub seccomp: Option<String>,
    /// `CELLA_STATS` set: print where a run's time and memory go (bench/).
    pub stats: bool,
    /// `CELLA_PASST_LOG`: passt's log file (and a capture beside it).
    pub passt_log: Option<OsString>,
    /// `SOURCE_DATE_EPOCH` as given; checked when a build needs it.
    pub source_date_epoch: Option<String>,
}

impl Knobs {
    /// The process environment's knobs.
    pub fn from_env() -> Knobs {
        Knobs::from_vars(|name| std::env::var_os(name))
    }

    /// The knobs `var` gives, as `from_env` reads them.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Knobs {
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        let text = |name: &str| var(name).and_then(|v| v.into_string().ok());
        let cache_dir = match set("CELLA_CACHE_DIR") {
            Some(dir) => Some(PathBuf::from(dir)),
            None => set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|base| base.join("cella")),
        };
        Knobs {
            kernel: var("CELLA_KERNEL").map(PathBuf::from),
            guest_init: var("CELLA_GUEST_INIT").map(PathBuf::from),
            cache_dir,
            boot_timeout: text("CELLA_BOOT_TIMEOUT")
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs),
            kernel_args: text("CELLA_KERNEL_ARGS"),
            cold_boot: var("CELLA_COLD_BOOT").is_some_and(|v| v != OsStr::new("0")),
            no_warm: var("CELLA_WARM").is_some_and(|v| v == OsStr::new("0")),
            seccomp: var("CELLA_SECCOMP").map(|v| v.to_string_lossy().into_owned()),
            stats: var("CELLA_STATS").is_some(),
            passt_log: var("CELLA_PASST_LOG"),
            source_date_epoch: text("SOURCE_DATE_EPOCH"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(vars: &[(&str, &str)]) -> Knobs {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Knobs::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn cache_dir_prefers_cella_then_xdg_then_home() {
        assert_eq!(knobs(&[]).cache_dir, None);
        let home = knobs(&[("HOME", "/h")]);
        assert_eq!(home.cache_dir, Some(PathBuf::from("/h/.cache/cella")));
        let xdg = knobs(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(xdg.cache_dir, Some(PathBuf::from("/x/cella")));
        let own = knobs(&[("XDG_CACHE_HOME", "/x"), ("CELLA_CACHE_DIR", "/c")]);
        assert_eq!(own.cache_dir, Some(PathBuf::from("/c")));
        let empty = knobs(&[("HOME", "/h"), ("CELLA_CACHE_DIR", "")]);
        assert_eq!(empty.cache_dir, Some(PathBuf::from("/h/.cache/cella")));
    }

    #[test]
    fn switches_and_numbers() {
        assert!(!knobs(&[("CELLA_COLD_BOOT", "0")]).cold_boot);
        assert!(knobs(&[("CELLA_COLD_BOOT", "")]).cold_boot);
        assert!(knobs(&[("CELLA_WARM", "0")]).no_warm);
        assert!(!knobs(&[("CELLA_WARM", "1")]).no_warm);
        assert!(knobs(&[("CELLA_STATS", "")]).stats);
        let t = knobs(&[("CELLA_BOOT_TIMEOUT", "7")]);
        assert_eq!(t.boot_timeout, Some(Duration::from_secs(7)));
        assert_eq!(knobs(&[("CELLA_BOOT_TIMEOUT", "x")]).boot_timeout, None);
    }
}
