//! `!Git`'s host half: the host's git fetches the one commit the step
//! names into a bare repository in the build's scratch directory, and
//! `git archive` streams its tree as a tar, which the build imports as it
//! imports `!Tar` (bounded by the image's limits). No checkout is ever
//! written on the host, so a repository of a million copies of one blob
//! costs the host one blob.
//!
//! Why the host's git and not a crate: gitoxide's and libgit2's bindings
//! would put a second network stack and a pack parser into cella's own
//! process; the host's git runs behind the build helpers' wall (no
//! capability, no-new-privs, Landlock to its scratch directory), with:
//!
//! - no configuration but ours: not the system's, the user's, or any the
//!   repository brings (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL`, a
//!   bare repository made here, hooks off);
//! - one transport, the URL's (`GIT_ALLOW_PROTOCOL`); no redirect, no
//!   proxy, no credential prompt;
//! - the address checked against the user's network policy, then pinned:
//!   curl is told to connect to the checked addresses
//!   (`http.curloptResolve`), a git:// URL is rewritten to the address;
//! - every object checked as it comes (`transfer.fsckObjects`), kept in one
//!   pack, and each file it writes bounded by `limits.image` (RLIMIT_FSIZE);
//! - the repository's `.gitattributes` unable to change what is archived
//!   (`export-subst`, `export-ignore` are overridden);
//! - each git bounded in time.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::netpolicy::{AddressGuard, UrlHost};
use crate::config::{is_commit_id, GitScheme, GitStep, GitUrl};
use crate::sandbox::helper;

/// How long one fetch may take.
const FETCH_TIME: Duration = Duration::from_secs(20 * 60);
/// How long the local commands (init, rev-parse) may take.
const LOCAL_TIME: Duration = Duration::from_secs(60);
/// The end of git's stderr kept for an error.
const TAIL: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("!Git needs git on the host: it fetches the repository")]
    NoGit,
    #[error("{0}")]
    Url(String),
    #[error("{0}")]
    Refused(String),
    #[error("cannot start git on the host")]
    Spawn(#[source] io::Error),
    #[error("cannot make git's scratch directory {}", .0.display())]
    Scratch(PathBuf, #[source] io::Error),
    #[error("git is confined by nothing")]
    Jail(#[from] crate::sandbox::jail::JailError),
    #[error("`git {what}` of {url} failed; its last lines:\n{tail}")]
    Failed {
        what: &'static str,
        url: String,
        tail: String,
    },
    #[error("`git {what}` of {url} took longer than {} s and was stopped", .limit.as_secs())]
    Timeout {
        what: &'static str,
        url: String,
        limit: Duration,
    },
    #[error("`git {what}` of {url} wrote a file larger than limits.image and was stopped")]
    TooLarge { what: &'static str, url: String },
    #[error("{url} has no commit {revision:?}")]
    NoRevision { url: String, revision: String },
}

/// A fetched commit, ready to archive.
pub struct Fetched {
    repo: PathBuf,
    scratch: PathBuf,
    pub commit: String,
    url: String,
    /// The one transport git may use.
    protocol: &'static str,
    max_file: u64,
}

/// Fetches what `step` names into `scratch` (made here; it must not
/// exist), each file git writes at most `max_file` bytes.
pub fn fetch(
    step: &GitStep,
    scratch: &Path,
    guard: &AddressGuard,
    max_file: u64,
) -> Result<Fetched, GitError> {
    let url = GitUrl::parse(&step.url).map_err(GitError::Url)?;
    // Said of the URL as written (the check parses it as http).
    url.location
        .check_reachable(guard)
        .map_err(|m| GitError::Refused(m.replace(&url.location.to_string(), &url.to_string())))?;
    let (remote, pins) = pinned(&url, guard)?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(scratch)
        .map_err(|e| GitError::Scratch(scratch.to_owned(), e))?;
    let repo = scratch.join("repo.git");
    let mut fetched = Fetched {
        repo,
        scratch: scratch.to_owned(),
        commit: String::new(),
        url: step.url.clone(),
        protocol: match url.scheme {
            GitScheme::Https => "https",
            GitScheme::Http => "http",
            GitScheme::Git => "git",
        },
        max_file,
    };
    let f = &fetched;
    f.run(
        "init",
        &["init", "--bare", "--quiet", "repo.git"],
        scratch,
        LOCAL_TIME,
    )?;
    // Highest precedence of all attributes: the archive is the tree as
    // committed, whatever the repository's .gitattributes say.
    fs::write(
        f.repo.join("info/attributes"),
        "* -export-subst -export-ignore\n",
    )
    .map_err(|e| GitError::Scratch(f.repo.clone(), e))?;
    let fetch = |args: &[&str]| -> Result<(), GitError> {
        let mut all = Vec::new();
        for pin in &pins {
            all.extend(["-c".to_owned(), format!("http.curloptResolve={pin}")]);
        }
        all.extend(["fetch", "--quiet", "--no-tags", "--no-recurse-submodules"].map(str::to_owned));
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        f.run("fetch", &args, &f.repo, FETCH_TIME).map(|_| ())
    };
    let target = "refs/cella/fetched";
    let wanted = step.revision.as_deref();
    // The one commit, shallow, where the server gives it so.
    let tip = match (wanted, step.branch.as_deref()) {
        (Some(rev), _) if is_commit_id(rev) => Some(rev.to_owned()),
        (Some(_), _) => None,
        (None, Some(branch)) => Some(format!("refs/heads/{branch}")),
        (None, None) => Some("HEAD".to_owned()),
    };
    let shallow =
        tip.is_some_and(|tip| fetch(&["--depth=1", &remote, &format!("+{tip}:{target}")]).is_ok());
    let resolve = match shallow {
        true => format!("{}^{{commit}}", wanted.unwrap_or(target)),
        // A tag, a short id, or a server that gives no single commit:
        // the branches and tags, whole.
        false => {
            let specs = match step.branch.as_deref() {
                Some(b) => vec![format!("+refs/heads/{b}:refs/heads/{b}")],
                None => vec![
                    "+refs/heads/*:refs/heads/*".to_owned(),
                    "+refs/tags/*:refs/tags/*".to_owned(),
                ],
            };
            let mut args = vec![remote.as_str()];
            args.extend(specs.iter().map(String::as_str));
            fetch(&args)?;
            format!("{}^{{commit}}", wanted.unwrap_or("HEAD"))
        }
    };
    let out = f.run(
        "rev-parse",
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &resolve,
        ],
        &f.repo,
        LOCAL_TIME,
    );
    let commit = match out {
        Ok(out) if is_commit_id(out.trim()) => out.trim().to_owned(),
        _ => {
            return Err(GitError::NoRevision {
                url: step.url.clone(),
                revision: wanted
                    .or(step.branch.as_deref())
                    .unwrap_or("HEAD")
                    .to_owned(),
            })
        }
    };
    fetched.commit = commit;
    Ok(fetched)
}

impl Fetched {
    /// `git archive` of the commit, its tar on the child's stdout.
    pub fn archive(&self) -> Result<Child, GitError> {
        let err_path = self.scratch.join("archive.err");
        let err = File::create(&err_path).map_err(|e| GitError::Scratch(err_path, e))?;
        let mut cmd = self.command(&self.repo)?;
        cmd.args(["archive", "--format=tar", "--end-of-options", &self.commit])
            .stdout(Stdio::piped())
            .stderr(err);
        cmd.spawn().map_err(spawn_error)
    }

    /// Waits for `child` (an archive), bounded; Ok when it succeeded.
    pub fn finish(&self, mut child: Child) -> Result<(), GitError> {
        match wait(&mut child, LOCAL_TIME * 10) {
            Some(status) if status.success() => Ok(()),
            Some(_) => Err(GitError::Failed {
                what: "archive",
                url: self.url.clone(),
                tail: tail(&self.scratch.join("archive.err"), TAIL),
            }),
            None => Err(GitError::Timeout {
                what: "archive",
                url: self.url.clone(),
                limit: LOCAL_TIME * 10,
            }),
        }
    }

    /// Removes the scratch directory.
    pub fn remove(self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }

    /// git, walled, with no configuration but ours, in `dir`.
    fn command(&self, dir: &Path) -> Result<Command, GitError> {
        let mut cmd = Command::new("git");
        helper::confine(&mut cmd, helper::Program::Git, &[&self.scratch])?;
        helper::limit_file_size(&mut cmd, self.max_file);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("HOME", &self.scratch)
            .env("TMPDIR", &self.scratch)
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_ALLOW_PROTOCOL", self.protocol)
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "transfer.fsckObjects=true",
                "-c",
                "transfer.unpackLimit=1",
                "-c",
                "http.followRedirects=false",
                "-c",
                "http.proxy=",
                "-c",
                "http.lowSpeedLimit=1024",
                "-c",
                "http.lowSpeedTime=60",
                "-c",
                "gc.auto=0",
                "-c",
                "maintenance.auto=false",
            ])
            .current_dir(dir)
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs git with `args` in `dir` within `limit`; its stdout (bounded).
    fn run(
        &self,
        what: &'static str,
        args: &[&str],
        dir: &Path,
        limit: Duration,
    ) -> Result<String, GitError> {
        let err_path = self.scratch.join(format!("{what}.err"));
        let out_path = self.scratch.join(format!("{what}.out"));
        let file = |p: &Path| File::create(p).map_err(|e| GitError::Scratch(p.to_owned(), e));
        let mut cmd = self.command(dir)?;
        cmd.args(args)
            .stdout(file(&out_path)?)
            .stderr(file(&err_path)?);
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let status = wait(&mut child, limit).ok_or_else(|| GitError::Timeout {
            what,
            url: self.url.clone(),
            limit,
        })?;
        if status.success() {
            return Ok(tail(&out_path, 256));
        }
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(libc::SIGXFSZ) {
            return Err(GitError::TooLarge {
                what,
                url: self.url.clone(),
            });
        }
        Err(GitError::Failed {
            what,
            url: self.url.clone(),
            tail: tail(&err_path, TAIL),
        })
    }
}

fn spawn_error(e: io::Error) -> GitError {
    match e.kind() {
        io::ErrorKind::NotFound => GitError::NoGit,
        _ => GitError::Spawn(e),
    }
}

/// The child's status, or None (the child killed) past `limit`.
fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `max` bytes of the file at `path`, as text.
fn tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = file.take(max).read_to_end(&mut buf);
    crate::text::escape(String::from_utf8_lossy(&buf).trim()).into_owned()
}

/// The URL git is given, and the `http.curloptResolve` entries that make
/// curl connect only to the addresses checked.
fn pinned(url: &GitUrl, guard: &AddressGuard) -> Result<(String, Vec<String>), GitError> {
    let UrlHost::Name(name) = &url.location.host else {
        return Ok((url.to_string(), Vec::new()));
    };
    let addresses: Vec<IpAddr> = url
        .location
        .addresses()
        .map_err(|e| GitError::Refused(format!("cannot resolve the host of {url}: {e}")))?
        .into_iter()
        .filter(|ip| guard.check(*ip).is_ok())
        .collect();
    let Some(first) = addresses.first() else {
        return Err(GitError::Refused(format!(
            "the host of {url} has no address"
        )));
    };
    let literal = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if url.scheme == GitScheme::Git {
        let mut location = url.location.clone();
        location.host = match first {
            IpAddr::V4(a) => UrlHost::V4(*a),
            IpAddr::V6(a) => UrlHost::V6(*a),
        };
        let rewritten = GitUrl {
            scheme: url.scheme,
            location,
        };
        return Ok((rewritten.to_string(), Vec::new()));
    }
    let list: Vec<String> = addresses.iter().map(literal).collect();
    Ok((
        url.to_string(),
        vec![format!("{name}:{}:{}", url.port(), list.join(","))],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_what_was_checked() {
        let guard = AddressGuard::with_host_addresses(&["127.0.0.0/8".parse().unwrap()], vec![]);
        let url = GitUrl::parse("https://localhost:8443/r.git").unwrap();
        let (remote, pins) = pinned(&url, &guard).unwrap();
        assert_eq!(remote, "https://localhost:8443/r.git");
        assert_eq!(pins, vec!["localhost:8443:127.0.0.1".to_owned()]);
        let url = GitUrl::parse("git://localhost/r.git").unwrap();
        let (remote, pins) = pinned(&url, &guard).unwrap();
        assert_eq!(remote, "git://127.0.0.1/r.git");
        assert!(pins.is_empty());
        let url = GitUrl::parse("git://127.0.0.1:9/r").unwrap();
        assert_eq!(pinned(&url, &guard).unwrap().0, "git://127.0.0.1:9/r");
    }
}
