//! The environment of a program in the guest, from lowest to highest
//! precedence (as vagga): cella's defaults (PATH, HOME, the host's TERM),
//! the `Env` of the image an `!Image` step brought, the container's `environ-file` then `environ`, the command's
//! `environ-file` then `environ`, the host's `CELLAENV_NAME` (or vagga's
//! `VAGGAENV_NAME`) variables as NAME, `-e NAME` (the host's value), and
//! `-E NAME=VALUE`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{Container, EnvironFile, Location, SimpleCommand};
use crate::hostfs::{Dir, FsError, Shown};

/// PATH when nothing sets one (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host variables with one of these prefixes reach the guest without it
/// (`VAGGAENV_` as vagga spells it).
pub const PASS_PREFIXES: [&str; 2] = ["CELLAENV_", "VAGGAENV_"];

/// An environ file larger than this is refused.
const MAX_ENVIRON_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EnvironError {
    #[error("{at}: cannot read {}", Shown(.path))]
    Read {
        at: Location,
        path: PathBuf,
        #[source]
        source: Box<FsError>,
    },
    #[error("{at}: {}:{line}: {message}", Shown(.path))]
    Line {
        at: Location,
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What the command line adds: `-e NAME` and `-E NAME=VALUE`, in order.
#[derive(Debug, Clone, Default)]
pub struct CliEnviron {
    pub use_env: Vec<String>,
    pub set: Vec<(String, String)>,
}

/// The variables of an environ file: `NAME=VALUE` lines, taken literally;
/// blank lines and lines starting with `#` are skipped. An error names the
/// line but never shows its content: whatever the file holds stays out of
/// cella's output.
pub fn parse_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((name, value)) if valid_name(name) => {
                vars.push((name.to_string(), value.to_string()));
            }
            Some(_) => {
                return Err((
                    i + 1,
                    "expected NAME=VALUE: the name before `=` is empty or has a blank or NUL"
                        .to_owned(),
                ))
            }
            None => {
                return Err((
                    i + 1,
                    "expected NAME=VALUE, found a line without `=`".into(),
                ))
            }
        }
    }
    Ok(vars)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['\0', ' ', '\t'])
}

fn read_file(project: &Dir, file: &EnvironFile) -> Result<Vec<(String, String)>, EnvironError> {
    let bytes = project
        .read(&file.path, MAX_ENVIRON_FILE)
        .map_err(|source| EnvironError::Read {
            at: file.at.clone(),
            path: file.path.clone(),
            source: Box::new(source),
        })?;
    let text = String::from_utf8(bytes).map_err(|_| EnvironError::Line {
        at: file.at.clone(),
        path: file.path.clone(),
        line: 0,
        message: "not UTF-8 text".into(),
    })?;
    parse_file(&text).map_err(|(line, message)| EnvironError::Line {
        at: file.at.clone(),
        path: file.path.clone(),
        line,
        message,
    })
}

/// The complete environment of `command` in `container`, given the
/// host's environment `host` (a list of (name, value)).
pub fn environment(
    project: &Dir,
    container: &Container,
    command: &SimpleCommand,
    image: &[String],
    cli: &CliEnviron,
    host: &[(String, String)],
) -> Result<Vec<(String, String)>, EnvironError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), "/root".into());
    if let Some((_, term)) = host.iter().find(|(k, _)| k == "TERM") {
        env.insert("TERM".into(), term.clone());
    }
    if let Some((name, value)) = crate::vmm::emulated_host_env() {
        env.insert(name.into(), value.into());
    }
    env.extend(
        image
            .iter()
            .filter_map(|v| v.split_once('='))
            .filter(|(name, _)| valid_name(name))
            .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    if let Some(file) = &container.environ_file {
        env.extend(read_file(project, file)?);
    }
    env.extend(container.environ.clone());
    if let Some(file) = &command.environ_file {
        env.extend(read_file(project, file)?);
    }
    env.extend(command.environ.clone());
    for (name, value) in host {
        let stripped = PASS_PREFIXES.iter().find_map(|p| name.strip_prefix(p));
        if let Some(name) = stripped.filter(|n| !n.is_empty()) {
            env.insert(name.to_string(), value.clone());
        }
    }
    for name in &cli.use_env {
        if let Some((_, value)) = host.iter().find(|(k, _)| k == name) {
            env.insert(name.clone(), value.clone());
        }
    }
    env.extend(cli.set.iter().cloned());
    Ok(env.into_iter().collect())
}

/// Whether a run takes variables from the host: `-e`, `-E`, or a
/// `CELLAENV_`/`VAGGAENV_` variable. Such a run is never held ready in a
/// warm snapshot, which would keep their values in the cache.
pub fn passes_host_values(cli: &CliEnviron, host: &[(String, String)]) -> bool {
    !cli.use_env.is_empty()
        || !cli.set.is_empty()
        || host.iter().any(|(k, _)| {
            PASS_PREFIXES
                .iter()
                .any(|p| k.len() > p.len() && k.starts_with(p))
        })
}

/// The host's environment, with the variables that are not UTF-8 left out.
pub fn host_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_files_parse_literally() {
        let vars = parse_file("# comment\n\nA=1\nB= two words \nC=x=y\nEMPTY=\n").expect("parse");
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), " two words ".into()),
                ("C".into(), "x=y".into()),
                ("EMPTY".into(), "".into())
            ]
        );
        let (line, message) = parse_file("A=1\nroot:$6$secret:19000\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(!message.contains("secret"), "{message}");
        assert!(parse_file("=x\n").is_err());
    }

    #[test]
    fn precedence_is_vaggas() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r.tar"), b"").expect("tar");
        std::fs::write(
            dir.path().join("c.env"),
            "V1=cfile\nV2=cfile\nV3=cfile\nV4=cfile\nV5=cfile\nV6=cfile\n",
        )
        .expect("c.env");
        std::fs::write(
            dir.path().join("m.env"),
            "V3=mfile\nV4=mfile\nV5=mfile\nV6=mfile\n",
        )
        .expect("m.env");
        let yaml = "containers:\n  base:\n    setup: [!Tar {url: ./r.tar}]\n    environ-file: c.env\n    environ: {V2: cenv, V3: cenv, V4: cenv, V5: cenv, V6: cenv}\ncommands:\n  t: !Command\n    container: base\n    run: [true]\n    environ-file: m.env\n    environ: {V4: menv, V5: menv, V6: menv, V7: menv}\n";
        let config = crate::config::parse(yaml, &dir.path().join("cella.yaml")).expect("parse");
        let container = &config.containers["base"];
        let crate::config::CommandKind::Command(cmd) = &config.commands["t"].kind else {
            panic!("not a command");
        };
        let host = vec![
            ("TERM".to_string(), "xterm".to_string()),
            ("VAGGAENV_V5".to_string(), "pass".to_string()),
            ("CELLAENV_V6".to_string(), "pass".to_string()),
            ("V6".to_string(), "host".to_string()),
            ("SECRET".to_string(), "host".to_string()),
        ];
        let cli = CliEnviron {
            use_env: vec!["V6".into(), "UNSET".into()],
            set: vec![("V7".into(), "cli".into())],
        };
        let project = Dir::open(dir.path()).expect("project");
        let env: BTreeMap<_, _> = environment(&project, container, cmd, &[], &cli, &host)
            .expect("environment")
            .into_iter()
            .collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("V1"), Some("cfile"));
        assert_eq!(get("V2"), Some("cenv"));
        assert_eq!(get("V3"), Some("mfile"));
        assert_eq!(get("V4"), Some("menv"));
        assert_eq!(get("V5"), Some("pass"));
        assert_eq!(get("V6"), Some("host"));
        assert_eq!(get("V7"), Some("cli"));
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(get("SECRET"), None);
        assert_eq!(get("UNSET"), None);

        std::fs::write(dir.path().join("m.env"), "ok=1\nbad line\n").expect("m.env");
        let err = environment(&project, container, cmd, &[], &cli, &host).expect_err("bad file");
        assert!(
            err.to_string().ends_with(
                ": commands.t.environ-file: m.env:2: expected NAME=VALUE, found a line without `=`"
            ),
            "{err}"
        );
        // A link to a host file is refused, never read.
        std::fs::remove_file(dir.path().join("m.env")).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("m.env")).expect("link");
        let err = environment(&project, container, cmd, &[], &cli, &host).expect_err("link");
        let chain = format!(
            "{err}: {}",
            std::error::Error::source(&err).expect("source")
        );
        assert!(
            chain.contains("symbolic link") && !chain.contains("root:"),
            "{chain}"
        );
    }
}
