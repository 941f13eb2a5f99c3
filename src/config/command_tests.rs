//! Tests of commands: `!Command` fields about the VM, `!Supervise`,
//! `prerequisites`, and every error's message and position.

use std::path::{Path, PathBuf};

use super::tests::{load_err, load_ok, project, simple, BASE};
use super::*;

/// A config with the container `base` and the commands `commands`
/// (lines starting with `  `); the first command is on line 6.
fn commands(commands: &str) -> String {
    format!("{BASE}commands:\n{commands}")
}

fn supervise<'c>(config: &'c Config, name: &str) -> &'c Supervise {
    match &config.commands[name].kind {
        CommandKind::Supervise(s) => s,
        other => panic!("{name} is a !{}", other.tag()),
    }
}

fn pos(line: usize, column: usize) -> Pos {
    Pos::new(line, column)
}

fn at(path: &Path, line: usize, column: usize, field: &str) -> Location {
    Location {
        file: path.to_path_buf(),
        pos: pos(line, column),
        field: field.into(),
    }
}

const FULL: &str = "\
containers:
  base:
    setup:
    - !Tar { url: ./images/busybox.tar }
    environ-file: /work/config/base.env
    hostname: base.local
  other:
    setup:
    - !Container base
commands:
  db: !Command
    container: base
    run: [db]
    environ-file: ./db.env
    user-id: 1000
    group-id: 100
    hostname: db-1
    cpus: 2
    memory: 512Mi
  migrate: !Command
    container: other
    run: migrate
    prerequisites: [db, setup]
  setup: !Command { container: base, run: x }
  serve: !Supervise
    description: Run the app
    mode: wait-all-successful
    kill-unresponsive-after: 10
    prefix: false
    prerequisites:
    - migrate
    hostname: app
    cpus: 4
    memory: 1Gi
    children:
      web: !Command
        container: other
        run: [web]
        environ-file: web.env
        user-id: 33
        volumes:
          /data: !Persistent { name: data, init-command: setup }
      worker: !Command
        container: base
        run: worker
        work-dir: src
  plain: !Supervise
    children:
      zz: !Command { container: base, run: z }
      aa: !Command { container: base, run: a }
";

#[test]
fn full_example() {
    let (_dir, path) = project("cella.yaml", FULL);
    let config = load(&path, 1 << 20).unwrap();

    let base = &config.containers["base"];
    assert_eq!(
        base.environ_file,
        Some(EnvironFile {
            path: PathBuf::from("config/base.env"),
            at: at(&path, 5, 19, "containers.base.environ-file"),
        })
    );
    assert_eq!(base.hostname.as_deref(), Some("base.local"));
    let other = &config.containers["other"];
    assert_eq!((&other.environ_file, &other.hostname), (&None, &None));

    let db = simple(&config, "db");
    assert_eq!(
        db.environ_file,
        Some(EnvironFile {
            path: PathBuf::from("db.env"),
            at: at(&path, 14, 19, "commands.db.environ-file"),
        })
    );
    assert_eq!((db.user_id, db.group_id), (Some(1000), Some(100)));
    assert_eq!(db.hostname.as_deref(), Some("db-1"));
    assert_eq!(
        db.resources,
        Resources {
            cpus: Some(2),
            memory: Some(512 << 20),
        }
    );
    assert!(db.prerequisites.is_empty());

    let migrate = simple(&config, "migrate");
    assert_eq!(
        migrate.prerequisites,
        [
            NameRef {
                name: "db".into(),
                at: at(&path, 23, 21, "commands.migrate.prerequisites[0]"),
            },
            NameRef {
                name: "setup".into(),
                at: at(&path, 23, 25, "commands.migrate.prerequisites[1]"),
            },
        ]
    );
    assert_eq!(
        config.commands["migrate"].kind.prerequisites(),
        migrate.prerequisites.as_slice()
    );
    assert_eq!(migrate.environ_file, None);
    assert_eq!((migrate.user_id, migrate.group_id), (None, None));
    assert_eq!(migrate.hostname, None);
    assert_eq!(migrate.resources, Resources::default());

    let serve = &config.commands["serve"];
    assert_eq!(serve.description.as_deref(), Some("Run the app"));
    assert_eq!(serve.kind.tag(), "Supervise");
    assert_eq!(serve.pos, pos(25, 3));
    let serve = supervise(&config, "serve");
    assert_eq!(serve.mode, SuperviseMode::WaitAllSuccessful);
    assert_eq!(serve.kill_unresponsive_after, 10);
    assert!(!serve.prefix);
    assert_eq!(
        serve.prerequisites,
        [NameRef {
            name: "migrate".into(),
            at: at(&path, 31, 7, "commands.serve.prerequisites[0]"),
        }]
    );
    assert_eq!(serve.hostname.as_deref(), Some("app"));
    assert_eq!(
        serve.resources,
        Resources {
            cpus: Some(4),
            memory: Some(1 << 30),
        }
    );
    let names: Vec<&str> = serve.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);
    let web = &serve.children[0];
    assert_eq!(web.pos, pos(36, 7));
    assert_eq!(web.command.container, "other");
    assert_eq!(web.command.run, ["web"]);
    assert_eq!(
        web.command.environ_file,
        Some(EnvironFile {
            path: PathBuf::from("web.env"),
            at: at(&path, 39, 23, "commands.serve.children.web.environ-file"),
        })
    );
    assert_eq!(web.command.user_id, Some(33));
    assert_eq!(
        web.command.volumes["/data"],
        Volume::Persistent {
            name: "data".into(),
            init_command: Some(NameRef {
                name: "setup".into(),
                at: at(
                    &path,
                    42,
                    58,
                    "commands.serve.children.web.volumes./data.init-command"
                ),
            }),
        }
    );
    let worker = &serve.children[1];
    assert_eq!(worker.pos, pos(43, 7));
    assert_eq!(worker.command.container, "base");
    assert_eq!(worker.command.run, ["/bin/sh", "-c", "worker"]);
    assert_eq!(worker.command.work_dir, Some(PathBuf::from("src")));
    for child in &serve.children {
        assert!(child.command.prerequisites.is_empty());
        assert_eq!(child.command.resources, Resources::default());
        assert_eq!(child.command.hostname, None);
    }
    let bodies: Vec<&str> = config.commands["serve"]
        .kind
        .bodies()
        .iter()
        .map(|b| b.run[0].as_str())
        .collect();
    assert_eq!(bodies, ["web", "/bin/sh"]);

    // Defaults, and children in file order rather than sorted.
    let plain = supervise(&config, "plain");
    assert_eq!(config.commands["plain"].description, None);
    assert_eq!(plain.mode, SuperviseMode::StopOnFailure);
    assert_eq!(plain.kill_unresponsive_after, 2);
    assert!(plain.prefix);
    assert!(plain.prerequisites.is_empty());
    assert_eq!(plain.resources, Resources::default());
    assert_eq!(plain.hostname, None);
    let names: Vec<&str> = plain.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["zz", "aa"]);
}

#[test]
fn supervise_modes_and_flags() {
    let (_dir, path) = project(
        "cella.yaml",
        &commands(
            "  s: !Supervise
    mode: wait-all
    prefix: true
    kill-unresponsive-after: 0
    children: { c: !Command { container: base, run: x } }
  t: !Supervise
    mode: stop-on-failure
    prefix: ~
    children: { c: !Command { container: base, run: x } }
",
        ),
    );
    let config = load(&path, 1 << 20).unwrap();
    let s = supervise(&config, "s");
    assert_eq!(s.mode, SuperviseMode::WaitAll);
    assert!(s.prefix);
    assert_eq!(s.kill_unresponsive_after, 0);
    let t = supervise(&config, "t");
    assert_eq!(t.mode, SuperviseMode::StopOnFailure);
    assert!(t.prefix);
}

#[test]
fn hostnames() {
    assert_eq!(
        load_err(&format!("{BASE}    hostname: x_y\n")),
        "/p/cella.yaml:5:15: containers.base.hostname: \
         invalid hostname \"x_y\": use letters, digits, \"-\" and \".\""
    );
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, hostname: -web }\n"
        )),
        "/p/cella.yaml:6:52: commands.t.hostname: \
         invalid hostname \"-web\": it must not start with \"-\""
    );
    assert_eq!(
        load_err(&commands(&format!(
            "  t: !Command {{ container: base, run: x, hostname: {} }}\n",
            "a".repeat(65)
        ))),
        format!(
            "/p/cella.yaml:6:52: commands.t.hostname: \
             invalid hostname \"{}\": use 1 to 64 characters",
            "a".repeat(65)
        )
    );
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, hostname: '' }\n"
        )),
        "/p/cella.yaml:6:52: commands.t.hostname: \
         invalid hostname \"\": use 1 to 64 characters"
    );
    assert_eq!(
        load_err(&commands(
            "  s: !Supervise\n    hostname: a b\n    children: {}\n"
        )),
        "/p/cella.yaml:7:15: commands.s.hostname: \
         invalid hostname \"a b\": use letters, digits, \"-\" and \".\""
    );
}

#[test]
fn environ_files() {
    assert_eq!(
        load_err(&format!("{BASE}    environ-file: /etc/env\n")),
        "/p/cella.yaml:5:19: containers.base.environ-file: \
         \"/etc/env\" is outside the project: expected a relative path or one under /work"
    );
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, environ-file: ../x }\n"
        )),
        "/p/cella.yaml:6:56: commands.t.environ-file: \"../x\" climbs out of the project directory"
    );
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, environ-file: /work }\n"
        )),
        "/p/cella.yaml:6:56: commands.t.environ-file: \
         \"/work\" is the project directory, expected a file in it"
    );
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, environ-file: [a] }\n"
        )),
        "/p/cella.yaml:6:56: commands.t.environ-file: expected a string, found a list"
    );
}

#[test]
fn user_and_group_ids() {
    let cmd = |field: &str| {
        commands(&format!(
            "  t: !Command\n    container: base\n    run: x\n{field}"
        ))
    };
    let (_dir, path) = project(
        "cella.yaml",
        &cmd("    user-id: 0\n    group-id: 4294967295\n"),
    );
    let t = simple(&load(&path, 1 << 20).unwrap(), "t");
    assert_eq!((t.user_id, t.group_id), (Some(0), Some(u32::MAX)));
    assert_eq!(
        load_err(&cmd("    user-id: -1\n")),
        "/p/cella.yaml:9:14: commands.t.user-id: \
         expected an integer from 0 to 4294967295, found \"-1\""
    );
    assert_eq!(
        load_err(&cmd("    group-id: wheel\n")),
        "/p/cella.yaml:9:15: commands.t.group-id: \
         expected an integer from 0 to 4294967295, found \"wheel\""
    );
    assert_eq!(
        load_err(&cmd("    group-id: 4294967296\n")),
        "/p/cella.yaml:9:15: commands.t.group-id: \
         expected an integer from 0 to 4294967295, found \"4294967296\""
    );
}

#[test]
fn cpus_bounds() {
    let cmd = |cpus: &str| {
        commands(&format!(
            "  t: !Command {{ container: base, run: x, cpus: {cpus} }}\n"
        ))
    };
    for (cpus, want) in [("1", 1), ("8", 8)] {
        let (_dir, path) = project("cella.yaml", &cmd(cpus));
        assert_eq!(
            simple(&load(&path, 1 << 20).unwrap(), "t").resources.cpus,
            Some(want)
        );
    }
    for cpus in ["0", "9", "-1", "two"] {
        assert_eq!(
            load_err(&cmd(cpus)),
            format!(
                "/p/cella.yaml:6:48: commands.t.cpus: cpus must be between 1 and 8, found \"{cpus}\""
            )
        );
    }
    assert_eq!(
        load_err(&commands(
            "  s: !Supervise\n    cpus: 16\n    children: {}\n"
        )),
        "/p/cella.yaml:7:11: commands.s.cpus: cpus must be between 1 and 8, found \"16\""
    );
}

#[test]
fn memory_bounds() {
    let cmd = |memory: &str| {
        commands(&format!(
            "  t: !Command {{ container: base, run: x, memory: {memory} }}\n"
        ))
    };
    for (memory, want) in [
        ("64Mi", 64 << 20),
        ("67108864", 64 << 20),
        ("3Gi", 3 << 30),
        ("3G", 3_000_000_000),
    ] {
        let (_dir, path) = project("cella.yaml", &cmd(memory));
        let t = simple(&load(&path, 1 << 20).unwrap(), "t");
        assert_eq!(t.resources.memory, Some(want), "{memory}");
    }
    for memory in ["63Mi", "67108863", "3221225473", "4G"] {
        assert_eq!(
            load_err(&cmd(memory)),
            format!(
                "/p/cella.yaml:6:50: commands.t.memory: \
                 memory must be between 64Mi and 3Gi (inclusive), found \"{memory}\""
            )
        );
    }
    assert_eq!(
        load_err(&cmd("lots")),
        "/p/cella.yaml:6:50: commands.t.memory: expected a size in bytes like 1048576, \
         100Mi or 2G (suffixes k, M, G, T, Ki, Mi, Gi, Ti), found \"lots\""
    );
}

#[test]
fn prerequisites_must_exist() {
    assert_eq!(
        load_err(&commands(
            "  t: !Command\n    container: base\n    run: x\n    prerequisites: [t2, nope]\n  \
             t2: !Command { container: base, run: x }\n"
        )),
        "/p/cella.yaml:9:25: commands.t.prerequisites[1]: unknown command \"nope\""
    );
    assert_eq!(
        load_err(&commands(
            "  s: !Supervise\n    prerequisites:\n    - nope\n    \
             children: { c: !Command { container: base, run: x } }\n"
        )),
        "/p/cella.yaml:8:7: commands.s.prerequisites[0]: unknown command \"nope\""
    );
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, prerequisites: t }\n"
        )),
        "/p/cella.yaml:6:57: commands.t.prerequisites: \
         expected a list of command names, found a string"
    );
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, prerequisites: [[t]] }\n"
        )),
        "/p/cella.yaml:6:58: commands.t.prerequisites[0]: expected a string, found a list"
    );
}

#[test]
fn prerequisite_cycles() {
    assert_eq!(
        load_err(&commands(
            "  t: !Command { container: base, run: x, prerequisites: [t] }\n"
        )),
        "/p/cella.yaml:6:58: commands.t.prerequisites[0]: prerequisites form a cycle: t -> t"
    );
    // Blamed on the prerequisite, in file order, that closes the cycle.
    assert_eq!(
        load_err(&commands(
            "  b: !Command { container: base, run: x, prerequisites: [c] }
  a: !Command { container: base, run: x, prerequisites: [b] }
  c: !Supervise
    prerequisites: [ok, a]
    children: { x: !Command { container: base, run: x } }
  ok: !Command { container: base, run: x }
"
        )),
        "/p/cella.yaml:9:25: commands.c.prerequisites[1]: \
         prerequisites form a cycle: c -> a -> b -> c"
    );
    assert_eq!(
        load_err(&commands(
            "  a: !Command { container: base, run: x, prerequisites: [b] }
  b: !Command { container: base, run: x, prerequisites: [a] }
"
        )),
        "/p/cella.yaml:7:58: commands.b.prerequisites[0]: prerequisites form a cycle: b -> a -> b"
    );
    // Shared prerequisites are no cycle.
    let (_dir, path) = project(
        "cella.yaml",
        &commands(
            "  a: !Command { container: base, run: x, prerequisites: [b, c] }
  b: !Command { container: base, run: x, prerequisites: [c] }
  c: !Command { container: base, run: x }
",
        ),
    );
    assert!(load(&path, 1 << 20).is_ok());
}

#[test]
fn children_share_the_vm() {
    let child = |field: &str| {
        commands(&format!(
            "  s: !Supervise\n    children:\n      c: !Command\n        container: base\n        \
             run: x\n        {field}\n"
        ))
    };
    let message = "set it on the !Supervise command: its children share one VM";
    for field in ["cpus: 2", "memory: 1Gi", "prerequisites: []", "hostname: h"] {
        let name = field.split(':').next().unwrap_or_default();
        assert_eq!(
            load_err(&child(field)),
            format!("/p/cella.yaml:11:9: commands.s.children.c.{name}: {message}")
        );
    }
}

#[test]
fn supervise_errors() {
    assert_eq!(
        load_err(&commands("  s: !Supervise\n    run: x\n")),
        "/p/cella.yaml:7:5: commands.s.run: unknown field, expected one of: description, \
         mode, children, kill-unresponsive-after, prefix, prerequisites, cpus, memory, hostname, network, ports, \
         group, aliases, banner, banner-delay, epilog, options"
    );
    assert_eq!(
        load_err(&commands("  s: !Supervise { mode: wait-all }\n")),
        "/p/cella.yaml:6:6: commands.s.children: missing required field"
    );
    assert_eq!(
        load_err(&commands("  s: !Supervise\n    children: {}\n")),
        "/p/cella.yaml:7:15: commands.s.children: a !Supervise needs at least one child"
    );
    assert_eq!(
        load_err(&commands("  s: !Supervise\n    children:\n")),
        "/p/cella.yaml:7:13: commands.s.children: a !Supervise needs at least one child"
    );
    assert_eq!(
        load_err(&commands("  s: !Supervise\n    children: [a]\n")),
        "/p/cella.yaml:7:15: commands.s.children: expected a mapping, found a list"
    );
    let with_child =
        |child: &str| commands(&format!("  s: !Supervise\n    children:\n      {child}\n"));
    // A child may start with `_`: only commands are run by name.
    load_ok(&with_child("_c: !Command { container: base, run: x }"));
    assert_eq!(
        load_err(&with_child("'': !Command { container: base, run: x }")),
        "/p/cella.yaml:8:7: commands.s.children.\"\": name must not be empty"
    );
    assert_eq!(
        load_err(&with_child("c: { container: base, run: x }")),
        "/p/cella.yaml:8:10: commands.s.children.c: missing tag, expected !Command"
    );
    assert_eq!(
        load_err(&with_child("c: !Supervise { children: {} }")),
        "/p/cella.yaml:8:10: commands.s.children.c: unknown tag !Supervise, expected !Command"
    );
    assert_eq!(
        load_err(&with_child("c: !Command { container: nope, run: x }")),
        "/p/cella.yaml:8:32: commands.s.children.c.container: unknown container \"nope\""
    );
    assert_eq!(
        load_err(&with_child("c: !Command { container: base, run: [] }")),
        "/p/cella.yaml:8:43: commands.s.children.c.run: command must not be empty"
    );
    assert_eq!(
        load_err(&with_child(
            "c: !Command { container: base, run: x, colour: red }"
        )),
        "/p/cella.yaml:8:46: commands.s.children.c.colour: unknown field, \
         expected one of: description, container, run, environ, volumes, work-dir, write-mode, \
         environ-file, user-id, group-id, hostname, prerequisites, cpus, memory, network, ports, \
         tags, pid1mode, supplementary-gids"
    );
    assert_eq!(
        load_err(&with_child(
            "c: !Command { container: base, run: x, volumes: { /p: !Persistent { name: p, \
             init-command: nope } } }"
        )),
        "/p/cella.yaml:8:98: commands.s.children.c.volumes./p.init-command: \
         unknown command \"nope\""
    );
    assert_eq!(
        load_err(&with_child(
            "a: !Command { container: base, run: x }\n      a: ~"
        )),
        "/p/cella.yaml:9:7: commands.s.children.a: duplicate key"
    );

    let field = |field: &str| {
        commands(&format!(
            "  s: !Supervise\n    {field}\n    children: {{ c: !Command {{ container: base, run: x }} }}\n"
        ))
    };
    assert_eq!(
        load_err(&field("mode: wait-some")),
        "/p/cella.yaml:7:11: commands.s.mode: unknown mode \"wait-some\", \
         expected stop-on-failure, wait-all-successful or wait-all"
    );
    assert_eq!(
        load_err(&field("kill-unresponsive-after: 3601")),
        "/p/cella.yaml:7:30: commands.s.kill-unresponsive-after: \
         expected a number of seconds from 0 to 3600, found \"3601\""
    );
    assert_eq!(
        load_err(&field("kill-unresponsive-after: 1.5")),
        "/p/cella.yaml:7:30: commands.s.kill-unresponsive-after: \
         expected a number of seconds from 0 to 3600, found \"1.5\""
    );
    assert_eq!(
        load_err(&field("prefix: yes")),
        "/p/cella.yaml:7:13: commands.s.prefix: expected true or false, found \"yes\""
    );
    assert_eq!(
        load_err(&field("description: [a]")),
        "/p/cella.yaml:7:18: commands.s.description: expected a string, found a list"
    );
}

#[test]
fn vagga_command_info_tags_pid1mode_and_gids() {
    let config = load_ok(&commands(
        "  test: !Command
    container: base
    run: [true]
    group: Testing
    aliases: [t, check]
    banner: Starting
    banner-delay: 2
    epilog: Done
    tags: [ci]
    pid1mode: wait-all-children
    supplementary-gids: [10, 20]
  other: !Command { container: base, run: [true] }
",
    ));
    let test = &config.commands["test"];
    assert_eq!(test.info.group.as_deref(), Some("Testing"));
    let aliases: Vec<&str> = test.info.aliases.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(aliases, ["t", "check"]);
    assert_eq!(
        (test.info.banner.as_deref(), test.info.banner_delay),
        (Some("Starting"), 2)
    );
    assert_eq!(test.info.epilog.as_deref(), Some("Done"));
    assert_eq!(config.aliases["t"], "test");
    assert_eq!(config.aliases["check"], "test");
    let cmd = simple(&config, "test");
    assert_eq!(cmd.tags, ["ci"]);
    assert_eq!(cmd.pid1mode, Pid1Mode::WaitAllChildren);
    assert_eq!(cmd.supplementary_gids, [10, 20]);
    let other = simple(&config, "other");
    assert_eq!(other.pid1mode, Pid1Mode::Wait);
    assert!(
        other.supplementary_gids.is_empty()
            && config.commands["other"].info == CommandInfo::default()
    );
}

#[test]
fn vagga_command_info_errors() {
    let one = |body: &str| {
        load_err(&commands(&format!(
            "  c: !Command\n    container: base\n    run: [true]\n{body}"
        )))
    };
    assert_eq!(
        one("    pid1mode: exec\n"),
        "/p/cella.yaml:9:15: commands.c.pid1mode: pid1mode: exec cannot be: guest-init stays PID 1 \
         of the VM, to relay signals, output and the exit status; use wait (the default) or wait-all-children"
    );
    assert!(one("    pid1mode: sometimes\n").contains("unknown pid1mode \"sometimes\""));
    assert_eq!(
        one("    symlink-name: c\n"),
        "/p/cella.yaml:9:5: commands.c.symlink-name: cella makes no links to run commands by \
         (vagga's symlink-name): run `cella NAME`, or a script that does"
    );
    let gids: Vec<String> = (0..65).map(|g| g.to_string()).collect();
    assert!(
        one(&format!("    supplementary-gids: [{}]\n", gids.join(", ")))
            .contains("at most 64 group ids, found 65")
    );
    assert!(one("    supplementary-gids: [x]\n").contains("commands.c.supplementary-gids[0]"));
    assert_eq!(
        one("    aliases: [_build]\n"),
        "/p/cella.yaml:9:15: commands.c.aliases[0]: the alias \"_build\" is one of cella's own commands"
    );
    assert_eq!(
        load_err(&commands(
            "  a: !Command { container: base, run: [true], aliases: [b] }\n  b: !Command { container: base, run: [true] }\n"
        )),
        "/p/cella.yaml:6:57: commands.a.aliases[0]: the alias \"b\" is the name of the command \"b\""
    );
    assert!(load_err(&commands(
        "  a: !Command { container: base, run: [true], aliases: [x] }\n  b: !Command { container: base, run: [true], aliases: [x] }\n"
    ))
    .contains("the alias \"x\" is already an alias of \"a\""));
    assert!(one("    aliases: [\"\\e\"]\n").contains("without control characters"));
    assert!(load_err(&commands(
        "  s: !Supervise\n    children:\n      c: !Command { container: base, run: [true], pid1mode: wait-all-children }\n"
    ))
    .contains("children end with the VM"));
    // `options` must be a docopt text, checked when cella.yaml loads.
    assert!(one("    options: \"Usage: vagga c [\"\n")
        .starts_with("/p/cella.yaml:9:14: commands.c.options: not a docopt usage text"));
    let config = load_ok(&commands(
        "  c: !Command\n    container: base\n    run: [true]\n    options: \"Usage: vagga c [options]\"\n",
    ));
    let text = config.commands["c"].info.options.clone().expect("options");
    assert!(
        text.starts_with("vagga c\n\nUsage: vagga c [options]\n"),
        "{text}"
    );
}
