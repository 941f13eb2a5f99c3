//! vagga's language package steps, each as the steps it stands for:
//! `!Py3Install [specs]`, `!Py3Requirements FILE` (with `!PipConfig`),
//! `!NpmInstall [specs]`, `!NpmDependencies {file, ...}` (with
//! `!NpmConfig`), `!GemInstall [gems]`, `!GemBundle {gemfile, ...}` (with
//! `!GemConfig`).
//!
//! Each becomes, in order: the interpreter and its package manager
//! installed from the image's Debian sources (`!Install`, once per
//! container, unless the config step says `install-python: false` and the
//! like), the tool's download cache mounted from the project's cache
//! directory (as `!CacheDirs`), and the package manager run in a build VM
//! with the build's network ([`Step::Package`]). A requirements file joins
//! the image id (as `!Depends`); the guest reads it at `/work`, so cella
//! never parses it. Specs go to the package manager as arguments of their
//! own, quoted, and none may start with `-` (vagga: "Specifying
//! command-line arguments instead of package names is not supported").
//!
//! The caches are the project's (`.cella/cache/NAME`), not shared between
//! projects as vagga's may be: a build VM writes them, and a hostile
//! project's build must not plant a package another project installs.

use std::path::PathBuf;

use super::decode::{Decoder, Fields};
use super::error::ConfigError;
use super::model::{Selection, SetupStep, Step};
use super::scalars::{quoted, Kind};
use super::yaml::{Node, Value};

/// Specs in one step.
const MAX_SPECS: usize = 256;
/// The longest spec, URL or program name.
const MAX_SPEC: usize = 1024;

const PIP_FIELDS: &[&str] = &[
    "dependencies",
    "index-urls",
    "find-links",
    "trusted-hosts",
    "cache-wheels",
    "install-python",
    "python-exe",
];
const NPM_CONFIG_FIELDS: &[&str] = &["npm-exe", "npm_exe", "install-node", "install_node"];
const NPM_DEPS_FIELDS: &[&str] = &["file", "package", "dev", "peer", "bundled", "optional"];
const GEM_CONFIG_FIELDS: &[&str] = &[
    "install_ruby",
    "install-ruby",
    "gem_exe",
    "gem-exe",
    "update_gem",
    "update-gem",
];
const GEM_BUNDLE_FIELDS: &[&str] = &["gemfile", "without", "trust_policy", "trust-policy"];

/// The script that lists a package.json's dependencies of the kinds
/// given after the file, one `NAME@VERSION` a line (run by node, in the
/// guest).
const NPM_LIST: &str = r#"const [f, ...kinds] = process.argv.slice(1);
const p = JSON.parse(require("fs").readFileSync(f, "utf8"));
const seen = new Set();
for (const k of kinds) {
  let d = p[k];
  if (Array.isArray(d)) d = Object.fromEntries(d.map((n) => [n, (p.dependencies || {})[n] || "*"]));
  for (const [n, v] of Object.entries(d || {})) {
    const s = n + "@" + v;
    if (!seen.has(s)) { seen.add(s); console.log(s); }
  }
}"#;

/// `!PipConfig`, replaced by each one (as vagga).
#[derive(Clone)]
struct Pip {
    dependencies: bool,
    index_urls: Vec<String>,
    find_links: Vec<String>,
    trusted_hosts: Vec<String>,
    cache_wheels: bool,
    install_python: bool,
    python_exe: String,
}

impl Default for Pip {
    fn default() -> Self {
        Pip {
            dependencies: false,
            index_urls: Vec::new(),
            find_links: Vec::new(),
            trusted_hosts: Vec::new(),
            cache_wheels: true,
            install_python: true,
            python_exe: "python3".into(),
        }
    }
}

/// `!NpmConfig`.
struct Npm {
    npm_exe: String,
    install_node: bool,
}

impl Default for Npm {
    fn default() -> Self {
        Npm {
            npm_exe: "npm".into(),
            install_node: true,
        }
    }
}

/// `!GemConfig`.
struct Gem {
    gem_exe: String,
    install_ruby: bool,
}

impl Default for Gem {
    fn default() -> Self {
        Gem {
            gem_exe: "gem".into(),
            install_ruby: true,
        }
    }
}

/// The language steps' state along one container's setup.
#[derive(Default)]
pub(super) struct Languages {
    pip: Pip,
    npm: Npm,
    gem: Gem,
    /// The Debian packages installed so far for them.
    installed: Vec<&'static str>,
    /// The cache mounts given so far.
    cached: Vec<(String, String)>,
}

impl Decoder<'_> {
    /// The steps a language step stands for; `None` when `node` is not
    /// one. The config steps stand for none.
    pub(super) fn language(
        &self,
        node: &Node,
        path: &str,
        state: &mut Languages,
    ) -> Result<Option<Vec<SetupStep>>, ConfigError> {
        let Some(tag) = node.tag.as_deref() else {
            return Ok(None);
        };
        // In order: a file's `!Depends` (pushed by its arm), `!Install`,
        // `!CacheDirs`, the tool.
        let mut out = Vec::new();
        let mut push = |step| {
            out.push(SetupStep {
                step,
                pos: node.pos,
            })
        };
        let (tag, summary, script, install, caches): (&'static str, _, _, &[&'static str], _) =
            match tag {
                "PipConfig" => {
                    state.pip = self.pip_config(node, path)?;
                    return Ok(Some(Vec::new()));
                }
                "NpmConfig" => {
                    let f = self.fields(node, path, NPM_CONFIG_FIELDS)?;
                    state.npm = Npm {
                        npm_exe: self.exe(&f, &["npm-exe", "npm_exe"], "npm")?,
                        install_node: self.flag(&f, &["install-node", "install_node"], true)?,
                    };
                    return Ok(Some(Vec::new()));
                }
                "GemConfig" => {
                    let f = self.fields(node, path, GEM_CONFIG_FIELDS)?;
                    // `update_gem` is read and checked, not acted on:
                    // Debian's rubygems refuses `gem update --system`.
                    self.flag(&f, &["update_gem", "update-gem"], true)?;
                    state.gem = Gem {
                        gem_exe: self.exe(&f, &["gem_exe", "gem-exe"], "gem")?,
                        install_ruby: self.flag(&f, &["install_ruby", "install-ruby"], true)?,
                    };
                    return Ok(Some(Vec::new()));
                }
                "Py3Install" | "Py3Requirements" => {
                    let (summary, args) = if tag == "Py3Install" {
                        let specs = self.specs(node, path)?;
                        (specs.join(" "), specs.iter().map(|s| quoted(s)).collect())
                    } else {
                        let (text, rel) =
                            self.project_file(Some(node), node.pos, path, "requirements.txt")?;
                        push(Step::Depends {
                            path: text.clone(),
                            rel: rel.clone(),
                            select: Selection::default(),
                        });
                        (text, vec!["-r".to_owned(), work_path(&rel)])
                    };
                    let pip = &state.pip;
                    let install: &[&'static str] = match pip.install_python {
                        true => &["python3", "python3-pip"],
                        false => &[],
                    };
                    let caches = match pip.cache_wheels {
                        true => vec![("/tmp/pip-cache", "pip-cache")],
                        false => vec![
                            ("/tmp/pip-cache/http", "pip-cache-http"),
                            ("/tmp/pip-cache/http-v2", "pip-cache-http-v2"),
                        ],
                    };
                    let tag = if tag == "Py3Install" {
                        "Py3Install"
                    } else {
                        "Py3Requirements"
                    };
                    (tag, summary, pip_script(pip, &args), install, caches)
                }
                "NpmInstall" => {
                    let specs = self.specs(node, path)?;
                    let args: Vec<String> = specs.iter().map(|s| quoted(s)).collect();
                    let script = format!("{} {}", npm_install(&state.npm), args.join(" "));
                    let install: &[&'static str] = match state.npm.install_node {
                        true => &["nodejs", "npm"],
                        false => &[],
                    };
                    let caches = vec![("/tmp/npm-cache", "npm-cache")];
                    ("NpmInstall", specs.join(" "), script, install, caches)
                }
                "NpmDependencies" => {
                    let (text, rel, kinds) = self.npm_dependencies(node, path)?;
                    push(Step::Depends {
                        path: text.clone(),
                        rel: rel.clone(),
                        select: Selection::default(),
                    });
                    let script = format!(
                        "node -e {} {} {} > /tmp/.cella-npm-deps\n\
                         tr '\\n' '\\0' < /tmp/.cella-npm-deps | xargs -0 -r {}",
                        quoted(NPM_LIST),
                        work_path(&rel),
                        kinds.join(" "),
                        npm_install(&state.npm)
                    );
                    let install: &[&'static str] = match state.npm.install_node {
                        true => &["nodejs", "npm"],
                        false => &[],
                    };
                    let caches = vec![("/tmp/npm-cache", "npm-cache")];
                    ("NpmDependencies", text, script, install, caches)
                }
                "GemInstall" => {
                    let specs = self.specs(node, path)?;
                    let args: Vec<String> = specs.iter().map(|s| quoted(s)).collect();
                    let script = format!(
                        "{} install --bindir /usr/local/bin --no-document {}",
                        quoted(&state.gem.gem_exe),
                        args.join(" ")
                    );
                    let install: &[&'static str] = match state.gem.install_ruby {
                        true => &["ruby"],
                        false => &[],
                    };
                    ("GemInstall", specs.join(" "), script, install, Vec::new())
                }
                "GemBundle" => {
                    let (text, rel, extra) = self.gem_bundle(node, path)?;
                    push(Step::Depends {
                        path: text.clone(),
                        rel: rel.clone(),
                        select: Selection::default(),
                    });
                    let dir = work_path(&rel.parent().map(PathBuf::from).unwrap_or_default());
                    let script = format!(
                        "cd {dir}\nbundle install --system --binstubs /usr/local/bin --gemfile {}{extra}",
                        work_path(&rel)
                    );
                    let install: &[&'static str] = match state.gem.install_ruby {
                        true => &["ruby", "bundler"],
                        false => &[],
                    };
                    ("GemBundle", text, script, install, Vec::new())
                }
                _ => return Ok(None),
            };
        let missing: Vec<String> = install
            .iter()
            .filter(|p| !state.installed.contains(p))
            .map(|p| (*p).to_owned())
            .collect();
        if !missing.is_empty() {
            state.installed.extend(install.iter().copied());
            push(Step::Install(missing));
        }
        let new: std::collections::BTreeMap<String, String> = caches
            .into_iter()
            .map(|(p, n)| (p.to_owned(), n.to_owned()))
            .filter(|c| !state.cached.contains(c))
            .collect();
        if !new.is_empty() {
            state.cached.extend(new.clone());
            push(Step::CacheDirs(new));
        }
        push(Step::Package {
            tag,
            summary,
            script,
        });
        Ok(Some(out))
    }

    fn pip_config(&self, node: &Node, path: &str) -> Result<Pip, ConfigError> {
        let f = self.fields(node, path, PIP_FIELDS)?;
        let list = |name| self.spec_list(&f, name);
        Ok(Pip {
            dependencies: self.flag(&f, &["dependencies"], false)?,
            index_urls: list("index-urls")?,
            find_links: list("find-links")?,
            trusted_hosts: list("trusted-hosts")?,
            cache_wheels: self.flag(&f, &["cache-wheels"], true)?,
            install_python: self.flag(&f, &["install-python"], true)?,
            python_exe: self.exe(&f, &["python-exe"], "python3")?,
        })
    }

    /// A project file a step reads: `node`'s string (or `default` for a
    /// null), relative to the project, a file.
    fn project_file(
        &self,
        node: Option<&Node>,
        pos: super::Pos,
        path: &str,
        default: &str,
    ) -> Result<(String, PathBuf), ConfigError> {
        let text = match node {
            Some(n) if n.value != Value::Null => self.tagged_string(n, path)?,
            _ => default.to_owned(),
        };
        let rel = self.project_path(pos, path, &text)?;
        self.exists(pos, path, &rel, Kind::File)?;
        Ok((text, rel))
    }

    /// `!NpmDependencies` or `!NpmDependencies {file, package, dev, peer,
    /// bundled, optional}`: the file and the package.json keys to install.
    fn npm_dependencies(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<(String, PathBuf, Vec<&'static str>), ConfigError> {
        if node.value == Value::Null {
            let (text, rel) = self.project_file(None, node.pos, path, "package.json")?;
            // vagga's defaults: package, dev and bundled.
            let kinds = vec![
                "dependencies",
                "devDependencies",
                "bundledDependencies",
                "bundleDependencies",
            ];
            return Ok((text, rel, kinds));
        }
        let f = self.fields(node, path, NPM_DEPS_FIELDS)?;
        let (text, rel) =
            self.project_file(f.get("file"), node.pos, &f.path_of("file"), "package.json")?;
        let mut kinds = Vec::new();
        for (name, default, keys) in [
            ("package", true, &["dependencies"][..]),
            ("dev", true, &["devDependencies"][..]),
            ("peer", false, &["peerDependencies"][..]),
            (
                "bundled",
                true,
                &["bundledDependencies", "bundleDependencies"][..],
            ),
            ("optional", false, &["optionalDependencies"][..]),
        ] {
            if self.flag(&f, &[name], default)? {
                kinds.extend_from_slice(keys);
            }
        }
        Ok((text, rel, kinds))
    }

    /// `!GemBundle` or `!GemBundle {gemfile, without, trust_policy}`: the
    /// Gemfile, and bundle's extra options.
    fn gem_bundle(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<(String, PathBuf, String), ConfigError> {
        if node.value == Value::Null {
            let (text, rel) = self.project_file(None, node.pos, path, "Gemfile")?;
            return Ok((text, rel, String::new()));
        }
        let f = self.fields(node, path, GEM_BUNDLE_FIELDS)?;
        let (text, rel) =
            self.project_file(f.get("gemfile"), node.pos, &f.path_of("gemfile"), "Gemfile")?;
        let mut extra = String::new();
        let without = self.spec_list(&f, "without")?;
        if !without.is_empty() {
            extra.push_str(&format!(" --without {}", quoted(&without.join(":"))));
        }
        let policy = ["trust_policy", "trust-policy"]
            .into_iter()
            .find_map(|n| f.get(n).map(|v| (n, v)));
        if let Some((name, value)) = policy {
            let text = self.string(value, &f.path_of(name))?;
            if !["LowSecurity", "MediumSecurity", "HighSecurity"].contains(&text.as_str()) {
                return Err(self.invalid(
                    value.pos,
                    &f.path_of(name),
                    format!("expected LowSecurity, MediumSecurity or HighSecurity, found {text:?}"),
                ));
            }
            extra.push_str(&format!(" --trust-policy {text}"));
        }
        Ok((text, rel, extra))
    }

    /// A step's list of package specs: not empty, each a plain argument.
    fn specs(&self, node: &Node, path: &str) -> Result<Vec<String>, ConfigError> {
        match &node.value {
            Value::Seq(items) if !items.is_empty() && items.len() <= MAX_SPECS => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.parsed(item, &format!("{path}[{i}]"), spec))
                .collect(),
            Value::Seq(items) if !items.is_empty() => Err(self.invalid(
                node.pos,
                path,
                format!(
                    "expected at most {MAX_SPECS} packages, found {}",
                    items.len()
                ),
            )),
            Value::Seq(_) | Value::Null => Err(self.invalid(
                node.pos,
                path,
                "expected a list of packages, found an empty one".to_owned(),
            )),
            _ => Err(self.wrong_type(node, path, "a list of packages")),
        }
    }

    /// An optional list field of plain arguments.
    fn spec_list(&self, fields: &Fields<'_>, name: &str) -> Result<Vec<String>, ConfigError> {
        let path = fields.path_of(name);
        match fields.get(name) {
            None => Ok(Vec::new()),
            Some(node) => match &node.value {
                Value::Null => Ok(Vec::new()),
                Value::Seq(items) if items.len() <= MAX_SPECS => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.parsed(item, &format!("{path}[{i}]"), spec))
                    .collect(),
                _ => Err(self.wrong_type(node, &path, "a list of strings")),
            },
        }
    }

    /// A program's name or path under any of its spellings, else `default`.
    fn exe(
        &self,
        fields: &Fields<'_>,
        names: &[&str],
        default: &str,
    ) -> Result<String, ConfigError> {
        for name in names {
            if let Some(v) = self.optional(fields, name, program)? {
                return Ok(v);
            }
        }
        Ok(default.to_owned())
    }
}

/// A package spec, URL or host: one argument, never an option.
fn spec(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_SPEC {
        return Err(format!(
            "expected a package (1 to {MAX_SPEC} bytes), found {text:?}"
        ));
    }
    if text.starts_with('-') {
        return Err(format!(
            "expected a package, found the option {text:?} (options are not passed, as in vagga)"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "expected a package, found control characters in {text:?}"
        ));
    }
    Ok(text.to_owned())
}

/// A program name or absolute path.
fn program(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_SPEC
        && !text.starts_with('-')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/+-".contains(&b));
    match ok {
        true => Ok(text.to_owned()),
        false => Err(format!(
            "expected a program's name or path (letters, digits and ._/+-), found {text:?}"
        )),
    }
}

/// A project path as the build VM sees it, quoted.
fn work_path(rel: &std::path::Path) -> String {
    let rel = rel.to_string_lossy();
    match rel.is_empty() {
        true => "/work".to_owned(),
        false => quoted(&format!("/work/{rel}")),
    }
}

/// pip install with `pip`'s options and `args`, for `sh -exc`.
fn pip_script(pip: &Pip, args: &[String]) -> String {
    let mut cmd = vec![
        quoted(&pip.python_exe),
        "-m pip install".to_owned(),
        "--no-input --disable-pip-version-check --root-user-action=ignore".to_owned(),
    ];
    if !pip.dependencies {
        cmd.push("--no-deps".into());
    }
    for (i, url) in pip.index_urls.iter().enumerate() {
        let flag = if i == 0 {
            "--index-url"
        } else {
            "--extra-index-url"
        };
        cmd.push(format!("{flag} {}", quoted(url)));
    }
    for link in &pip.find_links {
        cmd.push(format!("--find-links {}", quoted(link)));
    }
    for host in &pip.trusted_hosts {
        cmd.push(format!("--trusted-host {}", quoted(host)));
    }
    cmd.extend(args.iter().cloned());
    // Debian marks its Python as externally managed; vagga's installs go
    // to the system's site-packages all the same.
    format!(
        "export PIP_CACHE_DIR=/tmp/pip-cache PIP_BREAK_SYSTEM_PACKAGES=1\n{}",
        cmd.join(" ")
    )
}

/// npm install, global, into /usr (vagga's /usr/lib/node_modules).
fn npm_install(npm: &Npm) -> String {
    format!(
        "{} install --global --prefix /usr --cache /tmp/npm-cache --no-audit --no-fund \
         --update-notifier=false",
        quoted(&npm.npm_exe)
    )
}
