//! vagga's `options`: a command's docopt usage text, which parses the
//! arguments of `cella NAME ARGS…` into `VAGGAOPT_*` and `VAGGACLI_*`
//! variables for the command, as vagga does. It is parsed by the `docopt`
//! crate, the one vagga itself uses, so a vagga.yaml's usage text means
//! the same thing here; that crate is finished rather than maintained,
//! and no other implements docopt's language. The text is the project's:
//! bounded in size, and a panic of the parser on it is caught and
//! reported as a bad `options` field.

use std::panic::{catch_unwind, AssertUnwindSafe};

use docopt::{Docopt, Value};

/// The longest `options` text accepted.
pub const MAX_OPTIONS: usize = 16 << 10;
/// The most arguments parsed against it.
const MAX_ARGS: usize = 4096;

/// What vagga appends to every usage text: `-h, --help`.
const COMMON: &str = "Common options:\n  -h, --help           This help\n";

/// The whole docopt text of command `name`, as vagga builds it: the
/// description (or `vagga NAME`), the `options` text, the common options.
pub fn text(description: Option<&str>, name: &str, options: &str) -> String {
    let title = description.map_or_else(|| format!("vagga {name}"), str::to_owned);
    format!("{title}\n\n{options}\n{COMMON}\n")
}

/// Why the usage text cannot be used, if it cannot.
pub fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_OPTIONS + 4096 {
        return Err(format!("longer than {MAX_OPTIONS} bytes"));
    }
    match catch_unwind(AssertUnwindSafe(|| Docopt::new(text).map(|_| ()))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("not a docopt usage text: {e}")),
        Err(_) => Err("not a docopt usage text (its parser gave up on it)".to_owned()),
    }
}

/// What `cella NAME ARGS…` gets from a command with `options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `--help` (or `-h`): the text to print on stdout, status 0.
    Help(String),
    /// The variables, sorted by name.
    Vars(Vec<(String, String)>),
}

/// Parses `args` of command `name` against `text` (see [`text`]); an
/// error is docopt's message with the usage, for stderr.
pub fn parse(text: &str, name: &str, args: &[String]) -> Result<Parsed, String> {
    if args.len() > MAX_ARGS {
        return Err(format!("more than {MAX_ARGS} arguments"));
    }
    let argv: Vec<String> = ["vagga".to_owned(), name.to_owned()]
        .into_iter()
        .chain(args.iter().cloned())
        .collect();
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        Docopt::new(text).and_then(|d| d.argv(argv).parse())
    }))
    .map_err(|_| "the command's `options` could not be parsed".to_owned())?;
    let map = match parsed {
        Ok(map) => map,
        Err(e) if !e.fatal() => return Ok(Parsed::Help(e.to_string())),
        Err(e) => return Err(e.to_string()),
    };
    let mut vars = Vec::new();
    for (key, value) in map.map.iter() {
        let bare = key
            .trim_start_matches('-')
            .trim_start_matches('<')
            .trim_end_matches('>');
        let suffix = bare.replace('-', "_").to_ascii_uppercase();
        // A name no shell could read is no variable (`<a=b>` in the text).
        if suffix.is_empty()
            || !suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            continue;
        }
        let (opt, cli) = values(key, value);
        vars.push((format!("VAGGAOPT_{suffix}"), opt));
        vars.push((format!("VAGGACLI_{suffix}"), cli));
    }
    vars.sort();
    vars.dedup_by(|a, b| a.0 == b.0);
    Ok(Parsed::Vars(vars))
}

/// `VAGGAOPT_` and `VAGGACLI_` of one docopt key, as vagga makes them:
/// the raw value (`true`, a count, the value, values joined by spaces),
/// and the argument as a shell would need it written.
fn values(key: &str, value: &Value) -> (String, String) {
    match value {
        Value::Switch(false) | Value::Counted(0) | Value::Plain(None) => {
            (String::new(), String::new())
        }
        Value::Switch(true) => ("true".to_owned(), key.to_owned()),
        Value::Counted(n) => {
            let cli = match key.strip_prefix("--") {
                Some(_) => vec![key; *n as usize].join(" "),
                None => format!("-{}", key.get(1..2).unwrap_or("").repeat(*n as usize)),
            };
            (n.to_string(), cli)
        }
        Value::Plain(Some(v)) => {
            let cli = match key.starts_with('-') {
                true => format!("{key} {}", shell_quoted(v)),
                false => shell_quoted(v),
            };
            (v.clone(), cli)
        }
        Value::List(list) if list.is_empty() => (String::new(), String::new()),
        Value::List(list) => {
            let mut cli = match key.starts_with('-') {
                true => key.to_owned(),
                false => String::new(),
            };
            for v in list {
                cli.push(' ');
                cli.push_str(&shell_quoted(v));
            }
            (list.join(" "), cli)
        }
    }
}

/// `value` for a POSIX shell: as it is when it is made of letters, digits
/// and `@%+=:,./-`, else single-quoted (`''` when empty).
fn shell_quoted(value: &str) -> String {
    if value.is_empty() {
        return "''".to_owned();
    }
    let plain = value
        .chars()
        .all(|c| c.is_alphanumeric() || "@%+=:,./-".contains(c));
    if plain {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', r#"'"'"'"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = "Usage: vagga test [options] [<tests>...]

Options:
  -R, --redis-port <n>  Port to run redis on [default: 6379]
  -v, --verbose         More output
  -q                    Quieter (repeatable)
";

    fn vars(args: &[&str]) -> Vec<(String, String)> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&text(None, "test", USAGE), "test", &args).expect("parse") {
            Parsed::Vars(v) => v,
            Parsed::Help(h) => panic!("help: {h}"),
        }
    }

    fn get<'v>(vars: &'v [(String, String)], name: &str) -> &'v str {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} missing in {vars:?}"))
    }

    #[test]
    fn arguments_become_vaggaopt_and_vaggacli_variables() {
        let v = vars(&["-v", "--redis-port=7000", "a b", "it's"]);
        assert_eq!(get(&v, "VAGGAOPT_REDIS_PORT"), "7000");
        assert_eq!(get(&v, "VAGGACLI_REDIS_PORT"), "--redis-port 7000");
        assert_eq!(get(&v, "VAGGAOPT_VERBOSE"), "true");
        assert_eq!(get(&v, "VAGGACLI_VERBOSE"), "--verbose");
        assert_eq!(get(&v, "VAGGAOPT_TESTS"), "a b it's");
        assert_eq!(get(&v, "VAGGACLI_TESTS"), r#" 'a b' 'it'"'"'s'"#);
        assert_eq!(get(&v, "VAGGAOPT_HELP"), "");
        let v = vars(&[]);
        assert_eq!(get(&v, "VAGGAOPT_REDIS_PORT"), "6379");
        assert_eq!(get(&v, "VAGGAOPT_VERBOSE"), "");
        assert_eq!(get(&v, "VAGGACLI_TESTS"), "");
    }

    #[test]
    fn help_and_bad_arguments() {
        let t = text(Some("Run the tests"), "test", USAGE);
        let help = parse(&t, "test", &["--help".to_owned()]).expect("help");
        let Parsed::Help(help) = help else {
            panic!("{help:?}")
        };
        assert!(
            help.starts_with("Run the tests\n\nUsage: vagga test"),
            "{help}"
        );
        assert!(help.contains("-h, --help"), "{help}");
        let e = parse(&t, "test", &["--bogus".to_owned()]).expect_err("bogus");
        assert!(e.contains("--bogus"), "{e}");
        assert!(check(&t).is_ok());
        assert!(check("Usage: vagga test [").is_err());
        assert!(check(&"x".repeat(MAX_OPTIONS + 5000)).is_err());
    }

    #[test]
    fn shell_quoting_is_vaggas() {
        assert_eq!(shell_quoted(""), "''");
        assert_eq!(shell_quoted("a/b.c:d=e,f@g%h+i-j"), "a/b.c:d=e,f@g%h+i-j");
        assert_eq!(shell_quoted("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_quoted("a'b"), r#"'a'"'"'b'"#);
    }
}
