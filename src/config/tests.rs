//! Tests of loading, discovery and error messages, on files in temporary directories.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;

/// A project directory with `images/busybox.tar`, `src/main.rs`,
/// `Cargo.lock` and `name` holding `yaml`.
pub(super) fn project(name: &str, yaml: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("images")).unwrap();
    fs::write(dir.path().join("images/busybox.tar"), b"").unwrap();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(dir.path().join("src/main.rs"), b"fn main() {}\n").unwrap();
    fs::write(dir.path().join("Cargo.lock"), b"").unwrap();
    let path = dir.path().join(name);
    fs::write(&path, yaml).unwrap();
    (dir, path)
}

pub(super) fn load_ok(yaml: &str) -> Config {
    let (_dir, path) = project("cella.yaml", yaml);
    load(&path, 1 << 20).unwrap()
}

/// The error's text, with the project directory shown as `/p`.
/// The error building container `base` of `yaml` would give for its
/// inputs (loading leaves it for the build).
pub(super) fn input_err(yaml: &str) -> String {
    let (dir, path) = project("cella.yaml", yaml);
    let config = load(&path, 1 << 20).expect("loads: inputs are checked at build");
    let problem = config.containers["base"]
        .input_problem
        .clone()
        .expect("an input problem");
    ConfigError::from(problem)
        .to_string()
        .replace(&dir.path().display().to_string(), "/p")
}

pub(super) fn load_err(yaml: &str) -> String {
    let (dir, path) = project("cella.yaml", yaml);
    let err = load(&path, 1 << 20).unwrap_err();
    assert!(err.location().is_some(), "{err:?}");
    err.to_string()
        .replace(&dir.path().display().to_string(), "/p")
}

pub(super) fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn simple(config: &Config, name: &str) -> SimpleCommand {
    match &config.commands[name].kind {
        CommandKind::Command(c) => (**c).clone(),
        other => panic!("{name} is a !{}", other.tag()),
    }
}

const STEP_TAGS: &str = "one of !Tar, !Download, !Image, !Container, !Sh, !Cmd, !Text, !Copy, \
                         !EnsureDir, !EmptyDir, !Remove, !Env, !CacheDirs, !Depends, !Build, !Debian, !Install, \
                         !TarInstall, !Git, !GitInstall, !Py3Install, !Py3Requirements, !PipConfig, \
                         !NpmInstall, !NpmDependencies, !NpmConfig, !GemInstall, !GemBundle, !GemConfig";

pub(super) const BASE: &str = "\
containers:
  base:
    setup:
    - !Tar { url: ./images/busybox.tar }
";

#[test]
fn full_config() {
    let (dir, path) = project(
        "cella.yaml",
        r#"minimum-vagga: v0.8.1
containers:
  base:
    setup:
    - !Tar { url: ./images/busybox.tar }
    environ: { LANG: C.UTF-8 }
commands:
  test: !Command
    description: Run the test suite
    container: base
    run: [sh, -c, "cat /etc/motd && exit 3"]
    environ: { FOO: bar, PORT: 8080 }
  shell: !Command
    container: base
    run: "echo $HOME; ls"
"#,
    );
    let config = load(&path, 1 << 20).unwrap();
    assert_eq!(config.path, path);
    assert_eq!(config.project_dir, dir.path());
    assert_eq!(config.containers.len(), 1);
    let base = &config.containers["base"];
    assert_eq!(base.name, "base");
    assert_eq!(base.pos, Pos::new(3, 3));
    assert_eq!(base.environ, env(&[("LANG", "C.UTF-8")]));
    assert_eq!(
        base.setup,
        vec![SetupStep {
            step: Step::Tar {
                url: "./images/busybox.tar".into(),
                rel: Some(PathBuf::from("images/busybox.tar")),
                path: "/".into(),
                sha256: None,
                subdir: None,
            },
            pos: Pos::new(5, 7),
        }]
    );
    assert_eq!(base.setup[0].step.tag(), "Tar");
    assert!(base.volumes.is_empty());

    let test = &config.commands["test"];
    assert_eq!(test.name, "test");
    assert_eq!(test.description.as_deref(), Some("Run the test suite"));
    assert_eq!(test.pos, Pos::new(8, 3));
    assert_eq!(test.kind.tag(), "Command");
    let test = simple(&config, "test");
    assert_eq!(test.container, "base");
    assert_eq!(test.run, ["sh", "-c", "cat /etc/motd && exit 3"]);
    assert_eq!(test.environ, env(&[("FOO", "bar"), ("PORT", "8080")]));

    let shell = &config.commands["shell"];
    assert_eq!(shell.description, None);
    let shell = simple(&config, "shell");
    assert_eq!(shell.run, ["/bin/sh", "-c", "echo $HOME; ls"]);
    assert!(shell.environ.is_empty());
    assert!(shell.volumes.is_empty());
}

#[test]
fn run_forms() {
    let config = load_ok(&format!(
        "{BASE}commands:
  list: !Command {{ container: base, run: [echo, 1, 'a b'] }}
  string: !Command {{ container: base, run: echo hi }}
  block: !Command
    container: base
    run: |
      echo one
      echo two
"
    ));
    assert_eq!(simple(&config, "list").run, ["echo", "1", "a b"]);
    assert_eq!(simple(&config, "string").run, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(
        simple(&config, "block").run,
        ["/bin/sh", "-c", "echo one\necho two\n"]
    );
    // vagga's `accepts-arguments`: by default a list takes arguments and a
    // shell string does not.
    let takes = |name: &str| {
        let c = simple(&config, name);
        (c.shell, c.accepts_arguments)
    };
    assert_eq!(takes("list"), (false, true));
    assert_eq!(takes("string"), (true, false));
    let config = load_ok(&format!(
        "{BASE}commands:
  list: !Command {{ container: base, run: [echo], accepts-arguments: false }}
  string: !Command {{ container: base, run: echo hi, accepts-arguments: true }}
"
    ));
    assert_eq!(takes_in(&config, "list"), (false, false));
    assert_eq!(takes_in(&config, "string"), (true, true));
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  c: !Command {{ container: base, run: x, accepts-arguments: 2 }}\n"
        )),
        "/p/cella.yaml:6:61: commands.c.accepts-arguments: expected true or false, found \"2\""
    );
}

fn takes_in(config: &Config, name: &str) -> (bool, bool) {
    let c = simple(config, name);
    (c.shell, c.accepts_arguments)
}

#[test]
fn empty_file_and_empty_sections() {
    let config = load_ok("");
    assert!(config.containers.is_empty() && config.commands.is_empty());
    let config = load_ok("containers:\n  empty:\ncommands:\n");
    assert!(config.containers["empty"].setup.is_empty());
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let config = load_ok(
        "\
containers:
  base: &base
    setup:
    - !Tar { url: ./images/busybox.tar }
    environ: &env { A: '1', B: '2' }
  copy: *base
  merged:
    <<: *base
    environ:
      <<: *env
      B: override
commands:
  test: !Command &test
    container: base
    run: [a]
    environ: { X: x }
  other: !Command
    <<: *test
    run: [b]
  multi: !Command
    <<: [{ run: [first] }, { run: [second], description: d }]
    container: copy
",
    );
    assert_eq!(
        config.containers["copy"].setup,
        config.containers["base"].setup
    );
    assert_eq!(config.containers["copy"].name, "copy");
    assert_eq!(config.containers["merged"].setup.len(), 1);
    assert_eq!(
        config.containers["merged"].environ,
        env(&[("A", "1"), ("B", "override")])
    );
    let other = simple(&config, "other");
    assert_eq!(other.container, "base");
    assert_eq!(other.run, ["b"]);
    assert_eq!(other.environ, env(&[("X", "x")]));
    let multi = simple(&config, "multi");
    assert_eq!(multi.run, ["first"]);
    assert_eq!(multi.container, "copy");
    assert_eq!(config.commands["multi"].description.as_deref(), Some("d"));
}

#[test]
fn find_prefers_cella_yaml_then_vagga_yaml_then_parents() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let deep = root.join("a/b/c");
    fs::create_dir_all(&deep).unwrap();

    let err = find_config(&deep).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no cella.yaml or vagga.yaml in {} or any parent",
            deep.display()
        )
    );

    fs::write(root.join("a/vagga.yaml"), "").unwrap();
    assert_eq!(find_config(&deep).unwrap(), root.join("a/vagga.yaml"));
    fs::write(root.join("a/cella.yaml"), "").unwrap();
    assert_eq!(find_config(&deep).unwrap(), root.join("a/cella.yaml"));
    fs::write(root.join("a/b/vagga.yaml"), "").unwrap();
    assert_eq!(find_config(&deep).unwrap(), root.join("a/b/vagga.yaml"));
    assert_eq!(
        find_config(&root.join("a")).unwrap(),
        root.join("a/cella.yaml")
    );
}

#[test]
fn loads_vagga_yaml() {
    let (_dir, path) = project("vagga.yaml", BASE);
    let found = find_config(path.parent().unwrap()).unwrap();
    assert_eq!(found, path);
    assert!(load(&found, 1 << 20)
        .unwrap()
        .containers
        .contains_key("base"));
    // A vagga.yaml's !Supervise prefixes its children's lines only when
    // asked, as vagga (which never does); a cella.yaml's unless told not to.
    let group = "commands:\n  s: !Supervise\n    children:\n      c: !Command { container: base, run: [true] }\n";
    let prefix = |file: &str, extra: &str| {
        let (_dir, path) = project(
            file,
            &format!(
                "{BASE}{}",
                group.replace("    children", &format!("{extra}    children"))
            ),
        );
        match &load(&path, 1 << 20).unwrap().commands["s"].kind {
            CommandKind::Supervise(s) => s.prefix,
            _ => unreachable!(),
        }
    };
    assert!(!prefix("vagga.yaml", ""));
    assert!(prefix("vagga.yaml", "    prefix: true\n"));
    assert!(prefix("cella.yaml", ""));
}

#[test]
fn unreadable_file() {
    let err = load(Path::new("/nonexistent/cella.yaml"), 1 << 20).unwrap_err();
    assert_eq!(err.to_string(), "cannot read /nonexistent/cella.yaml");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn malformed_yaml() {
    assert_eq!(
        load_err("containers:\n  base: [a, b\ncommands: {}\n"),
        "/p/cella.yaml:3:9: invalid YAML: illegal placement of ':' indicator"
    );
    assert_eq!(
        load_err("a: 1\n---\nb: 2\n"),
        "/p/cella.yaml:2:1: invalid YAML: expected one YAML document, found another"
    );
}

#[test]
fn unknown_tags() {
    assert_eq!(
        load_err("containers:\n  base:\n    setup:\n    - !Tarr { url: x }\n"),
        format!(
            "/p/cella.yaml:4:7: containers.base.setup[0]: unknown tag !Tarr, expected {STEP_TAGS}"
        )
    );
    assert_eq!(
        load_err(&format!("{BASE}commands:\n  test: !Comand {{}}\n")),
        "/p/cella.yaml:6:9: commands.test: unknown tag !Comand, \
         expected one of !Command, !Supervise"
    );
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  test: {{ container: base, run: x }}\n"
        )),
        "/p/cella.yaml:6:9: commands.test: missing tag, expected one of !Command, !Supervise"
    );
    assert_eq!(
        load_err("containers:\n  base:\n    setup:\n    - { url: x }\n"),
        format!("/p/cella.yaml:4:7: containers.base.setup[0]: missing tag, expected {STEP_TAGS}")
    );
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  t: !Command {{ container: !Name base, run: x }}\n"
        )),
        "/p/cella.yaml:6:28: commands.t.container: unexpected tag !Name"
    );
}

#[test]
fn unknown_fields() {
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  test: !Command\n    container: base\n    colour: red\n    run: x\n"
        )),
        "/p/cella.yaml:8:5: commands.test.colour: unknown field, \
         expected one of: description, container, run, environ, volumes, work-dir, write-mode, \
         environ-file, user-id, group-id, hostname, prerequisites, cpus, memory, network, ports, \
         tags, pid1mode, supplementary-gids, accepts-arguments, group, aliases, banner, banner-delay, epilog, options"
    );
    assert_eq!(
        load_err("containers:\n  base:\n    setup:\n    - !Tar { url: x, sha: abc }\n"),
        "/p/cella.yaml:4:22: containers.base.setup[0].sha: unknown field, \
         expected one of: url, path, sha256, subdir"
    );
    assert_eq!(
        load_err("containers:\n  base:\n    volume: {}\n"),
        "/p/cella.yaml:3:5: containers.base.volume: unknown field, \
         expected one of: setup, environ, volumes, environ-file, hostname, build-network"
    );
}

#[test]
fn missing_fields() {
    assert_eq!(
        load_err(&format!("{BASE}commands:\n  test: !Command\n    run: x\n")),
        "/p/cella.yaml:6:9: commands.test.container: missing required field"
    );
    assert_eq!(
        load_err(&format!("{BASE}commands:\n  test: !Command\n")),
        "/p/cella.yaml:6:9: commands.test.container: missing required field"
    );
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  test: !Command {{ container: base }}\n"
        )),
        "/p/cella.yaml:6:9: commands.test.run: missing required field"
    );
    assert_eq!(
        load_err("containers:\n  base:\n    setup:\n    - !Tar {}\n"),
        "/p/cella.yaml:4:7: containers.base.setup[0].url: missing required field"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  test: !Command\n    container: base\n    run: {{ a: b }}\n"
        )),
        "/p/cella.yaml:8:10: commands.test.run: expected a list or a string, found a mapping"
    );
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  test: !Command\n    container: [base]\n    run: x\n"
        )),
        "/p/cella.yaml:7:16: commands.test.container: expected a string, found a list"
    );
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  test: !Command\n    container: base\n    run: [a, [b]]\n"
        )),
        "/p/cella.yaml:8:14: commands.test.run[1]: expected a string, found a list"
    );
    assert_eq!(
        load_err(&format!("{BASE}    environ: [A=1]\n")),
        "/p/cella.yaml:5:14: containers.base.environ: expected a mapping, found a list"
    );
    assert_eq!(
        load_err(&format!("{BASE}    environ: {{ A: }}\n")),
        "/p/cella.yaml:5:17: containers.base.environ.A: expected a string, found null"
    );
    assert_eq!(
        load_err("containers:\n  base:\n    setup: !Tar { url: x }\n"),
        "/p/cella.yaml:3:12: containers.base.setup: unexpected tag !Tar"
    );
    assert_eq!(
        load_err("containers:\n  base:\n    setup: { url: x }\n"),
        "/p/cella.yaml:3:12: containers.base.setup: expected a list, found a mapping"
    );
    assert_eq!(
        load_err("- a\n- b\n"),
        "/p/cella.yaml:1:1: expected a mapping, found a list"
    );
}

#[test]
fn duplicate_key() {
    assert_eq!(
        load_err(&format!("{BASE}    environ: {{ A: x, A: y }}\n")),
        "/p/cella.yaml:5:22: containers.base.environ.A: duplicate key"
    );
}

#[test]
fn unknown_container() {
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  test: !Command\n    container: foo\n    run: x\n"
        )),
        "/p/cella.yaml:7:16: commands.test.container: unknown container \"foo\""
    );
}

#[test]
fn tarball_must_exist() {
    let (dir, path) = project(
        "cella.yaml",
        "containers:\n  base:\n    setup:\n    - !Tar { url: images/nope.tar }\n",
    );
    let config = load(&path, 1 << 20).expect("loads: inputs are checked at build");
    let problem = config.containers["base"].input_problem.clone();
    assert_eq!(
        problem.map(|p| ConfigError::from(p).to_string()),
        Some(format!(
            "{}:4:19: containers.base.setup[0].url: no such file: {}",
            path.display(),
            dir.path().join("images/nope.tar").display()
        ))
    );
    assert_eq!(
        input_err("containers:\n  base:\n    setup:\n    - !Tar\n      url: images\n"),
        "/p/cella.yaml:5:12: containers.base.setup[0].url: not a regular file: /p/images"
    );
    assert_eq!(
        load_err("containers:\n  base:\n    setup:\n    - !Tar { url: 'http://x/y.tar' }\n"),
        "/p/cella.yaml:4:19: containers.base.setup[0].url: \
         \"http://x/y.tar\" is plain http: give its `sha256`, or use https"
    );
}

#[test]
fn tarball_paths_stay_in_the_project() {
    // vagga's /work prefix names the project directory; any other
    // absolute path is refused (see step_tests::project_paths).
    let config =
        load_ok("containers:\n  base:\n    setup:\n    - !Tar { url: /work/images/busybox.tar }\n");
    let Step::Tar { rel, .. } = &config.containers["base"].setup[0].step else {
        panic!("{:?}", config.containers["base"].setup);
    };
    // load_ok checked that it exists (its project is gone by now).
    assert_eq!(rel.as_deref(), Some(Path::new("images/busybox.tar")));
}

#[test]
fn empty_run() {
    let cmd = |run: &str| {
        format!("{BASE}commands:\n  test: !Command\n    container: base\n    run: {run}\n")
    };
    let expected = "/p/cella.yaml:8:10: commands.test.run: command must not be empty";
    assert_eq!(load_err(&cmd("[]")), expected);
    assert_eq!(load_err(&cmd("''")), expected);
    assert_eq!(load_err(&cmd("~")), expected);
}

#[test]
fn reserved_and_empty_names() {
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  _run: !Command {{ container: base, run: x }}\n"
        )),
        "/p/cella.yaml:6:3: commands._run: name \"_run\" is reserved: \
         `cella _run` is one of cella's own commands"
    );
    // Other names starting with `_` are vagga's hidden commands (and
    // anchors): loaded, and left out of the list.
    let config = load_ok(
        "containers:\n  _base: {}\ncommands:\n  _hidden: &c !Command { container: _base, run: x }\n  shown: *c\n",
    );
    assert!(config.containers.contains_key("_base"));
    assert!(config.commands.contains_key("_hidden"));
    assert_eq!(
        load_err(&format!(
            "{BASE}commands:\n  '': !Command {{ container: base, run: x }}\n"
        )),
        "/p/cella.yaml:6:3: commands.\"\": name must not be empty"
    );
}

#[test]
fn bad_environ_name() {
    assert_eq!(
        load_err(&format!("{BASE}    environ: {{ 'A=B': x }}\n")),
        "/p/cella.yaml:5:16: containers.base.environ.A=B: \
         a variable name must not be empty or contain \"=\""
    );
}

#[test]
fn merge_of_a_non_mapping() {
    assert_eq!(
        load_err(&format!("{BASE}commands:\n  t: !Command\n    <<: [x]\n")),
        "/p/cella.yaml:7:10: commands.t.<<: expected a mapping to merge, found a string"
    );
}

#[test]
fn names_with_control_characters_are_refused() {
    let err = load_err("containers:\n  \"a\\e]0;x\\a\": { setup: [] }\n");
    assert!(err.contains("must not contain control characters"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let err = load_err(
        "containers:\n  c:\n    setup: []\n    volumes: { /v: !Persistent \"db\\e[2K\" }\n",
    );
    assert!(err.contains("control characters"), "{err}");
}
