//! YAML text → a tree of nodes that remember their positions and tags.
//!
//! Aliases are expanded here (a copy of the anchored node, keeping the
//! anchor's positions); merge keys (`<<`) are left for the decoder, which
//! knows the field path to blame. What expansion may build is bounded
//! twice, before it is built: by nodes, and by the bytes of the scalars,
//! keys and tags it copies (`limits.config` in the user's settings), so a
//! small file of aliases to a long string cannot take gigabytes.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

use super::error::Pos;

/// Upper bound on nodes after alias expansion, against "billion laughs".
pub(super) const MAX_NODES: usize = 250_000;

/// A YAML node with its position (of its tag or anchor when it has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Node {
    pub pos: Pos,
    /// A local tag without its `!` (`Tar` for `!Tar`), or a full tag name.
    pub tag: Option<String>,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// Any other scalar, as its text; `plain` is false when quoted or a block.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in source order; keys are not checked for type or duplicates.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// "a string", "a list"…: what the node is, for "expected X, found Y".
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// How many nodes this one holds, itself included.
    pub fn nodes(&self) -> usize {
        self.size().nodes
    }

    /// What a copy of this node costs: its nodes, and the bytes of its
    /// tags and scalar texts.
    fn size(&self) -> Size {
        let own = Size {
            nodes: 1,
            bytes: self.own_bytes(),
        };
        match &self.value {
            Value::Null | Value::Scalar { .. } => own,
            Value::Seq(items) => items.iter().map(Node::size).fold(own, Size::add),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| k.size().add(v.size()))
                .fold(own, Size::add),
        }
    }

    /// The bytes of this node's own tag and text.
    fn own_bytes(&self) -> u64 {
        let tag = self.tag.as_ref().map_or(0, String::len);
        let text = match &self.value {
            Value::Scalar { text, .. } => text.len(),
            _ => 0,
        };
        (tag + text) as u64
    }
}

/// Nodes and bytes of text, counted as the tree is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Size {
    nodes: usize,
    bytes: u64,
}

impl Size {
    fn add(self, other: Size) -> Size {
        Size {
            nodes: self.nodes.saturating_add(other.nodes),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// A parse failure: where and why. The caller adds the file name.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParseError {
    pub pos: Pos,
    pub message: String,
    /// The text expanded past `max_bytes`: the caller names its bound.
    pub over_bound: bool,
}

fn pos(mark: &Marker) -> Pos {
    Pos::new(mark.line(), mark.col() + 1)
}

/// An empty sequence or mapping node, filled as its events arrive.
fn collection(pos: Pos, tag: Option<&Tag>, value: Value) -> Node {
    Node {
        pos,
        tag: tag_name(tag),
        value,
    }
}

fn tag_name(tag: Option<&Tag>) -> Option<String> {
    let tag = tag?;
    if tag.is_yaml_core_schema() || (tag.handle == "!" && tag.suffix.is_empty()) {
        // `!!str` and friends, and the non-specific `!`, say nothing we use.
        return None;
    }
    if tag.handle == "!" {
        Some(tag.suffix.clone())
    } else {
        Some(format!("{}{}", tag.handle, tag.suffix))
    }
}

fn scalar_value(text: &str, style: ScalarStyle, tagged: bool) -> Value {
    let plain = style == ScalarStyle::Plain;
    if plain && !tagged && matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if plain && tagged && text.is_empty() {
        // `test: !Command` with nothing after it: an empty tagged node.
        return Value::Null;
    }
    Value::Scalar {
        text: text.to_owned(),
        plain,
    }
}

/// A collection being read: its node so far, its anchor, and for a
/// mapping the key waiting for its value.
struct Open {
    node: Node,
    anchor: usize,
    key: Option<Node>,
}

struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, (Node, Size)>,
    /// What the tree holds so far, aliases expanded.
    size: Size,
    /// The most bytes of text it may hold.
    max_bytes: u64,
    root: Option<Node>,
}

impl Builder {
    /// Counts `n` more before they are built; an error at `at` past a bound.
    fn count(&mut self, n: Size, at: Pos) -> Result<(), ParseError> {
        self.size = self.size.add(n);
        let (message, over_bound) = if self.size.nodes > MAX_NODES {
            (
                format!("more than {MAX_NODES} nodes after expanding aliases"),
                false,
            )
        } else if self.size.bytes > self.max_bytes {
            (
                format!(
                    "more than {} of text after expanding aliases",
                    super::scalars::size_text(self.max_bytes),
                ),
                true,
            )
        } else {
            return Ok(());
        };
        Err(ParseError {
            pos: at,
            message,
            over_bound,
        })
    }

    fn open(&mut self, node: Node, anchor: usize) -> Result<(), ParseError> {
        let size = Size {
            nodes: 1,
            bytes: node.own_bytes(),
        };
        self.count(size, node.pos)?;
        self.stack.push(Open {
            node,
            anchor,
            key: None,
        });
        Ok(())
    }

    /// A node is complete: remember its anchor and hand it to its parent.
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            // Once per anchor: a tree as large as the bounds allow at most.
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(parent) => match &mut parent.node.value {
                Value::Seq(items) => items.push(node),
                Value::Map(entries) => match parent.key.take() {
                    None => parent.key = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                // Only collections are ever open.
                Value::Null | Value::Scalar { .. } => {}
            },
        }
    }

    fn close(&mut self) {
        if let Some(open) = self.stack.pop() {
            self.finish(open.node, open.anchor);
        }
    }
}

/// Parses one YAML document into a node tree; an empty stream is `None`.
/// The tree may hold at most `max_bytes` of tags and scalar texts, aliases
/// expanded.
pub(super) fn parse(text: &str, max_bytes: u64) -> Result<Option<Node>, ParseError> {
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        size: Size::default(),
        max_bytes,
        root: None,
    };
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| ParseError {
            pos: pos(e.marker()),
            message: e.info().to_owned(),
            over_bound: false,
        })?;
        let at = pos(&span.start);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(ParseError {
                        pos: at,
                        message: "expected one YAML document, found another".to_owned(),
                        over_bound: false,
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag_name(tag.as_deref());
                let size = Size {
                    nodes: 1,
                    bytes: (tag.as_ref().map_or(0, String::len) + text.len()) as u64,
                };
                b.count(size, at)?;
                let value = scalar_value(&text, style, tag.is_some());
                b.finish(
                    Node {
                        pos: at,
                        tag,
                        value,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, tag) => {
                b.open(
                    collection(at, tag.as_deref(), Value::Seq(Vec::new())),
                    anchor,
                )?;
            }
            Event::MappingStart(anchor, tag) => {
                b.open(
                    collection(at, tag.as_deref(), Value::Map(Vec::new())),
                    anchor,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(),
            Event::Alias(id) => {
                let Some(&(_, size)) = b.anchors.get(&id) else {
                    return Err(ParseError {
                        pos: at,
                        message: "alias refers to a node that contains it".to_owned(),
                        over_bound: false,
                    });
                };
                // Counted before the copy is made.
                b.count(size, at)?;
                if let Some((node, _)) = b.anchors.get(&id).cloned() {
                    b.finish(node, 0);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
    Ok(b.root)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    /// Parses with a 1 MiB bound on text.
    fn parse(text: &str) -> Result<Option<Node>, ParseError> {
        super::parse(text, MB)
    }

    fn p(line: usize, column: usize) -> Pos {
        Pos::new(line, column)
    }

    fn scalar(node: &Node) -> &str {
        match &node.value {
            Value::Scalar { text, .. } => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn positions_and_tags() {
        let root = parse("a:\n  - !Tar { url: x }\n  - 'q'\n")
            .unwrap()
            .unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("{root:?}")
        };
        let (key, seq) = &entries[0];
        assert_eq!(key.pos, p(1, 1));
        let Value::Seq(items) = &seq.value else {
            panic!("{seq:?}")
        };
        assert_eq!(items[0].tag.as_deref(), Some("Tar"));
        assert_eq!(items[0].pos, p(2, 5));
        assert_eq!(scalar(&items[1]), "q");
        assert_eq!(items[1].pos, p(3, 5));
    }

    #[test]
    fn nulls_and_core_tags() {
        let root = parse("[~, null, '', !!str x, !Command ]").unwrap().unwrap();
        let Value::Seq(items) = &root.value else {
            panic!("{root:?}")
        };
        assert_eq!(items[0].value, Value::Null);
        assert_eq!(items[1].value, Value::Null);
        assert_eq!(scalar(&items[2]), "");
        assert_eq!(items[3].tag, None);
        assert_eq!(items[4].tag.as_deref(), Some("Command"));
        assert_eq!(items[4].value, Value::Null);
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("{root:?}")
        };
        assert_eq!(entries[0].1, entries[1].1);
        assert_eq!(entries[1].1.pos, p(1, 4));
    }

    #[test]
    fn empty_stream_is_none() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1 && err.pos.column >= 1, "{err:?}");
    }

    #[test]
    fn second_document_is_an_error() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.pos, p(2, 1));
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("aliases"), "{err:?}");
    }

    #[test]
    fn aliases_are_bounded_by_bytes() {
        // 64 KiB of text, aliased 32 times: 2 MiB once expanded, in a
        // file of 64 KiB and 34 nodes.
        let long = "x".repeat(64 << 10);
        let mut text = format!("a: &s \"{long}\"\nb: [");
        text.push_str(&["*s"; 32].join(", "));
        text.push_str("]\n");
        let err = parse(&text).unwrap_err();
        // The caller names the bound (`limits.config` for cella.yaml).
        assert_eq!(
            err.message, "more than 1Mi of text after expanding aliases",
            "{err:?}"
        );
        assert!(err.over_bound);
        // Where the alias that passed the bound is: the 16th, line 2.
        assert_eq!(err.pos.line, 2, "{err:?}");
        assert!(err.pos.column > 4, "{err:?}");
        // Under the bound, the same file parses.
        assert!(super::parse(&text, 4 * MB).is_ok());
        // Keys and tags count too.
        let err = super::parse("? &k !Tag long-key\n: v\nx: [*k, *k]\n", 20).unwrap_err();
        assert!(err.over_bound, "{err:?}");
        assert!(super::parse("? &k !Tag long-key\n: v\nx: [*k, *k]\n", 60).is_ok());
    }
}
