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
//! - every object checked as it comes (`transfer.fsckObjects`, which
//!   the dumb http transport skips, so `git fsck --strict` runs after each
//!   fetch), kept in one pack;
//! - each file it writes bounded by `limits.image` (RLIMIT_FSIZE), its
//!   memory by [`MAX_MEMORY`] (RLIMIT_DATA: a pack of a few hundred bytes
//!   can hold a delta that expands to gigabytes), one thread for packs;
//! - each git bounded in time, and killed with the processes it started
//!   (its own process group);
//! - a `revision` that is a commit id checked against what was fetched;
//! - the repository's `.gitattributes` unable to change what is archived
//!   (`export-subst`, `export-ignore`, `ident`, `text`/`eol`, `filter` and
//!   `working-tree-encoding` are overridden), and modes as committed
//!   (`tar.umask=022`).

use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::netpolicy::{AddressGuard, UrlHost};
use crate::config::{is_commit_id, GitScheme, GitStep, GitUrl};
use crate::hostfs::{Dir, Kind};
use crate::sandbox::helper;

/// How long one fetch may take.
const FETCH_TIME: Duration = Duration::from_secs(20 * 60);
/// How long the local commands (init, rev-parse) may take.
const LOCAL_TIME: Duration = Duration::from_secs(60);
/// The end of git's stderr kept for an error.
const TAIL: usize = 4096;
/// At most this many files (and directories) a fetch may leave in the
/// scratch directory: a dumb-http server's loose objects, a whole fetch's
/// refs. Together they may take at most twice `limits.image` bytes.
const MAX_FILES: u64 = 1_000_000;
/// How often the scratch directory is measured while git runs.
const MEASURE_EVERY: Duration = Duration::from_secs(1);
/// What one git may allocate.
pub const MAX_MEMORY: u64 = 3 << 30;
/// Attributes that would make the archive differ from the commit, off
/// for every path; `$GIT_DIR/info/attributes` wins over the tree's.
const ATTRIBUTES: &str =
    "* -export-subst -export-ignore -ident -text -eol -crlf -filter -working-tree-encoding\n";

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
    #[error("cannot set up the wall around git")]
    Jail(#[from] crate::sandbox::jail::JailError),
    #[error("cannot write {}", .0.display())]
    Write(PathBuf, #[source] io::Error),
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
    #[error(
        "`git {what}` of {url} wrote more than {} MiB or {MAX_FILES} files in its scratch \
         directory and was stopped", .max_total >> 20
    )]
    TooMuch {
        what: &'static str,
        url: String,
        max_total: u64,
    },
    #[error("{url} has no commit {revision:?}")]
    NoRevision { url: String, revision: String },
    #[error("{url} gave commit {got} for revision {revision}")]
    WrongCommit {
        url: String,
        revision: String,
        got: String,
    },
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
    let addresses = url
        .location
        .check_reachable(guard)
        .map_err(|m| GitError::Refused(m.replace(&url.location.to_string(), &url.to_string())))?;
    let (remote, pins) = pinned(&url, &addresses);
    if !pins.is_empty() && url.scheme == GitScheme::Http && !git_pins_addresses() {
        return Err(GitError::Refused(format!(
            "{url}: the host's git is older than 2.37, which cannot be held to the \
             addresses cella checked (http.curloptResolve); use https:// or an IP address"
        )));
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(scratch)
        .map_err(|e| GitError::Scratch(scratch.to_owned(), e))?;
    let mut fetched = Fetched {
        repo: scratch.join("repo.git"),
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
    let info = f.repo.join("info");
    fs::create_dir_all(&info)
        .and_then(|()| fs::write(info.join("attributes"), ATTRIBUTES))
        .map_err(|e| GitError::Write(info.join("attributes"), e))?;
    let fetch = |args: &[&str]| -> Result<String, GitError> {
        let mut all = Vec::new();
        for pin in &pins {
            all.extend(["-c".to_owned(), format!("http.curloptResolve={pin}")]);
        }
        all.extend(["fetch", "--quiet", "--no-tags", "--no-recurse-submodules"].map(str::to_owned));
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        f.run("fetch", &args, &f.repo, FETCH_TIME)
    };
    let target = "refs/cella/fetched";
    let wanted = step.revision.as_deref();
    let branch = step.branch.as_deref();
    // The one commit, shallow, where the server gives it so.
    let tip = match (wanted, branch) {
        (Some(rev), _) if is_commit_id(rev) => Some(rev.to_owned()),
        (Some(_), _) => None,
        (None, Some(branch)) => Some(format!("refs/heads/{branch}")),
        (None, None) => Some("HEAD".to_owned()),
    };
    let shallow = match &tip {
        Some(tip) => match fetch(&["--depth=1", &remote, &format!("+{tip}:{target}")]) {
            Ok(_) => true,
            // A server that gives no single commit, or no shallow one
            // (dumb http): fetched whole below. Not after a bound was hit.
            Err(GitError::Failed { .. }) => false,
            Err(e) => return Err(e),
        },
        None => false,
    };
    let resolve = match (shallow, wanted) {
        (true, Some(rev)) => rev.to_owned(),
        (true, None) => target.to_owned(),
        // No revision: the branch's or the remote HEAD's commit, whole.
        (false, None) => {
            let tip = tip.unwrap_or_else(|| "HEAD".to_owned());
            fetch(&[&remote, &format!("+{tip}:{target}")])?;
            target.to_owned()
        }
        // A tag, a short id, or an id the server gives only with the
        // rest: the branch, or all branches and tags.
        (false, Some(rev)) => {
            let specs = match branch {
                Some(b) => vec![format!("+refs/heads/{b}:refs/heads/{b}")],
                None => vec![
                    "+refs/heads/*:refs/heads/*".to_owned(),
                    "+refs/tags/*:refs/tags/*".to_owned(),
                ],
            };
            let mut args = vec![remote.as_str()];
            args.extend(specs.iter().map(String::as_str));
            fetch(&args)?;
            rev.to_owned()
        }
    };
    // What the transport did not check (dumb http), checked here.
    f.run(
        "fsck",
        &["fsck", "--strict", "--no-dangling", "--no-progress"],
        &f.repo,
        FETCH_TIME,
    )?;
    let spec = format!("{resolve}^{{commit}}");
    let out = f.run(
        "rev-parse",
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ],
        &f.repo,
        LOCAL_TIME,
    );
    let commit = match out {
        Ok(out) if is_commit_id(out.trim()) => out.trim().to_owned(),
        _ => {
            return Err(GitError::NoRevision {
                url: step.url.clone(),
                revision: wanted.or(branch).unwrap_or("HEAD").to_owned(),
            })
        }
    };
    // An id is a pin only if it is what came.
    if let Some(rev) = wanted.filter(|r| is_commit_id(r)) {
        if !commit.eq_ignore_ascii_case(rev) {
            return Err(GitError::WrongCommit {
                url: step.url.clone(),
                revision: rev.to_owned(),
                got: commit,
            });
        }
    }
    fetched.commit = commit;
    Ok(fetched)
}

impl Fetched {
    /// `git archive` of the commit, its tar on the child's stdout; its
    /// stderr's tail kept by a thread.
    pub fn archive(&self) -> Result<Running, GitError> {
        let mut cmd = self.command(&self.repo)?;
        cmd.args(["archive", "--format=tar", "--end-of-options", &self.commit])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let stderr = tail_of(child.stderr.take());
        Ok(Running { child, stderr })
    }

    /// Waits for `running` (an archive), bounded; Ok when it succeeded.
    pub fn finish(&self, running: Running) -> Result<(), GitError> {
        self.wait_for("archive", running, LOCAL_TIME * 10)
            .map(|_| ())
    }

    /// Removes the scratch directory.
    pub fn remove(self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }

    /// git, walled, with no configuration but ours, in `dir`.
    fn command(&self, dir: &Path) -> Result<Command, GitError> {
        let mut cmd = Command::new("git");
        helper::confine(&mut cmd, helper::Program::Git, &[&self.scratch])?;
        helper::limit_resources(&mut cmd, self.max_file, MAX_MEMORY);
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
            .args(
                [
                    "core.hooksPath=/dev/null",
                    "core.autocrlf=false",
                    "transfer.fsckObjects=true",
                    "transfer.unpackLimit=1",
                    "pack.threads=1",
                    "tar.umask=022",
                    "http.followRedirects=false",
                    "http.proxy=",
                    "http.lowSpeedLimit=1024",
                    "http.lowSpeedTime=60",
                    "gc.auto=0",
                    "maintenance.auto=false",
                ]
                .iter()
                .flat_map(|c| ["-c", c]),
            )
            .current_dir(dir)
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs git with `args` in `dir` within `limit`; the end of its
    /// stdout. Both streams come through pipes: nothing is opened in the
    /// scratch directory once a git has written there.
    fn run(
        &self,
        what: &'static str,
        args: &[&str],
        dir: &Path,
        limit: Duration,
    ) -> Result<String, GitError> {
        let mut cmd = self.command(dir)?;
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let stdout = tail_of(child.stdout.take());
        let stderr = tail_of(child.stderr.take());
        self.wait_for(what, Running { child, stderr }, limit)?;
        let out = stdout.join().unwrap_or_default();
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Waits for `running` within `limit`, killing its process group
    /// past it; the error says what ended it.
    fn wait_for(
        &self,
        what: &'static str,
        mut running: Running,
        limit: Duration,
    ) -> Result<(), GitError> {
        let max_total = self.max_file.saturating_mul(2);
        let over = || scratch_over(&self.scratch, max_total, MAX_FILES);
        let status = wait(&mut running.child, limit, &over);
        let tail = escaped_lines(&running.stderr.join().unwrap_or_default());
        let status = match status {
            Waited::Exited(status) => status,
            Waited::TimedOut => {
                return Err(GitError::Timeout {
                    what,
                    url: self.url.clone(),
                    limit,
                })
            }
            Waited::TooMuch => {
                return Err(GitError::TooMuch {
                    what,
                    url: self.url.clone(),
                    max_total,
                })
            }
        };
        if status.success() {
            return Ok(());
        }
        // SIGXFSZ stops the one that wrote (index-pack, under fetch).
        if self.file_at_bound() {
            return Err(GitError::TooLarge {
                what,
                url: self.url.clone(),
            });
        }
        Err(GitError::Failed {
            what,
            url: self.url.clone(),
            tail,
        })
    }

    /// Whether a pack being written reached the file bound (looked at
    /// beneath the scratch directory's descriptor, no link followed).
    fn file_at_bound(&self) -> bool {
        let Ok(pack) =
            Dir::open(&self.scratch).and_then(|d| d.open_dir(Path::new("repo.git/objects/pack")))
        else {
            return false;
        };
        pack.names().unwrap_or_default().iter().any(|name| {
            pack.lstat(Path::new(name))
                .is_ok_and(|m| m.is_some_and(|m| m.size >= self.max_file))
        })
    }
}

/// A git that is running, and the thread keeping its stderr's tail.
pub struct Running {
    pub child: Child,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl Running {
    /// Stops it and what it started.
    pub fn kill(&mut self) {
        helper::kill_group(self.child.id());
    }
}

/// Reads `stream` to its end on a thread, keeping its last [`TAIL`]
/// bytes.
fn tail_of<R: Read + Send + 'static>(stream: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        if let Some(mut stream) = stream {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * TAIL {
                    kept.drain(..kept.len() - TAIL);
                }
            }
        }
        let start = kept.len().saturating_sub(TAIL);
        kept.split_off(start)
    })
}

/// `bytes` as text for a message, each line escaped.
fn escaped_lines(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim()
        .lines()
        .map(|l| crate::text::escape(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the host's git honours `http.curloptResolve` (2.37 and
/// later); https is held by TLS to the name either way.
fn git_pins_addresses() -> bool {
    static PINS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PINS.get_or_init(|| {
        let out = Command::new("git")
            .arg("--version")
            .env_clear()
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        text.ok().is_some_and(|t| version_at_least(&t, (2, 37)))
    })
}

/// Whether `git version X.Y...` is at least `want`.
fn version_at_least(text: &str, want: (u32, u32)) -> bool {
    let Some(v) = text.trim().strip_prefix("git version ") else {
        return false;
    };
    let mut parts = v.split(['.', ' ']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

fn spawn_error(e: io::Error) -> GitError {
    match e.kind() {
        io::ErrorKind::NotFound => GitError::NoGit,
        _ => GitError::Spawn(e),
    }
}

/// How a git ended.
#[derive(Debug)]
enum Waited {
    Exited(std::process::ExitStatus),
    /// Killed past its time.
    TimedOut,
    /// Killed when `over` said it had written too much.
    TooMuch,
}

/// Waits for `child`, killing its process group past `limit` or once
/// `over` (asked every [`MEASURE_EVERY`]) says so.
fn wait(child: &mut Child, limit: Duration, over: &dyn Fn() -> bool) -> Waited {
    let start = Instant::now();
    let mut measured = start;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Waited::Exited(status);
        }
        let stop = if start.elapsed() >= limit {
            Some(Waited::TimedOut)
        } else if measured.elapsed() >= MEASURE_EVERY {
            measured = Instant::now();
            over().then_some(Waited::TooMuch)
        } else {
            None
        };
        if let Some(stop) = stop {
            helper::kill_group(child.id());
            let _ = child.wait();
            return stop;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `scratch` holds more than `max_bytes` (files' apparent sizes) or
/// more than `max_files` entries: walked beneath its descriptor, no link
/// followed, no deeper than 64 directories, stopping at the first bound.
fn scratch_over(scratch: &Path, max_bytes: u64, max_files: u64) -> bool {
    let Ok(top) = Dir::open(scratch) else {
        return false;
    };
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![(top, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for name in dir.names().unwrap_or_default() {
            files += 1;
            let Ok(Some(meta)) = dir.lstat(Path::new(&name)) else {
                continue;
            };
            if meta.kind != Kind::Dir {
                bytes = bytes.saturating_add(meta.size);
            }
            if files > max_files || bytes > max_bytes {
                return true;
            }
            if meta.kind == Kind::Dir && depth < 64 {
                if let Ok(sub) = dir.open_dir(Path::new(&name)) {
                    stack.push((sub, depth + 1));
                }
            }
        }
    }
    false
}

/// The URL git is given, and the `http.curloptResolve` entries that make
/// curl connect only to the addresses checked.
fn pinned(url: &GitUrl, addresses: &[IpAddr]) -> (String, Vec<String>) {
    let (UrlHost::Name(name), Some(first)) = (&url.location.host, addresses.first()) else {
        return (url.to_string(), Vec::new());
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
        return (rewritten.to_string(), Vec::new());
    }
    let list: Vec<String> = addresses.iter().map(literal).collect();
    (
        url.to_string(),
        vec![format!("{name}:{}:{}", url.port(), list.join(","))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_versions() {
        assert!(version_at_least("git version 2.39.5\n", (2, 37)));
        assert!(version_at_least("git version 3.0", (2, 37)));
        assert!(!version_at_least("git version 2.34.1", (2, 37)));
        assert!(!version_at_least("hub version 2.40", (2, 37)));
        assert!(
            git_pins_addresses(),
            "the test machine's git is 2.39 or later"
        );
    }

    #[test]
    fn pins_what_was_checked() {
        let checked: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let url = GitUrl::parse("https://localhost:8443/r.git").unwrap();
        let (remote, pins) = pinned(&url, &checked);
        assert_eq!(remote, "https://localhost:8443/r.git");
        assert_eq!(pins, vec!["localhost:8443:127.0.0.1".to_owned()]);
        let url = GitUrl::parse("git://localhost/r.git").unwrap();
        let (remote, pins) = pinned(&url, &checked);
        assert_eq!(remote, "git://127.0.0.1/r.git");
        assert!(pins.is_empty());
        let url = GitUrl::parse("git://127.0.0.1:9/r").unwrap();
        assert_eq!(pinned(&url, &checked).0, "git://127.0.0.1:9/r");
    }

    #[test]
    fn a_git_that_writes_too_many_files_is_stopped() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "i=0; while :; do i=$((i+1)); : > f$i; done"])
            .current_dir(dir.path())
            .process_group(0)
            .spawn()
            .unwrap();
        let over = || scratch_over(dir.path(), u64::MAX, 500);
        let started = Instant::now();
        let waited = wait(&mut child, Duration::from_secs(60), &over);
        assert!(matches!(waited, Waited::TooMuch), "{waited:?}");
        assert!(started.elapsed() < Duration::from_secs(30));
        // Killed: nothing more is written.
        let count = fs::read_dir(dir.path()).unwrap().count();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), count);
    }

    #[test]
    fn scratch_bytes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f"), vec![0u8; 5000]).unwrap();
        assert!(!scratch_over(dir.path(), 10_000, 100));
        assert!(scratch_over(dir.path(), 4_000, 100));
        assert!(scratch_over(dir.path(), 10_000, 2));
        // A link to a big tree is one small entry, not followed.
        let big = tempfile::tempdir().unwrap();
        fs::write(big.path().join("g"), vec![0u8; 50_000]).unwrap();
        std::os::unix::fs::symlink(big.path(), dir.path().join("link")).unwrap();
        assert!(!scratch_over(dir.path(), 10_000, 100));
    }
}
