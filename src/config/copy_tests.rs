//! Tests of `!Copy` and `!Depends`: vagga's regexes and glob `rules`,
//! modes and times, as decoded, and every error's position.

use super::tests::{input_err, load_err, load_ok, project};
use super::*;

fn steps(steps: &str) -> String {
    format!("containers:\n  base:\n    setup:\n{steps}")
}

fn first_step(config: &Config) -> &Step {
    &config.containers["base"].setup[0].step
}

fn vagga(yaml: &str) -> Config {
    let (_dir, path) = project("vagga.yaml", yaml);
    load(&path, 1 << 20).unwrap()
}

const DEFAULTS: &[&str] = &[
    "!.git/", "!.hg/", "!.svn/", "!.vagga/", "!.cella/", "!*.bak", "!*.orig", "!*~", "!#*#", "!.#*",
];

#[test]
fn vagga_copy_spellings_and_empty_dirs() {
    let (_dir, path) = project(
        "vagga.yaml",
        "containers:\n  base:\n    setup:\n    - !Copy { source: src, path: /src }\n    \
         - !Copy { source: src, path: /s2, ignore-regex: '\\.o$' }\n    - !EmptyDir /var/cache\n",
    );
    let config = load(&path, 1 << 20).unwrap();
    let setup = &config.containers["base"].setup;
    let Step::Copy(first) = &setup[0].step else {
        panic!("{setup:?}")
    };
    assert!(first
        .select
        .exclude_regex
        .as_deref()
        .is_some_and(|r| r.contains("git|hg|svn")));
    let Step::Copy(second) = &setup[1].step else {
        panic!("{setup:?}")
    };
    assert_eq!(second.select.exclude_regex.as_deref(), Some("\\.o$"));
    assert_eq!(setup[2].step, Step::EmptyDir("/var/cache".into()));
    // A cella.yaml skips nothing unless told.
    let config = load_ok(&steps("    - !Copy { source: src, path: /src }\n"));
    let Step::Copy(copy) = &config.containers["base"].setup[0].step else {
        panic!()
    };
    assert_eq!(copy.select.exclude_regex, None);
    let err = load_err(&steps(
        "    - !Copy { source: src, path: /s, ignore-regex: a, exclude-regex: b }\n",
    ));
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn rules_come_after_vagga_defaults_unless_told() {
    let config = vagga(&steps(
        "    - !Copy\n      source: /work/src\n      path: /app\n      rules: ['/*.rs', '!*.o']\n",
    ));
    let Step::Copy(copy) = first_step(&config) else {
        panic!()
    };
    let mut want: Vec<String> = DEFAULTS.iter().map(|r| r.to_string()).collect();
    want.extend(["/*.rs".to_owned(), "!*.o".to_owned()]);
    assert_eq!(copy.select.rules.as_ref(), Some(&want));
    assert_eq!(copy.select.include_regex, None);
    assert_eq!(copy.select.exclude_regex, None);
    assert!(!copy.preserve_permissions && !copy.preserve_times);
    assert_eq!(copy.umask, 0o002);

    let config = load_ok(&steps(
        "    - !Copy { source: src, path: /a, rules: ['/'], no-default-rules: true, \
         preserve-permissions: true, preserve-times: true }\n",
    ));
    let Step::Copy(copy) = first_step(&config) else {
        panic!()
    };
    assert_eq!(copy.select.rules, Some(vec!["/".to_owned()]));
    assert!(copy.preserve_permissions && copy.preserve_times);
    assert!(!copy.select.takes_nothing());
    let config = load_ok(&steps(
        "    - !Copy { source: src, path: /a, rules: ['!*.o'] }\n",
    ));
    let Step::Copy(copy) = first_step(&config) else {
        panic!()
    };
    assert!(copy.select.takes_nothing());
    // An empty list is no rules (vagga then uses its regexes).
    let config = vagga(&steps("    - !Copy { source: src, path: /a, rules: [] }\n"));
    let Step::Copy(copy) = first_step(&config) else {
        panic!()
    };
    assert_eq!(copy.select.rules, None);
    assert!(copy.select.exclude_regex.is_some());
}

#[test]
fn bad_rules_name_the_rule() {
    assert_eq!(
        load_err(&steps(
            "    - !Copy { source: src, path: /a, rules: ['/x', 'src'] }\n"
        )),
        "/p/cella.yaml:4:52: containers.base.setup[0].rules[1]: rule \"src\" takes files but \
         does not start with `/`: only rules that leave files out (`!…`) may match at any depth"
    );
    let err = load_err(&steps(
        "    - !Copy { source: src, path: /a, rules: ['/[z-a]'] }\n",
    ));
    assert!(err.starts_with("/p/cella.yaml:4:46: containers.base.setup[0].rules[0]: rule \"/[z-a]\": error parsing glob"), "{err}");
    assert_eq!(
        load_err(&steps(
            "    - !Copy { source: src, path: /a, rules: ['/'], ignore-regex: x }\n"
        )),
        "/p/cella.yaml:4:66: containers.base.setup[0].ignore-regex: \
         give `rules` or regular expressions, not both"
    );
    let err = load_err(&steps(
        "    - !Copy { source: src, path: /a, no-default-rules: true, include-regex: x }\n",
    ));
    assert!(
        err.contains("include-regex: give `rules` or regular expressions"),
        "{err}"
    );
    let err = load_err(&steps(
        "    - !Copy { source: src, path: /a, rules: '/' }\n",
    ));
    assert!(
        err.contains("setup[0].rules: expected a list of rules"),
        "{err}"
    );
    let err = load_err(&steps(
        "    - !Copy { source: src, path: /a, rules: ['/'], preserve-times: sometimes }\n",
    ));
    assert!(err.contains("setup[0].preserve-times:"), "{err}");
    let many = format!(
        "[{}]",
        vec!["'/x'"; crate::hostfs::MAX_RULES + 1].join(", ")
    );
    let err = load_err(&steps(&format!(
        "    - !Copy {{ source: src, path: /a, rules: {many} }}\n"
    )));
    assert!(err.contains("expected at most 1024 rules"), "{err}");
}

#[test]
fn depends_takes_vagga_fields() {
    let config = load_ok(&steps("    - !Depends src\n"));
    assert_eq!(
        *first_step(&config),
        Step::Depends {
            path: "src".into(),
            rel: "src".into(),
            select: Selection::default(),
        }
    );
    // In a vagga.yaml it skips what vagga's skips.
    let config = vagga(&steps("    - !Depends src\n"));
    let Step::Depends { select, .. } = first_step(&config) else {
        panic!()
    };
    assert!(select
        .exclude_regex
        .as_deref()
        .is_some_and(|r| r.contains("vagga|cella")));
    let config = load_ok(&steps(
        "    - !Depends { path: /work/src, rules: ['/*.rs'], no-default-rules: true }\n",
    ));
    assert_eq!(
        *first_step(&config),
        Step::Depends {
            path: "/work/src".into(),
            rel: "src".into(),
            select: Selection {
                rules: Some(vec!["/*.rs".into()]),
                ..Selection::default()
            },
        }
    );
    let err = load_err(&steps("    - !Depends { path: src, umask: 0o22 }\n"));
    assert!(
        err.contains("setup[0].umask: unknown field, expected one of: path,"),
        "{err}"
    );
    let err = load_err(&steps("    - !Depends { rules: ['/'] }\n"));
    assert!(err.contains("setup[0].path"), "{err}");
    // A missing path is the build's error, at the path's position.
    let err = input_err(&steps("    - !Depends { path: nothere }\n"));
    assert!(
        err.starts_with("/p/cella.yaml:4:24: containers.base.setup[0].path: "),
        "{err}"
    );
}

#[test]
fn absolute_sources_outside_work_are_in_the_image() {
    let config = vagga(&steps(
        "    - !Copy { source: /var/lib/mysql, path: /usr/lib/mysql }\n    \
         - !Copy { source: /work/src, path: /s }\n",
    ));
    let setup = &config.containers["base"].setup;
    let Step::Copy(in_image) = &setup[0].step else {
        panic!()
    };
    assert_eq!(in_image.rel, None);
    assert_eq!(in_image.source, "/var/lib/mysql");
    let Step::Copy(project) = &setup[1].step else {
        panic!()
    };
    assert_eq!(project.rel.as_deref(), Some(std::path::Path::new("src")));
    let err = load_err(&steps("    - !Copy { source: /var/../etc, path: /x }\n"));
    assert!(
        err.starts_with("/p/cella.yaml:4:23: containers.base.setup[0].source: "),
        "{err}"
    );
    assert!(err.contains("\"..\""), "{err}");
    // A relative path still names a project file, checked at build.
    let err = input_err(&steps("    - !Copy { source: var/lib, path: /x }\n"));
    assert!(err.contains("setup[0].source"), "{err}");
}
