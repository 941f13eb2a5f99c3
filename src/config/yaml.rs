//! YAML text → a tree of nodes that remember their positions and tags.
//!
//! Aliases are expanded here (a copy of the anchored node, keeping the
//! anchor's positions); merge keys (`<<`) are left for the decoder, which
//! knows the field path to blame.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

use super::error::Pos;

/// Upper bound on nodes after alias expansion, against "billion laughs".
const MAX_NODES: usize = 250_000;

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

    fn size(&self) -> usize {
        match &self.value {
            Value::Null | Value::Scalar { .. } => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// A parse failure: where and why. The caller adds the file name.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParseError {
    pub pos: Pos,
    pub message: String,
}

fn pos(mark: &Marker) -> Pos {
    Pos {
        line: mark.line(),
        column: mark.col() + 1,
    }
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
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    root: Option<Node>,
}

impl Builder {
    fn count(&mut self, n: usize, at: Pos) -> Result<(), ParseError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(ParseError {
                pos: at,
                message: format!("more than {MAX_NODES} nodes after expanding aliases"),
            });
        }
        Ok(())
    }

    fn open(&mut self, node: Node, anchor: usize) -> Result<(), ParseError> {
        self.count(1, node.pos)?;
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
pub(super) fn parse(text: &str) -> Result<Option<Node>, ParseError> {
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
    };
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| ParseError {
            pos: pos(e.marker()),
            message: e.info().to_owned(),
        })?;
        let at = pos(&span.start);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(ParseError {
                        pos: at,
                        message: "expected one YAML document, found another".to_owned(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag_name(tag.as_deref());
                let value = scalar_value(&text, style, tag.is_some());
                b.count(1, at)?;
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
                let Some((node, size)) = b.anchors.get(&id).cloned() else {
                    return Err(ParseError {
                        pos: at,
                        message: "alias refers to a node that contains it".to_owned(),
                    });
                };
                b.count(size, at)?;
                b.finish(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
    Ok(b.root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: usize, column: usize) -> Pos {
        Pos { line, column }
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
}
