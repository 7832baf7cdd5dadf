//! Fixture migrations: every rule has a `bad/` file that fires exactly that rule and a
//! `good/` twin (the runbook's recipe) that is clean. File names start with the rule code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ferrobank_migration_lint::{Rule, lint_source};

fn fixtures(kind: &str) -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    Ok(files)
}

/// The rule a fixture is about, from its `MIGnnn-` file-name prefix.
fn rule_of(path: &Path) -> Result<Rule> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("fixture name is not UTF-8")?;
    let code = name.split('-').next().unwrap_or_default();
    code.parse::<Rule>()
        .with_context(|| format!("{name}: file name must start with a rule code"))
}

/// Each bad fixture fires its own rule and no other.
#[test]
fn bad_fixtures_fire_exactly_their_rule() -> Result<()> {
    for path in fixtures("bad")? {
        let expected = rule_of(&path)?;
        let sql = std::fs::read_to_string(&path)?;
        let findings = lint_source(&path.display().to_string(), &sql)?;
        let fired: BTreeSet<Rule> = findings.iter().map(|f| f.rule).collect();
        if fired != BTreeSet::from([expected]) {
            bail!(
                "{}: expected only {expected}, got {:#?}",
                path.display(),
                findings
            );
        }
    }
    Ok(())
}

/// Each good fixture (the safe recipe) is clean.
#[test]
fn good_fixtures_are_clean() -> Result<()> {
    for path in fixtures("good")? {
        rule_of(&path)?;
        let sql = std::fs::read_to_string(&path)?;
        let findings = lint_source(&path.display().to_string(), &sql)?;
        if !findings.is_empty() {
            bail!(
                "{}: expected no findings, got {:#?}",
                path.display(),
                findings
            );
        }
    }
    Ok(())
}

/// No rule ships without a firing fixture and a clean twin.
#[test]
fn every_rule_has_a_bad_and_a_good_fixture() -> Result<()> {
    let covered = |kind: &str| -> Result<BTreeSet<Rule>> {
        fixtures(kind)?.iter().map(|p| rule_of(p)).collect()
    };
    let all: BTreeSet<Rule> = Rule::ALL.iter().copied().collect();
    assert_eq!(covered("bad")?, all, "rules without a bad fixture");
    assert_eq!(covered("good")?, all, "rules without a good fixture");
    Ok(())
}
