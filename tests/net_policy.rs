//! The user's network grant, as an untrusted project would test it, with
//! no VM booted: under the CI setting (`network.allow: false`) a project's
//! `network: user`, `ports` and `build-network: user` fail before anything
//! builds; and an image whose apt configuration points the host's apt at
//! the host's loopback and names hooks neither runs a hook on the host nor
//! reaches the loopback, unless the user allows the address (and then
//! still runs no hook).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assets, text, HelperWatch, Project};

/// A server on 127.0.0.1 that answers 404 and keeps the first line of
/// every request (one entry per connection, empty if none came).
fn recording_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let first = head.lines().next().unwrap_or_default().to_owned();
            seen.lock().expect("lock").push(first);
            // Long enough for a test to look at the client while it waits.
            std::thread::sleep(Duration::from_millis(100));
            let _ = stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, requests)
}

const COMMANDS: &str = r#"  online: !Command
    container: base
    network: user
    run: echo should-not-run
  serve: !Command
    container: base
    network: user
    ports: {18080: 80}
    run: echo should-not-run
  later: !Command
    container: base
    prerequisites: [online]
    run: echo should-not-run
"#;

#[test]
fn the_ci_setting_refuses_a_projects_network_before_anything_runs() {
    let Some(assets) = assets() else { return };
    let p = Project::new(assets, COMMANDS);
    // A container that asks for a network in its build.
    let yaml = std::fs::read_to_string(p.path().join("cella.yaml")).expect("read");
    let yaml = yaml.replace(
        "commands:\n",
        "  builder:\n    build-network: user\n    setup:\n    - !Tar { url: ./rootfs.tar }\ncommands:\n",
    );
    std::fs::write(p.path().join("cella.yaml"), yaml).expect("write");
    let settings = p.path().join("settings.yaml");
    std::fs::write(&settings, "network:\n  allow: false\n").expect("settings");
    let run = |args: &[&str]| {
        let start = Instant::now();
        let out = common::wait_output(
            p.cella()
                .env("CELLA_SETTINGS", &settings)
                .args(args)
                .spawn()
                .expect("spawn"),
            common::TIMEOUT,
        );
        (out, start.elapsed())
    };
    for (args, at) in [
        (&["online"][..], "cella.yaml:12:14: commands.online.network"),
        (&["serve"], "cella.yaml:16:14: commands.serve.network"),
        (&["later"], "cella.yaml:12:14: commands.online.network"),
        (
            &["_build", "builder"],
            "cella.yaml:6:20: containers.builder.build-network",
        ),
    ] {
        let (out, took) = run(args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stdout}\n{stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: /"), "{args:?}: {stderr}");
        assert!(first.contains(at), "{args:?}: {stderr}");
        assert!(
            first.contains(&format!(
                "{} (network.allow: false) forbids",
                settings.display()
            )),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(!stdout.contains("should-not-run"), "{stdout}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
    assert!(
        !p.path().join(".cella").join("images").exists()
            || std::fs::read_dir(p.path().join(".cella/images"))
                .map(|d| d.count() == 0)
                .unwrap_or(true),
        "something was built"
    );
}

/// An image made from the busybox tarball plus what an attacker writes:
/// sources at the host's loopback, hooks that touch a host file, a dpkg
/// status; then `!Install`.
fn evil_yaml(port: u16, marker: &Path) -> String {
    let m = marker.display();
    format!(
        r#"containers:
  evil:
    setup:
    - !Tar {{ url: ./rootfs.tar }}
    - !Text
        /etc/apt/sources.list: "deb http://127.0.0.1:{port}/ bookworm main\n"
        /etc/apt/apt.conf.d/99pwn: |
          APT::Update::Pre-Invoke {{ "touch {m}-pre-invoke"; }};
          APT::Update::Post-Invoke {{ "touch {m}-post-invoke"; }};
          APT::Update::Post-Invoke-Success {{ "touch {m}-post-success"; }};
          DPkg::Pre-Invoke {{ "touch {m}-dpkg"; }};
          Acquire::http::Proxy "http://127.0.0.1:{port}/";
        /var/lib/dpkg/status: ""
    - !Install [hello]
commands: {{}}
"#
    )
}

#[test]
fn an_images_apt_configuration_runs_nothing_on_the_host() {
    let Some(assets) = assets() else { return };
    let p = Project::new(assets, "");
    let (port, requests) = recording_server();
    let requests = || requests.lock().expect("lock").clone();
    let outside = tempfile::tempdir().expect("tempdir");
    let marker = outside.path().join("pwned");
    std::fs::write(p.path().join("cella.yaml"), evil_yaml(port, &marker)).expect("write");
    let touched = || {
        std::fs::read_dir(outside.path())
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };

    // The default: the loopback is not the project's to fetch from.
    let out = p.run(&["_build", "evil"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("step 3/3 (!Install at"), "{stderr}");
    assert!(stderr.contains("cella.yaml:14:"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "an apt source of the image is refused: http://127.0.0.1:{port}/: 127.0.0.1 is a loopback address"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("[3/3] !Install"), "a VM ran: {stderr}");
    assert_eq!(
        requests(),
        Vec::<String>::new(),
        "the host's loopback was reached"
    );
    assert_eq!(touched(), Vec::<String>::new(), "a hook ran on the host");

    // Allowed by the user, apt fetches from it, and still runs no hook of
    // the image's and takes no proxy from it (a proxied request would name
    // the whole URL).
    let watch = HelperWatch::start(&["apt-get", "http"]);
    let out = p.run(&["--allow-address", "127.0.0.1", "_build", "evil"], None);
    let helpers = watch.finish();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("`apt-get update` on the host"), "{stderr}");
    let seen = requests();
    assert!(
        seen.iter().any(|r| r.starts_with("GET /dists/bookworm/")),
        "apt never asked: {seen:?}\n{stderr}"
    );
    assert!(
        !seen.iter().any(|r| r.contains("http://")),
        "proxied: {seen:?}"
    );
    assert_eq!(touched(), Vec::<String>::new(), "a hook ran on the host");
    assert!(!stderr.contains("[3/3] !Install"), "a VM ran: {stderr}");
    // apt-get and its download method, which parse what the image's
    // source sends, keep nothing of root's (sandbox::helper); under root
    // they are in a mount namespace of their own.
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mnt = if root { "other" } else { "same" };
    for name in ["apt-get", "apt-get/http"] {
        assert_eq!(
            helpers.get(name).map(String::as_str),
            Some(format!("CapEff=0000000000000000 NoNewPrivs=1 mnt={mnt}").as_str()),
            "{helpers:?}"
        );
    }
}

/// Values of cella.yaml that reach host programs' argv, written as an
/// attacker would: options (`--setup-hook` runs a command in mmdebstrap,
/// `-o` sets any apt option) in the suite, variant, mirror and package
/// names. Each is refused when cella.yaml is loaded, naming the field;
/// nothing runs on the host.
#[test]
fn cella_yaml_passes_no_option_to_a_host_program() {
    let Some(assets) = assets() else { return };
    let p = Project::new(assets, "");
    let outside = tempfile::tempdir().expect("tempdir");
    let marker = outside.path().join("pwned");
    let m = marker.display();
    let cases = [
        (
            format!("    - !Debian {{ suite: \"--setup-hook=touch {m}\" }}\n"),
            "containers.d.setup[0].suite: expected a suite name",
        ),
        (
            format!("    - !Debian {{ suite: bookworm, variant: \"--customize-hook=touch {m}\" }}\n"),
            "containers.d.setup[0].variant",
        ),
        (
            format!("    - !Debian {{ suite: bookworm, mirror: \"http://deb.debian.org/debian --setup-hook=touch {m}\" }}\n"),
            "containers.d.setup[0].mirror",
        ),
        (
            format!("    - !Tar {{ url: ./rootfs.tar }}\n    - !Install [\"-oAPT::Update::Pre-Invoke::=touch {m}\"]\n"),
            "containers.d.setup[1][0]: expected a Debian package",
        ),
        (
            "    - !Tar { url: ./rootfs.tar }\n    - !Install [hello, \"--allow-unauthenticated\"]\n".to_owned(),
            "containers.d.setup[1][1]",
        ),
    ];
    for (steps, field) in cases {
        let yaml = format!("containers:\n  d:\n    setup:\n{steps}commands: {{}}\n");
        std::fs::write(p.path().join("cella.yaml"), &yaml).expect("write");
        let started = Instant::now();
        let out = p.run(&["_build", "d"], None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{yaml}\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("/cella.yaml:"), "{stderr}");
        assert!(stderr.contains(field), "expected {field:?} in {stderr}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!marker.exists(), "a host program ran the project's option");
    }
}
