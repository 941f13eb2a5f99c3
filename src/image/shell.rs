//! Shell words: an argv written back as a shell would read it, for the
//! messages about build steps and for the scripts cella has a build VM run.

/// argv as a shell would read it back: for messages, and `!Install`'s script.
pub(super) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_needs_it() {
        let argv = ["/bin/sh", "-exc", "echo 'hi' > /x"].map(String::from);
        assert_eq!(shell_words(&argv), r"/bin/sh -exc 'echo '\''hi'\'' > /x'");
    }
}
