//! `cella` without a command, and `cella _list`: what the project defines.

use crate::config::Config;

/// The commands with their descriptions, aligned, as `cella` prints them;
/// those whose names start with `_` are hidden, as vagga hides them.
pub fn commands(config: &Config) -> String {
    let shown = || config.commands.iter().filter(|(k, _)| !k.starts_with('_'));
    let width = shown().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    if shown().next().is_none() {
        out.push_str("No commands defined in ");
        out.push_str(&config.path.display().to_string());
        out.push('\n');
    } else {
        out.push_str("Available commands:\n");
    }
    for (name, cmd) in shown() {
        let desc = cmd.description.as_deref().unwrap_or("");
        out.push_str(format!("    {name:width$}  {desc}").trim_end());
        out.push('\n');
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
}
