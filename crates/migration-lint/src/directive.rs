//! The escape syntax: a strict parser for one `--` comment's text.
//!
//! ```sql
//! -- migration-lint: ignore=MIG001 reason="table holds < 1k rows; see ticket FB-12"
//! -- migration-lint: ignore=MIG007,MIG015 reason="both fire on the same statement"
//! ```
//!
//! This reads comments the Postgres scanner has already isolated; it never looks at SQL.
//! Anything that starts with `migration-lint` but does not follow the grammar is an error,
//! so a typo cannot silently disable a rule.

use crate::rule::Rule;

/// What one comment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// Not addressed to this linter.
    None,
    /// A well-formed ignore: rules (as written) and a non-empty reason.
    Ignore {
        /// The rules exactly as spelled in the comment (code or name).
        rules: Vec<String>,
        /// Trimmed, never empty.
        reason: String,
    },
    /// `ignore=` present but `reason="…"` missing or blank.
    MissingReason {
        /// The rules exactly as spelled in the comment.
        rules: Vec<String>,
    },
    /// Starts with `migration-lint` but does not parse; the string says why.
    Malformed(String),
}

/// The prefix that makes a comment a directive.
const PREFIX: &str = "migration-lint";

/// Parses the full text of a `--` comment token (including the dashes).
pub fn parse(comment: &str) -> Directive {
    let Some(body) = comment.strip_prefix("--") else {
        return Directive::None;
    };
    let body = body.trim();
    let Some(rest) = body.strip_prefix(PREFIX) else {
        return Directive::None;
    };
    let Some(rest) = rest.strip_prefix(':') else {
        return Directive::Malformed(format!("expected `{PREFIX}:`"));
    };
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix("ignore=") else {
        return Directive::Malformed(
            "expected `ignore=CODE reason=\"…\"` after `migration-lint:`".into(),
        );
    };

    let codes_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (codes, rest) = rest.split_at(codes_end);
    let mut rules = Vec::new();
    for code in codes.split(',') {
        if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Directive::Malformed(format!(
                "bad rule list {codes:?}: expected codes like MIG001, comma-separated, no spaces"
            ));
        }
        rules.push(code.to_owned());
    }

    let rest = rest.trim();
    if rest.is_empty() {
        return Directive::MissingReason { rules };
    }
    let Some(quoted) = rest.strip_prefix("reason=") else {
        return Directive::Malformed(format!("expected `reason=\"…\"`, found {rest:?}"));
    };
    let Some(reason) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) else {
        return Directive::Malformed(
            "the reason must be double-quoted and end the comment: reason=\"…\"".into(),
        );
    };
    let reason = reason.trim();
    if reason.is_empty() {
        return Directive::MissingReason { rules };
    }
    Directive::Ignore {
        rules,
        reason: reason.to_owned(),
    }
}

/// Resolves the rules an ignore names: the ignorable rules, or the first bad spelling.
pub fn resolve(rules: &[String]) -> Result<Vec<Rule>, String> {
    rules
        .iter()
        .map(|spelled| match spelled.parse::<Rule>() {
            Ok(rule) if rule.is_ignorable() => Ok(rule),
            Ok(rule) => Err(format!("{}, which cannot be ignored", rule.code())),
            Err(_) => Err(format!("unknown rule {spelled:?}")),
        })
        .collect()
}

/// Whether a `--` comment is refinery's file-level `refinery:noTransaction` annotation.
///
/// Mirrors refinery's own pattern, `^[-]{2,}[\s]?(refinery:noTransaction)$`, applied to a
/// whole line: two or more dashes, at most one whitespace character, the word, nothing
/// after it. The caller checks that the comment starts its line.
pub fn is_no_transaction_marker(comment: &str) -> bool {
    let comment = comment.strip_suffix('\r').unwrap_or(comment);
    let rest = comment.trim_start_matches('-');
    if comment.len() - rest.len() < 2 {
        return false;
    }
    let mut chars = rest.chars();
    let rest = match chars.next() {
        Some(c) if c.is_whitespace() => chars.as_str(),
        _ => rest,
    };
    rest == "refinery:noTransaction"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(rules: &[&str], reason: &str) -> Directive {
        Directive::Ignore {
            rules: rules.iter().map(|s| (*s).to_owned()).collect(),
            reason: reason.to_owned(),
        }
    }

    /// The documented forms parse, including several codes and quotes inside the reason.
    #[test]
    fn parses_well_formed_ignores() {
        assert_eq!(
            parse(r#"-- migration-lint: ignore=MIG001 reason="tiny table""#),
            ignore(&["MIG001"], "tiny table")
        );
        assert_eq!(
            parse(r#"--migration-lint:ignore=MIG001,drop-column reason=" says "hi" ""#),
            ignore(&["MIG001", "drop-column"], r#"says "hi""#)
        );
    }

    /// A missing or blank reason is its own outcome, not a silent ignore.
    #[test]
    fn reason_is_mandatory() {
        let rules = vec!["MIG001".to_owned()];
        assert_eq!(
            parse("-- migration-lint: ignore=MIG001"),
            Directive::MissingReason {
                rules: rules.clone()
            }
        );
        assert_eq!(
            parse(r#"-- migration-lint: ignore=MIG001 reason="  ""#),
            Directive::MissingReason { rules }
        );
    }

    /// Near misses are malformed, and ordinary comments are not directives.
    #[test]
    fn rejects_near_misses() {
        for text in [
            "-- migration-lint ignore=MIG001 reason=\"x\"",
            "-- migration-lint: ignor=MIG001 reason=\"x\"",
            "-- migration-lint: ignore=MIG001, MIG002 reason=\"x\"",
            "-- migration-lint: ignore=MIG001 because=\"x\"",
            "-- migration-lint: ignore=MIG001 reason=x",
            "-- migration-lint: ignore=MIG001 reason=\"x\" trailing",
            "-- migration-lint: ignore= reason=\"x\"",
        ] {
            assert!(matches!(parse(text), Directive::Malformed(_)), "{text}");
        }
        assert_eq!(parse("-- add the index"), Directive::None);
        assert_eq!(parse("-- refinery:noTransaction"), Directive::None);
    }

    /// Codes resolve case-insensitively; directive rules cannot be ignored.
    #[test]
    fn resolves_rules() {
        let spelled = |s: &[&str]| s.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            resolve(&spelled(&["mig001", "drop-column"])),
            Ok(vec![Rule::CreateIndexNonConcurrently, Rule::DropColumn])
        );
        assert!(resolve(&spelled(&["MIG999"])).is_err());
        assert!(resolve(&spelled(&["MIG902"])).is_err());
    }

    /// The marker matches refinery's pattern and nothing looser.
    #[test]
    fn no_transaction_marker() {
        assert!(is_no_transaction_marker("-- refinery:noTransaction"));
        assert!(is_no_transaction_marker("--refinery:noTransaction"));
        assert!(is_no_transaction_marker("---- refinery:noTransaction\r"));
        assert!(!is_no_transaction_marker("-  refinery:noTransaction"));
        assert!(!is_no_transaction_marker("--  refinery:noTransaction"));
        assert!(!is_no_transaction_marker("-- refinery:notransaction"));
        assert!(!is_no_transaction_marker(
            "-- refinery:noTransaction please"
        ));
    }
}
