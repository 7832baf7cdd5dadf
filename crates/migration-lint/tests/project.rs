//! The project's own migrations pass, and the docs cover every rule the code knows.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrobank_migration_lint::{Format, LintArgs, RUNBOOK, Rule, run};

fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Every migration in the repository is clean or carries reasoned ignores (what `make lint`
/// enforces). No migrations directory yet means zero files, which is clean.
#[test]
fn project_migrations_are_clean() -> Result<()> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"));
    if !dir.exists() {
        return Ok(());
    }
    let mut out = Vec::new();
    let code = run(
        &LintArgs {
            paths: vec![dir],
            format: Format::Text,
        },
        &mut out,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    Ok(())
}

/// GitHub's heading slug: lowercase, spaces to dashes, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every recipe link printed with a finding resolves to a heading in the runbook.
#[test]
fn runbook_has_an_anchor_for_every_rule() -> Result<()> {
    let path = repo_root().join(RUNBOOK);
    let runbook =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect();
    for rule in Rule::ALL {
        assert!(
            anchors.contains(&rule.anchor()),
            "{RUNBOOK} has no heading for #{}",
            rule.anchor()
        );
    }
    Ok(())
}

/// The crate README's rule table lists every rule.
#[test]
fn readme_lists_every_rule() -> Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    for rule in Rule::ALL {
        assert!(
            readme.contains(&format!("| {} | `{}` |", rule.code(), rule.name())),
            "README.md rule table lacks {rule}"
        );
    }
    Ok(())
}
