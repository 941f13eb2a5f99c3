//! Pure parsers for the text of YAML scalars: container paths, project
//! paths, numbers, modes, sizes, digests and regexes. Each returns the
//! message of an error; the decoder adds the position and field path.

use std::path::{Component, Path, PathBuf};

use super::model::Network;

/// The largest mode or umask: permission bits plus setuid, setgid, sticky.
const MAX_MODE: u32 = 0o7777;

/// An absolute path inside the container, normalised: `.` components and
/// repeated or trailing slashes are dropped (`/usr//bin/.` → `/usr/bin`).
/// A `..` component, a relative path and a NUL byte are errors.
pub(super) fn container_path(text: &str) -> Result<String, String> {
    if text.contains('\0') {
        return Err("a path must not contain a NUL byte".to_owned());
    }
    if !text.starts_with('/') {
        return Err(format!(
            "expected an absolute path in the container, found {text:?}"
        ));
    }
    let mut out = String::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("a path must not contain \"..\", found {text:?}")),
            part => {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether an absolute path is `/work` or under it (the project in vagga's terms).
pub(super) fn is_under_work(text: &str) -> bool {
    Path::new(text).strip_prefix("/work").is_ok()
}

/// An absolute host path outside the project, normalised lexically; `..`
/// is refused (it would make the permission check lexical only).
pub(super) fn host_path(text: &str) -> Result<PathBuf, String> {
    if text.contains('\0') {
        return Err("a path must not contain a NUL byte".to_owned());
    }
    let mut out = PathBuf::from("/");
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                return Err(format!(
                    "a host path must not contain \"..\", found {text:?}"
                ))
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// A path of the project: relative to the project directory, or absolute
/// under `/work` (`/work/x` is `x`, `/work` the directory itself). Returns
/// the path relative to the project directory, normalised lexically (empty
/// for the directory itself); a `..` climbing out of the project is an error.
pub(super) fn project_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("a path must not be empty".to_owned());
    }
    if text.contains('\0') {
        return Err("a path must not contain a NUL byte".to_owned());
    }
    let path = Path::new(text);
    let relative = if path.is_absolute() {
        match path.strip_prefix("/work") {
            Ok(rest) => rest,
            Err(_) => {
                return Err(format!(
                    "{text:?} is outside the project: \
                     expected a relative path or one under /work"
                ))
            }
        }
    } else {
        path
    };
    let mut out = PathBuf::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(format!("{text:?} climbs out of the project directory"));
                }
            }
            // `strip_prefix` left no root, and there are no prefixes on Unix.
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// A name inside a tmpfs (`subdirs`, `files`): relative, not empty, no `..`.
pub(super) fn relative_name(text: &str) -> Result<(), String> {
    if text.is_empty() || text.contains('\0') {
        return Err("a name must not be empty or contain a NUL byte".to_owned());
    }
    if text.starts_with('/') {
        return Err(format!("expected a relative path, found {text:?}"));
    }
    if text.split('/').any(|part| part == "..") {
        return Err(format!("a path must not contain \"..\", found {text:?}"));
    }
    Ok(())
}

/// The name of a persistent volume: one path component.
pub(super) fn volume_name(text: &str) -> Result<(), String> {
    let printable = crate::text::escape(text) == text;
    if matches!(text, "" | "." | "..") || text.contains(['/', '\0']) || !printable {
        return Err(format!(
            "expected a volume name: not empty, \".\" or \"..\", without \"/\" or control characters; found {text:?}"
        ));
    }
    Ok(())
}

/// A sha256 digest: 64 hex digits, stored lowercase.
pub(super) fn sha256(text: &str) -> Result<String, String> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("expected a sha256: 64 hex digits, found {text:?}"))
    }
}

/// A decimal integer that fits a u32 (uids and gids).
pub(super) fn uint32(text: &str) -> Result<u32, String> {
    decimal(text)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("expected an integer from 0 to {}, found {text:?}", u32::MAX))
}

fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A mode or umask, at most `0o7777`: octal with a `0o` prefix (`0o755`)
/// or a leading zero (`0755`, as YAML 1.1 reads it), else decimal (`493`).
pub(super) fn mode(text: &str) -> Result<u32, String> {
    let octal = text
        .strip_prefix("0o")
        .or_else(|| text.strip_prefix("0O"))
        .or_else(|| text.strip_prefix('0').filter(|rest| !rest.is_empty()));
    let value = match octal {
        Some(digits)
            if !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
        {
            u32::from_str_radix(digits, 8).ok()
        }
        Some(_) => None,
        None => decimal(text).and_then(|n| u32::try_from(n).ok()),
    };
    match value {
        Some(mode) if mode <= MAX_MODE => Ok(mode),
        _ => Err(format!(
            "expected a mode: octal like 0o755 or 0755, or decimal, at most 0o7777; \
             found {text:?}"
        )),
    }
}

/// A size in the settings file's notation: 16Gi, 512Ki, 1000.
pub fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A size in bytes: a decimal integer with an optional suffix, `k`, `M`,
/// `G`, `T` (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024).
pub(super) fn size(text: &str) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, unit) = UNITS
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, *unit)))
        .unwrap_or((text, 1));
    decimal(digits)
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            format!(
                "expected a size in bytes like 1048576, 100Mi or 2G \
                 (suffixes k, M, G, T, Ki, Mi, Gi, Ti), found {text:?}"
            )
        })
}

/// The bounds of `cpus`, inclusive.
pub(super) const CPUS: (u32, u32) = (1, 8);
/// The bounds of `memory` in bytes, inclusive: 64Mi and 3Gi.
pub(super) const MEMORY: (u64, u64) = (64 << 20, 3 << 30);
/// The largest `kill-unresponsive-after`, in seconds.
const MAX_KILL_AFTER: u32 = 3600;
/// The longest hostname (Linux's `HOST_NAME_MAX`).
const MAX_HOSTNAME: usize = 64;

/// `cpus` of a VM: an integer from 1 to 8.
pub(super) fn cpus(text: &str) -> Result<u32, String> {
    let (min, max) = CPUS;
    decimal(text)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("cpus must be between {min} and {max}, found {text:?}"))
}

/// `memory` of a VM: a size (as `size` reads it) from 64Mi to 3Gi.
pub(super) fn memory(text: &str) -> Result<u64, String> {
    let (min, max) = MEMORY;
    let bytes = size(text)?;
    if (min..=max).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "memory must be between 64Mi and 3Gi (inclusive), found {text:?}"
        ))
    }
}

/// `kill-unresponsive-after`: whole seconds from 0 to 3600.
pub(super) fn kill_after(text: &str) -> Result<u32, String> {
    decimal(text)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= MAX_KILL_AFTER)
        .ok_or_else(|| {
            format!("expected a number of seconds from 0 to {MAX_KILL_AFTER}, found {text:?}")
        })
}

/// A YAML boolean: `true` or `false` (also `True`, `TRUE`…).
/// `network`: `none` or `user`.
pub(super) fn network(text: &str) -> Result<Network, String> {
    match text {
        "none" => Ok(Network::None),
        "user" => Ok(Network::User),
        other => Err(format!("unknown network {other:?}, expected none or user")),
    }
}

/// A TCP port number, 1 to 65535.
pub(super) fn port(text: &str) -> Result<u16, String> {
    decimal(text)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("expected a port number from 1 to 65535, found {text:?}"))
}

/// The longest suite, architecture or package name cella accepts.
const MAX_NAME: usize = 64;

/// A Debian suite or codename (`bookworm`, `stable`,
/// `bookworm-backports`), as the archive names them: a lowercase letter or
/// digit, then lowercase letters, digits, `-` and `.`. Never an option.
pub(super) fn suite(text: &str) -> Result<String, String> {
    if is_suite(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected a suite name like bookworm (lowercase letters, digits, \"-\" and \".\", \
             starting with a letter or digit), found {text:?}"
        ))
    }
}

fn is_suite(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && text.len() <= MAX_NAME
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !text.contains("..")
}

/// mmdebstrap's variants that make a bootable root.
pub(super) const DEBIAN_VARIANTS: &[&str] = &[
    "essential",
    "apt",
    "required",
    "minbase",
    "buildd",
    "important",
    "standard",
];

pub(super) fn variant(text: &str) -> Result<String, String> {
    if DEBIAN_VARIANTS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "unknown variant {text:?}, expected one of {}",
            DEBIAN_VARIANTS.join(", ")
        ))
    }
}

/// A mirror: an http or https URL in the strict form of
/// [`HttpUrl`](super::netpolicy::HttpUrl), without its trailing `/`.
pub(super) fn mirror(text: &str) -> Result<String, String> {
    let url = super::netpolicy::HttpUrl::parse(text)?;
    Ok(url.to_string().trim_end_matches('/').to_owned())
}

/// A package for apt-get install, by Debian policy: a name (lowercase
/// letters, digits, `+`, `-` and `.`, at least two, starting with a letter
/// or digit), optionally `:ARCH`, then optionally `=VERSION` (letters,
/// digits, `.+~-`, an epoch `N:`) or `/RELEASE` (a suite). Nothing apt
/// would read as an option, a file or a pattern.
pub(super) fn package(text: &str) -> Result<String, String> {
    if is_package(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected a Debian package: NAME, NAME=VERSION or NAME/RELEASE, \
             optionally NAME:ARCH, found {text:?}"
        ))
    }
}

fn is_package(text: &str) -> bool {
    let (spec, version, release) = match (text.split_once('='), text.split_once('/')) {
        (Some((spec, version)), None) => (spec, Some(version), None),
        (None, Some((spec, release))) => (spec, None, Some(release)),
        (None, None) => (text, None, None),
        _ => return false,
    };
    let (name, arch) = match spec.split_once(':') {
        Some((name, arch)) => (name, Some(arch)),
        None => (spec, None),
    };
    let name_ok = name.len() >= 2
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let arch_ok = arch.is_none_or(|a| {
        !a.is_empty()
            && a.len() <= MAX_NAME
            && a.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let version_ok = version.is_none_or(|v| {
        let upstream = match v.split_once(':') {
            Some((epoch, rest)) => {
                if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                    return false;
                }
                rest
            }
            None => v,
        };
        upstream.len() <= 2 * MAX_NAME
            && upstream.starts_with(|c: char| c.is_ascii_alphanumeric())
            && upstream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~-".contains(&b))
    });
    name_ok && arch_ok && version_ok && release.is_none_or(is_suite)
}

pub(super) fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        _ => Err(format!("expected true or false, found {text:?}")),
    }
}

/// A hostname: 1 to 64 letters, digits, `-` and `.`, not starting with `-`.
pub(super) fn hostname(text: &str) -> Result<String, String> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    if !text.bytes().all(valid) {
        Err(format!(
            "invalid hostname {text:?}: use letters, digits, \"-\" and \".\""
        ))
    } else if text.is_empty() || text.len() > MAX_HOSTNAME {
        Err(format!(
            "invalid hostname {text:?}: use 1 to {MAX_HOSTNAME} characters"
        ))
    } else if text.starts_with('-') {
        Err(format!(
            "invalid hostname {text:?}: it must not start with \"-\""
        ))
    } else {
        Ok(text.to_owned())
    }
}

/// A file of the project, as `project_path` reads it, but not the
/// project directory itself.
pub(super) fn project_file(text: &str) -> Result<PathBuf, String> {
    let path = project_path(text)?;
    if path.as_os_str().is_empty() {
        return Err(format!(
            "{text:?} is the project directory, expected a file in it"
        ));
    }
    Ok(path)
}

/// Checks a regex compiles with the `regex` crate.
pub(super) fn regex(text: &str) -> Result<(), String> {
    match regex::Regex::new(text) {
        Ok(_) => Ok(()),
        Err(e) => {
            // A syntax error spans lines (the pattern, a caret, the reason):
            // keep the reason.
            let text_of_error = e.to_string();
            let reason = text_of_error
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            Err(format!("invalid regex {text:?}: {reason}"))
        }
    }
}

/// `text` in single quotes for sh.
pub(super) fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// What a project path must be for a step.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    FileOrDirectory,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths() {
        assert_eq!(container_path("/").unwrap(), "/");
        assert_eq!(container_path("//./").unwrap(), "/");
        assert_eq!(container_path("/usr//bin/").unwrap(), "/usr/bin");
        assert_eq!(container_path("/a/./b/.").unwrap(), "/a/b");
        assert!(container_path("usr").is_err());
        assert!(container_path("").is_err());
        assert!(container_path("/a/../b").is_err());
        assert!(container_path("/a\0").is_err());
    }

    #[test]
    fn project_paths() {
        assert_eq!(project_path("a/b").unwrap(), Path::new("a/b"));
        assert_eq!(project_path("./a/../b/").unwrap(), Path::new("b"));
        assert_eq!(project_path(".").unwrap(), Path::new(""));
        assert_eq!(project_path("/work").unwrap(), Path::new(""));
        assert_eq!(project_path("/work/").unwrap(), Path::new(""));
        assert_eq!(project_path("/work/x/y").unwrap(), Path::new("x/y"));
        assert!(project_path("/workshop").is_err());
        assert!(project_path("/etc").is_err());
        assert!(project_path("a/../..").is_err());
        assert!(project_path("/work/..").is_err());
        assert!(project_path("").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(mode("0o022"), Ok(0o22));
        assert_eq!(mode("0022"), Ok(0o22));
        assert_eq!(mode("18"), Ok(0o22));
        assert_eq!(mode("0"), Ok(0));
        assert_eq!(mode("0o7777"), Ok(0o7777));
        assert_eq!(mode("4095"), Ok(0o7777));
        assert!(mode("0o10000").is_err());
        assert!(mode("4096").is_err());
        assert!(mode("0o").is_err());
        assert!(mode("089").is_err());
        assert!(mode("-1").is_err());
        assert!(mode("rwx").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("0"), Ok(0));
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("100Mi"), Ok(100 << 20));
        assert_eq!(size("1k"), Ok(1000));
        assert_eq!(size("2G"), Ok(2_000_000_000));
        assert_eq!(size("1Ti"), Ok(1 << 40));
        assert_eq!(size("3T"), Ok(3_000_000_000_000));
        assert!(size("1K").is_err());
        assert!(size("Mi").is_err());
        assert!(size("1.5G").is_err());
        assert!(size("99999999999999999999").is_err());
        assert!(size("20000000Ti").is_err());
    }

    #[test]
    fn numbers_and_digests() {
        assert_eq!(uint32("0"), Ok(0));
        assert_eq!(uint32("4294967295"), Ok(u32::MAX));
        assert!(uint32("4294967296").is_err());
        assert!(uint32("+1").is_err());
        let digest = "AB".repeat(32);
        assert_eq!(sha256(&digest), Ok("ab".repeat(32)));
        assert!(sha256("ab").is_err());
        assert!(sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn vm_settings() {
        assert_eq!(cpus("1"), Ok(1));
        assert_eq!(cpus("8"), Ok(8));
        assert!(cpus("0").is_err());
        assert!(cpus("9").is_err());
        assert!(cpus("-1").is_err());
        assert_eq!(memory("64Mi"), Ok(64 << 20));
        assert_eq!(memory("3Gi"), Ok(3 << 30));
        assert_eq!(memory("3G"), Ok(3_000_000_000));
        assert!(memory("67108863").is_err());
        assert!(memory("3221225473").is_err());
        assert_eq!(kill_after("0"), Ok(0));
        assert_eq!(kill_after("3600"), Ok(3600));
        assert!(kill_after("3601").is_err());
        assert_eq!(boolean("FALSE"), Ok(false));
        assert!(boolean("yes").is_err());
        assert_eq!(hostname("a-1.b").as_deref(), Ok("a-1.b"));
        assert!(hostname(&"a".repeat(64)).is_ok());
        assert!(hostname(&"a".repeat(65)).is_err());
        assert!(hostname("").is_err());
        assert!(hostname("-a").is_err());
        assert!(hostname("a_b").is_err());
        assert_eq!(project_file("/work/.env"), Ok(PathBuf::from(".env")));
        assert!(project_file("/work").is_err());
    }

    #[test]
    fn network_settings() {
        assert_eq!(network("user"), Ok(Network::User));
        assert!(network("host").is_err());
        assert_eq!(port("8080"), Ok(8080));
        assert!(port("0").is_err() && port("65536").is_err() && port("http").is_err());
        assert_eq!(suite("bookworm"), Ok("bookworm".to_owned()));
        for ok in [
            "stable",
            "bookworm-backports",
            "sid",
            "12",
            "rc-buggy",
            "trixie.x",
        ] {
            assert!(suite(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Bookworm",
            "",
            "a b",
            "--foo",
            "-x",
            ".",
            "a..b",
            "a/b",
            "a_b",
            "bookworm\n",
        ] {
            assert!(suite(bad).is_err(), "{bad:?}");
        }
        assert!(suite(&"a".repeat(65)).is_err());
        assert!(variant("minbase").is_ok() && variant("extract").is_err());
        assert!(variant("--dry-run").is_err());
        assert_eq!(
            mirror("http://deb.debian.org/debian/"),
            Ok("http://deb.debian.org/debian".to_owned())
        );
        assert_eq!(
            mirror("https://Mirror.Example:8443/debian"),
            Ok("https://mirror.example:8443/debian".to_owned())
        );
        for bad in [
            "ftp://x",
            "http://a b",
            "--aptopt=x",
            "http://x/ [trusted=yes]",
            "http://x/?a",
            "http://u@x/",
            "deb http://x/ y main",
        ] {
            assert!(mirror(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packages_follow_debian_policy() {
        for ok in [
            "python3-minimal",
            "g++",
            "libstdc++6",
            "libc6=2.36-9",
            "curl=7.88.1-10+deb12u5",
            "passwd=1:4.13+dfsg1-1",
            "hello/bookworm-backports",
            "libc6:amd64",
            "libc6:i386=2.36-9",
            "0ad",
        ] {
            assert_eq!(package(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "-o",
            "--simulate",
            "./x.deb",
            "/tmp/x.deb",
            "a b",
            "a",
            "Hello",
            "a_b",
            "hel*",
            "^hello",
            "?name(x)",
            "a=1=2",
            "a=1/b",
            "a/b/c",
            "a=",
            "a=-1",
            "a=x:1",
            "a:",
            "a:AMD64",
            "a/--x",
            "a=1 b",
            "",
        ] {
            assert!(package(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regexes() {
        assert_eq!(regex(r"\.rs$"), Ok(()));
        assert_eq!(
            regex("(").unwrap_err(),
            "invalid regex \"(\": unclosed group"
        );
    }
}
