//! Shared helpers for the end-to-end tests: locate the built guest assets,
//! make throwaway projects and run the real `cella` binary with a timeout.

#![allow(dead_code)]

pub mod oci;
pub mod pty;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kernel, guest-init and base rootfs the tests boot, or None (with a
/// note) when this machine can't run them. With CELLA_REQUIRE_KVM=1 a
/// missing piece fails the test instead.
pub struct Assets {
    pub kernel: PathBuf,
    pub init: PathBuf,
    pub rootfs: PathBuf,
}

pub fn assets() -> Option<Assets> {
    let from_env =
        |var: &str, default: PathBuf| std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    let a = Assets {
        kernel: from_env("CELLA_KERNEL", repo().join("target/release/cella-vmlinux")),
        init: from_env(
            "CELLA_GUEST_INIT",
            repo().join("target/release/cella-guest-init"),
        ),
        rootfs: from_env("CELLA_TEST_ROOTFS", repo().join("images/busybox.tar")),
    };
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let missing: Vec<String> = [&a.kernel, &a.init, &a.rootfs]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .chain((!kvm).then(|| "/dev/kvm".to_string()))
        .collect();
    if missing.is_empty() {
        return Some(a);
    }
    let msg = format!(
        "cannot boot guests, missing: {} (run ./setup.sh first)",
        missing.join(", ")
    );
    if std::env::var("CELLA_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// How a test's VMs start: booted from scratch, or restored from the
/// snapshot shared by every test of this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cold,
    Restored,
}

/// The snapshot cache the restored-path tests share, kept between test runs
/// (snapshots are keyed by the cella build, kernel and guest-init).
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snapshot-cache")
}

/// Runs a test body once per start path.
#[macro_export]
macro_rules! both_paths {
    ($name:ident, $body:path) => {
        mod $name {
            #[test]
            fn cold() {
                $body($crate::common::Mode::Cold)
            }
            #[test]
            fn restored() {
                $body($crate::common::Mode::Restored)
            }
        }
    };
}

/// A throwaway project whose `base` container is the test rootfs.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub assets: Assets,
    pub mode: Mode,
    /// Where snapshots go; the shared cache unless a test wants its own.
    pub cache: PathBuf,
}

impl Project {
    /// A project whose runs restore from the shared snapshot cache.
    pub fn new(assets: Assets, commands: &str) -> Project {
        Project::with_mode(assets, commands, Mode::Restored)
    }

    pub fn with_mode(assets: Assets, commands: &str, mode: Mode) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        // A copy, not a link: cella follows no symlink in a project.
        std::fs::copy(&assets.rootfs, dir.path().join("rootfs.tar")).expect("copy rootfs.tar");
        let yaml = format!(
            "containers:\n  base:\n    setup:\n    - !Tar {{ url: ./rootfs.tar }}\ncommands:\n{commands}"
        );
        std::fs::write(dir.path().join("cella.yaml"), yaml).expect("write cella.yaml");
        Project {
            dir,
            assets,
            mode,
            cache: shared_cache(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cella(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cella"));
        c.current_dir(self.path())
            .env("CELLA_KERNEL", &self.assets.kernel)
            .env("CELLA_GUEST_INIT", &self.assets.init)
            .env("CELLA_CACHE_DIR", &self.cache)
            .env_remove("CELLA_COLD_BOOT")
            .env_remove("CELLA_STATS")
            // The user's own settings must not change what tests see.
            .env("CELLA_SETTINGS", "/nonexistent/cella-settings.yaml")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.mode == Mode::Cold {
            c.env("CELLA_COLD_BOOT", "1");
        }
        c
    }

    /// Runs cella with `args`, feeding `stdin`, and waits (bounded).
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.cella();
        cmd.args(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn cella");
        if let Some(data) = stdin {
            let mut w = child.stdin.take().expect("stdin");
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        wait_output(child, TIMEOUT)
    }
}

/// Collects a child's output, killing it if it outlives `timeout`.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let t_out = read_all(child.stdout.take());
    let t_err = read_all(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("cella did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout thread"),
        stderr: t_err.join().expect("stderr thread"),
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Lists every file under `dir`, for "nothing written outside" checks.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn read_all<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

/// What a fake server answers: status, headers, and a body (`None`: an
/// endless one).
pub type Answer = (u16, Vec<(String, String)>, Option<Vec<u8>>);
/// Each request's path and Authorization header.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// An HTTP server on 127.0.0.1 that answers by `handler` and logs what it
/// was asked; it serves until the test process ends.
pub fn fake_server(handler: impl Fn(&str, Option<&str>) -> Answer + Send + 'static) -> (u16, Log) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log = Log::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut auth = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_owned());
                    }
                }
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            seen.lock().expect("log").push((path.clone(), auth.clone()));
            let (status, headers, body) = handler(&path, auth.as_deref());
            let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            match body {
                Some(body) => {
                    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                }
                None => {
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes());
                    let chunk = vec![0u8; 64 << 10];
                    for _ in 0..320 {
                        if stream.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    (port, log)
}

/// Runs cella in `p` with the settings file `settings` and the cache
/// directory `cache` (and `auth.json` in the project as the registry
/// auth file), bounded.
pub fn cella_with(
    p: &Project,
    settings: &Path,
    cache: &Path,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let child = p
        .cella()
        .env("CELLA_SETTINGS", settings)
        .env("CELLA_CACHE_DIR", cache)
        .env("REGISTRY_AUTH_FILE", p.path().join("auth.json"))
        .args(args)
        .spawn()
        .expect("cella");
    let out = wait_output(child, Duration::from_secs(300));
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The content of `path` in the tarball `tar`, or None.
pub fn tar_member(tar: &Path, path: &str) -> Option<String> {
    let out = Command::new("tar")
        .args(["-xOf", tar.to_str().expect("utf-8"), path])
        .output()
        .expect("tar");
    out.status.success().then(|| text(&out.stdout))
}

/// The value of line `name` of a /proc status file, or "".
pub fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Each thread of process `pid` other than KVM's own kernel workers, as
/// "NAME Seccomp=N NoNewPrivs=N CapEff=HEX" from its /proc status.
pub fn thread_status(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| status_field(&status, name);
        let name = field("Name");
        // KVM's kernel workers (kvm-nx-lpage-recovery) share the thread
        // group but run no code of cella's.
        if name.starts_with("kvm-") {
            continue;
        }
        out.push(format!(
            "{name} Seccomp={} NoNewPrivs={} CapEff={}",
            field("Seccomp"),
            field("NoNewPrivs"),
            field("CapEff")
        ));
    }
    out.sort();
    out
}

/// Watches this test's process tree, while a cella runs in it, for host
/// programs cella starts (by their command name), and keeps the first
/// look at each: "CapEff=HEX NoNewPrivs=N mnt=same|other", keyed by the
/// watched names from the top down ("apt-get", "apt-get/http",
/// "mmdebstrap/apt-get").
pub struct HelperWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::collections::BTreeMap<String, String>>,
}

impl HelperWatch {
    pub fn start(names: &'static [&'static str]) -> HelperWatch {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let own_mnt = std::fs::read_link("/proc/self/ns/mnt").ok();
            let mut seen = std::collections::BTreeMap::new();
            while !stopped.load(Ordering::SeqCst) {
                for (pid, chain) in descendants(std::process::id()) {
                    let watched: Vec<&str> = chain
                        .iter()
                        .map(String::as_str)
                        .filter(|c| names.contains(c))
                        .collect();
                    if !chain.last().is_some_and(|c| names.contains(&c.as_str())) {
                        continue;
                    }
                    let key = watched.join("/");
                    if seen.contains_key(&key) {
                        continue;
                    }
                    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                        continue;
                    };
                    let field = |name: &str| status_field(&status, name);
                    let mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
                    let mnt = if mnt == own_mnt { "same" } else { "other" };
                    seen.insert(
                        key,
                        format!(
                            "CapEff={} NoNewPrivs={} mnt={mnt}",
                            field("CapEff"),
                            field("NoNewPrivs")
                        ),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        HelperWatch { stop, thread }
    }

    /// What it saw.
    pub fn finish(self) -> std::collections::BTreeMap<String, String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("watch thread")
    }
}

/// Every process below `pid`, with the command names from the first
/// below `pid` down to its own, from /proc's parent links.
fn descendants(pid: u32) -> Vec<(u32, Vec<String>)> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID ...": the name may hold spaces and ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            procs.push((child, ppid, comm));
        }
    }
    let mut found: Vec<(u32, Vec<String>)> = vec![(pid, Vec::new())];
    let mut i = 0;
    while i < found.len() {
        let (parent, chain) = found[i].clone();
        for (child, _, comm) in procs.iter().filter(|(_, p, _)| *p == parent) {
            let mut chain = chain.clone();
            chain.push(comm.clone());
            found.push((*child, chain));
        }
        i += 1;
    }
    found.remove(0);
    found
}
