//! Text that cella prints as its own but did not write: what a guest sent
//! (child names, reasons, process names, the kernel log) and names from an
//! untrusted project. Control characters in it could move the cursor,
//! retitle or clear the user's terminal, or fake a line of cella's; they
//! are shown escaped instead. A workload's own stdout and stderr never pass
//! through here: they are the workload's, as a container's are.

use std::borrow::Cow;
use std::fmt;

/// `text` with every control character (C0, DEL, C1), and the Unicode
/// characters that reorder or hide text (bidi controls, zero-width
/// joiners aside), escaped as `\n`, `\t`, `\e`, `\xNN` or `\u{NNNN}`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// An error and its sources, each shown as [`escape_keeping_lines`]
/// shows it, joined by `sep`: `": "` for a one-line warning,
/// `"\ncaused by: "` for the report `main` prints. The one way cella
/// prints an error chain.
pub fn error_chain(e: &dyn std::error::Error, sep: &str) -> String {
    let mut out = escape_keeping_lines(&e.to_string()).into_owned();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(sep);
        out.push_str(&escape_keeping_lines(&s.to_string()));
        source = s.source();
    }
    out
}

/// [`escape`], but line breaks stay: for cella's own multi-line messages
/// (an error chain, a list of kernel log lines), a last net under every
/// string some part of which a guest or a project may have chosen.
pub fn escape_keeping_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && needs_escape(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\n' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    Cow::Owned(out)
}

/// Bytes that may not be UTF-8 (a host file name, a guest path): invalid
/// sequences are shown as `\xNN`, the rest as [`escape`] shows it.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A `Display` of [`escape`]: `format!("{}", Escaped(&guest_text))`.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    if !needs_escape(c) {
        out.push(c);
        return;
    }
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\u{1b}' => out.push_str("\\e"),
        c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape("db: exited, ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_controls_are_escaped() {
        let title = "\u{1b}]0;pwned\u{7}\u{1b}[2K\rcella: ok\u{9b}x\u{202e}";
        assert_eq!(
            escape(title),
            "\\e]0;pwned\\x07\\e[2K\\rcella: ok\\x9bx\\u{202e}"
        );
        assert_eq!(escape("a\nb\tc\u{7f}"), "a\\nb\\tc\\x7f");
        assert_eq!(escape_bytes(b"ok\xff\x1b[1m"), "ok\\xff\\e[1m");
        assert_eq!(Escaped("x\u{1b}").to_string(), "x\\e");
        assert_eq!(escape_keeping_lines("a\n\u{1b}[2Kb"), "a\n\\e[2Kb");
    }
}
