//! `cella` without a command, and `cella _list`: what the project defines.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::text::escape;

/// The commands with their descriptions, aligned, as `cella` prints them:
/// those without a `group` first, then each group under its name as a
/// header, groups and commands sorted by name. Those whose names start
/// with `_` are hidden, as vagga hides them.
pub fn commands(config: &Config) -> String {
    let shown: Vec<_> = config
        .commands
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .collect();
    let width = shown.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    if shown.is_empty() {
        out.push_str("No commands defined in ");
        out.push_str(&config.path.display().to_string());
        out.push('\n');
        return out;
    }
    let mut groups: BTreeMap<Option<&str>, Vec<_>> = BTreeMap::new();
    for (name, cmd) in shown {
        groups
            .entry(cmd.info.group.as_deref())
            .or_default()
            .push((name, cmd));
    }
    for (group, commands) in groups {
        if !out.is_empty() {
            out.push('\n');
        }
        match group {
            None => out.push_str("Available commands:\n"),
            Some(group) => out.push_str(&format!("{}:\n", escape(group))),
        }
        for (name, cmd) in commands {
            // The project's words: no control character reaches the terminal.
            let desc = escape(cmd.description.as_deref().unwrap_or(""));
            out.push_str(format!("    {name:width$}  {desc}").trim_end());
            out.push('\n');
        }
    }
    out
}

/// Containers then commands, for `cella _list`.
pub fn everything(config: &Config) -> String {
    let mut out = String::from("Containers:\n");
    for name in config.containers.keys() {
        out.push_str(&format!("    {name}\n"));
    }
    out.push_str(&commands(config));
    if !config.aliases.is_empty() {
        out.push_str("Aliases:\n");
        for (alias, name) in &config.aliases {
            out.push_str(&format!("    {alias} -> {name}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_commands_with_descriptions_aligned_hiding_underscores() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r.tar"), b"").expect("tar");
        let yaml = "containers:\n  base:\n    setup: [!Tar {url: ./r.tar}]\ncommands:\n  test: !Command\n    description: Run tests\n    container: base\n    run: [true]\n  longer-name: !Command\n    container: base\n    run: [true]\n  _a-very-long-hidden-one: !Command\n    container: base\n    run: [true]\n";
        let config = crate::config::parse(yaml, &dir.path().join("cella.yaml")).expect("parse");
        assert_eq!(
            commands(&config),
            "Available commands:\n    longer-name\n    test         Run tests\n"
        );
        assert!(everything(&config).starts_with("Containers:\n    base\n"));
        assert!(!everything(&config).contains("hidden"));
    }

    #[test]
    fn groups_are_headers_after_the_ungrouped_and_aliases_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = "containers:\n  base:\n    setup: [!Tar {url: ./r.tar}]\ncommands:\n  test: !Command\n    description: Run tests\n    group: Testing\n    aliases: [t]\n    container: base\n    run: [true]\n  build: !Command\n    container: base\n    run: [true]\n  doc: !Command\n    group: Docs\n    container: base\n    run: [true]\n  lint: !Command\n    group: Testing\n    container: base\n    run: [true]\n";
        let config = crate::config::parse(yaml, &dir.path().join("cella.yaml")).expect("parse");
        assert_eq!(
            commands(&config),
            "Available commands:\n    build\n\nDocs:\n    doc\n\nTesting:\n    lint\n    test   Run tests\n"
        );
        assert!(everything(&config).ends_with("Aliases:\n    t -> test\n"));
        let only_groups = yaml.replace(
            "  build: !Command\n    container: base\n    run: [true]\n",
            "",
        );
        let config =
            crate::config::parse(&only_groups, &dir.path().join("cella.yaml")).expect("parse");
        assert!(commands(&config).starts_with("Docs:\n    doc\n\nTesting:\n"));
    }
}
