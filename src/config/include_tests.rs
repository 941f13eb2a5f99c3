//! rust-quire's includes as vagga.yaml files use them (`!*Include`,
//! `!*IncludeSeq`, `!*IncludeMap`, `!*Unpack`, merged with `<<`), and as
//! a hostile checkout would: files outside the project, links, loops and
//! floods of files, each refused with the file, line and field.

use std::fs;
use std::path::Path;

use super::mixin_tests::{command_text as run_text, write};
use super::*;

fn load_err(path: &Path) -> String {
    load(path, 1 << 20).unwrap_err().to_string()
}

#[test]
fn every_include_form_expands_as_quire_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "rootfs.tar", "");
    write(
        d,
        "vagga.yaml",
        "containers: !*IncludeMap \"containers/(*).yaml\"\n\
         commands:\n  \
           <<: !*IncludeSeq \"commands/*.yaml\"\n  \
           own: !Command { container: base, run: echo own }\n  \
           both: !*Include sub/both.yaml\n",
    );
    // Steps' host paths stay relative to the project, as in vagga; an
    // include's own includes are relative to it.
    write(
        d,
        "containers/base.yaml",
        "setup:\n- !Tar { url: ./rootfs.tar }\n\
         - !*Unpack [!*Include ../steps.yaml, [!EnsureDir /two]]\n",
    );
    write(d, "steps.yaml", "- !EnsureDir /one\n");
    write(
        d,
        "containers/other.yaml",
        "setup: [!Tar { url: ./rootfs.tar }]\n",
    );
    // Not matched: a name the pattern does not take, a deeper file.
    write(d, "containers/notes.txt", "not yaml: [");
    write(d, "containers/deep/x.yaml", "not yaml: [");
    write(
        d,
        "commands/a.yaml",
        "a: !Command { container: base, run: echo a }\n",
    );
    write(
        d,
        "commands/b.yaml",
        "b: !Command { container: other, run: echo b }\n\
         own: !Command { container: base, run: echo shadowed }\n",
    );
    write(
        d,
        "sub/both.yaml",
        "!Command\ncontainer: base\nrun: echo both\n",
    );
    let config = load(&d.join("vagga.yaml"), 1 << 20).unwrap();
    assert_eq!(
        config.containers.keys().collect::<Vec<_>>(),
        ["base", "other"]
    );
    let steps: Vec<&Step> = config.containers["base"]
        .setup
        .iter()
        .map(|s| &s.step)
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[1], &Step::EnsureDir("/one".into()));
    assert_eq!(steps[2], &Step::EnsureDir("/two".into()));
    for (name, run) in [
        ("a", "echo a"),
        ("b", "echo b"),
        ("own", "echo own"),
        ("both", "echo both"),
    ] {
        assert_eq!(run_text(&config, name), run, "{name}");
    }
    // Positions of included nodes name their file.
    let one = config.containers["base"].setup[1].pos;
    assert_eq!(
        config.file_of(&config.path, one),
        d.join("steps.yaml").as_path()
    );
    assert_eq!((one.line, one.column), (1, 3));
}

#[test]
fn an_error_in_an_included_file_names_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "cella.yaml",
        "containers:\n  base: !*Include c/base.yaml\n",
    );
    write(d, "c/base.yaml", "setup:\n- !Nope x\n");
    let err = load_err(&d.join("cella.yaml"));
    let want = format!(
        "{}:2:3: containers.base.setup[0]: unknown tag !Nope",
        d.join("c/base.yaml").display()
    );
    assert!(err.starts_with(&want), "{err}");
    write(d, "c/base.yaml", "setup: [\n");
    let err = load_err(&d.join("cella.yaml"));
    assert!(
        err.starts_with(&format!("{}:", d.join("c/base.yaml").display())),
        "{err}"
    );
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn hostile_includes_are_refused_with_their_place() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "evil.yaml", "setup: []\n");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("project");
    fs::create_dir(&d).unwrap();
    let main = d.join("cella.yaml");
    let try_yaml = |value: &str| {
        write(&d, "cella.yaml", &format!("containers:\n  base: {value}\n"));
        load_err(&main)
    };
    std::os::unix::fs::symlink(outside.path().join("evil.yaml"), d.join("link.yaml")).unwrap();
    std::os::unix::fs::symlink(outside.path(), d.join("linkdir")).unwrap();
    let o = outside.path().display();
    for (value, want) in [
        ("!*Include ../evil.yaml", "climbs out of the project"),
        (
            &format!("!*Include {o}/evil.yaml"),
            "is outside the project",
        ),
        ("!*Include link.yaml", "is a symbolic link"),
        ("!*Include missing.yaml", "missing.yaml"),
        ("!*IncludeSeq \"linkdir/*.yaml\"", "is a symbolic link"),
        ("!*IncludeSeq \"*.yaml\"", "is a symbolic link"),
        ("!*IncludeMap \"*.yaml\"", "one `( )` group"),
        ("!*IncludeSeq \"[ab].yaml\"", "not supported"),
        ("!*Include [a, b]", "takes a file name"),
        ("!*Unpack [[a]]", "belongs in a list"),
    ] {
        let err = try_yaml(value);
        assert!(
            err.contains("cella.yaml:2:9: containers.base: "),
            "{value}: {err}"
        );
        assert!(err.contains(want), "{value}: {err}");
    }
    fs::remove_file(d.join("link.yaml")).unwrap();
    fs::remove_file(d.join("linkdir")).unwrap();

    // A file that includes itself stops at the depth bound.
    write(&d, "self.yaml", "!*Include self.yaml\n");
    let err = try_yaml("!*Include self.yaml");
    assert!(err.contains("nested more than 8 deep"), "{err}");
    // Aliases of one include cannot read a file more than 64 times.
    write(&d, "one.yaml", "setup: []\n");
    let many: String = (0..70).map(|i| format!("  c{i}: *x\n")).collect();
    write(
        &d,
        "cella.yaml",
        &format!("_x: &x !*Include one.yaml\ncontainers:\n{many}"),
    );
    let err = load_err(&main);
    assert!(err.contains("more than 64 included files"), "{err}");
    // The same from inside an included file, whose position names it.
    let inner: String = (0..70).map(|i| format!("c{i}: *x\n")).collect();
    write(
        &d,
        "many.yaml",
        &format!("_x: &x !*Include one.yaml\n{inner}"),
    );
    write(&d, "cella.yaml", "containers: !*Include many.yaml\n");
    let err = load_err(&main);
    assert!(err.contains("many.yaml:"), "{err}");
    assert!(err.contains("more than 64 included files"), "{err}");
    // An included file is held to limits.config.
    write(&d, "big.yaml", &format!("# {}\n", "x".repeat(2000)));
    write(
        &d,
        "cella.yaml",
        "containers:\n  base: !*Include big.yaml\n",
    );
    let err = load(&main, 1000).unwrap_err().to_string();
    assert!(err.contains("big.yaml"), "{err}");
    // Nothing outside changed.
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
}
