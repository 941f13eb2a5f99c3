//! The process model end to end: environment precedence, ids and
//! hostname, prerequisites, `--timeout`, `!Supervise` (modes, selection,
//! localhost between children in different containers, SIGTERM then
//! SIGKILL, cella's own SIGTERM), and an interactive shell on a pty.
//! Each run checks several things, to keep boots few.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pty::Pty;
use common::{assets, text, Project};

/// Runs cella with `args` and `env`; (status, stdout, stderr, seconds).
fn run(p: &Project, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String, f64) {
    let mut cmd = p.cella();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = common::wait_output(cmd.spawn().expect("spawn cella"), common::TIMEOUT);
    (
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        start.elapsed().as_secs_f64(),
    )
}

const ENV_COMMANDS: &str = r#"  env: !Command
    container: base
    user-id: 1000
    group-id: 100
    hostname: envhost
    environ-file: cmd.env
    environ: {V4: menv, V5: menv, V6: menv, V7: menv}
    run: |
      for v in V1 V2 V3 V4 V5 V6 V7 SECRET; do eval "echo $v=\${$v-unset}"; done
      echo "ids=$(id -u):$(id -g)"
      echo "host=$(hostname)"
      echo "cpus=$(nproc)"
  pre-a: !Command
    container: base
    run: echo ran-a
  pre-b: !Command
    container: base
    prerequisites: [pre-a]
    run: echo ran-b
  main: !Command
    container: base
    prerequisites: [pre-b, pre-a, pre-b]
    run: echo ran-main
  fails: !Command
    container: base
    run: exit 3
  guarded: !Command
    container: base
    prerequisites: [pre-a, fails, pre-b]
    run: echo ran-guarded
"#;

#[test]
fn environment_ids_hostname_and_prerequisites() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, ENV_COMMANDS);
    let yaml = std::fs::read_to_string(p.path().join("cella.yaml")).expect("read");
    let yaml = yaml.replace(
        "    - !Tar { url: ./rootfs.tar }\n",
        "    - !Tar { url: ./rootfs.tar }\n    environ-file: cont.env\n    environ: {V2: cenv, V3: cenv, V4: cenv, V5: cenv, V6: cenv}\n",
    );
    std::fs::write(p.path().join("cella.yaml"), yaml).expect("write");
    std::fs::write(
        p.path().join("cont.env"),
        "# the container's\nV1=cfile\nV2=cfile\nV3=cfile\n",
    )
    .expect("cont.env");
    std::fs::write(p.path().join("cmd.env"), "V3=mfile\nV4=mfile\n").expect("cmd.env");

    // Lowest to highest: container file, container environ, command file,
    // command environ, CELLAENV_, -e, -E.
    let env = [
        ("CELLAENV_V5", "pass"),
        ("V6", "host"),
        ("SECRET", "host-only"),
    ];
    let (code, out, err, _) = run(&p, &["-e", "V6", "-E", "V7=cli", "env"], &env);
    assert_eq!(code, Some(0), "{out}\n{err}");
    for want in [
        "V1=cfile",
        "V2=cenv",
        "V3=mfile",
        "V4=menv",
        "V5=pass",
        "V6=host",
        "V7=cli",
        "SECRET=unset",
        "ids=1000:100",
        "host=envhost",
        "cpus=1",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "{want} missing in:\n{out}\n{err}"
        );
    }

    // Each prerequisite once, its own first, in order.
    let (code, out, err, _) = run(&p, &["main"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "ran-a\nran-b\nran-main\n", "{err}");
    // A failing one stops the chain with its status.
    let (code, out, err, _) = run(&p, &["guarded"], &[]);
    assert_eq!(code, Some(3), "{out}\n{err}");
    assert_eq!(out, "ran-a\n", "{err}");
    assert!(
        err.contains("prerequisite \"fails\" of \"guarded\" exited with status 3"),
        "{err}"
    );
    let (code, out, err, _) = run(&p, &["--no-prerequisites", "guarded"], &[]);
    assert_eq!((code, out.as_str()), (Some(0), "ran-guarded\n"), "{err}");

    // --timeout: the VM is stopped and cella exits 124, soon.
    let (code, out, err, secs) = run(
        &p,
        &[
            "--timeout",
            "20",
            "_run",
            "base",
            "sh",
            "-c",
            "echo started; sleep 600",
        ],
        &[],
    );
    assert_eq!(code, Some(124), "{out}\n{err}");
    assert_eq!(out, "started\n", "{err}");
    assert!(err.contains("--timeout"), "{err}");
    assert!(secs < 120.0, "took {secs} s");
}

const GROUP_COMMANDS: &str = r#"  talk: !Supervise
    children:
      server: !Command
        container: other
        run: 'cat /etc/which; echo reply | nc -l -p 7000; echo server-done; sleep 2'
      client: !Command
        container: base
        run: 'cat /etc/which 2>&1; sleep 2; echo hello-over-lo | nc 127.0.0.1 7000; trap "echo client-stopped; exit 0" TERM; sleep 600 & wait'
  first-fails: !Supervise
    mode: stop-on-failure
    children:
      bad: !Command
        container: base
        run: 'sleep 1; echo bad-out; echo bad-err >&2; exit 3'
      long: !Command
        container: base
        run: 'trap "echo long-stopped; exit 0" TERM; echo long-up; sleep 600 & wait'
  all: !Supervise
    mode: wait-all
    prefix: false
    children:
      quick: !Command
        container: base
        run: 'exit 5'
      slow: !Command
        container: base
        run: 'sleep 3; echo slow-finished'
  all-ok: !Supervise
    mode: wait-all-successful
    children:
      one: !Command
        container: base
        run: 'echo one-done'
      two: !Command
        container: base
        run: 'sleep 3; echo two-done'
      three: !Command
        container: base
        run: 'sleep 6; exit 4'
      four: !Command
        container: base
        run: 'trap "echo four-stopped; exit 0" TERM; sleep 600 & wait'
  stubborn: !Supervise
    kill-unresponsive-after: 1
    children:
      quick: !Command
        container: base
        run: 'sleep 2'
      deaf: !Command
        container: base
        run: 'trap "" TERM; echo deaf-up; sleep 600'
"#;

#[test]
fn supervise_modes_selection_localhost_and_signals() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, GROUP_COMMANDS);
    let yaml = std::fs::read_to_string(p.path().join("cella.yaml")).expect("read");
    let yaml = yaml.replace(
        "commands:\n",
        "  other:\n    setup:\n    - !Tar { url: ./rootfs.tar }\n    - !Text { /etc/which: \"other\\n\" }\ncommands:\n",
    );
    std::fs::write(p.path().join("cella.yaml"), yaml).expect("write");

    // Two containers, one VM: each child sees its own root, and they
    // talk over the guest's loopback.
    let (code, out, err, _) = run(&p, &["talk"], &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    for want in [
        "[server] other",
        "[client] cat: can't open '/etc/which': No such file or directory",
        "[server] hello-over-lo",
        "[client] reply",
        "[server] server-done",
        "[client] client-stopped",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "{want:?} missing in:\n{out}\n{err}"
        );
    }
    assert!(err.contains("cella: server exited with status 0"), "{err}");
    assert!(
        err.contains("cella: client was stopped (status 0)"),
        "{err}"
    );

    // stop-on-failure: the first to end stops the rest; its status wins;
    // stdout and stderr stay apart.
    let (code, out, err, secs) = run(&p, &["first-fails"], &[]);
    assert_eq!(code, Some(3), "{out}\n{err}");
    assert!(
        out.contains("[bad] bad-out\n") && !out.contains("bad-err"),
        "{out}"
    );
    assert!(err.contains("[bad] bad-err\n"), "{err}");
    assert!(out.contains("[long] long-stopped\n"), "{out}");
    assert!(secs < 120.0, "took {secs} s");

    // wait-all: everybody finishes; the first failure is the status.
    let (code, out, err, _) = run(&p, &["all"], &[]);
    assert_eq!(code, Some(5), "{out}\n{err}");
    assert_eq!(out, "slow-finished\n", "{err}");

    // wait-all-successful: successes are waited for, a failure stops the rest.
    let (code, out, err, _) = run(&p, &["all-ok"], &[]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    for want in ["[one] one-done", "[two] two-done", "[four] four-stopped"] {
        assert!(
            out.lines().any(|l| l == want),
            "{want:?} missing in:\n{out}\n{err}"
        );
    }
    // --only and --exclude pick children (here all in `base`: one drive).
    let (code, out, err, _) = run(&p, &["all-ok", "--only", "one", "two"], &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(out, "[one] one-done\n[two] two-done\n", "{err}");
    let (code, out, err, _) = run(&p, &["all", "--exclude", "slow"], &[]);
    assert_eq!((code, out.as_str()), (Some(5), ""), "{err}");
    let (code, _, err, _) = run(&p, &["all", "--only", "nope"], &[]);
    assert_eq!(code, Some(125));
    assert!(
        err.contains("no child or tag named \"nope\" (it has: quick, slow)"),
        "{err}"
    );

    // A child that ignores SIGTERM gets SIGKILL after the grace period;
    // the status is the first child's, as in vagga.
    let (code, out, err, secs) = run(&p, &["stubborn"], &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        err.contains("cella: deaf was stopped (status 137)"),
        "{err}"
    );
    assert!(secs < 120.0, "took {secs} s");

    // SIGTERM to cella stops every child. cella has one child process,
    // the VM's; all its threads (a vCPU among them) run under a seccomp
    // filter, with no capability and no way to gain one, and it starts no
    // process of its own.
    let mut cmd = p.cella();
    cmd.args(["first-fails", "--only", "long"])
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cella");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("[long] long-up"));
    let pid = child.id();
    let vm = children_of(pid);
    assert_eq!(vm.len(), 1, "cella has one child, the VM's process: {vm:?}");
    let threads = common::thread_status(vm[0]);
    assert!(
        threads.iter().any(|t| t.starts_with("vcpu0 ")),
        "the vCPU runs in a thread of the VM's process: {threads:?}"
    );
    for t in &threads {
        assert!(
            t.ends_with(" Seccomp=2 NoNewPrivs=1 CapEff=0000000000000000"),
            "every thread of the VM's process is filtered and unprivileged: {threads:?}"
        );
    }
    assert_eq!(
        children_of(vm[0]),
        Vec::<u32>::new(),
        "the VM's process has no child processes"
    );
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        for ns in ["net", "mnt", "ipc", "uts"] {
            let of = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/{ns}")).ok();
            assert_ne!(
                of(pid),
                of(vm[0]),
                "under root the VM's process has a {ns} namespace of its own"
            );
        }
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = common::wait_output(child, common::TIMEOUT).status;
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{rest:?}");
    assert_eq!(rest, ["[long] long-stopped"]);
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[test]
fn interactive_shell_on_a_pty() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let wait = Duration::from_secs(120);
    let mut cmd = p.cella();
    cmd.args(["-E", "PS1=cella$ ", "_run", "base", "sh"]);
    let mut t = Pty::spawn(cmd, 30, 100);
    let cooked = t.slave_termios().c_lflag;
    t.expect("cella$ ", common::TIMEOUT).expect("prompt");
    // Raw on the host while the guest has the terminal.
    assert_eq!(
        t.slave_termios().c_lflag & libc::ICANON,
        0,
        "host tty not raw"
    );
    t.send(b"tty; stty size\r");
    t.expect("/dev/pts/0", wait).expect("a pty in the guest");
    t.expect("30 100", wait).expect("the starting size");
    t.resize(40, 120);
    let mut resized = false;
    for _ in 0..20 {
        t.send(b"stty size\r");
        if t.expect("40 120", Duration::from_secs(5)).is_ok() {
            resized = true;
            break;
        }
    }
    assert!(resized, "SIGWINCH never reached the guest: {}", t.output());
    // Ctrl-C interrupts the foreground job, not the shell.
    t.send(b"sleep 100\r");
    std::thread::sleep(Duration::from_secs(2));
    t.send(b"\x03");
    t.send(b"echo status=$?\r");
    t.expect("status=130", wait).expect("Ctrl-C");
    // Ctrl-Z stops it; fg brings it back, and Ctrl-C ends it.
    t.send(b"sleep 200\r");
    std::thread::sleep(Duration::from_secs(2));
    t.send(b"\x1a");
    t.expect("Stopped", wait).expect("Ctrl-Z");
    t.send(b"fg\r");
    std::thread::sleep(Duration::from_secs(2));
    t.send(b"\x03");
    t.send(b"echo fg-$?\r");
    t.expect("fg-130", wait).expect("fg, then Ctrl-C");
    t.send(b"exit 7\r");
    let status = t.wait(wait).expect("cella exits");
    assert_eq!(status.code(), Some(7), "{}", t.output());
    assert_eq!(t.slave_termios().c_lflag, cooked, "terminal not restored");

    // Restored too when cella stops the VM itself.
    let mut cmd = p.cella();
    cmd.args(["--timeout", "20", "_run", "base", "sh"]);
    let mut t = Pty::spawn(cmd, 24, 80);
    let status = t.wait(wait).expect("cella exits");
    assert_eq!(status.code(), Some(124), "{}", t.output());
    assert_eq!(t.slave_termios().c_lflag, cooked, "terminal not restored");
}

const SMALL_COMMANDS: &str = r#"  sizes: !Command
    container: base
    cpus: 1
    memory: 1Gi
    run: 'echo "cpus=$(nproc)"; grep MemTotal /proc/meminfo'
  hog: !Command
    container: base
    cpus: 2
    memory: 64Mi
    run: 'dd if=/dev/zero of=/dev/null bs=50M count=1; echo "dd-status=$?"'
"#;

#[test]
fn resources_and_running_out_of_memory() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, SMALL_COMMANDS);
    // The command line wins over the command's own cpus and memory.
    let (code, out, err, _) = run(&p, &["--cpus", "2", "--memory", "64Mi", "sizes"], &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("cpus=2\n"), "{out}");
    let kib: u64 = out
        .split_whitespace()
        .skip_while(|w| *w != "MemTotal:")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("MemTotal");
    assert!((40_000..=65_536).contains(&kib), "MemTotal {kib} kB");

    // The hog is killed and the host is told; the shell goes on.
    let (code, out, err, secs) = run(&p, &["hog"], &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("dd-status=137"), "{out}\n{err}");
    assert!(
        err.contains(
            "cella: the guest ran out of memory: killed dd to free some of the VM's 64 MiB"
        ),
        "{err}"
    );
    assert!(secs < 300.0, "took {secs} s");
}
