//! The user's settings file: what a project's cella.yaml alone may not
//! decide. It is trusted (the user wrote it); cella.yaml is not. It says
//! which host directories outside the project binds may name, whether
//! guests may have a network at all and which non-public addresses they
//! (and cella's own fetches for a project) may reach, and the limits on
//! what a guest or a project can make the host hold.
//!
//! `$CELLA_SETTINGS`, else `$XDG_CONFIG_HOME/cella/settings.yaml`, else
//! `~/.config/cella/settings.yaml`; a missing file is an empty one.
//!
//! ```yaml
//! allow-host-paths: [/mnt/datasets]
//! network:
//!   allow: false                     # CI: refuse `network: user`, `ports`, `build-network`
//!   allow-addresses: [127.0.0.1/32]  # beyond the public internet (default: none)
//! registries:
//!   default: docker.io               # where `!Image docker://NAME:TAG` pulls from
//!   insecure: [127.0.0.1:5000]       # registries reached over plain http
//! limits:
//!   write: 16Gi                      # bytes a run may add to /work and volumes
//!   image: 16Gi                      # an image, and a build VM's export stream
//!   inodes: 1Mi                      # files, directories… an image's tree may hold
//!   config: 16Mi                     # cella.yaml, counted after expanding aliases
//!   console-buffer: 256Ki            # one buffer a guest hands a console port
//!   control-queue: 4Mi               # control messages held for or from a guest
//!   warm-snapshots: 2Gi              # disk space of the warm snapshots in the cache
//!   downloads: 8Gi                   # disk space of the files of !Tar and !Download URLs in the cache
//! ```

use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::yaml::{self, Node, Value};

/// What the user allows and bounds; the defaults are what an empty file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Absolute host directories (and everything under them) that
    /// `!BindRW`/`!BindRO` volumes may name.
    pub allow_host_paths: Vec<PathBuf>,
    pub network: NetworkPolicy,
    pub registries: Registries,
    pub limits: Limits,
}

/// Where `!Image docker://…` pulls from, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registries {
    /// The registry of a reference without a host (`docker://debian:12`),
    /// `HOST[:PORT]`; default `docker.io`.
    pub default: String,
    /// Registries (`HOST[:PORT]`) reached over plain http instead of https.
    pub insecure: Vec<String>,
}

impl Default for Registries {
    fn default() -> Self {
        Registries {
            default: "docker.io".to_owned(),
            insecure: Vec::new(),
        }
    }
}

/// Who may have a network, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// False: a VM never gets a NIC; a project that asks for one
    /// (`network: user`, `ports`, `build-network: user`) fails to run.
    pub allow: bool,
    /// Addresses in the loopback, private, link-local, shared and reserved
    /// ranges that guests with `network: user` and cella's own fetches for
    /// a project (a `!Debian` mirror, apt sources) may reach anyway. The
    /// public internet needs no entry. `127.0.0.0/8` (or part of it) lets
    /// a guest reach the host's loopback through its gateway.
    pub allow_addresses: Vec<Ipv4Net>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            allow: true,
            allow_addresses: Vec::new(),
        }
    }
}

/// Bounds on what a guest or a project can make the host hold or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes one run may add to its shares (/work, binds, persistent
    /// volumes); past it the guest gets ENOSPC.
    pub write: u64,
    /// Bytes of one image, and of one build VM's export stream.
    pub image: u64,
    /// Inodes an image's tree may hold while it is built (what it holds
    /// in memory, about 100 to 500 bytes each).
    pub inodes: u64,
    /// Bytes of cella.yaml's scalars after expanding aliases.
    pub config: u64,
    /// Bytes of one buffer (descriptor chain) a guest hands the console.
    pub console_buffer: u64,
    /// Bytes of control messages held for a guest or from one.
    pub control_queue: u64,
    /// Bytes of disk the warm snapshots in the user's cache may take
    /// together; the least recently used go first.
    pub warm_snapshots: u64,
    /// Bytes of disk the files of `!Tar` and `!Download` URLs in the
    /// user's cache may take together; the least recently used go first.
    pub downloads: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            write: 16 << 30,
            image: 16 << 30,
            inodes: 1 << 20,
            config: 16 << 20,
            console_buffer: 256 << 10,
            control_queue: 4 << 20,
            warm_snapshots: 2 << 30,
            downloads: 8 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{}: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Where the settings file is looked for.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CELLA_SETTINGS") {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("cella").join("settings.yaml"))
}

/// The settings file's path and a key of it, for messages.
pub fn describe(key: &str) -> String {
    path().map_or_else(
        || format!("the settings file ({key})"),
        |p| format!("{} ({key})", p.display()),
    )
}

pub use super::scalars::size_text;

/// A limit as messages show it: "16Gi (limits.image in PATH)".
pub fn limit_text(key: &str, bytes: u64) -> String {
    format!("{} ({})", size_text(bytes), limit_source(key))
}

/// Where a limit is set: "limits.image in PATH".
pub fn limit_source(key: &str) -> String {
    let file = path().map_or_else(
        || "the settings file".to_owned(),
        |p| p.display().to_string(),
    );
    format!("limits.{key} in {file}")
}

/// Reads the user's settings file; a missing one gives the defaults.
pub fn load() -> Result<Settings, SettingsError> {
    let Some(path) = path() else {
        return Ok(Settings::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(e) => return Err(SettingsError::Read(path, e)),
    };
    parse(&text).map_err(|message| SettingsError::Invalid { path, message })
}

/// An IPv4 network written `A.B.C.D/N`, or one address `A.B.C.D` (a /32).
pub fn parse_net(text: &str) -> Result<Ipv4Net, String> {
    let net = match text.parse::<Ipv4Net>() {
        Ok(net) => net,
        Err(_) => text
            .parse::<std::net::Ipv4Addr>()
            .map(Ipv4Net::from)
            .map_err(|_| {
                format!("expected an IPv4 address or network like 10.1.0.0/16, found {text:?}")
            })?,
    };
    Ok(net.trunc())
}

/// The settings file's fields as written, checked for shape: known keys
/// only, each of the right kind.
#[derive(Default)]
struct File {
    allow_host_paths: Vec<PathBuf>,
    allow: Option<bool>,
    allow_addresses: Vec<String>,
    default_registry: Option<String>,
    insecure: Vec<String>,
    /// (key, text) of each limit given.
    limits: Vec<(String, String)>,
}

/// The keys of `limits`, as written.
const LIMIT_KEYS: [&str; 8] = [
    "write",
    "image",
    "inodes",
    "config",
    "console-buffer",
    "control-queue",
    "warm-snapshots",
    "downloads",
];

/// "LINE:COL: MESSAGE" at `node`.
fn at(node: &Node, message: impl std::fmt::Display) -> String {
    format!("{}: {message}", node.pos)
}

/// A mapping's entries with string keys, each key one of `known`;
/// `field` names the mapping in messages ("" for the file itself).
fn entries<'n>(
    node: &'n Node,
    field: &str,
    known: &[&str],
) -> Result<Vec<(&'n str, &'n Node)>, String> {
    let (label, inside) = if field.is_empty() {
        (String::new(), String::new())
    } else {
        (format!("{field}: "), format!(" in {field}"))
    };
    let map = match &node.value {
        Value::Null => return Ok(Vec::new()),
        Value::Map(map) => map,
        _ => {
            return Err(at(
                node,
                format!("{label}expected a mapping, found {}", node.kind_name()),
            ))
        }
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Value::Scalar { text, .. } = &key.value else {
            return Err(at(
                key,
                format!("{label}expected a string key, found {}", key.kind_name()),
            ));
        };
        if !known.contains(&text.as_str()) {
            let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            return Err(at(
                key,
                format!(
                    "unknown field `{text}`{inside}, expected one of {}",
                    expected.join(", ")
                ),
            ));
        }
        if out.iter().any(|(k, _)| k == text) {
            return Err(at(key, format!("duplicate field `{text}`{inside}")));
        }
        out.push((text.as_str(), value));
    }
    Ok(out)
}

/// A scalar's text.
fn text<'n>(node: &'n Node, field: &str) -> Result<&'n str, String> {
    match &node.value {
        Value::Scalar { text, .. } => Ok(text),
        _ => Err(at(
            node,
            format!("{field}: expected a string, found {}", node.kind_name()),
        )),
    }
}

/// A list of scalars' texts (null: none).
fn texts<'n>(node: &'n Node, field: &str) -> Result<Vec<&'n str>, String> {
    match &node.value {
        Value::Null => Ok(Vec::new()),
        Value::Seq(items) => items.iter().map(|i| text(i, field)).collect(),
        _ => Err(at(
            node,
            format!("{field}: expected a list, found {}", node.kind_name()),
        )),
    }
}

/// Reads the file's shape with the YAML reader cella.yaml uses.
fn read(text_in: &str) -> Result<File, String> {
    let root = yaml::parse(text_in, MAX_SETTINGS_BYTES).map_err(|e| at_pos(e.pos, e.message))?;
    let mut file = File::default();
    let Some(root) = root else {
        return Ok(file);
    };
    let known = ["allow-host-paths", "network", "registries", "limits"];
    for (key, value) in entries(&root, "", &known)? {
        match key {
            "allow-host-paths" => {
                let paths = texts(value, key)?;
                file.allow_host_paths = paths.into_iter().map(PathBuf::from).collect();
            }
            "network" => {
                for (k, v) in entries(value, "network", &["allow", "allow-addresses"])? {
                    let field = format!("network.{k}");
                    if k == "allow" {
                        let allow = super::scalars::boolean(text(v, &field)?)
                            .map_err(|e| at(v, format!("{field}: {e}")))?;
                        file.allow = Some(allow);
                    } else {
                        let list = texts(v, &field)?;
                        file.allow_addresses = list.into_iter().map(str::to_owned).collect();
                    }
                }
            }
            "registries" => {
                for (k, v) in entries(value, "registries", &["default", "insecure"])? {
                    let field = format!("registries.{k}");
                    let check = |t: &str| {
                        super::refs::registry_host(t).map_err(|e| at(v, format!("{field}: {e}")))
                    };
                    if k == "default" {
                        file.default_registry = Some(check(text(v, &field)?)?);
                    } else {
                        for t in texts(v, &field)? {
                            file.insecure.push(check(t)?);
                        }
                    }
                }
            }
            _ => {
                for (k, v) in entries(value, "limits", &LIMIT_KEYS)? {
                    let t = text(v, &format!("limits.{k}"))?;
                    file.limits.push((k.to_owned(), t.to_owned()));
                }
            }
        }
    }
    Ok(file)
}

fn at_pos(pos: super::Pos, message: String) -> String {
    format!("{pos}: {message}")
}

/// Bytes the settings file's YAML may expand to (aliases included).
const MAX_SETTINGS_BYTES: u64 = 1 << 20;

fn parse(text: &str) -> Result<Settings, String> {
    if text.trim().is_empty() {
        return Ok(Settings::default());
    }
    let file = read(text)?;
    if let Some(p) = file.allow_host_paths.iter().find(|p| !p.is_absolute()) {
        return Err(format!(
            "allow-host-paths: {} is not an absolute path",
            p.display()
        ));
    }
    let mut allow_addresses = Vec::new();
    for text in &file.allow_addresses {
        allow_addresses.push(parse_net(text).map_err(|e| format!("network.allow-addresses: {e}"))?);
    }
    let defaults = Limits::default();
    let size = |key: &str, default: u64| -> Result<u64, String> {
        match file.limits.iter().find(|(k, _)| k == key) {
            None => Ok(default),
            Some((_, text)) => super::scalars::size(text)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("limits.{key}: expected a size like 16Gi, found {text:?}")),
        }
    };
    Ok(Settings {
        allow_host_paths: file.allow_host_paths.clone(),
        network: NetworkPolicy {
            allow: file.allow.unwrap_or(true),
            allow_addresses,
        },
        registries: Registries {
            default: file
                .default_registry
                .clone()
                .unwrap_or_else(|| Registries::default().default),
            insecure: file.insecure.clone(),
        },
        limits: Limits {
            write: size("write", defaults.write)?,
            image: size("image", defaults.image)?,
            inodes: size("inodes", defaults.inodes)?,
            config: size("config", defaults.config)?,
            console_buffer: size("console-buffer", defaults.console_buffer)?,
            control_queue: size("control-queue", defaults.control_queue)?,
            warm_snapshots: size("warm-snapshots", defaults.warm_snapshots)?,
            downloads: size("downloads", defaults.downloads)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_what_they_do_not_know() {
        let s = parse("allow-host-paths: [/data, /srv/x]\n").unwrap();
        assert_eq!(
            s.allow_host_paths,
            vec![PathBuf::from("/data"), PathBuf::from("/srv/x")]
        );
        assert_eq!(parse("").unwrap(), Settings::default());
        let e = parse("allow-host-path: [/data]\n").unwrap_err();
        assert!(e.contains("unknown field `allow-host-path`"), "{e}");
        assert!(e.starts_with("1:1: "), "{e}");
        let e = parse("allow-host-paths: [data]\n").unwrap_err();
        assert!(e.contains("not an absolute path"), "{e}");
        let s = parse("registries: {default: 'reg.example:5000', insecure: [127.0.0.1:5000]}\n")
            .unwrap();
        assert_eq!(s.registries.default, "reg.example:5000");
        assert_eq!(s.registries.insecure, ["127.0.0.1:5000"]);
        let e = parse("registries: {insecure: ['http://x']}\n").unwrap_err();
        assert!(e.contains("registries.insecure: expected"), "{e}");
    }

    #[test]
    fn sizes_use_the_settings_notation() {
        assert_eq!(size_text(16 << 20), "16Mi");
        assert_eq!(size_text(16 << 30), "16Gi");
        assert_eq!(size_text(1536), "1536");
        assert_eq!(size_text(3 << 10), "3Ki");
    }

    #[test]
    fn network_policy_and_limits() {
        let s = parse(
            "network:\n  allow: false\n  allow-addresses: [127.0.0.1, 10.1.2.3/16]\nlimits:\n  write: 1Gi\n  config: 1Mi\n",
        )
        .unwrap();
        assert!(!s.network.allow);
        let nets: Vec<String> = s
            .network
            .allow_addresses
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.1.0.0/16"]);
        assert_eq!(s.limits.write, 1 << 30);
        assert_eq!(s.limits.config, 1 << 20);
        assert_eq!(s.limits.image, Limits::default().image);
        let e = parse("network:\n  allow-addresses: [localhost]\n").unwrap_err();
        assert!(e.contains("network.allow-addresses"), "{e}");
        assert_eq!(
            parse("limits:\n  inodes: 2Mi\n").unwrap().limits.inodes,
            2 << 20
        );
        assert_eq!(Limits::default().inodes, 1 << 20);
        let e = parse("limits:\n  write: 0\n").unwrap_err();
        assert!(e.contains("limits.write"), "{e}");
        let e = parse("limits:\n  disk: 1Gi\n").unwrap_err();
        assert!(e.contains("unknown field `disk`"), "{e}");
    }

    #[test]
    fn shape_errors_name_the_line_and_the_field() {
        let e = parse("network:\n  allow: maybe\n").unwrap_err();
        assert!(
            e.starts_with("2:10: network.allow: expected true or false"),
            "{e}"
        );
        let e = parse("limits: [1Gi]\n").unwrap_err();
        assert!(
            e.starts_with("1:9: limits: expected a mapping, found a list"),
            "{e}"
        );
        let e = parse("allow-host-paths: /data\n").unwrap_err();
        assert!(
            e.starts_with("1:19: allow-host-paths: expected a list"),
            "{e}"
        );
        let e = parse("limits:\n  write: 1Gi\n  write: 2Gi\n").unwrap_err();
        assert!(
            e.starts_with("3:3: duplicate field `write` in limits"),
            "{e}"
        );
        let e = parse("network: {allow: [true]}\n").unwrap_err();
        assert!(
            e.contains("network.allow: expected a string, found a list"),
            "{e}"
        );
        assert!(parse(": :\n").is_err());
        // A plain number is a size in bytes.
        assert_eq!(
            parse("limits:\n  write: 4096\n").unwrap().limits.write,
            4096
        );
        assert_eq!(parse("network:\nlimits:\n").unwrap(), Settings::default());
    }
}
