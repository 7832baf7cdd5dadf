//! One migration file as the Postgres parser and scanner see it: statements with the
//! position of their first token, the `--` comments between them, and parse errors with
//! a line and column.

use pg_query::protobuf::{self, Token};

use crate::ParseError;

/// Byte offset → 1-based line and column (columns count characters, not bytes).
pub struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end clamp to the end.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    /// Whether only spaces and tabs precede `offset` on its line.
    pub fn starts_line(&self, offset: usize) -> bool {
        let (line, _) = self.position(offset);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        self.text
            .get(start..offset)
            .is_some_and(|s| s.chars().all(|c| c == ' ' || c == '\t'))
    }
}

/// A top-level statement and where it starts.
pub struct Statement {
    pub node: protobuf::node::Node,
    /// Byte offset of the statement's first token (leading comments skipped).
    pub start: usize,
}

/// A `--` comment, with the index of the statement it sits directly above, if any.
pub struct Comment<'a> {
    pub text: &'a str,
    pub start: usize,
    /// `Some(i)` when only comments and whitespace separate it from statement `i`.
    pub above: Option<usize>,
}

/// A parsed file.
pub struct Parsed<'a> {
    pub statements: Vec<Statement>,
    pub comments: Vec<Comment<'a>>,
}

/// Parses `sql` with libpg_query and attaches comments to statements.
pub fn parse<'a>(
    path: &str,
    sql: &'a str,
    lines: &LineIndex<'_>,
) -> Result<Parsed<'a>, ParseError> {
    let tree = pg_query::parse(sql, 0).map_err(|e| parse_error(path, sql, lines, &e))?;
    let tokens = pg_query::scan(sql)
        .map_err(|e| parse_error(path, sql, lines, &e))?
        .tokens;

    let mut statements = Vec::with_capacity(tree.protobuf.stmts.len());
    for raw in &tree.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.clone()) else {
            continue;
        };
        let location = usize::try_from(raw.stmt_location).unwrap_or(0);
        // stmt_location may point at whitespace or comments before the statement; the
        // first scanner token at or after it that is not a comment is where it starts.
        let start = tokens
            .iter()
            .filter(|t| !is_comment(t))
            .map(|t| usize::try_from(t.start).unwrap_or(0))
            .find(|&s| s >= location)
            .unwrap_or(location);
        statements.push(Statement { node, start });
    }

    // Walk tokens in order: a comment attaches to the next statement if the next
    // non-comment token is that statement's first token.
    let mut comments = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut next_stmt = 0;
    for token in &tokens {
        let start = usize::try_from(token.start).unwrap_or(0);
        let end = usize::try_from(token.end).unwrap_or(start);
        if token.token == Token::SqlComment as i32 {
            if let Some(text) = sql.get(start..end) {
                pending.push(comments.len());
                comments.push(Comment {
                    text,
                    start,
                    above: None,
                });
            }
            continue;
        }
        if token.token == Token::CComment as i32 {
            continue;
        }
        while next_stmt < statements.len() && statements[next_stmt].start < start {
            next_stmt += 1;
        }
        let above = (next_stmt < statements.len() && statements[next_stmt].start == start)
            .then_some(next_stmt);
        for i in pending.drain(..) {
            comments[i].above = above;
        }
    }
    Ok(Parsed {
        statements,
        comments,
    })
}

fn is_comment(token: &protobuf::ScanToken) -> bool {
    token.token == Token::SqlComment as i32 || token.token == Token::CComment as i32
}

/// Builds a [`ParseError`] with the parser's message and the best position we can find.
///
/// The pg_query crate passes on libpg_query's message but not its cursor position, so the
/// position is recovered: the shortest token prefix of the file that fails with the same
/// message ends at the token where the parser gave up.
fn parse_error(
    path: &str,
    sql: &str,
    lines: &LineIndex<'_>,
    error: &pg_query::Error,
) -> ParseError {
    let (message, offset) = match error {
        pg_query::Error::Parse(message) | pg_query::Error::Scan(message) => {
            (message.clone(), locate(sql, message))
        }
        pg_query::Error::Conversion(nul) => {
            ("file contains a NUL byte".to_owned(), nul.nul_position())
        }
        other => (other.to_string(), 0),
    };
    let (line, column) = lines.position(offset);
    ParseError {
        path: path.to_owned(),
        line,
        column,
        offset,
        message,
    }
}

/// Byte offset at which the parser reports `message`.
fn locate(sql: &str, message: &str) -> usize {
    if message.contains("at end of input") {
        return sql.trim_end().len();
    }
    if let Ok(scan) = pg_query::scan(sql) {
        let spans: Vec<(usize, usize)> = scan
            .tokens
            .iter()
            .filter(|t| !is_comment(t))
            .map(|t| {
                let start = usize::try_from(t.start).unwrap_or(0);
                (start, usize::try_from(t.end).unwrap_or(start))
            })
            .collect();
        let fails_here = |&(_, end): &(usize, usize)| {
            sql.get(..end).is_some_and(|prefix| {
                matches!(pg_query::parse(prefix, 0), Err(pg_query::Error::Parse(m)) if m == message)
            })
        };
        // The parser stops at the first error, so "this prefix fails with the same message"
        // is false before the offending token and true from it on: binary search.
        let first = spans.partition_point(|span| !fails_here(span));
        if let Some(&(start, _)) = spans.get(first) {
            return start;
        }
    }
    // Scanner errors ("unterminated quoted string at or near \"'abc\"") quote the rest of
    // the input from the failure point.
    near_text(message)
        .and_then(|near| sql.find(near))
        .unwrap_or(0)
}

/// The `X` in `... at or near "X"`.
fn near_text(message: &str) -> Option<&str> {
    let rest = message.split_once("at or near \"")?.1;
    let near = rest.strip_suffix('"').unwrap_or(rest);
    (!near.is_empty()).then_some(near)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines and columns are 1-based and count characters.
    #[test]
    fn positions() {
        let text = "ab\nçd\n\nx";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(3), (2, 1));
        assert_eq!(idx.position(5), (2, 2)); // after the two-byte ç
        assert_eq!(idx.position(8), (4, 1));
        assert_eq!(idx.position(100), (4, 2));
    }

    /// A syntax error is placed on the offending token, not at the statement start.
    #[test]
    fn locates_syntax_errors() {
        let sql = "CREATE TABLE a (id int);\n\nALTER TABLE a\n  ADD COLUMN b int,,\n";
        let err = parse("f.sql", sql, &LineIndex::new(sql)).err();
        let err = err.as_ref().map(|e| (e.line, e.column, e.message.as_str()));
        assert_eq!(err, Some((4, 20, "syntax error at or near \",\"")));
    }

    /// Scanner errors and NUL bytes get a position too.
    #[test]
    fn locates_scanner_errors() {
        let at = |sql: &str| {
            parse("f.sql", sql, &LineIndex::new(sql))
                .err()
                .map(|e| (e.line, e.column, e.message))
        };
        let (line, column, message) = at("SELECT 1;\nSELECT 'abc;\n").unwrap_or_default();
        assert_eq!((line, column), (2, 8), "{message}");
        assert!(message.contains("unterminated quoted string"), "{message}");
        let (line, column, message) = at("SELECT 1;\n  SELECT\0;").unwrap_or_default();
        assert_eq!(
            (line, column, message.as_str()),
            (2, 9, "file contains a NUL byte")
        );
    }

    /// Comments directly above a statement attach to it; comments inside one do not.
    #[test]
    fn attaches_comments() {
        let sql = "-- a\nSELECT 1;\n-- b\n\n/* c */ -- d\nSELECT (\n-- e\n2);\n-- f\n";
        let parsed = parse("f.sql", sql, &LineIndex::new(sql));
        let above: Vec<_> = parsed
            .iter()
            .flat_map(|p| p.comments.iter().map(|c| (c.text, c.above)))
            .collect();
        assert_eq!(
            above,
            [
                ("-- a", Some(0)),
                ("-- b", Some(1)),
                ("-- d", Some(1)),
                ("-- e", None),
                ("-- f", None)
            ]
        );
    }
}
