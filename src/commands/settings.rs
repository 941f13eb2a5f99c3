//! The user's settings file: what a project's cella.yaml alone may not
//! decide, such as which host directories outside the project it may bind.
//!
//! `$CELLA_SETTINGS`, else `$XDG_CONFIG_HOME/cella/settings.yaml`, else
//! `~/.config/cella/settings.yaml`; a missing file is an empty one.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Absolute host directories (and everything under them) that
    /// `!BindRW`/`!BindRO` volumes may name.
    #[serde(default)]
    pub allow_host_paths: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{}: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Where the settings file is looked for.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CELLA_SETTINGS") {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("cella").join("settings.yaml"))
}

/// The settings file's path for messages.
pub fn describe_path() -> String {
    path().map_or_else(
        || "the settings file".to_owned(),
        |p| format!("{} (allow-host-paths)", p.display()),
    )
}

pub fn load() -> Result<Settings, SettingsError> {
    let Some(path) = path() else {
        return Ok(Settings::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(e) => return Err(SettingsError::Read(path, e)),
    };
    parse(&text).map_err(|message| SettingsError::Invalid { path, message })
}

fn parse(text: &str) -> Result<Settings, String> {
    if text.trim().is_empty() {
        return Ok(Settings::default());
    }
    let settings: Settings = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(at) => format!("{}:{}: {e}", at.line(), at.column()),
        None => e.to_string(),
    })?;
    if let Some(p) = settings.allow_host_paths.iter().find(|p| !p.is_absolute()) {
        return Err(format!(
            "allow-host-paths: {} is not an absolute path",
            p.display()
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_what_they_do_not_know() {
        let s = parse("allow-host-paths: [/data, /srv/x]\n").unwrap();
        assert_eq!(
            s.allow_host_paths,
            vec![PathBuf::from("/data"), PathBuf::from("/srv/x")]
        );
        assert!(parse("").unwrap().allow_host_paths.is_empty());
        let e = parse("allow-host-path: [/data]\n").unwrap_err();
        assert!(e.contains("unknown field `allow-host-path`"), "{e}");
        assert!(e.starts_with("1:1: "), "{e}");
        let e = parse("allow-host-paths: [data]\n").unwrap_err();
        assert!(e.contains("not an absolute path"), "{e}");
    }
}
