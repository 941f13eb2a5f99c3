//! vagga's command parameters on real guests (issue 22): `aliases`,
//! `banner` and `epilog` (on stderr: stdout is the command's), `-m` to
//! run several commands in order, `pid1mode: wait-all-children`,
//! `supplementary-gids`, `tags` for `--only`, `!CacheDir` volumes and
//! `options`, a docopt text whose parse of the arguments the command gets
//! as variables. One VM per run; the runs restore from the shared
//! snapshot.

mod common;

use std::io::Write;

use common::{assets, text, tree, Project};

const COMMANDS: &str = r#"  late: !Command
    container: base
    description: Waits for what it started
    group: Demo
    aliases: [t]
    banner: banner of late
    epilog: epilog of late
    pid1mode: wait-all-children
    run: "(sleep 1; echo late) & echo early"
  early: !Command
    container: base
    run: "(sleep 1; echo late) & echo early"
  gids: !Command
    container: base
    user-id: 1000
    group-id: 1000
    supplementary-gids: [10, 20]
    run: [id, -G]
  fails: !Command
    container: base
    epilog: never shown
    run: exit 3
  opt: !Command
    container: base
    description: Options as vagga
    options: |
      Usage: vagga opt [options] [<files>...]

      Options:
        -p, --port <n>  A port [default: 80]
        -v, --verbose   More
    run: 'echo "$VAGGAOPT_PORT|$VAGGAOPT_VERBOSE|$VAGGAOPT_FILES|$VAGGACLI_FILES"'
  fill: !Command
    container: base
    volumes: { /c: !CacheDir shared }
    run: "echo cached > /c/x"
  show: !Command
    container: base
    volumes: { /c: !CacheDir shared }
    run: [cat, /c/x]
  svc: !Supervise
    children:
      a: !Command { container: base, run: echo from-a, tags: [x] }
      b: !Command { container: base, run: echo from-b }
"#;

fn run(p: &Project, args: &[&str]) -> (Option<i32>, String, String) {
    let out = p.run(args, None);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn aliases_banners_multiple_commands_pid1mode_gids_and_tags() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, COMMANDS);

    // The listing groups; it boots nothing.
    let (status, stdout, _) = run(&p, &[]);
    assert_eq!(status, Some(0));
    assert!(
        stdout.ends_with("\nDemo:\n    late   Waits for what it started\n"),
        "{stdout}"
    );

    // -m runs both, in order, by an alias too; banner and epilog are on
    // stderr; wait-all-children waits for the background job; the
    // supplementary groups are set.
    let (status, stdout, stderr) = run(&p, &["-m", "t", "gids"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, "early\nlate\n1000 10 20\n", "{stderr}");
    let banner = stderr.find("banner of late\n").expect("banner");
    let epilog = stderr.find("epilog of late\n").expect("epilog");
    assert!(banner < epilog, "{stderr}");

    // The default pid1mode: the run ends with its program.
    let (status, stdout, stderr) = run(&p, &["early"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, "early\n", "{stderr}");

    // -m stops at the first failure, with its status; no epilog for it.
    let (status, stdout, stderr) = run(&p, &["-m", "fails", "late"]);
    assert_eq!(status, Some(3), "{stderr}");
    assert_eq!(stdout, "", "{stderr}");
    assert!(!stderr.contains("never shown") && !stderr.contains("banner of late"));

    // Every name is checked before anything runs.
    let (status, stdout, stderr) = run(&p, &["-m", "late", "nope"]);
    assert_eq!(status, Some(125), "{stderr}");
    assert!(stderr.contains("unknown command \"nope\""), "{stderr}");
    assert!(!stderr.contains("banner of late") && stdout.is_empty());

    // `options` as vagga: docopt parses the arguments into VAGGAOPT_* and
    // VAGGACLI_* variables; --help and bad arguments run nothing.
    let (status, stdout, stderr) = run(&p, &["opt", "-v", "--port=7", "a", "b c"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, "7|true|a b c| a 'b c'\n", "{stderr}");
    let (status, stdout, stderr) = run(&p, &["opt", "--help"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("Options as vagga\n\nUsage: vagga opt [options]")
            && stdout.contains("-h, --help"),
        "{stdout}"
    );
    let (status, stdout, stderr) = run(&p, &["opt", "--nope"]);
    assert_eq!(status, Some(125), "{stderr}");
    assert!(stderr.contains("--nope") && stdout.is_empty(), "{stderr}");

    // A !CacheDir keeps what one command wrote for the next, in the
    // project's .cella/cache/.
    let (status, stdout, stderr) = run(&p, &["-m", "fill", "show"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, "cached\n", "{stderr}");
    let kept = std::fs::read_to_string(p.path().join(".cella/cache/shared/x")).expect("cache");
    assert_eq!(kept, "cached\n");

    // A tag selects children as a name does.
    let (status, stdout, stderr) = run(&p, &["svc", "--only", "x"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.contains("from-a") && !stdout.contains("from-b"),
        "{stdout}"
    );
}

/// `name` holding one file, `name.txt` with `data`, as a tar archive.
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, format!("{name}.txt"), data)
        .expect("append");
    b.into_inner().expect("tar")
}

/// `!Tar` takes gzip, zstd, xz and bzip2 archives, told by their bytes (a
/// name says nothing); a compressed bomb is refused before it costs.
#[test]
fn compressed_tarballs_are_imported_and_bombs_refused() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let rootfs = std::fs::read(p.path().join("rootfs.tar")).expect("rootfs");
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gz");
        e.finish().expect("gz")
    };
    let files = [
        ("rootfs.tgz", gz(&rootfs)),
        (
            "z.tar.zst",
            zstd::encode_all(&tar_of("z", b"zstd\n")[..], 3).expect("zstd"),
        ),
        ("x.tar.xz", {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&tar_of("x", b"xz\n")).expect("xz");
            e.finish().expect("xz")
        }),
        // Named as if plain: the bytes say bzip2.
        ("b.tar", {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&tar_of("b", b"bzip2\n")).expect("bz");
            e.finish().expect("bz")
        }),
    ];
    for (name, bytes) in &files {
        std::fs::write(p.path().join(name), bytes).expect("write");
    }
    // A GNU long name "of" 4 GiB, in 4 KiB of gzip.
    let mut bomb = tar::Header::new_gnu();
    bomb.set_path("././@LongLink").expect("path");
    bomb.set_entry_type(tar::EntryType::GNULongName);
    bomb.set_size(4 << 30);
    bomb.set_cksum();
    let mut raw = bomb.as_bytes().to_vec();
    raw.extend(std::iter::repeat_n(b'a', 1 << 20));
    std::fs::write(p.path().join("bomb.tgz"), gz(&raw)).expect("bomb");
    std::fs::write(
        p.path().join("cella.yaml"),
        "containers:
  packed:
    setup:
    - !Tar { url: ./rootfs.tgz }
    - !Tar { url: ./z.tar.zst, path: /opt }
    - !Tar { url: ./x.tar.xz, path: /opt }
    - !Tar { url: ./b.tar, path: /opt }
  bomb:
    setup:
    - !Tar { url: ./bomb.tgz }
",
    )
    .expect("yaml");
    let (status, stdout, stderr) = run(
        &p,
        &[
            "_run",
            "packed",
            "cat",
            "/opt/z.txt",
            "/opt/x.txt",
            "/opt/b.txt",
        ],
    );
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, "zstd\nxz\nbzip2\n", "{stderr}");

    let before: Vec<_> = tree(p.path())
        .into_iter()
        .filter(|f| !f.starts_with(p.path().join(".cella")))
        .collect();
    let started = std::time::Instant::now();
    let (status, _, stderr) = run(&p, &["_build", "bomb"]);
    assert_eq!(status, Some(125), "{stderr}");
    assert!(
        stderr.contains("GNU long name) declares 4294967296 bytes"),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    let after: Vec<_> = tree(p.path())
        .into_iter()
        .filter(|f| !f.starts_with(p.path().join(".cella")))
        .collect();
    assert_eq!(before, after);
}

/// rust-quire's includes, under both file names: a container from an
/// `!*IncludeMap`, commands merged from an `!*IncludeSeq`, steps spliced
/// by `!*Unpack`. One build, one VM per file name; a hostile include
/// (outside the project, through a link) is refused before anything runs.
#[test]
fn includes_build_and_run_under_both_names() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let d = p.path();
    std::fs::remove_file(d.join("cella.yaml")).expect("rm");
    let files = [
        (
            "parts/containers/base.yaml",
            "setup:\n- !Tar { url: ./rootfs.tar }\n- !*Unpack [!*Include ../steps.yaml]\n",
        ),
        (
            "parts/steps.yaml",
            "- !Text { /etc/included: from-steps }\n",
        ),
        (
            "parts/commands/show.yaml",
            "show: !Command\n  container: base\n  run: [cat, /etc/included]\n",
        ),
    ];
    for (name, text) in files {
        let path = d.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let main = "containers: !*IncludeMap \"parts/containers/(*).yaml\"\n\
                commands:\n  <<: !*IncludeSeq \"parts/commands/*.yaml\"\n";
    for name in ["vagga.yaml", "cella.yaml"] {
        std::fs::write(d.join(name), main).expect("write");
        let (status, stdout, stderr) = run(&p, &["show"]);
        assert_eq!(status, Some(0), "{name}: {stderr}");
        assert_eq!(stdout, "from-steps", "{name}: {stderr}");
        std::fs::remove_file(d.join(name)).expect("rm");
    }

    // An include through a link to a file outside: refused, one line
    // with the place, nothing built or run.
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("evil.yaml"), "setup: []\n").expect("write");
    std::os::unix::fs::symlink(outside.path().join("evil.yaml"), d.join("evil.yaml"))
        .expect("symlink");
    std::fs::write(
        d.join("vagga.yaml"),
        "containers:\n  base: !*Include evil.yaml\ncommands: {}\n",
    )
    .expect("write");
    let (status, stdout, stderr) = run(&p, &["_build", "base"]);
    assert_eq!(status, Some(125), "{stderr}");
    assert!(
        stderr.contains("vagga.yaml:2:9: containers.base: "),
        "{stderr}"
    );
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("ls").count(),
        1,
        "something changed outside"
    );
}

/// vagga's `!Container NAME` volume (another container's root,
/// read-only) and `!Snapshot { container }` (the same, writable, its
/// writes gone with the VM), in a command and in a `!Supervise` child
/// whose sibling runs in that container (one drive for both), under
/// both file names.
#[test]
fn other_containers_mount_as_volumes() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let d = p.path();
    std::fs::remove_file(d.join("cella.yaml")).expect("rm");
    let yaml = r#"containers:
  base:
    setup: [!Tar { url: ./rootfs.tar }]
  tools:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !Text { /etc/tool: "from tools\n" }
commands:
  look: !Command
    container: base
    volumes:
      /tools: !Container tools
      /snap: !Snapshot { container: tools, size: 1Mi }
    run: |
      cat /tools/etc/tool
      touch /tools/x 2>/dev/null || echo read-only
      echo changed > /snap/etc/tool
      cat /snap/etc/tool /tools/etc/tool
      test -e /etc/tool || echo not-in-base
  both: !Supervise
    mode: wait-all-successful
    children:
      a: !Command { container: tools, run: "cat /etc/tool" }
      b: !Command
        container: base
        volumes: { /t: !Container tools }
        run: "cat /t/etc/tool"
"#;
    for name in ["cella.yaml", "vagga.yaml"] {
        std::fs::write(d.join(name), yaml).expect("write");
        let (status, stdout, stderr) = run(&p, &["look"]);
        assert_eq!(status, Some(0), "{name}: {stderr}");
        assert_eq!(
            stdout, "from tools\nread-only\nchanged\nfrom tools\nnot-in-base\n",
            "{name}: {stderr}"
        );
        std::fs::remove_file(d.join(name)).expect("rm");
    }
    std::fs::write(d.join("vagga.yaml"), yaml).expect("write");
    let (status, stdout, stderr) = run(&p, &["both"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(
        stdout.matches("from tools").count(),
        2,
        "{stdout}\n{stderr}"
    );

    // A volume naming no container is an error with its place.
    std::fs::write(
        d.join("vagga.yaml"),
        yaml.replace("/tools: !Container tools", "/tools: !Container nope"),
    )
    .expect("write");
    let (status, _, stderr) = run(&p, &["look"]);
    assert_eq!(status, Some(125), "{stderr}");
    assert!(stderr.contains("vagga.yaml:12:"), "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}

/// vagga's `!CacheDirs`: a build's directory kept between builds in the
/// project's cache (the one a `!CacheDir` volume mounts), never in the
/// image.
#[test]
fn cache_dirs_outlive_builds_and_stay_out_of_images() {
    let Some(a) = assets() else { return };
    let p = Project::new(a, "");
    let d = p.path();
    std::fs::remove_file(d.join("cella.yaml")).expect("rm");
    std::fs::write(
        d.join("vagga.yaml"),
        r#"containers:
  cached:
    setup:
    - !Tar { url: ./rootfs.tar }
    - !CacheDirs { /var/cache/dl: dl }
    - !Sh "echo built >> /var/cache/dl/log; wc -l < /var/cache/dl/log > /builds"
commands:
  show: !Command
    container: cached
    volumes: { /c: !CacheDir dl }
    run: "cat /builds; wc -l < /c/log; ls -A /var/cache/dl | wc -l"
"#,
    )
    .expect("write");
    for _ in 0..2 {
        let (status, stdout, stderr) = run(&p, &["_build", "--force", "cached"]);
        assert_eq!(status, Some(0), "{stderr}");
        assert_eq!(stdout, "", "{stderr}");
    }
    let (status, stdout, stderr) = run(&p, &["show"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, "2\n2\n0\n", "{stderr}");
    let log = std::fs::read_to_string(d.join(".cella/cache/dl/log")).expect("cache");
    assert_eq!(log, "built\nbuilt\n");
}
