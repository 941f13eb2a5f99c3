//! Networking end to end: no network by default, `network: user` through
//! passt refused the host's loopback, cloud metadata and reserved addresses
//! unless the user allows them, then reaching a server on the host's
//! loopback when allowed, a published port reached
//! from the host, no passt left behind even after SIGKILL of cella, and
//! a `!Debian` + `!Install` container built and run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assets, text, HelperWatch, Project};

/// A one-page HTTP server on 127.0.0.1 that counts its connections.
struct HostServer {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn host_server(body: &'static str) -> HostServer {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    HostServer { port, hits }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// An HTTP GET of `/` on 127.0.0.1:`port`; the body, or why not.
fn http_get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") => Ok(body.to_owned()),
        _ => Err(format!("not an HTTP reply: {reply:?}")),
    }
}

/// The live (not zombie) children of `pid` whose name starts with `name`.
fn live_children(pid: u32, name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if comm.starts_with(name)
            && rest.get(1) == Some(&pid.to_string().as_str())
            && rest[0] != "Z"
        {
            found.push(child);
        }
    }
    found
}

/// Whether process `pid` still runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn commands(host_port: u16, published: u16, taken: u16) -> String {
    format!(
        r#"  offline: !Command
    container: base
    run: |
      echo "links=$(ls /sys/class/net | tr '\n' ' ')"
      wget -q -O - http://10.0.2.2:{host_port}/ || echo "wget failed"
  online: !Command
    container: base
    network: user
    run: |
      ip -4 -o addr show eth0
      cat /etc/resolv.conf
      wget -q -O - http://10.0.2.2:{host_port}/ && echo " (fetched)"
  attack: !Command
    container: base
    network: user
    run: |
      for target in 10.0.2.2:{host_port} 169.254.169.254:80 203.0.113.1:80; do
        if out=$(timeout 20 wget -q -O - http://$target/ 2>&1); then
          echo "$target: reached: $out"
        else
          echo "$target: failed: $out"
        fi
      done
      if timeout 20 nslookup deb.debian.org 10.0.2.3 >/tmp/dns 2>&1 || grep -q NXDOMAIN /tmp/dns; then
        echo "dns: answered"
      else
        echo "dns: failed: $(cat /tmp/dns)"
      fi
  serve: !Command
    container: base
    network: user
    ports: {{{published}: 8000}}
    run: |
      echo served-from-guest > /tmp/index.html
      httpd -p 8000 -h /tmp && echo ready
      sleep 600
  clash: !Command
    container: base
    network: user
    ports: {{{taken}: 80}}
    run: echo should-not-run
"#
    )
}

#[test]
fn network_is_off_by_default_and_user_mode_on_request() {
    let Some(assets) = assets() else { return };
    let server = host_server("hello-from-host");
    let published = free_port();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let p = Project::new(assets, &commands(server.port, published, taken_port));

    // Default: loopback only; the host's listener sees nothing.
    let out = p.run(&["offline"], None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("links=lo \n"), "{stdout}\n{stderr}");
    assert!(stdout.contains("wget failed"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("hello-from-host"), "{stdout}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    // network: user alone reaches neither the host's loopback (through
    // the gateway), nor cloud metadata, nor a reserved address: each
    // connect is refused at once (a reset from cella's NIC, not a
    // timeout); DNS through the guest's nameserver still answers.
    let start = Instant::now();
    let out = p.run(&["attack"], None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for target in [
        format!("10.0.2.2:{}", server.port),
        "169.254.169.254:80".into(),
        "203.0.113.1:80".into(),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{target}: ")))
            .unwrap_or_default();
        assert!(
            line.contains(": failed:") && line.contains("Connection refused"),
            "{target}: {stdout}\n{stderr}"
        );
    }
    assert!(stdout.contains("dns: answered"), "{stdout}");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "the host server saw the guest"
    );
    eprintln!("attack run: {:.1} s", start.elapsed().as_secs_f64());

    // Allowed on the command line, the guest reaches the host's loopback
    // through the gateway.
    let allow = ["--allow-address", "127.0.0.1"];
    let out = p.run(&[&allow[..], &["online"]].concat(), None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("inet 10.0.2.15/24"), "{stdout}");
    assert!(stdout.contains("nameserver 10.0.2.3"), "{stdout}");
    assert!(
        stdout.contains("hello-from-host (fetched)"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert!(!stderr.contains("passt"), "passt chatter leaked: {stderr}");

    // --network none wins over the command's network: user.
    let out = p.run(
        &[&allow[..], &["--network", "none", "online"]].concat(),
        None,
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // A taken host port is refused before anything boots.
    let start = Instant::now();
    let out = p.run(&["clash"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot publish port {taken_port} on 127.0.0.1: it is in use"
        )),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert!(start.elapsed() < Duration::from_secs(30));
    drop(taken);

    // A published port: reachable from the host while the command runs;
    // then SIGKILL of cella leaves no passt behind.
    let mut cmd = p.cella();
    cmd.arg("serve").stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn cella");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "ready" {
                let _ = tx.send(());
            }
        }
    });
    let cella = child.id();
    let ready = rx.recv_timeout(common::TIMEOUT);
    let helpers = live_children(cella, "passt");
    let mut got = Err("not tried".to_owned());
    if ready.is_ok() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            got = http_get(published);
            if got.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    child.kill().expect("SIGKILL cella");
    let _ = child.wait();
    assert!(ready.is_ok(), "the server never said ready");
    assert_eq!(got.as_deref(), Ok("served-from-guest\n"));
    assert_eq!(helpers.len(), 1, "one passt per VM: {helpers:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while helpers.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !helpers.iter().any(|&pid| alive(pid)),
        "passt outlived SIGKILL of cella: {helpers:?}"
    );
    assert!(
        TcpListener::bind((Ipv4Addr::LOCALHOST, published)).is_ok(),
        "the published port is still bound after cella died"
    );
}

const DEBIAN: &str = r#"containers:
  deb:
    setup:
    - !Debian { suite: bookworm }
    - !Install [hello]
commands:
  greet: !Command
    container: deb
    run: |
      hello
      echo ---; cat /var/lib/cella/packages.lock; echo ---
      if grep -q 'written by cella' /etc/resolv.conf 2>/dev/null; then echo "resolv.conf leaked"; else echo "resolv.conf clean"; fi
"#;

/// `--allow-address` for each IPv4 address deb.debian.org resolves to: a
/// no-op where it is public, the user's grant where the machine reaches the
/// mirror through a non-public address (the development host's egress
/// proxy is 203.0.113.80, a documentation address cella refuses unasked).
fn mirror_grant() -> Vec<String> {
    use std::net::{IpAddr, ToSocketAddrs};
    let addresses = ("deb.debian.org", 80).to_socket_addrs();
    let mut args = Vec::new();
    for addr in addresses.into_iter().flatten() {
        if let IpAddr::V4(ip) = addr.ip() {
            args.extend(["--allow-address".to_owned(), ip.to_string()]);
        }
    }
    args
}

/// Slow (mmdebstrap, then dpkg in an emulated guest: minutes on the PVM
/// host), but CI runs it: the Debian mirror is reachable from CI. GNU
/// hello is the smallest real program to install: one package on libc6.
#[test]
fn debian_container_with_installed_package() {
    let Some(assets) = assets() else { return };
    let p = Project::new(assets, "");
    let grant = mirror_grant();
    let build = |args: &[&str]| {
        let mut all: Vec<&str> = grant.iter().map(String::as_str).collect();
        all.extend(args);
        p.run(&all, None)
    };
    std::fs::write(p.path().join("cella.yaml"), DEBIAN).expect("write cella.yaml");

    let version = |yaml: &str| {
        std::fs::write(p.path().join("cella.yaml"), yaml).expect("write");
        let out = p.run(&["_version_hash", "deb"], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let base = version(DEBIAN);
    let other_packages = version(&DEBIAN.replace("[hello]", "[hello, curl]"));
    let other_suite = version(&DEBIAN.replace("bookworm", "trixie"));
    assert_ne!(base, other_packages);
    assert_ne!(base, other_suite);
    std::fs::write(p.path().join("cella.yaml"), DEBIAN).expect("write cella.yaml");

    // The build's own output, dpkg's included, is on stderr: stdout is
    // the command's alone.
    let watch = HelperWatch::start(&["mmdebstrap", "apt-get"]);
    let out = build(&["_build", "deb"]);
    let helpers = watch.finish();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("!Debian bookworm minbase"), "{stderr}");
    // The host programs ran behind their wall (sandbox::helper): apt-get
    // with nothing of root's, mmdebstrap under root with only chown,
    // dac_override, fowner, fsetid, setgid, setuid, sys_chroot,
    // sys_admin, mknod and setfcap.
    // SAFETY: geteuid cannot fail.
    let (mmdebstrap, mnt) = if unsafe { libc::geteuid() } == 0 {
        ("00000000882400db", "other")
    } else {
        ("0000000000000000", "same")
    };
    assert_eq!(
        helpers.get("apt-get").map(String::as_str),
        Some(format!("CapEff=0000000000000000 NoNewPrivs=1 mnt={mnt}").as_str()),
        "{helpers:?}"
    );
    let nnp = if mnt == "other" { 1 } else { 0 };
    assert_eq!(
        helpers.get("mmdebstrap").map(String::as_str),
        Some(format!("CapEff={mmdebstrap} NoNewPrivs={nnp} mnt={mnt}").as_str()),
        "{helpers:?}"
    );
    assert!(stderr.contains("!Install hello"), "{stderr}");
    assert!(stderr.contains("Setting up hello (2.10"), "{stderr}");
    assert_eq!(stdout, "", "{stderr}");

    let out = p.run(&["greet"], None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Hello, world!\n"), "{stdout}\n{stderr}");
    assert!(stdout.contains("\nhello=2.10"), "{stdout}");
    // Multi-Arch: same packages carry their architecture.
    assert!(stdout.contains("\nlibc6:amd64=2.36"), "{stdout}");
    // cella.lock lists the same packages as dpkg-query in the image, and
    // what the id hashes of the !Debian step.
    let lock = std::fs::read_to_string(p.path().join("cella.lock")).expect("cella.lock");
    let lock: serde_json::Value = serde_json::from_str(&lock).expect("lock json");
    let entry = &lock["containers"]["deb"];
    let locked: Vec<&str> = entry["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|v| v.as_str().expect("package"))
        .collect();
    let in_image: Vec<&str> = stdout
        .split("---\n")
        .nth(1)
        .expect("packages.lock")
        .lines()
        .collect();
    assert_eq!(locked, in_image);
    assert_eq!(entry["setup"][0]["Debian"]["suite"], "bookworm", "{entry}");
    assert!(entry["built-with"]["kernel"].is_string(), "{entry}");
    // The build VM's resolver is not left in the image.
    assert!(stdout.contains("resolv.conf clean"), "{stdout}");
    // The .debs stay in the user's cache for the next build.
    let archives = p.cache.join("apt/archives");
    let debs: Vec<String> = std::fs::read_dir(&archives)
        .expect("apt cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(debs.iter().any(|d| d.starts_with("hello_")), "{debs:?}");
    assert!(debs.iter().any(|d| d.starts_with("libc6_")), "{debs:?}");
    // And the lists the host's apt resolved with.
    assert!(p.cache.join("apt/lists").read_dir().expect("lists").count() > 0);

    // A package the archive doesn't have fails on the host, before any VM,
    // with apt's own words and the step's place in cella.yaml.
    std::fs::write(
        p.path().join("cella.yaml"),
        DEBIAN.replace("[hello]", "[hello, no-such-package-cella]"),
    )
    .expect("write cella.yaml");
    let out = build(&["_build", "deb"]);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("step 2/2 (!Install at"), "{stderr}");
    assert!(stderr.contains("cella.yaml:5:"), "{stderr}");
    assert!(
        stderr.contains("Unable to locate package no-such-package-cella"),
        "{stderr}"
    );
    assert!(!stderr.contains("[2/2] !Install"), "a VM ran: {stderr}");
}
