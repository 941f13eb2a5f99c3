//! An image's apt sources and pin preferences, parsed into the plain data
//! the host's apt needs and written out again by cella: nothing of the
//! image's text reaches the host's apt unchecked. Sources come in apt's
//! one-line (`sources.list`, `*.list`) and deb822 (`*.sources`) formats;
//! only http(s) URIs, suites, components, `signed-by`, architectures and
//! `trusted` are kept. Options apt does not need are dropped with a note;
//! anything malformed or another URI scheme is an error.

use crate::config::netpolicy::HttpUrl;
use crate::text::escape;

/// Sources one image may name.
const MAX_SOURCES: usize = 256;
/// Suites, components, architectures or keys of one source.
const MAX_LIST: usize = 64;
/// The longest suite or component.
const MAX_WORD: usize = 128;
/// The longest path of a keyring in the image.
const MAX_PATH: usize = 4096;

/// One `deb` source: a repository and what to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: HttpUrl,
    /// Suites, or one flat-repository path ending in `/`.
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Vec<SignedBy>,
    pub architectures: Vec<String>,
    pub trusted: Option<bool>,
}

/// What a source's `signed-by` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// An absolute path of a keyring in the image.
    Path(String),
    /// A key's full fingerprint (40 hex digits, maybe ending in `!`),
    /// found in the trusted keyrings.
    Fingerprint(String),
    /// An ASCII-armored key written in the field itself (deb822).
    Inline(String),
}

/// What the image's files said: the sources, and what was dropped.
#[derive(Debug, Default)]
pub struct Sources {
    pub list: Vec<Source>,
    pub notes: Vec<String>,
}

/// A malformed or refused entry: the file and line in the image, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the image's {file}:{line}: {message}")]
pub struct SourcesError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// `text` quoted for a message, control characters escaped.
fn quoted(text: &str) -> String {
    format!("\"{}\"", escape(text))
}

impl Sources {
    /// Adds the sources of a one-line file (`sources.list`, `*.list`).
    pub fn one_line(&mut self, file: &str, text: &str) -> Result<(), SourcesError> {
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| SourcesError {
                file: file.to_owned(),
                line: i + 1,
                message,
            };
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            match kind {
                "deb" => {}
                "deb-src" => continue,
                other => return Err(err(format!("unknown source type {}", quoted(other)))),
            }
            let mut rest = rest.trim_start();
            let mut source = Source::new();
            if let Some(opts) = rest.strip_prefix('[') {
                let Some((opts, after)) = opts.split_once(']') else {
                    return Err(err("an option list without its \"]\"".into()));
                };
                for opt in opts.split_whitespace() {
                    let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
                    self.option(&mut source, key, value, &format!("{file}:{}", i + 1))
                        .map_err(err)?;
                }
                rest = after.trim_start();
            }
            let mut words = rest.split_whitespace();
            let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
                return Err(err("expected a URI and a suite".into()));
            };
            source.uri = uri_of(uri).map_err(err)?;
            source.suites = vec![suite.to_owned()];
            source.components = words.map(str::to_owned).collect();
            self.push(source).map_err(err)?;
        }
        Ok(())
    }

    /// Adds the sources of a deb822 file (`*.sources`).
    pub fn deb822(&mut self, file: &str, text: &str) -> Result<(), SourcesError> {
        for stanza in stanzas(text) {
            let err = |message: String| SourcesError {
                file: file.to_owned(),
                line: stanza.line,
                message,
            };
            let field = |name: &str| {
                stanza
                    .fields
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            let words = |name: &str| -> Vec<String> {
                field(name)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            };
            if field("Enabled").is_some_and(|v| v.trim() == "no") {
                continue;
            }
            if !words("Types").iter().any(|t| t == "deb") {
                continue;
            }
            let mut template = Source::new();
            let at = format!("{file}:{}", stanza.line);
            for (name, value) in &stanza.fields {
                let key = match name.to_ascii_lowercase().as_str() {
                    "types" | "uris" | "suites" | "components" | "enabled" => continue,
                    "signed-by" if value.trim_start().starts_with("-----BEGIN PGP") => {
                        template.signed_by.push(inline_key(value).map_err(err)?);
                        continue;
                    }
                    "signed-by" => "signed-by",
                    "architectures" => "arch",
                    "trusted" => "trusted",
                    _ => {
                        self.notes.push(format!(
                            "dropped the field {} of the image's apt source at {at}",
                            quoted(name)
                        ));
                        continue;
                    }
                };
                let value = value.split_whitespace().collect::<Vec<_>>().join(",");
                self.option(&mut template, key, &value, &at).map_err(err)?;
            }
            let (uris, suites) = (words("URIs"), words("Suites"));
            if uris.is_empty() || suites.is_empty() {
                return Err(err("a deb stanza needs URIs and Suites".into()));
            }
            for uri in uris {
                let mut source = template.clone();
                source.uri = uri_of(&uri).map_err(err)?;
                source.suites = suites.clone();
                source.components = words("Components");
                self.push(source).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Applies one option (`key=value`, one-line style) to `source`.
    fn option(
        &mut self,
        source: &mut Source,
        key: &str,
        value: &str,
        at: &str,
    ) -> Result<(), String> {
        let list = || value.split(',').filter(|v| !v.is_empty());
        match key {
            "signed-by" => {
                for item in list() {
                    source.signed_by.push(key_ref(item)?);
                }
            }
            "arch" => {
                for arch in list() {
                    let ok = arch.len() <= MAX_WORD
                        && !arch.starts_with('-')
                        && arch
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if !ok {
                        return Err(format!("not an architecture: {}", quoted(arch)));
                    }
                    source.architectures.push(arch.to_owned());
                }
            }
            "trusted" => {
                source.trusted = Some(match value {
                    "yes" => true,
                    "no" => false,
                    other => {
                        return Err(format!(
                            "trusted must be yes or no, found {}",
                            quoted(other)
                        ))
                    }
                })
            }
            other => self.notes.push(format!(
                "dropped the option {} of the image's apt source at {at}: cella passes only \
                 signed-by, arch and trusted to the host's apt",
                quoted(other)
            )),
        }
        Ok(())
    }

    /// Checks a complete source and keeps it.
    fn push(&mut self, source: Source) -> Result<(), String> {
        if self.list.len() >= MAX_SOURCES {
            return Err(format!("more than {MAX_SOURCES} sources"));
        }
        let too_many = [&source.suites, &source.components, &source.architectures]
            .iter()
            .any(|l| l.len() > MAX_LIST)
            || source.signed_by.len() > MAX_LIST;
        if too_many {
            return Err(format!(
                "more than {MAX_LIST} suites, components, architectures or keys"
            ));
        }
        for suite in &source.suites {
            if !word_ok(suite) {
                return Err(format!("not a suite: {}", quoted(suite)));
            }
            if suite.ends_with('/') && !source.components.is_empty() {
                return Err(format!(
                    "a flat repository ({}) has no components",
                    quoted(suite)
                ));
            }
        }
        if let Some(c) = source
            .components
            .iter()
            .find(|c| !word_ok(c) || c.ends_with('/'))
        {
            return Err(format!("not a component: {}", quoted(c)));
        }
        if source.components.is_empty() && !source.suites.iter().all(|s| s.ends_with('/')) {
            return Err(
                "a suite needs components (only a flat repository, \"path/\", has none)".into(),
            );
        }
        self.list.push(source);
        Ok(())
    }
}

impl Source {
    fn new() -> Source {
        Source {
            uri: HttpUrl {
                https: false,
                host: crate::config::netpolicy::UrlHost::Name(String::new()),
                port: None,
                path: String::new(),
            },
            suites: Vec::new(),
            components: Vec::new(),
            signed_by: Vec::new(),
            architectures: Vec::new(),
            trusted: None,
        }
    }
}

fn uri_of(text: &str) -> Result<HttpUrl, String> {
    HttpUrl::parse(text)
        .map_err(|e| format!("cella passes apt only http:// and https:// sources ({e})"))
}

/// A suite, a flat-repository path or a component: letters, digits and
/// `._+~-/`, not an option, no `..`.
fn word_ok(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= MAX_WORD
        && !word.starts_with('-')
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-/".contains(&b))
        && !word.split('/').any(|part| part == "..")
}

/// A `signed-by` item: a keyring's absolute path or a fingerprint.
fn key_ref(item: &str) -> Result<SignedBy, String> {
    let hex = item.strip_suffix('!').unwrap_or(item);
    if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(SignedBy::Fingerprint(item.to_owned()));
    }
    if item.starts_with('/') && item.len() <= MAX_PATH && !item.contains('\0') {
        return Ok(SignedBy::Path(item.to_owned()));
    }
    Err(format!(
        "signed-by must name a keyring's absolute path or a full fingerprint, found {}",
        quoted(item)
    ))
}

/// An armored key in a deb822 `Signed-By` field (`.` lines are empty ones).
fn inline_key(value: &str) -> Result<SignedBy, String> {
    let lines: Vec<&str> = value
        .lines()
        .map(|l| if l.trim() == "." { "" } else { l.trim() })
        .collect();
    let key = lines.join("\n").trim().to_owned();
    let armored = key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        && key.ends_with("-----END PGP PUBLIC KEY BLOCK-----")
        && key
            .bytes()
            .all(|b| b == b'\n' || (b' '..=b'~').contains(&b));
    if !armored {
        return Err("an inline Signed-By key must be one ASCII-armored public key block".into());
    }
    Ok(SignedBy::Inline(format!("{key}\n")))
}

/// A deb822 paragraph: its fields in order, and the line it starts on.
struct Stanza {
    line: usize,
    fields: Vec<(String, String)>,
}

/// The paragraphs of deb822 text; a continuation line joins the field
/// before it on a new line.
fn stanzas(text: &str) -> Vec<Stanza> {
    let mut out: Vec<Stanza> = Vec::new();
    let mut open = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            open = false;
            continue;
        }
        if !open {
            out.push(Stanza {
                line: i + 1,
                fields: Vec::new(),
            });
            open = true;
        }
        let Some(stanza) = out.last_mut() else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanza.fields.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            stanza
                .fields
                .push((name.trim().to_owned(), value.trim().to_owned()));
        } else {
            // Not a field: keep it as one with no name, which is dropped.
            stanza.fields.push((line.trim().to_owned(), String::new()));
        }
    }
    out
}

/// The sources as a deb822 file for the host's apt, `keyring(i, j)`
/// naming the file cella wrote for key `j` of source `i`.
pub fn render(sources: &[Source], keyring: impl Fn(usize, usize) -> String) -> String {
    let mut out = String::new();
    for (i, s) in sources.iter().enumerate() {
        out.push_str(&format!(
            "Types: deb\nURIs: {}\nSuites: {}\n",
            s.uri,
            s.suites.join(" ")
        ));
        if !s.components.is_empty() {
            out.push_str(&format!("Components: {}\n", s.components.join(" ")));
        }
        if !s.signed_by.is_empty() {
            let keys: Vec<String> = s
                .signed_by
                .iter()
                .enumerate()
                .map(|(j, key)| match key {
                    SignedBy::Fingerprint(f) => f.clone(),
                    SignedBy::Path(_) | SignedBy::Inline(_) => keyring(i, j),
                })
                .collect();
            out.push_str(&format!("Signed-By: {}\n", keys.join(" ")));
        }
        if !s.architectures.is_empty() {
            out.push_str(&format!("Architectures: {}\n", s.architectures.join(" ")));
        }
        if let Some(trusted) = s.trusted {
            out.push_str(&format!(
                "Trusted: {}\n",
                if trusted { "yes" } else { "no" }
            ));
        }
        out.push('\n');
    }
    out
}

/// apt preferences as plain pin data: stanzas of `Package`, `Pin` and
/// `Pin-Priority`, each a single line, written again by cella. Other
/// fields, and stanzas that lack one of the three, are dropped (noted).
pub fn preferences(file: &str, text: &str, notes: &mut Vec<String>) -> String {
    let mut out = String::new();
    for stanza in stanzas(text) {
        let mut pin: [Option<&str>; 3] = [None; 3];
        let mut ok = true;
        for (name, value) in &stanza.fields {
            let slot = match name.to_ascii_lowercase().as_str() {
                "package" => 0,
                "pin" => 1,
                "pin-priority" => 2,
                "explanation" => continue,
                _ => {
                    ok = false;
                    break;
                }
            };
            let printable = value.bytes().all(|b| (b' '..=b'~').contains(&b));
            let number = slot != 2
                || value
                    .trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit());
            if value.is_empty() || !printable || !number || pin[slot].is_some() {
                ok = false;
                break;
            }
            pin[slot] = Some(value);
        }
        match (ok, pin) {
            (true, [Some(package), Some(pin), Some(priority)]) => out.push_str(&format!(
                "Package: {package}\nPin: {pin}\nPin-Priority: {priority}\n\n"
            )),
            _ => notes.push(format!(
                "dropped the pin at the image's {file}:{}: cella passes apt only stanzas of \
                 single-line Package, Pin and Pin-Priority",
                stanza.line
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_line(text: &str) -> Result<Sources, SourcesError> {
        let mut s = Sources::default();
        s.one_line("etc/apt/sources.list", text).map(|()| s)
    }

    fn deb822(text: &str) -> Result<Sources, SourcesError> {
        let mut s = Sources::default();
        s.deb822("etc/apt/sources.list.d/debian.sources", text)
            .map(|()| s)
    }

    #[test]
    fn one_line_sources_parse_and_render() {
        let s = one_line(
            "# comment\n\
             deb http://deb.debian.org/debian bookworm main contrib # trailing\n\
             deb-src http://deb.debian.org/debian bookworm main\n\
             deb [signed-by=/usr/share/keyrings/x.gpg arch=amd64,all trusted=no] https://x.example/apt stable main\n\
             deb [ lang=de ] http://y.example/repo ./\n",
        )
        .unwrap();
        assert_eq!(s.list.len(), 3);
        assert_eq!(s.list[0].uri.to_string(), "http://deb.debian.org/debian");
        assert_eq!(s.list[0].components, ["main", "contrib"]);
        assert_eq!(
            s.list[1].signed_by,
            [SignedBy::Path("/usr/share/keyrings/x.gpg".into())]
        );
        assert_eq!(s.list[1].architectures, ["amd64", "all"]);
        assert_eq!(s.list[2].suites, ["./"]);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        assert!(s.notes[0].contains("\"lang\""), "{:?}", s.notes);
        let text = render(&s.list, |i, j| format!("/k/{i}-{j}.gpg"));
        assert_eq!(
            text,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main contrib\n\n\
             Types: deb\nURIs: https://x.example/apt\nSuites: stable\nComponents: main\n\
             Signed-By: /k/1-0.gpg\nArchitectures: amd64 all\nTrusted: no\n\n\
             Types: deb\nURIs: http://y.example/repo\nSuites: ./\n\n"
        );
    }

    #[test]
    fn deb822_sources_parse() {
        let s = deb822(
            "Types: deb deb-src\n\
             URIs: http://deb.debian.org/debian http://mirror.example/debian\n\
             Suites: bookworm bookworm-updates\n\
             Components: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             X-Repolib-Name: debian\n\
             \n\
             # disabled\n\
             Types: deb\nURIs: http://off.example/\nSuites: x\nComponents: main\nEnabled: no\n\
             \n\
             Types: deb\nURIs: https://inline.example/\nSuites: y\nComponents: main\n\
             Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----\n",
        )
        .unwrap();
        assert_eq!(s.list.len(), 3);
        assert_eq!(s.list[1].uri.to_string(), "http://mirror.example/debian");
        assert_eq!(s.list[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            s.list[2].signed_by,
            [SignedBy::Inline(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n"
                    .into()
            )]
        );
        assert_eq!(s.notes.len(), 1);
        assert!(s.notes[0].contains("X-Repolib-Name"), "{:?}", s.notes);
    }

    #[test]
    fn bad_sources_are_refused_with_their_place() {
        for (text, wanted) in [
            (
                "deb file:///srv/repo bookworm main\n",
                "only http:// and https://",
            ),
            (
                "deb mirror+http://x/ bookworm main\n",
                "only http:// and https://",
            ),
            (
                "deb cdrom:[x]/ bookworm main\n",
                "only http:// and https://",
            ),
            ("deb http://u:p@x/ bookworm main\n", "credentials"),
            ("deb http://x/ --option main\n", "not a suite"),
            ("deb http://x/ ../../etc main\n", "not a suite"),
            ("deb http://x/ bookworm -o\n", "not a component"),
            ("deb http://x/ bookworm\n", "needs components"),
            ("deb http://x/ ./ main\n", "flat repository"),
            ("deb [signed-by=x.gpg] http://x/ a main\n", "signed-by must"),
            ("deb [arch=AMD64] http://x/ a main\n", "architecture"),
            ("deb [trusted=maybe] http://x/ a main\n", "trusted must"),
            ("deb [arch=amd64 http://x/ a main\n", "\"]\""),
            ("rpm http://x/ a main\n", "unknown source type"),
            ("deb http://x/\n", "a URI and a suite"),
        ] {
            let e = one_line(&format!("# first\n{text}")).unwrap_err();
            assert_eq!(
                (e.file.as_str(), e.line),
                ("etc/apt/sources.list", 2),
                "{text}"
            );
            assert!(e.message.contains(wanted), "{text}: {e}");
        }
        let e = one_line("deb http://x/\u{1b}[2J a main\n").unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
        let e = deb822("Types: deb\nURIs: http://x/\n").unwrap_err();
        assert!(e.message.contains("needs URIs and Suites"), "{e}");
        let e = deb822("Types: deb\nURIs: http://x/\nSuites: a\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap_err();
        assert!(e.message.contains("ASCII-armored"), "{e}");
        let many = "deb http://x/ a main\n".repeat(MAX_SOURCES + 1);
        assert!(one_line(&many).unwrap_err().message.contains("more than"));
    }

    #[test]
    fn preferences_keep_plain_pins_only() {
        let mut notes = Vec::new();
        let text = "Explanation: backports\nPackage: *\nPin: release a=bookworm-backports\nPin-Priority: 500\n\n\
                    Package: hello\nPin: version 2.*\nPin-Priority: -1\nFoo: bar\n\n\
                    Package: x\nPin: origin \"\"\n";
        let out = preferences("etc/apt/preferences", text, &mut notes);
        assert_eq!(
            out,
            "Package: *\nPin: release a=bookworm-backports\nPin-Priority: 500\n\n"
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("etc/apt/preferences:6"), "{notes:?}");
    }
}
