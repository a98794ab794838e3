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
    let mut line_starts: Option<Vec<usize>> = None;
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
                let plain = style == TScalarStyle::Plain;
                // An empty value's marker is the next token's (perhaps lines below, or the end of the file): it
                // is placed where it was left empty instead, at the `key:` or `-` that introduced it.
                let pos = if plain && value.is_empty() {
                    let lines = line_starts.get_or_insert_with(|| line_starts_of(src));
                    introducer(src, lines, pos).unwrap_or(pos)
                } else {
                    pos
                };
                Some(Node { kind: Kind::Scalar { value, plain }, pos })
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

/// The byte offset where each line of `src` starts.
fn line_starts_of(src: &str) -> Vec<usize> {
    std::iter::once(0).chain(src.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

/// The position of the last character before `at` that is not blank or in a comment: the `:` or `-` that began
/// an empty value. Walks back over blank and comment-only lines only (each empty value's own gap), so a file
/// costs linear time however many empty values it holds.
fn introducer(src: &str, lines: &[usize], at: Pos) -> Option<Pos> {
    // The marker may sit past the last line (the end of the file): then start from the last line, whole.
    let (mut line, mut limit) =
        if at.line > lines.len() { (lines.len(), None) } else { (at.line, Some(at.col.saturating_sub(1))) };
    while line >= 1 {
        let start = *lines.get(line - 1)?;
        let end = lines.get(line).map_or(src.len(), |e| e - 1);
        let text = src.get(start..end)?;
        let text = match limit.take() {
            // On the marker's own line, what comes before it is the next node's indentation and dashes (`  - `)
            // unless it holds more: then the value was left empty on this line (`{a: , b: 1}`).
            Some(cols) => {
                let before = text.char_indices().nth(cols).map_or(text, |(i, _)| &text[..i]);
                if before.chars().all(|c| matches!(c, ' ' | '\t' | '-')) { "" } else { before }
            }
            None => text,
        };
        // A comment runs from a `#` that starts the line or follows a blank.
        let code = text
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || text[..i].ends_with([' ', '\t'])))
            .map_or(text, |(i, _)| &text[..i]);
        let code = code.trim_end();
        if !code.is_empty() {
            return Some(Pos { line, col: code.chars().count() });
        }
        line -= 1;
    }
    None
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

    /// An empty value is placed where it was left empty, not at the next token (issue 16, item 3): at the end
    /// of a mapping, of a list, of the file, and before a comment.
    #[test]
    fn empty_values_are_placed_where_they_were_left_empty() {
        let value_of = |src: &str, key: &str| -> Pos {
            fn find(n: &Node, key: &str) -> Option<Pos> {
                match &n.kind {
                    Kind::Map(items) => items.iter().find_map(|(k, v)| match &k.kind {
                        Kind::Scalar { value, .. } if value == key => Some(v.pos),
                        _ => find(v, key),
                    }),
                    Kind::Seq(items) => items.iter().find_map(|i| find(i, key)),
                    Kind::Scalar { .. } => None,
                }
            }
            find(&parse(src).ok().flatten().expect("parses"), key).expect("key found")
        };
        // In the middle of a mapping: on its own line, at the colon.
        assert_eq!(value_of("a:\n  - name:\n    x: 1\n", "name"), Pos { line: 2, col: 9 });
        // At the end of a mapping, before a shallower key.
        assert_eq!(value_of("a:\n  b: 1\n  c:\nd: 2\n", "c"), Pos { line: 3, col: 4 });
        // At the end of the file, with and without a newline.
        assert_eq!(value_of("a: 1\nb:\n", "b"), Pos { line: 2, col: 2 });
        assert_eq!(value_of("a: 1\nb:", "b"), Pos { line: 2, col: 2 });
        // Before a comment, and with comment lines between it and the next token.
        assert_eq!(value_of("a: # none\n# more\n\nb: 1\n", "a"), Pos { line: 1, col: 2 });
        // An empty list item: at its dash.
        let root = parse("l:\n  - x\n  -\n  - y\n").ok().flatten().expect("parses");
        let Kind::Map(items) = &root.kind else { panic!("not a map") };
        let Kind::Seq(list) = &items[0].1.kind else { panic!("not a list") };
        assert_eq!(list[1].pos, Pos { line: 3, col: 3 });
        // A value that is not empty keeps its own position.
        assert_eq!(value_of("a:\n  b: ''\n", "b"), Pos { line: 2, col: 6 });
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
