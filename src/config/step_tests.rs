//! Tests of setup steps, volumes and container references: the decoded
//! model and every error's message and position.

use std::collections::BTreeMap;

use super::tests::{env, input_err, load_err, load_ok, project, simple, BASE};
use super::*;

/// A config whose container `base` has the setup steps `steps` (lines
/// starting with `    - `); the first step is on line 4.
fn steps(steps: &str) -> String {
    format!("containers:\n  base:\n    setup:\n{steps}")
}

/// A config whose container `base` has the volumes `volumes`; the first
/// volume is on line 4, its key at column 7.
fn volumes(volumes: &str) -> String {
    format!("containers:\n  base:\n    volumes:\n{volumes}")
}

fn step(step: Step, line: usize) -> SetupStep {
    SetupStep {
        step,
        pos: Pos::new(line, 7),
    }
}

#[test]
fn every_step_and_volume() {
    let (_dir, path) = project(
        "cella.yaml",
        r#"containers:
  base:
    setup:
    - !Tar
      url: images/busybox.tar
      path: /opt//rootfs/
      sha256: 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789ABCDEF
    - !Sh "apk add curl"
    - !Cmd [echo, hi, 1]
    - !Text
      /etc/motd: hello
      /etc//hosts: "127.0.0.1 localhost\n"
    - !Copy
      source: src
      path: /app/src/
    - !Copy
      source: /work/Cargo.lock
      path: /app/Cargo.lock
      include-regex: '\.rs$'
      exclude-regex: '^target/'
      owner-uid: 1000
      owner-gid: 100
      umask: 0o022
    - !EnsureDir /var/lib/./app/
    - !Remove /var/cache
    - !Env { PATH: /usr/bin, DEBUG: 1 }
    - !Depends Cargo.lock
    - !Depends ./src/../src
    - !Copy { source: /work, path: /work, umask: 0027 }
    - !Copy { source: ., path: /w, umask: 18 }
    volumes:
      /tmp: !Tmpfs
        size: 100Mi
        mode: 0o1777
        subdirs: { cache: { mode: 0755 }, logs: ~ }
        files: { a.txt: hi, empty: ~ }
      /var/data: !BindRW /work/data
      /etc/ro/: !BindRO /volumes/ro
      /empty: !Empty
      /p1: !Persistent db
      /p2: !Persistent { name: pg, init-command: init-db }
      /s: !Snapshot { size: 1G, owner-uid: 1, owner-gid: 2, container: app }
      /s2: !Snapshot
  app:
    setup:
    - !Container base
    - !Build { container: tools, source: /usr/bin/tool }
    - !Build { container: tools, source: /opt/, path: /usr//local }
  tools:
    setup:
    - !Tar { url: ./images/busybox.tar }
commands:
  run: !Command
    container: app
    run: [tool]
    volumes:
      /tmp: !Tmpfs
      /data: !Snapshot { container: tools, size: 1048576 }
  init-db: !Command
    container: app
    run: [tool]
"#,
    );
    let config = load(&path, 1 << 20).unwrap();
    let base = &config.containers["base"];
    let expected = vec![
        step(
            Step::Tar {
                url: "images/busybox.tar".into(),
                rel: Some(PathBuf::from("images/busybox.tar")),
                path: "/opt/rootfs".into(),
                sha256: Some(
                    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
                ),
                subdir: None,
            },
            4,
        ),
        step(Step::Sh("apk add curl".into()), 8),
        step(Step::Cmd(vec!["echo".into(), "hi".into(), "1".into()]), 9),
        step(
            Step::Text(env(&[
                ("/etc/motd", "hello"),
                ("/etc/hosts", "127.0.0.1 localhost\n"),
            ])),
            10,
        ),
        step(
            Step::Copy(CopyStep {
                source: "src".into(),
                rel: Some(PathBuf::from("src")),
                path: "/app/src".into(),
                select: Selection {
                    include_regex: None,
                    exclude_regex: None,
                    rules: None,
                },
                owner_uid: None,
                owner_gid: None,
                umask: 0o002,
                ..CopyStep::default()
            }),
            13,
        ),
        step(
            Step::Copy(CopyStep {
                source: "/work/Cargo.lock".into(),
                rel: Some(PathBuf::from("Cargo.lock")),
                path: "/app/Cargo.lock".into(),
                select: Selection {
                    include_regex: Some(r"\.rs$".into()),
                    exclude_regex: Some("^target/".into()),
                    rules: None,
                },
                owner_uid: Some(1000),
                owner_gid: Some(100),
                umask: 0o022,
                ..CopyStep::default()
            }),
            16,
        ),
        step(Step::EnsureDir("/var/lib/app".into()), 24),
        step(Step::Remove("/var/cache".into()), 25),
        step(Step::Env(env(&[("PATH", "/usr/bin"), ("DEBUG", "1")])), 26),
        step(
            Step::Depends {
                path: "Cargo.lock".into(),
                rel: PathBuf::from("Cargo.lock"),
                select: Selection::default(),
            },
            27,
        ),
        step(
            Step::Depends {
                path: "./src/../src".into(),
                rel: PathBuf::from("src"),
                select: Selection::default(),
            },
            28,
        ),
        step(
            Step::Copy(CopyStep {
                source: "/work".into(),
                rel: Some(PathBuf::new()),
                path: "/work".into(),
                select: Selection {
                    include_regex: None,
                    exclude_regex: None,
                    rules: None,
                },
                owner_uid: None,
                owner_gid: None,
                umask: 0o027,
                ..CopyStep::default()
            }),
            29,
        ),
        step(
            Step::Copy(CopyStep {
                source: ".".into(),
                rel: Some(PathBuf::new()),
                path: "/w".into(),
                select: Selection {
                    include_regex: None,
                    exclude_regex: None,
                    rules: None,
                },
                owner_uid: None,
                owner_gid: None,
                umask: 0o022,
                ..CopyStep::default()
            }),
            30,
        ),
    ];
    assert_eq!(base.setup.len(), expected.len());
    for (got, want) in base.setup.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    let tags: Vec<&str> = base.setup.iter().map(|s| s.step.tag()).collect();
    assert_eq!(
        tags,
        [
            "Tar",
            "Sh",
            "Cmd",
            "Text",
            "Copy",
            "Copy",
            "EnsureDir",
            "Remove",
            "Env",
            "Depends",
            "Depends",
            "Copy",
            "Copy"
        ]
    );

    let expected_volumes: BTreeMap<String, Volume> = [
        (
            "/tmp",
            Volume::Tmpfs {
                size: Some(100 << 20),
                mode: Some(0o1777),
                subdirs: [("cache".to_owned(), Some(0o755)), ("logs".to_owned(), None)].into(),
                files: env(&[("a.txt", "hi"), ("empty", "")]),
            },
        ),
        ("/empty", Volume::Empty),
        (
            "/p1",
            Volume::Persistent {
                name: "db".into(),
                init_command: None,
            },
        ),
        (
            "/p2",
            Volume::Persistent {
                name: "pg".into(),
                init_command: Some(NameRef {
                    name: "init-db".into(),
                    at: Location {
                        file: path.clone(),
                        pos: Pos::new(41, 50),
                        field: "containers.base.volumes./p2.init-command".into(),
                    },
                }),
            },
        ),
        (
            "/s",
            Volume::Snapshot {
                size: Some(1_000_000_000),
                owner_uid: Some(1),
                owner_gid: Some(2),
                container: Some("app".into()),
            },
        ),
        (
            "/s2",
            Volume::Snapshot {
                size: None,
                owner_uid: None,
                owner_gid: None,
                container: None,
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut volumes = base.volumes.clone();
    let bind = |v: Option<Volume>| match v {
        Some(Volume::BindRW(b)) => ("rw", b.path, b.host, b.at.field, b.at.pos.line),
        Some(Volume::BindRO(b)) => ("ro", b.path, b.host, b.at.field, b.at.pos.line),
        other => panic!("not a bind: {other:?}"),
    };
    assert_eq!(
        bind(volumes.remove("/var/data")),
        (
            "rw",
            "/work/data".to_owned(),
            HostDir::Project("data".into()),
            "containers.base.volumes./var/data".to_owned(),
            37
        )
    );
    assert_eq!(
        bind(volumes.remove("/etc/ro")),
        (
            "ro",
            "/volumes/ro".to_owned(),
            HostDir::Absolute("/volumes/ro".into()),
            "containers.base.volumes./etc/ro/".to_owned(),
            38
        )
    );
    assert_eq!(volumes, expected_volumes);

    let app = &config.containers["app"];
    assert_eq!(
        app.setup,
        vec![
            step(Step::Container("base".into()), 46),
            step(
                Step::Build {
                    container: "tools".into(),
                    source: "/usr/bin/tool".into(),
                    path: "/usr/bin/tool".into(),
                    temporary: false,
                },
                47,
            ),
            step(
                Step::Build {
                    container: "tools".into(),
                    source: "/opt".into(),
                    path: "/usr/local".into(),
                    temporary: false,
                },
                48,
            ),
        ]
    );
    let uses: Vec<_> = app.setup.iter().map(|s| s.step.uses()).collect();
    assert_eq!(uses, [Some("base"), Some("tools"), Some("tools")]);

    let run = simple(&config, "run");
    assert_eq!(run.volumes.len(), 2);
    assert_eq!(
        run.volumes["/tmp"],
        Volume::Tmpfs {
            size: None,
            mode: None,
            subdirs: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    );
    assert_eq!(
        run.volumes["/data"],
        Volume::Snapshot {
            size: Some(1 << 20),
            owner_uid: None,
            owner_gid: None,
            container: Some("tools".into()),
        }
    );
}

#[test]
fn unknown_fields_in_steps_and_volumes() {
    assert_eq!(
        load_err(&steps(
            "    - !Copy { source: images, path: /x, dest: /y }\n"
        )),
        "/p/cella.yaml:4:41: containers.base.setup[0].dest: unknown field, expected one of: \
         source, path, include-regex, exclude-regex, ignore-regex, rules, no-default-rules, \
         owner-uid, owner-gid, umask, preserve-permissions, preserve-times"
    );
    assert_eq!(
        load_err(&steps("    - !Build { container: base, from: / }\n")),
        "/p/cella.yaml:4:33: containers.base.setup[0].from: unknown field, \
         expected one of: container, source, path, temporary-mount"
    );
    assert_eq!(
        load_err(&volumes("      /tmp: !Tmpfs { sizes: 1 }\n")),
        "/p/cella.yaml:4:22: containers.base.volumes./tmp.sizes: unknown field, \
         expected one of: size, mode, subdirs, files"
    );
    assert_eq!(
        load_err(&volumes(
            "      /tmp: !Tmpfs { subdirs: { a: { mode: 1, uid: 0 } } }\n"
        )),
        "/p/cella.yaml:4:47: containers.base.volumes./tmp.subdirs.a.uid: unknown field, \
         expected one of: mode"
    );
}

#[test]
fn missing_fields_in_steps() {
    assert_eq!(
        load_err(&steps("    - !Copy { source: images }\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0].path: missing required field"
    );
    assert_eq!(
        load_err(&steps("    - !Build\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0].container: missing required field"
    );
    assert_eq!(
        load_err(&volumes("      /p: !Persistent { init-command: x }\n")),
        "/p/cella.yaml:4:11: containers.base.volumes./p.name: missing required field"
    );
}

#[test]
fn bad_sha256() {
    assert_eq!(
        load_err(&steps(
            "    - !Tar { url: images/busybox.tar, sha256: abc }\n"
        )),
        "/p/cella.yaml:4:47: containers.base.setup[0].sha256: \
         expected a sha256: 64 hex digits, found \"abc\""
    );
}

#[test]
fn container_paths() {
    assert_eq!(
        load_err(&steps("    - !EnsureDir var/lib\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: \
         expected an absolute path in the container, found \"var/lib\""
    );
    assert_eq!(
        load_err(&steps(
            "    - !Tar { url: images/busybox.tar, path: opt }\n"
        )),
        "/p/cella.yaml:4:45: containers.base.setup[0].path: \
         expected an absolute path in the container, found \"opt\""
    );
    assert_eq!(
        load_err(&steps("    - !Remove /a/../b\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: \
         a path must not contain \"..\", found \"/a/../b\""
    );
    assert_eq!(
        load_err(&steps("    - !Text { etc/motd: hi }\n")),
        "/p/cella.yaml:4:15: containers.base.setup[0].etc/motd: \
         expected an absolute path in the container, found \"etc/motd\""
    );
    assert_eq!(
        load_err(&steps("    - !Text { /a: x, //a: y }\n")),
        "/p/cella.yaml:4:22: containers.base.setup[0].//a: duplicate key"
    );
    assert_eq!(
        load_err(&steps(
            "    - !Build { container: base, path: \"/a\\0\" }\n"
        )),
        "/p/cella.yaml:4:39: containers.base.setup[0].path: a path must not contain a NUL byte"
    );
    assert_eq!(
        load_err(&volumes("      tmp: !Empty\n")),
        "/p/cella.yaml:4:7: containers.base.volumes.tmp: \
         expected an absolute path in the container, found \"tmp\""
    );
    assert_eq!(
        load_err(&volumes("      /tmp: !Empty\n      /tmp/: !Empty\n")),
        "/p/cella.yaml:5:7: containers.base.volumes./tmp/: duplicate key"
    );
}

#[test]
fn project_paths() {
    assert_eq!(
        load_err(&steps("    - !Tar { url: /etc/backup.tar }\n")),
        "/p/cella.yaml:4:19: containers.base.setup[0].url: \
         \"/etc/backup.tar\" is outside the project: expected a relative path or one under /work"
    );
    assert_eq!(
        load_err(&steps("    - !Tar { url: ../x.tar }\n")),
        "/p/cella.yaml:4:19: containers.base.setup[0].url: \
         \"../x.tar\" climbs out of the project directory"
    );
    assert_eq!(
        load_err(&steps("    - !Copy { source: ../x, path: /x }\n")),
        "/p/cella.yaml:4:23: containers.base.setup[0].source: \
         \"../x\" climbs out of the project directory"
    );
    assert_eq!(
        load_err(&steps("    - !Copy { source: src/../../x, path: /x }\n")),
        "/p/cella.yaml:4:23: containers.base.setup[0].source: \
         \"src/../../x\" climbs out of the project directory"
    );
    assert_eq!(
        load_err(&steps("    - !Depends /etc/passwd\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: \
         \"/etc/passwd\" is outside the project: expected a relative path or one under /work"
    );
    assert_eq!(
        input_err(&steps("    - !Copy { source: /work/nope, path: /x }\n")),
        "/p/cella.yaml:4:23: containers.base.setup[0].source: no such file: /p/nope"
    );
    assert_eq!(
        input_err(&steps("    - !Depends nope.lock\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: no such file: /p/nope.lock"
    );
    assert_eq!(
        load_err(&steps("    - !Depends /work/..\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: \
         \"/work/..\" climbs out of the project directory"
    );
}

#[test]
fn invalid_regex() {
    assert_eq!(
        load_err(&steps(
            "    - !Copy { source: images, path: /x, include-regex: '(' }\n"
        )),
        "/p/cella.yaml:4:56: containers.base.setup[0].include-regex: \
         invalid regex \"(\": unclosed group"
    );
    assert_eq!(
        load_err(&steps(
            "    - !Copy { source: images, path: /x, exclude-regex: '[z-a]' }\n"
        )),
        "/p/cella.yaml:4:56: containers.base.setup[0].exclude-regex: \
         invalid regex \"[z-a]\": invalid character class range, the start must be <= the end"
    );
}

#[test]
fn bad_numbers() {
    assert_eq!(
        load_err(&steps(
            "    - !Copy { source: images, path: /x, umask: 0o8 }\n"
        )),
        "/p/cella.yaml:4:48: containers.base.setup[0].umask: \
         expected a mode: octal like 0o755 or 0755, or decimal, at most 0o7777; found \"0o8\""
    );
    assert_eq!(
        load_err(&steps(
            "    - !Copy { source: images, path: /x, owner-uid: -1 }\n"
        )),
        "/p/cella.yaml:4:52: containers.base.setup[0].owner-uid: \
         expected an integer from 0 to 4294967295, found \"-1\""
    );
    assert_eq!(
        load_err(&volumes("      /tmp: !Tmpfs { size: 10X }\n")),
        "/p/cella.yaml:4:28: containers.base.volumes./tmp.size: \
         expected a size in bytes like 1048576, 100Mi or 2G \
         (suffixes k, M, G, T, Ki, Mi, Gi, Ti), found \"10X\""
    );
    assert_eq!(
        load_err(&volumes("      /s: !Snapshot { size: [1] }\n")),
        "/p/cella.yaml:4:29: containers.base.volumes./s.size: expected a string, found a list"
    );
}

#[test]
fn empty_and_mistyped_steps() {
    let empty = "/p/cella.yaml:4:7: containers.base.setup[0]: command must not be empty";
    assert_eq!(load_err(&steps("    - !Sh ''\n")), empty);
    assert_eq!(load_err(&steps("    - !Sh\n")), empty);
    assert_eq!(load_err(&steps("    - !Cmd []\n")), empty);
    assert_eq!(
        load_err(&steps("    - !Cmd echo hi\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: expected a list, found a string"
    );
    assert_eq!(
        load_err(&steps("    - !Cmd [echo, [hi]]\n")),
        "/p/cella.yaml:4:19: containers.base.setup[0][1]: expected a string, found a list"
    );
    assert_eq!(
        load_err(&steps("    - !Sh [echo]\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: expected a string, found a list"
    );
    assert_eq!(
        load_err(&steps("    - !Env { A: [1] }\n")),
        "/p/cella.yaml:4:17: containers.base.setup[0].A: expected a string, found a list"
    );
    assert_eq!(
        load_err(&steps("    - !Text { /a: !Raw x }\n")),
        "/p/cella.yaml:4:19: containers.base.setup[0]./a: unexpected tag !Raw"
    );
}

#[test]
fn container_must_be_first() {
    assert_eq!(
        load_err(&format!(
            "{BASE}  other:\n    setup:\n    - !Sh 'true'\n    - !Container base\n"
        )),
        "/p/cella.yaml:8:7: containers.other.setup[1]: !Container must be the first step"
    );
}

#[test]
fn unknown_containers() {
    assert_eq!(
        load_err(&steps("    - !Container nope\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: unknown container \"nope\""
    );
    assert_eq!(
        load_err(&steps("    - !Build { container: nope }\n")),
        "/p/cella.yaml:4:27: containers.base.setup[0].container: unknown container \"nope\""
    );
    assert_eq!(
        load_err(&volumes("      /s: !Snapshot { container: nope }\n")),
        "/p/cella.yaml:4:34: containers.base.volumes./s.container: unknown container \"nope\""
    );
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  t: !Command\n    container: base\n    run: x\n    volumes:\n      \
             /s: !Snapshot {{ container: nope }}\n"
        )),
        "/p/cella.yaml:10:34: commands.t.volumes./s.container: unknown container \"nope\""
    );
}

#[test]
fn cycles() {
    assert_eq!(
        load_err(
            "containers:\n  b:\n    setup:\n    - !Container a\n  \
             a:\n    setup:\n    - !Container b\n"
        ),
        "/p/cella.yaml:7:7: containers.a.setup[0]: containers form a cycle: a -> b -> a"
    );
    assert_eq!(
        load_err("containers:\n  a:\n    setup:\n    - !Container a\n"),
        "/p/cella.yaml:4:7: containers.a.setup[0]: containers form a cycle: a -> a"
    );
    assert_eq!(
        load_err(&steps(
            "    - !Tar { url: images/busybox.tar }\n    - !Build { container: base }\n"
        )),
        "/p/cella.yaml:5:7: containers.base.setup[1]: containers form a cycle: base -> base"
    );
    assert_eq!(
        load_err(
            "containers:
  a:
    setup:
    - !Container b
  b:
    setup:
    - !Tar { url: images/busybox.tar }
    - !Build { container: c }
  c:
    setup:
    - !Container a
"
        ),
        "/p/cella.yaml:11:7: containers.c.setup[0]: containers form a cycle: c -> a -> b -> c"
    );
}

#[test]
fn snapshot_of_itself_is_no_cycle() {
    let (_dir, path) = project(
        "cella.yaml",
        "containers:\n  a:\n    volumes:\n      /s: !Snapshot { container: a }\n",
    );
    let config = load(&path, 1 << 20).unwrap();
    assert_eq!(config.containers["a"].volumes.len(), 1);
}

#[test]
fn bad_volumes() {
    assert_eq!(
        load_err(&volumes("      /tmp: !Tmp {}\n")),
        "/p/cella.yaml:4:13: containers.base.volumes./tmp: unknown tag !Tmp, \
         expected one of !Tmpfs, !BindRW, !BindRO, !Empty, !Persistent, !CacheDir, !Snapshot, !Container"
    );
    assert_eq!(
        load_err(&volumes("      /tmp: { size: 1 }\n")),
        "/p/cella.yaml:4:13: containers.base.volumes./tmp: missing tag, \
         expected one of !Tmpfs, !BindRW, !BindRO, !Empty, !Persistent, !CacheDir, !Snapshot, !Container"
    );
    assert_eq!(
        load_err(&volumes("      /e: !Empty x\n")),
        "/p/cella.yaml:4:11: containers.base.volumes./e: expected nothing, found a string"
    );
    assert_eq!(
        load_err(&volumes("      /p: !Persistent a/b\n")),
        "/p/cella.yaml:4:11: containers.base.volumes./p: \
         expected a volume name: not empty, \".\" or \"..\", without \"/\" or control characters; found \"a/b\""
    );
    assert_eq!(
        load_err(&volumes("      /t: !Tmpfs { files: { ../x: y } }\n")),
        "/p/cella.yaml:4:29: containers.base.volumes./t.files.\"../x\": \
         a path must not contain \"..\", found \"../x\""
    );
    assert_eq!(
        load_err(&volumes("      /b: !BindRW ../x\n")),
        "/p/cella.yaml:4:11: containers.base.volumes./b: \"../x\" climbs out of the project directory"
    );
    assert_eq!(
        load_err(&volumes("      /b: !BindRO /data/../etc\n")),
        "/p/cella.yaml:4:11: containers.base.volumes./b: \
         a host path must not contain \"..\", found \"/data/../etc\""
    );
    assert_eq!(
        load_err(&format!(
            "{}commands:\n  c: !Command\n    container: base\n    run: [x]\n    write-mode: rw\n",
            volumes("      /t: !Tmpfs\n")
        )),
        "/p/cella.yaml:9:17: commands.c.write-mode: \
         unknown write mode \"rw\", expected read-only, transient-overlay or transient-hard-link-copy"
    );
    assert_eq!(
        load_err(&volumes(
            "      /p: !Persistent { name: p, init-command: nope }\n"
        )),
        "/p/cella.yaml:4:48: containers.base.volumes./p.init-command: unknown command \"nope\""
    );
    assert_eq!(
        load_err("containers:\n  base:\n    volumes: !Tmpfs {}\n"),
        "/p/cella.yaml:3:14: containers.base.volumes: unexpected tag !Tmpfs"
    );
}

#[test]
fn cache_dirs_are_named_volumes() {
    let config = load_ok(&volumes("      /root/.cache: !CacheDir pip\n"));
    assert_eq!(
        config.containers["base"].volumes["/root/.cache"],
        Volume::CacheDir("pip".into())
    );
    assert!(
        load_err(&volumes("      /c: !CacheDir ../up\n")).contains("containers.base.volumes./c")
    );
    assert!(load_err(&volumes("      /c: !CacheDir {name: x}\n")).contains("expected a string"));
}

#[test]
fn image_steps() {
    let config = load_ok(
        "containers:\n  a:\n    setup:\n    - !Image oci:src:1.0\n  \
         b:\n    setup:\n    - !Image { ref: 'oci-archive:images/busybox.tar:localhost/x:1', \
         digest: 'sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789ABCDEF' }\n  \
         c:\n    setup:\n    - !Image docker-archive:./images/busybox.tar\n  \
         d:\n    setup:\n    - !Container c\n  \
         e:\n    setup:\n    - !Image docker://127.0.0.1:5000/team/app:1.0\n  \
         f:\n    setup:\n    - !Image docker://debian\n  \
         g:\n    setup:\n    - !Image docker://localhost/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
         commands:\n  run-image: !Command { container: d }\n  \
         own: !Command { container: a, run: [x] }\n",
    );
    let image = |name: &str| match &config.containers[name].setup[0].step {
        Step::Image(i) => i.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        image("a").source,
        ImageSource::Layout {
            rel: "src".into(),
            tag: Some("1.0".into())
        }
    );
    let b = image("b");
    assert_eq!(
        b.source,
        ImageSource::OciArchive {
            rel: "images/busybox.tar".into(),
            tag: Some("localhost/x:1".into())
        }
    );
    assert_eq!(
        b.digest.as_deref(),
        Some("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_eq!(
        image("c").source,
        ImageSource::DockerArchive {
            rel: "images/busybox.tar".into()
        }
    );
    let registry = |name: &str| match image(name).source {
        ImageSource::Registry(r) => (r, image(name).digest),
        other => panic!("{other:?}"),
    };
    let (e, _) = registry("e");
    assert_eq!(
        (e.registry.as_deref(), e.repository.as_str(), e.tag.as_str()),
        (Some("127.0.0.1:5000"), "team/app", "1.0")
    );
    let (f, _) = registry("f");
    assert_eq!(
        (f.registry, f.repository.as_str(), f.tag.as_str()),
        (None, "debian", "latest")
    );
    let (g, digest) = registry("g");
    assert_eq!(g.registry.as_deref(), Some("localhost"));
    assert!(digest.is_some_and(|d| d.starts_with("sha256:0123")));
    // Without `run`, the image's program runs; a list's arguments pass.
    let CommandKind::Command(cmd) = &config.commands["run-image"].kind else {
        panic!("not a command");
    };
    assert!(cmd.run.is_empty() && cmd.accepts_arguments && !cmd.shell);
}

#[test]
fn bad_image_steps() {
    assert_eq!(
        load_err(&steps("    - !Sh 'true'\n    - !Image oci:src\n")),
        "/p/cella.yaml:5:7: containers.base.setup[1]: !Image must be the first step"
    );
    assert!(load_err(&steps("    - !Image docker://Upper/x\n")).contains("lowercase image name"));
    assert!(load_err(&steps("    - !Image docker:x\n")).contains("expected docker://"));
    assert!(load_err(&steps("    - !Image 'docker://x:-1'\n")).contains("expected a tag"));
    assert!(load_err(&steps(&format!(
        "    - !Image {{ ref: 'docker://x@sha256:{}', digest: 'sha256:{}' }}\n",
        "a".repeat(64),
        "b".repeat(64)
    )))
    .contains("`digest` sha256:bbbb"));
    assert!(load_err(&steps("    - !Image src\n")).contains("expected oci:DIR[:TAG]"));
    assert!(load_err(&steps("    - !Image oci:../x\n")).contains("setup[0]"));
    assert!(load_err(&steps("    - !Image 'oci:src:-x'\n")).contains("expected a tag"));
    assert!(
        load_err(&steps("    - !Image { ref: 'oci:src', digest: abc }\n"))
            .contains("setup[0].digest: expected a digest")
    );
    assert!(load_err(&steps("    - !Image docker-archive:src:x\n")).contains("without a tag"));
    // A command without `run` needs an image to take its program from.
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  x: !Command {{ container: base }}\n"
        )),
        "/p/cella.yaml:6:6: commands.x.run: missing required field"
    );
}

#[test]
fn urls_subdirs_and_downloads() {
    let sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let config = load_ok(&steps(&format!(
        "    - !Tar {{ url: 'https://example.com/a-1.0.tar.gz', subdir: ./a-1.0/, path: /opt }}\n    \
         - !Tar {{ url: 'http://example.com/b.tar', sha256: {sum}, subdir: . }}\n    \
         - !Download {{ url: 'https://example.com/tool', path: /usr/bin/tool, mode: 0o755 }}\n"
    )));
    let setup = &config.containers["base"].setup;
    assert_eq!(
        setup[0].step,
        Step::Tar {
            url: "https://example.com/a-1.0.tar.gz".into(),
            rel: None,
            path: "/opt".into(),
            sha256: None,
            subdir: Some("a-1.0".into()),
        }
    );
    assert!(matches!(
        &setup[1].step,
        Step::Tar {
            subdir: None,
            sha256: Some(_),
            ..
        }
    ));
    assert_eq!(
        setup[2].step,
        Step::Download {
            url: "https://example.com/tool".into(),
            path: "/usr/bin/tool".into(),
            mode: 0o755,
            sha256: None,
        }
    );
    let err = load_err(&steps("    - !Tar { url: 'http://example.com/b.tar' }\n"));
    assert!(
        err.contains("is plain http: give its `sha256`, or use https"),
        "{err}"
    );
    let err = load_err(&steps("    - !Tar { url: 'ftp://example.com/b.tar' }\n"));
    assert!(err.contains("only http(s) URLs and project paths"), "{err}");
    let err = load_err(&steps(
        "    - !Tar { url: images/busybox.tar, subdir: ../x }\n",
    ));
    assert!(
        err.contains("setup[0].subdir: expected a directory inside the archive"),
        "{err}"
    );
    let err = load_err(&steps(
        "    - !Download { url: images/busybox.tar, path: /x }\n",
    ));
    assert!(err.contains("a project file goes in with !Copy"), "{err}");
    let err = load_err(&steps(
        "    - !Download { url: 'https://example.com/x', path: / }\n",
    ));
    assert!(err.contains("expected the path of a file"), "{err}");
}

#[test]
fn vagga_steps_cella_lacks_say_what_to_use() {
    assert_eq!(
        load_err(&steps("    - !Alpine v3.2\n")),
        "/p/cella.yaml:4:7: containers.base.setup[0]: !Alpine is a vagga step cella does not \
         have: start from `!Image docker://alpine:3.20` (its apk runs in `!Sh` steps with \
         `build-network: user`)"
    );
    assert!(load_err(&steps("    - !Ubuntu trusty\n")).contains("!Image docker://ubuntu:24.04"));
    assert!(load_err(&steps("    - !ComposerInstall [x]\n")).contains("package manager"));
}

#[test]
fn build_temporary_mounts() {
    let config = load_ok(&format!(
        "{BASE}  app:\n    setup:\n    - !Build {{ container: base, source: /opt, temporary-mount: /tmp/x }}\n"
    ));
    assert_eq!(
        config.containers["app"].setup[0].step,
        Step::Build {
            container: "base".into(),
            source: "/opt".into(),
            path: "/tmp/x".into(),
            temporary: true,
        }
    );
    let err = load_err(&format!(
        "{BASE}  app:\n    setup:\n    - !Build {{ container: base, path: /a, temporary-mount: /b }}\n"
    ));
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn tar_install_stands_for_tar_sh_and_remove() {
    let config = load_ok(&steps(
        "    - !Tar { url: images/busybox.tar }\n    \
         - !TarInstall { url: images/busybox.tar, subdir: \"it's/./x\", script: make install }\n    \
         - !TarInstall\n      url: https://example.com/p.tar.gz\n",
    ));
    let setup = &config.containers["base"].setup;
    assert_eq!(setup.len(), 7, "{setup:#?}");
    assert_eq!(
        setup[1].step,
        Step::Tar {
            url: "images/busybox.tar".into(),
            rel: Some(PathBuf::from("images/busybox.tar")),
            path: "/.cella-tarinstall-1".into(),
            sha256: None,
            subdir: None,
        }
    );
    assert_eq!(
        setup[2].step,
        Step::Sh("cd '/.cella-tarinstall-1/it'\\''s/x'\nmake install".into())
    );
    assert_eq!(setup[3].step, Step::Remove("/.cella-tarinstall-1".into()));
    assert_eq!(setup[2].pos, Pos::new(5, 7));
    // No subdir: the archive's only top directory; vagga's default script.
    let Step::Sh(script) = &setup[5].step else {
        panic!("{:?}", setup[5]);
    };
    assert!(
        script.starts_with("d=/.cella-tarinstall-2; n=0\n"),
        "{script}"
    );
    assert!(
        script.ends_with("cd \"$d\"\n./configure --prefix=/usr && make && make install"),
        "{script}"
    );
    assert_eq!(
        load_err(&steps("    - !TarInstall { url: images/busybox.tar, path: /x }\n")),
        "/p/cella.yaml:4:46: containers.base.setup[0].path: unknown field, expected one of: url, sha256, subdir, script"
    );
    assert_eq!(
        load_err(&steps("    - !TarInstall { url: images/busybox.tar, subdir: ../x }\n")),
        "/p/cella.yaml:4:54: containers.base.setup[0].subdir: expected a directory inside the archive, found \"../x\""
    );
}

#[test]
fn cache_dirs_map_guest_paths_to_cache_names() {
    let (_dir, path) = project(
        "vagga.yaml",
        "containers:\n  base:\n    setup:\n    - !CacheDirs { /tmp/pip//http/: pip-http, /root/.npm: npm }\n",
    );
    let config = load(&path, 1 << 20).unwrap();
    let Step::CacheDirs(dirs) = &config.containers["base"].setup[0].step else {
        panic!("{:?}", config.containers["base"].setup)
    };
    let dirs: Vec<(&str, &str)> = dirs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(dirs, [("/root/.npm", "npm"), ("/tmp/pip/http", "pip-http")]);
    for (yaml, want) in [
        ("{ /x: ../up }", "expected a volume name"),
        ("{ /x: a/b }", "expected a volume name"),
        ("{ relative: a }", "containers.base.setup[0].relative"),
        ("{ /: a }", "outside / itself and /work"),
        ("{ /work/cache: a }", "outside / itself and /work"),
        ("[a]", "expected a mapping"),
    ] {
        let err = load_err(&steps(&format!("    - !CacheDirs {yaml}\n")));
        assert!(err.contains("/p/cella.yaml:4:"), "{yaml}: {err}");
        assert!(err.contains(want), "{yaml}: {err}");
    }
}

#[test]
fn git_and_git_install() {
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let config = load_ok(&steps(&format!(
        "    - !Git {{ url: 'https://example.org/x.git', path: /src/x, branch: main }}\n    \
         - !GitInstall {{ url: 'git://127.0.0.1:9/y', revision: {sha}, subdir: sub, script: make }}\n",
    )));
    let setup = &config.containers["base"].setup;
    assert_eq!(
        setup[0].step,
        Step::Git(GitStep {
            url: "https://example.org/x.git".into(),
            revision: None,
            branch: Some("main".into()),
            path: "/src/x".into(),
        })
    );
    assert_eq!(
        setup[1].step,
        Step::Git(GitStep {
            url: "git://127.0.0.1:9/y".into(),
            revision: Some(sha.into()),
            branch: None,
            path: "/.cella-gitinstall-1".into(),
        })
    );
    assert_eq!(
        setup[2].step,
        Step::Sh("cd '/.cella-gitinstall-1/sub'\nmake".into())
    );
    assert_eq!(setup[3].step, Step::Remove("/.cella-gitinstall-1".into()));
    assert_eq!(setup[3].pos, Pos::new(5, 7));
    for (step, want) in [
        (
            "!Git { url: 'git://example.org/x', path: /x }",
            "/p/cella.yaml:4:19: containers.base.setup[0].url: git://example.org/x is not \
             authenticated, so it needs a `revision` that is a full commit id (40 hex digits), \
             which pins what may come; found no revision (or use https://)",
        ),
        (
            "!Git { url: 'http://example.org/x', revision: v1, path: /x }",
            "found a revision that is not a full commit id",
        ),
        (
            "!Git { url: 'ext::sh -c touch% /tmp/pwned', path: /x }",
            "/p/cella.yaml:4:19: containers.base.setup[0].url: expected an https://, http:// \
             or git:// URL, found \"ext::sh -c touch% /tmp/pwned\": git's remote helpers",
        ),
        (
            "!Git { url: 'https://e.org/x', revision: --upload-pack=touch, path: /x }",
            "containers.base.setup[0].revision: expected a branch, tag or commit id",
        ),
        (
            "!Git { url: 'https://e.org/x', branch: 'a..b', path: /x }",
            "containers.base.setup[0].branch: expected a branch",
        ),
        (
            "!Git { url: 'https://e.org/x' }",
            "containers.base.setup[0].path",
        ),
        (
            "!Git { url: 'https://e.org/x', path: /a/../b }",
            "containers.base.setup[0].path",
        ),
        (
            "!GitInstall { url: 'https://e.org/x' }",
            "containers.base.setup[0].script",
        ),
        (
            "!GitInstall { url: 'https://e.org/x', script: make, path: /x }",
            "containers.base.setup[0].path: unknown field",
        ),
    ] {
        let err = load_err(&steps(&format!("    - {step}\n")));
        assert!(err.contains(want), "{step}: {err}");
        assert!(err.starts_with("/p/cella.yaml:4:"), "{step}: {err}");
    }
}
