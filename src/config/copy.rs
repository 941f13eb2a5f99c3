//! Decoding `!Copy` and `!Depends`: a project path and which files under
//! it count (vagga's regexes or its glob `rules`).

use super::decode::{Decoder, Fields};
use super::error::ConfigError;
use super::model::{CopyStep, Selection, Step};
use super::scalars;
use super::scalars::Kind;
use super::yaml::{Node, Value};
use crate::hostfs::{Filter, MAX_RULES};

const COPY_FIELDS: &[&str] = &[
    "source",
    "path",
    "include-regex",
    "exclude-regex",
    "ignore-regex",
    "rules",
    "no-default-rules",
    "owner-uid",
    "owner-gid",
    "umask",
    "preserve-permissions",
    "preserve-times",
];
const DEPENDS_FIELDS: &[&str] = &[
    "path",
    "include-regex",
    "exclude-regex",
    "ignore-regex",
    "rules",
    "no-default-rules",
];

/// The umask of `!Copy` when none is given, as in vagga.
const DEFAULT_UMASK: u32 = 0o002;
/// What a vagga.yaml's `!Copy` and `!Depends` skip when they name no
/// regex and no rules: vagga's default (version control directories,
/// editor backups), and cella's own `.cella` as vagga's `.vagga`.
const VAGGA_IGNORE: &str = r"(^|/)\.(git|hg|svn|vagga|cella)($|/)|~$|\.bak$|\.orig$|^#.*#$";
/// The rules put before a step's own `rules` unless `no-default-rules`:
/// vagga's, and `.cella/` as its `.vagga/`.
const DEFAULT_RULES: &[&str] = &[
    "!.git/", "!.hg/", "!.svn/", "!.vagga/", "!.cella/", "!*.bak", "!*.orig", "!*~", "!#*#", "!.#*",
];

impl Decoder<'_> {
    pub(super) fn copy(&self, node: &Node, path: &str) -> Result<CopyStep, ConfigError> {
        let fields = self.fields(node, path, COPY_FIELDS)?;
        let source_node = self.required(&fields, "source")?;
        let source_path = fields.path_of("source");
        let source = self.string(source_node, &source_path)?;
        // As vagga: an absolute path outside /work is in the container.
        let in_image = source.starts_with('/') && scalars::project_path(&source).is_err();
        let rel = if in_image {
            self.parsed(source_node, &source_path, scalars::container_path)?;
            None
        } else {
            let rel = self.project_path(source_node.pos, &source_path, &source)?;
            self.exists(source_node.pos, &source_path, &rel, Kind::FileOrDirectory)?;
            Some(rel)
        };
        let dest = self.required(&fields, "path")?;
        Ok(CopyStep {
            source,
            rel,
            path: self.parsed(dest, &fields.path_of("path"), scalars::container_path)?,
            select: self.selection(&fields)?,
            owner_uid: self.optional(&fields, "owner-uid", scalars::uint32)?,
            owner_gid: self.optional(&fields, "owner-gid", scalars::uint32)?,
            umask: self
                .optional(&fields, "umask", scalars::mode)?
                .unwrap_or(DEFAULT_UMASK),
            preserve_permissions: self.flag(&fields, &["preserve-permissions"], false)?,
            preserve_times: self.flag(&fields, &["preserve-times"], false)?,
        })
    }

    /// `!Depends PATH`, or vagga's `!Depends {path, rules, …}`.
    pub(super) fn depends(&self, node: &Node, path: &str) -> Result<Step, ConfigError> {
        let (text, pos, text_path, select) = match &node.value {
            Value::Map(_) => {
                let fields = self.fields(node, path, DEPENDS_FIELDS)?;
                let path_node = self.required(&fields, "path")?;
                let text_path = fields.path_of("path");
                let text = self.string(path_node, &text_path)?;
                (text, path_node.pos, text_path, self.selection(&fields)?)
            }
            _ => {
                let text = self.tagged_string(node, path)?;
                let select = Selection {
                    exclude_regex: self.is_vagga().then(|| VAGGA_IGNORE.to_owned()),
                    ..Selection::default()
                };
                (text, node.pos, path.to_owned(), select)
            }
        };
        let rel = self.project_path(pos, &text_path, &text)?;
        self.exists(pos, &text_path, &rel, Kind::FileOrDirectory)?;
        Ok(Step::Depends {
            path: text,
            rel,
            select,
        })
    }

    /// The regexes, or the rules (vagga: not both). Without either, a
    /// vagga.yaml skips what vagga skips by default, a cella.yaml nothing.
    fn selection(&self, fields: &Fields<'_>) -> Result<Selection, ConfigError> {
        let regex = |text: &str| scalars::regex(text).map(|()| text.to_owned());
        let rules = self.rules(fields)?;
        let no_default = self.flag(fields, &["no-default-rules"], false)?;
        let regexes = ["include-regex", "exclude-regex", "ignore-regex"];
        if rules.is_some() || fields.get("no-default-rules").is_some() {
            if let Some(name) = regexes.iter().find(|n| fields.get(n).is_some()) {
                let node = fields.get(name).map_or(fields.pos, |n| n.pos);
                return Err(self.invalid(
                    node,
                    &fields.path_of(name),
                    "give `rules` or regular expressions, not both".to_owned(),
                ));
            }
        }
        if let Some(own) = rules {
            let mut all: Vec<String> = match no_default {
                true => Vec::new(),
                false => DEFAULT_RULES.iter().map(|r| (*r).to_owned()).collect(),
            };
            all.extend(own);
            return Ok(Selection {
                rules: Some(all),
                ..Selection::default()
            });
        }
        // vagga spells it `ignore-regex`; in a vagga.yaml it has vagga's
        // default, in a cella.yaml none.
        let exclude = match (fields.get("exclude-regex"), fields.get("ignore-regex")) {
            (Some(node), Some(_)) => {
                return Err(self.invalid(
                    node.pos,
                    &fields.path_of("exclude-regex"),
                    "give `exclude-regex` or vagga's `ignore-regex`, not both".to_owned(),
                ))
            }
            (_, Some(_)) => self.optional(fields, "ignore-regex", regex)?,
            (Some(_), None) => self.optional(fields, "exclude-regex", regex)?,
            (None, None) if self.is_vagga() => Some(VAGGA_IGNORE.to_owned()),
            (None, None) => None,
        };
        Ok(Selection {
            include_regex: self.optional(fields, "include-regex", regex)?,
            exclude_regex: exclude,
            rules: None,
        })
    }

    /// `rules`: a list of strings, each a rule that compiles; None when
    /// absent or empty (vagga then uses the regexes).
    fn rules(&self, fields: &Fields<'_>) -> Result<Option<Vec<String>>, ConfigError> {
        let path = fields.path_of("rules");
        let Some(node) = fields.get("rules") else {
            return Ok(None);
        };
        let items = match &node.value {
            Value::Null => return Ok(None),
            Value::Seq(items) if items.len() <= MAX_RULES => items,
            Value::Seq(items) => {
                return Err(self.invalid(
                    node.pos,
                    &path,
                    format!("expected at most {MAX_RULES} rules, found {}", items.len()),
                ))
            }
            _ => return Err(self.wrong_type(node, &path, "a list of rules")),
        };
        let mut rules = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let rule = self.string(item, &item_path)?;
            Filter::rules(&[&rule])
                .map_err(|message| self.invalid(item.pos, &item_path, message))?;
            rules.push(rule);
        }
        if rules.is_empty() {
            return Ok(None);
        }
        // Each compiles alone; together they must too (the matcher's size).
        Filter::rules(&rules).map_err(|message| self.invalid(node.pos, &path, message))?;
        Ok(Some(rules))
    }
}
