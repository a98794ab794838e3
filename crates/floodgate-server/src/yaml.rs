//! A small YAML tree that remembers where each node came from, so config errors can name the line.
//!
//! Built from `yaml-rust2`'s event stream with hard bounds, because a config file is input too: at most
//! [`MAX_DEPTH`] levels of nesting and [`MAX_NODES`] nodes, one document per file, and no aliases (`*name`),
//! which closes the "billion laughs" expansion. Tags are ignored.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;
/// The most nodes (scalars, sequences, mappings) one file may hold.
pub const MAX_NODES: usize = 1_000_000;

/// A position in a source file (1-based line and column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos { line: m.line(), col: m.col() + 1 }
    }
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub kind: Kind,
    /// Where it starts.
    pub pos: Pos,
}

/// The three kinds of YAML node.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A scalar, with whether it was written plain (unquoted): `10` is a number, `"10"` a string.
    Scalar {
        /// The text.
        value: String,
        /// Written without quotes or block style.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order (duplicate keys are kept here and rejected by the reader).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Whether this is the YAML null (`~`, `null`, or an empty plain scalar).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a sequence",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error or a bound that was crossed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

enum Frame {
    Seq(Vec<Node>, Pos),
    Map(Vec<(Node, Node)>, Option<Node>, Pos),
}

/// Parses one YAML document. `Ok(None)` for an empty file (or one holding only comments).
pub fn parse(src: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(src);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    loop {
        let (event, marker) =
            parser.next_token().map_err(|e| YamlError { pos: (*e.marker()).into(), message: e.info().to_owned() })?;
        let pos = Pos::from(marker);
        let done = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => None,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError { pos, message: "only one YAML document per file is supported".into() });
                }
                None
            }
            Event::Alias(_) => {
                return Err(YamlError { pos, message: "YAML aliases (*name) are not supported in configs".into() });
            }
            Event::Scalar(value, style, _, _) => {
                Some(Node { kind: Kind::Scalar { value, plain: style == TScalarStyle::Plain }, pos })
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError { pos, message: format!("nesting deeper than {MAX_DEPTH} levels") });
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq(Vec::new(), pos)
                } else {
                    Frame::Map(Vec::new(), None, pos)
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(items, start)) => Some(Node { kind: Kind::Seq(items), pos: start }),
                Some(Frame::Map(items, None, start)) => Some(Node { kind: Kind::Map(items), pos: start }),
                Some(Frame::Map(_, Some(_), _)) | None => {
                    return Err(YamlError { pos, message: "unbalanced YAML structure".into() });
                }
            },
        };
        let Some(node) = done else { continue };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(YamlError { pos, message: format!("more than {MAX_NODES} YAML nodes") });
        }
        match stack.last_mut() {
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(items, pending, _)) => match pending.take() {
                Some(key) => items.push((key, node)),
                None => *pending = Some(node),
            },
            None => {
                if root.is_some() {
                    return Err(YamlError { pos, message: "only one YAML document per file is supported".into() });
                }
                root = Some(node);
            }
        }
    }
    if !stack.is_empty() {
        return Err(YamlError { pos: Pos::default(), message: "unexpected end of YAML".into() });
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = parse("a: 1\nb:\n  - x\n").ok().flatten();
        let Some(Node { kind: Kind::Map(items), .. }) = root else { panic!("not a map") };
        assert_eq!(items[1].1.pos, Pos { line: 3, col: 3 });
        assert_eq!(items[0].0.pos, Pos { line: 1, col: 1 });
    }

    #[test]
    fn aliases_and_depth_are_refused() {
        assert!(parse("a: &x 1\nb: *x\n").is_err());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert_eq!(parse("# nothing\n"), Ok(None));
    }
}
