//! vagga's `!Git {url, revision?, branch?, path}` and `!GitInstall {url,
//! revision?, branch?, subdir?, script}`: a repository's tree put into the
//! image, fetched on the host (the container needs no git).
//!
//! Only transports that move data and nothing else are accepted: https,
//! and plain http or git:// when a full `revision` (a commit id) pins what
//! may come. Never ssh (it would run the host's ssh with the user's keys
//! and config), `file://` or a local path (the host's files), or `ext::`
//! (a command line). The host and any address it resolves to are checked
//! against the user's network policy when the step runs, as for `!Tar`.

use std::fmt;

use super::decode::{Decoder, Fields};
use super::error::ConfigError;
use super::model::{GitStep, SetupStep, Step};
use super::netpolicy::HttpUrl;
use super::refs;
use super::scalars::{self, quoted};
use super::yaml::{Node, Value};

const GIT_FIELDS: &[&str] = &["url", "revision", "branch", "path"];
const GIT_INSTALL_FIELDS: &[&str] = &["url", "revision", "branch", "subdir", "script"];
/// The longest `revision` or `branch`.
const MAX_REF: usize = 255;

/// How a `!Git` URL is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitScheme {
    Https,
    Http,
    /// The git daemon's own protocol, port 9418 by default.
    Git,
}

/// A `!Git` URL: the scheme, and the rest parsed as strictly as an
/// [`HttpUrl`] (host, port, a path of unreserved characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    pub scheme: GitScheme,
    /// Host, port and path (its `https` flag is the scheme's for http(s)).
    pub location: HttpUrl,
}

impl GitUrl {
    pub fn parse(text: &str) -> Result<GitUrl, String> {
        let (scheme, as_http) = if text.starts_with("https://") {
            (GitScheme::Https, text.to_owned())
        } else if text.starts_with("http://") {
            (GitScheme::Http, text.to_owned())
        } else if let Some(rest) = text.strip_prefix("git://") {
            (GitScheme::Git, format!("http://{rest}"))
        } else {
            let why = if text.starts_with("ssh://") || text.contains('@') {
                "ssh would run the host's ssh with the user's keys"
            } else if text.contains("::") {
                "git's remote helpers (ext::, fd::) run commands on the host"
            } else if text.starts_with("file://") || !text.contains("://") {
                "a local repository is the host's, not the project's (copy it in with !Copy)"
            } else {
                "another transport"
            };
            return Err(format!(
                "expected an https://, http:// or git:// URL, found {text:?}: {why}"
            ));
        };
        let location = HttpUrl::parse(&as_http).map_err(|e| {
            e.replace(
                "an http:// or https:// URL",
                "an https://, http:// or git:// URL",
            )
            .replace(&format!("{as_http:?}"), &format!("{text:?}"))
        })?;
        Ok(GitUrl { scheme, location })
    }

    /// The port a connection goes to.
    pub fn port(&self) -> u16 {
        match self.scheme {
            GitScheme::Git => self.location.port.unwrap_or(9418),
            _ => self.location.port_or_default(),
        }
    }
}

impl fmt::Display for GitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.location.to_string();
        match self.scheme {
            GitScheme::Git => write!(f, "git://{}", &text["http://".len()..]),
            _ => f.write_str(&text),
        }
    }
}

/// A full commit id: 40 hex digits. (A SHA-256 repository's 64 are not
/// taken: the repository cella fetches into is SHA-1, where 64 hex
/// digits would name a ref, which pins nothing.)
pub fn is_commit_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `revision` or `branch`: a git ref name or a commit id, in a form no
/// git command reads as an option or a range.
fn ref_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_REF
        && !text.starts_with(['-', '/', '.'])
        && !text.ends_with(['/', '.'])
        && !text.contains("..")
        && !text.contains("//")
        && !text.contains("@{")
        && !text.ends_with(".lock")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/+".contains(&b));
    match ok {
        true => Ok(text.to_owned()),
        false => Err(format!(
            "expected a branch, tag or commit id (letters, digits and -._/+, \
             at most {MAX_REF} bytes), found {text:?}"
        )),
    }
}

impl Decoder<'_> {
    /// `!Git {url, revision?, branch?, path}`.
    pub(super) fn git(&self, node: &Node, path: &str) -> Result<Step, ConfigError> {
        let fields = self.fields(node, path, GIT_FIELDS)?;
        let (url, revision, branch) = self.git_source(&fields)?;
        let dest = self.required(&fields, "path")?;
        Ok(Step::Git(GitStep {
            url,
            revision,
            branch,
            path: self.parsed(dest, &fields.path_of("path"), scalars::container_path)?,
        }))
    }

    /// vagga's `!GitInstall {url, revision?, branch?, subdir?, script}`,
    /// as the three steps it stands for (as `!TarInstall`): the tree put
    /// into a directory of its own at the root, `script` run there (in
    /// `subdir` if given), and the directory removed.
    pub(super) fn git_install(
        &self,
        node: &Node,
        path: &str,
        index: usize,
    ) -> Result<Vec<SetupStep>, ConfigError> {
        let fields = self.fields(node, path, GIT_INSTALL_FIELDS)?;
        let (url, revision, branch) = self.git_source(&fields)?;
        let subdir = self.optional(&fields, "subdir", refs::archive_dir)?;
        let script_node = self.required(&fields, "script")?;
        let script = self.install_script(script_node, &fields.path_of("script"))?;
        let dir = format!("/.cella-gitinstall-{index}");
        let enter = match subdir.flatten() {
            Some(sub) => format!("{dir}/{sub}"),
            None => dir.clone(),
        };
        let at = |step| SetupStep {
            step,
            pos: node.pos,
        };
        Ok(vec![
            at(Step::Git(GitStep {
                url,
                revision,
                branch,
                path: dir.clone(),
            })),
            at(Step::Sh(format!("cd {}\n{script}", quoted(&enter)))),
            at(Step::Remove(dir)),
        ])
    }

    /// The `url`, `revision` and `branch` of `!Git` or `!GitInstall`.
    fn git_source(
        &self,
        fields: &Fields<'_>,
    ) -> Result<(String, Option<String>, Option<String>), ConfigError> {
        let url_node = self.required(fields, "url")?;
        let url_path = fields.path_of("url");
        let url = self.string(url_node, &url_path)?;
        let parsed = GitUrl::parse(&url).map_err(|m| self.invalid(url_node.pos, &url_path, m))?;
        let revision = self.optional(fields, "revision", ref_name)?;
        let branch = self.optional(fields, "branch", ref_name)?;
        let pinned = revision.as_deref().is_some_and(is_commit_id);
        if parsed.scheme != GitScheme::Https && !pinned {
            let found = match fields.get("revision") {
                Some(n) if n.value != Value::Null => "a revision that is not a full commit id",
                _ => "no revision",
            };
            return Err(self.invalid(
                url_node.pos,
                &url_path,
                format!(
                    "{url} is not authenticated, so it needs a `revision` that is a \
                     full commit id (40 hex digits), which pins what may come; found {found} \
                     (or use https://)"
                ),
            ));
        }
        Ok((url, revision, branch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = GitUrl::parse("git://127.0.0.1:9/x/y.git").unwrap();
        assert_eq!((u.scheme, u.port()), (GitScheme::Git, 9));
        assert_eq!(u.to_string(), "git://127.0.0.1:9/x/y.git");
        let u = GitUrl::parse("git://example.org/y").unwrap();
        assert_eq!(u.port(), 9418);
        let u = GitUrl::parse("https://example.org/a/b.git").unwrap();
        assert_eq!((u.scheme, u.port()), (GitScheme::Https, 443));
        for (bad, why) in [
            ("ssh://git@example.org/x", "ssh"),
            ("git@example.org:x.git", "ssh"),
            ("file:///etc", "local"),
            ("/srv/repo", "local"),
            ("ext::sh -c touch% /tmp/x", "run commands"),
            ("fd::3", "run commands"),
            ("rsync://example.org/x", "another transport"),
            ("https://u:p@example.org/x", "credentials"),
            ("git://example.org/x?y", "path"),
            ("git://-oProxyCommand=x/y", "host name"),
        ] {
            let e = GitUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("https://, http:// or git://"), "{bad}: {e}");
        }
    }

    #[test]
    fn refs() {
        for good in ["main", "v1.0", "release/2.x", &"a".repeat(40)] {
            assert_eq!(ref_name(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "-b",
            "--upload-pack=x",
            "a..b",
            "a b",
            "HEAD@{1}",
            "x^",
            "x~1",
            "x:y",
            "/x",
            "x/",
            "x.lock",
            ".x",
        ] {
            assert!(ref_name(bad).is_err(), "{bad:?}");
        }
        assert!(is_commit_id(&"0a".repeat(20)));
        assert!(!is_commit_id(&"0g".repeat(20)));
        assert!(!is_commit_id("abc123"));
        assert!(!is_commit_id(&"ab".repeat(32)));
    }
}
