//! vagga's `rules` for `!Copy` and `!Depends`: gitignore-like globs that
//! say which paths under a source are taken.
//!
//! The matching of one glob is the `globset` crate's (vagga's own choice,
//! so `*`, `?`, `**`, `[...]` and `{a,b}` mean what they mean there). What
//! a rule stands for is vagga's, which no crate implements, so it is here:
//!
//! - `!GLOB` leaves out what matches (a directory with all under it);
//!   any other rule takes what matches and must start with `/`;
//! - a rule starting with `/` is anchored at the source, one without
//!   matches at any depth; a rule holding a `/` keeps `*` and `?` within a
//!   name (otherwise they cross `/`, as in vagga);
//! - a rule ending with `/` matches directories only, and takes (or
//!   leaves out) everything under the directory; one without a trailing
//!   `/` matches files and directories, and everything under a directory
//!   it matches;
//! - a leading `\` is dropped (so `\!x` names a file `!x`); backslashes
//!   are not escapes otherwise.
//!
//! When rules disagree: a rule naming the path itself (not only a
//! directory above it) beats one that matches through a parent, and
//! between two of the same kind the later rule wins.
//!
//! A directory is taken only when a rule ending with `/` names it, or when
//! something under it is taken; a directory no rule names is not entered.

use std::os::unix::ffi::OsStrExt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// At most this many rules a step may give (its default rules come on
/// top), this long each, with at most this many `/`-separated parts; and
/// at most this much glob text all the rules stand for together. Bounded
/// so that a project cannot make cella compile a huge matcher: a rule of
/// n parts stands for n + 1 globs.
pub const MAX_RULES: usize = 1024;
pub const MAX_RULE_LEN: usize = 1024;
const MAX_PARTS: usize = 64;
const MAX_GLOB_TEXT: usize = 64 << 10;
/// Room for the default rules put in front of a step's own.
const MAX_DEFAULT_RULES: usize = 32;

/// What [`Rules::decide`] says of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Left out; a directory is not entered.
    Skip,
    /// A file that is taken.
    Take,
    /// A directory that is entered; `own` if it is taken even when
    /// nothing under it is.
    Enter { own: bool },
}

/// One glob a rule stands for.
#[derive(Debug)]
struct Part {
    ignore: bool,
    /// Matches directories only.
    dir_only: bool,
    /// Names the path itself rather than what is under a directory.
    exact: bool,
    /// A directory on the way to what an include rule names: entered,
    /// not taken for itself.
    on_the_way: bool,
}

/// A compiled list of rules.
#[derive(Debug)]
pub struct Rules {
    set: GlobSet,
    parts: Vec<Part>,
}

impl Rules {
    /// Compiles `rules` (the defaults already in front, if wanted). The
    /// error says which rule is wrong and why.
    pub fn new<S: AsRef<str>>(rules: &[S]) -> Result<Rules, String> {
        if rules.len() > MAX_RULES + MAX_DEFAULT_RULES {
            return Err(format!("more than {MAX_RULES} rules"));
        }
        let mut set = GlobSetBuilder::new();
        let mut parts = Vec::new();
        let mut text = 0usize;
        for rule in rules {
            let rule = rule.as_ref();
            if rule.len() > MAX_RULE_LEN {
                return Err(format!("a rule is longer than {MAX_RULE_LEN} bytes"));
            }
            if rule.contains(['\0', '\n']) {
                return Err(format!("rule {rule:?} holds a NUL or newline"));
            }
            if rule.split('/').count() > MAX_PARTS + 2 {
                return Err(format!("rule {rule:?} has more than {MAX_PARTS} parts"));
            }
            for (glob, part, literal_sep) in expand(rule)? {
                text += glob.len();
                if text > MAX_GLOB_TEXT {
                    return Err(format!(
                        "the rules stand for more than {} KiB of globs (a rule of n \
                         parts stands for n + 1)",
                        MAX_GLOB_TEXT >> 10
                    ));
                }
                let glob = GlobBuilder::new(&glob)
                    .literal_separator(literal_sep)
                    .backslash_escape(false)
                    .build()
                    .map_err(|e| format!("rule {rule:?}: {e}"))?;
                set.add(glob);
                parts.push(part);
            }
        }
        let set = set.build().map_err(|e| format!("rules: {e}"))?;
        Ok(Rules { set, parts })
    }

    /// What to do with `rel` (relative to the source, `/`-joined, not
    /// empty), a directory if `is_dir`.
    pub fn decide(&self, rel: &[u8], is_dir: bool) -> Decision {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(rel));
        let mut chosen: Option<&Part> = None;
        // The later rule wins; one naming the path beats one through a parent.
        for index in self.set.matches(path).into_iter().rev() {
            let part = &self.parts[index];
            if part.dir_only && !is_dir {
                continue;
            }
            if chosen.is_none() || part.exact {
                chosen = Some(part);
            }
            if part.exact {
                break;
            }
        }
        match chosen {
            None => Decision::Skip,
            Some(part) if part.ignore => Decision::Skip,
            Some(_) if !is_dir => Decision::Take,
            Some(part) => Decision::Enter {
                own: part.dir_only && !part.on_the_way,
            },
        }
    }
}

/// The globs one rule stands for, with what each means and whether `*`
/// stays within a name.
fn expand(rule: &str) -> Result<Vec<(String, Part, bool)>, String> {
    let (ignore, body) = match rule.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, rule),
    };
    if !ignore && !body.starts_with('/') {
        return Err(format!(
            "rule {rule:?} takes files but does not start with `/`: \
             only rules that leave files out (`!…`) may match at any depth"
        ));
    }
    let body = body.strip_prefix('\\').unwrap_or(body);
    let literal_sep = body.contains('/');
    let dir = body.ends_with('/');
    let anchored = body.starts_with('/');
    let body = body.strip_suffix('/').unwrap_or(body);
    let body = body.strip_prefix('/').unwrap_or(body);
    let prefix = if anchored || body.starts_with("**/") {
        ""
    } else {
        "**/"
    };
    let mut out = Vec::new();
    let part = |dir_only, exact, on_the_way| Part {
        ignore,
        dir_only,
        exact,
        on_the_way,
    };
    if ignore {
        out.push((
            format!("{prefix}{body}"),
            part(dir, true, false),
            literal_sep,
        ));
    } else {
        // Each directory on the way is entered, not taken.
        let components: Vec<&str> = body.split('/').collect();
        for n in 1..=components.len() {
            let glob = components[..n].join("/");
            if glob.is_empty() {
                continue;
            }
            let last = n == components.len();
            out.push((
                format!("{prefix}{glob}"),
                part(!last || dir, true, !last),
                literal_sep,
            ));
        }
    }
    if dir {
        // All under the directory, not the directory itself.
        let glob = if body.is_empty() {
            "**/*".to_owned()
        } else {
            format!("{prefix}{body}/**/*")
        };
        out.push((glob, part(false, false, false), literal_sep));
    } else if !body.ends_with("/**") {
        out.push((
            format!("{prefix}{body}/**"),
            part(false, false, false),
            literal_sep,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Decision, Rules};

    fn rules(list: &[&str]) -> Rules {
        Rules::new(list).unwrap()
    }

    fn file(r: &Rules, path: &str) -> bool {
        r.decide(path.as_bytes(), false) == Decision::Take
    }

    fn dir(r: &Rules, path: &str) -> Decision {
        r.decide(path.as_bytes(), true)
    }

    const ENTER: Decision = Decision::Enter { own: false };
    const TAKE_DIR: Decision = Decision::Enter { own: true };

    #[test]
    fn anchored_name_takes_the_path_and_all_under_it() {
        let r = rules(&["/foo"]);
        assert!(file(&r, "foo"));
        assert_eq!(dir(&r, "foo"), ENTER);
        assert!(file(&r, "foo/x"));
        assert!(file(&r, "foo/a/b"));
        assert!(!file(&r, "dir/foo"));
        assert!(!file(&r, "test"));
        assert_eq!(dir(&r, "dir"), Decision::Skip);
    }

    #[test]
    fn anchored_glob_stays_at_the_top() {
        let r = rules(&["/*.rs"]);
        assert!(file(&r, "test.rs"));
        assert!(!file(&r, "dir/test.rs"));
        assert!(!file(&r, "test.py"));
        let r = rules(&["/**/*.rs"]);
        assert!(file(&r, "test.rs"));
        assert!(file(&r, "a/b/test.rs"));
        assert_eq!(dir(&r, "a"), ENTER);
    }

    #[test]
    fn a_directory_rule_takes_the_directory() {
        let r = rules(&["/dir/"]);
        assert_eq!(dir(&r, "dir"), TAKE_DIR);
        assert!(!file(&r, "dir"));
        assert!(file(&r, "dir/x"));
        // Under it, directories are entered and taken only for what they hold.
        assert_eq!(dir(&r, "dir/sub"), ENTER);
        assert!(file(&r, "dir/sub/x"));
        assert_eq!(dir(&r, "other/dir"), Decision::Skip);
        let r = rules(&["/"]);
        assert!(file(&r, "x"));
        assert!(file(&r, "a/b/x"));
        assert_eq!(dir(&r, "a"), ENTER);
    }

    #[test]
    fn directories_on_the_way_are_entered() {
        let r = rules(&["/a/b/c.txt"]);
        assert_eq!(dir(&r, "a"), ENTER);
        assert_eq!(dir(&r, "a/b"), ENTER);
        assert!(file(&r, "a/b/c.txt"));
        assert!(!file(&r, "a/b/d.txt"));
        assert!(!file(&r, "a/x"));
        // A file named like a directory on the way is not taken.
        assert!(!file(&r, "a"));
    }

    #[test]
    fn ignores_match_at_any_depth_and_later_rules_win() {
        let r = rules(&["!*.pyc", "/src"]);
        assert!(file(&r, "src/a.py"));
        assert!(!file(&r, "src/a.pyc"));
        assert!(!file(&r, "src/deep/a.pyc"));
        let r = rules(&["!build/", "/"]);
        assert_eq!(dir(&r, "build"), Decision::Skip);
        assert_eq!(dir(&r, "x/build"), Decision::Skip);
        // A file named build is not a directory: the `/` rule takes it.
        assert!(file(&r, "build"));
        let r = rules(&["!.git/", "/.git/"]);
        assert_eq!(dir(&r, ".git"), TAKE_DIR);
        let r = rules(&["/.git/", "!.git/"]);
        assert_eq!(dir(&r, ".git"), Decision::Skip);
    }

    #[test]
    fn a_rule_naming_the_path_beats_one_through_a_parent() {
        // `/dir` takes dir/** through a parent; `!*.rs` names the file.
        let r = rules(&["!*.rs", "/dir"]);
        assert!(!file(&r, "dir/test.rs"));
        assert!(file(&r, "dir/test.py"));
        let r = rules(&["!target/build", "/"]);
        assert_eq!(dir(&r, "target"), ENTER);
        assert_eq!(dir(&r, "target/build"), Decision::Skip);
        assert!(file(&r, "target/x"));
    }

    #[test]
    fn slash_keeps_star_within_a_name() {
        let r = rules(&["!a/*.o", "/"]);
        assert!(!file(&r, "a/x.o"));
        assert!(file(&r, "a/b/x.o"));
        let r = rules(&["!*.o", "/"]);
        assert!(!file(&r, "a/b/x.o"));
    }

    #[test]
    fn double_stars_and_escapes() {
        let r = rules(&["/dir/**/foo"]);
        assert_eq!(dir(&r, "dir"), ENTER);
        assert_eq!(dir(&r, "dir/sub"), ENTER);
        assert!(!file(&r, "dir/test.rs"));
        assert!(file(&r, "dir/foo"));
        assert!(file(&r, "dir/sub/foo/x"));
        let r = rules(&["/dir/**"]);
        assert_eq!(dir(&r, "dir"), ENTER);
        assert!(file(&r, "dir/a/b"));
        let r = rules(&["!\\!x", "/"]);
        assert!(!file(&r, "!x"));
        assert!(file(&r, "x"));
    }

    #[test]
    fn bad_rules_are_refused() {
        let err = Rules::new(&["*.rs"]).unwrap_err();
        assert!(err.contains("does not start with `/`"), "{err}");
        assert!(Rules::new(&["/[z-a]"]).is_err());
        let many = vec!["/x"; super::MAX_RULES + super::MAX_DEFAULT_RULES + 1];
        assert!(Rules::new(&many).is_err());
        // A rule of many parts stands for as many globs: bounded.
        let deep = format!("/{}x", "*/".repeat(70));
        assert!(Rules::new(&[deep.as_str()])
            .unwrap_err()
            .contains("more than 64 parts"));
        let long = format!("/{}x", "*/".repeat(60));
        let err = Rules::new(&vec![long.as_str(); 64]).unwrap_err();
        assert!(err.contains("KiB of globs"), "{err}");
        assert!(Rules::new(&["/".repeat(2000)]).is_err());
        assert!(Rules::new(&["/a\nb"]).is_err());
        // Nothing to take is not an error (vagga warns).
        let r = rules(&["!*.o"]);
        assert!(!file(&r, "x"));
        assert_eq!(dir(&r, "d"), Decision::Skip);
    }

    #[test]
    fn names_need_not_be_utf8() {
        let r = rules(&["/"]);
        assert_eq!(r.decide(b"a\xff", false), Decision::Take);
    }
}
