//! Behaviour beyond single rules: escapes, positions, state carried through a file,
//! exit codes, and the two output formats.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrobank_migration_lint::{Finding, Format, LintArgs, Rule, lint_source, run};

fn lint(sql: &str) -> Result<Vec<Finding>> {
    Ok(lint_source("V1__test.sql", sql)?)
}

fn codes(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.rule.code()).collect()
}

fn fixtures(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

/// Runs the CLI entry point and returns (exit code, output).
fn cli(paths: Vec<PathBuf>, format: Format) -> Result<(i32, String)> {
    let mut out = Vec::new();
    let code = run(&LintArgs { paths, format }, &mut out);
    Ok((code, String::from_utf8(out)?))
}

fn scratch_file(name: &str, sql: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("migration-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, sql)?;
    Ok(path)
}

/// An ignore with a reason silences exactly the named rule on the next statement.
#[test]
fn ignore_with_reason_silences_the_next_statement_only() -> Result<()> {
    let findings = lint(
        "SET lock_timeout = '5s';\n\
         -- migration-lint: ignore=MIG011 reason=\"unused since PR #1\"\n\
         ALTER TABLE a DROP COLUMN x;\n\
         ALTER TABLE a DROP COLUMN y;\n",
    )?;
    assert_eq!(codes(&findings), ["MIG011"]);
    assert_eq!(findings[0].line, 4);
    Ok(())
}

/// An ignore without a reason is an error and silences nothing.
#[test]
fn ignore_without_reason_is_an_error_and_silences_nothing() -> Result<()> {
    let findings = lint(
        "SET lock_timeout = '5s';\n\
         -- migration-lint: ignore=MIG011\n\
         ALTER TABLE a DROP COLUMN x;\n",
    )?;
    assert_eq!(codes(&findings), ["MIG900", "MIG011"]);
    assert_eq!(findings[0].line, 2);
    assert_eq!(findings[1].line, 3);
    Ok(())
}

/// An ignore naming a rule that did not fire is reported, so stale ignores do not pile up.
#[test]
fn unused_ignore_is_reported() -> Result<()> {
    let findings = lint(
        "SET lock_timeout = '5s';\n\
         -- migration-lint: ignore=MIG011,MIG013 reason=\"cleanup\"\n\
         ALTER TABLE a DROP COLUMN x;\n\
         -- migration-lint: ignore=MIG001 reason=\"nothing below\"\n",
    )?;
    assert_eq!(codes(&findings), ["MIG902", "MIG902"]);
    assert!(
        findings[0].message.contains("ignore=MIG013"),
        "{findings:?}"
    );
    assert!(
        findings[1]
            .message
            .contains("not directly above a statement")
    );
    Ok(())
}

/// Findings point at the statement's first token, after leading comments and blank lines.
#[test]
fn lines_point_at_the_first_token() -> Result<()> {
    let findings = lint("-- header\n\n/* block\n comment */\n   -- more\n   TRUNCATE sessions;\n")?;
    assert_eq!(codes(&findings), ["MIG015", "MIG018"]);
    assert!(findings.iter().all(|f| (f.line, f.column) == (6, 4)));
    Ok(())
}

/// Messages name the table and column, and links point into the runbook.
#[test]
fn messages_name_the_object_and_link_the_recipe() -> Result<()> {
    let findings = lint("SET lock_timeout = '1s'; ALTER TABLE ledger.entries DROP COLUMN memo;")?;
    assert_eq!(findings.len(), 1);
    assert!(findings[0].message.contains("ledger.entries.memo"));
    assert_eq!(
        findings[0].recipe(),
        "docs/runbooks/safe-migrations.md#mig011-drop-column"
    );
    Ok(())
}

/// A table created earlier in the file is exempt from every existing-table rule.
#[test]
fn tables_created_in_the_same_file_are_exempt() -> Result<()> {
    let findings = lint(
        "CREATE TABLE t (id bigint PRIMARY KEY, a text);\n\
         CREATE INDEX t_a ON t (a);\n\
         ALTER TABLE t ADD COLUMN b uuid NOT NULL DEFAULT gen_random_uuid(),\n\
             ADD COLUMN c int NOT NULL, ALTER COLUMN a TYPE varchar(10),\n\
             ADD CONSTRAINT t_a_key UNIQUE (a), ADD CONSTRAINT t_c CHECK (c > 0);\n\
         ALTER TABLE t ALTER COLUMN a SET NOT NULL;\n\
         ALTER TABLE t RENAME COLUMN a TO aa;\n\
         TRUNCATE t;\n\
         CREATE TABLE u AS SELECT 1 AS x;\n\
         CREATE INDEX u_x ON u (x);\n",
    )?;
    assert_eq!(codes(&findings), Vec::<&str>::new());
    // The same statements against a table that already exists fire.
    let findings = lint("CREATE INDEX t_a ON t (a);")?;
    assert_eq!(codes(&findings), ["MIG001", "MIG015"]);
    Ok(())
}

/// `SET lock_timeout` counts only while non-zero and not reset.
#[test]
fn lock_timeout_state_follows_the_file() -> Result<()> {
    let findings = lint(
        "SET lock_timeout TO '2s';\n\
         ALTER TABLE a ADD COLUMN b text;\n\
         SET lock_timeout = '0ms';\n\
         ALTER TABLE a ADD COLUMN c text;\n\
         SET LOCAL lock_timeout = 1500;\n\
         ALTER TABLE a ADD COLUMN d text;\n\
         RESET ALL;\n\
         ALTER TABLE a ADD COLUMN e text;\n\
         ALTER TABLE a VALIDATE CONSTRAINT a_b_check;\n",
    )?;
    let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
    assert_eq!(codes(&findings), ["MIG015", "MIG015"]);
    assert_eq!(lines, [4, 8]);
    Ok(())
}

/// CONCURRENTLY after an explicit BEGIN is reported even in a noTransaction file.
#[test]
fn concurrently_after_begin() -> Result<()> {
    let findings = lint(
        "-- refinery:noTransaction\nBEGIN;\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;\n",
    )?;
    let rules: Vec<Rule> = findings.iter().map(|f| f.rule).collect();
    assert!(
        rules.contains(&Rule::ConcurrentlyInTransaction),
        "{findings:?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains("BEGIN on line 2"))
    );
    Ok(())
}

/// The marker only counts as a whole-line comment, as refinery reads it.
#[test]
fn no_transaction_marker_must_start_its_line() -> Result<()> {
    let findings = lint("CREATE INDEX CONCURRENTLY i ON t (a) -- refinery:noTransaction\n;")?;
    assert_eq!(codes(&findings), ["MIG003"]);
    Ok(())
}

/// A syntax error exits 2 and reports the parser's message at the offending token.
#[test]
fn parse_error_exits_2_with_message_and_position() -> Result<()> {
    let sql = "SET lock_timeout = '5s';\n\
               ALTER TABLE accounts\n    ADD COLUMN nickname text,\n    ADD COLUMN;\n";
    let err = lint_source("V9__broken.sql", sql)
        .err()
        .context("expected a parse error")?;
    assert_eq!((err.line, err.column), (4, 15));
    assert_eq!(err.message, "syntax error at or near \";\"");

    let path = scratch_file("V9__broken.sql", sql)?;
    let (code, out) = cli(vec![path.clone()], Format::Text)?;
    assert_eq!(code, 2);
    assert!(
        out.contains(&format!(
            "{}:4:15: parse error: syntax error at or near \";\"",
            path.display()
        )),
        "{out}"
    );
    Ok(())
}

/// A parse error wins over findings in other files, and every file is still linted.
#[test]
fn parse_error_takes_precedence_over_findings() -> Result<()> {
    let broken = scratch_file("V10__broken.sql", "CREATE TABEL x (id int);")?;
    let bad = fixtures("bad").join("MIG018-truncate.sql");
    let (code, out) = cli(vec![broken, bad], Format::Text)?;
    assert_eq!(code, 2);
    assert!(out.contains("syntax error at or near \"TABEL\""), "{out}");
    assert!(out.contains("MIG018 truncate"), "{out}");
    Ok(())
}

/// A path that does not exist is an error, not an empty (passing) run.
#[test]
fn missing_explicit_path_is_an_error() -> Result<()> {
    let (code, out) = cli(vec![PathBuf::from("/nonexistent/migrations")], Format::Text)?;
    assert_eq!(code, 2);
    assert!(out.contains("/nonexistent/migrations"), "{out}");
    Ok(())
}

/// Directories are searched recursively: bad fixtures exit 1, good ones exit 0.
#[test]
fn exit_codes_for_directories() -> Result<()> {
    let (code, out) = cli(vec![fixtures("bad")], Format::Text)?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "recipe: docs/runbooks/safe-migrations.md#mig001-create-index-non-concurrently"
        )
    );
    let (code, out) = cli(vec![fixtures("good")], Format::Text)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 finding(s), 0 error(s)"), "{out}");
    Ok(())
}

/// `--format json` is one parseable document with stable field names.
#[test]
fn json_output_parses() -> Result<()> {
    let broken = scratch_file("V11__broken.sql", "ALTER TABLE;")?;
    let (code, out) = cli(
        vec![
            fixtures("bad").join("MIG001-create-index-non-concurrently.sql"),
            broken,
        ],
        Format::Json,
    )?;
    assert_eq!(code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(doc["files"], 2);
    let finding = &doc["findings"][0];
    assert_eq!(finding["code"], "MIG001");
    assert_eq!(finding["name"], "create-index-non-concurrently");
    assert_eq!(finding["line"], 3);
    assert_eq!(finding["column"], 1);
    assert_eq!(
        finding["recipe"],
        "docs/runbooks/safe-migrations.md#mig001-create-index-non-concurrently"
    );
    assert!(
        finding["message"]
            .as_str()
            .is_some_and(|m| m.contains("accounts_owner_idx ON accounts"))
    );
    let error = &doc["errors"][0];
    assert_eq!(error["kind"], "parse");
    assert_eq!(error["line"], 1);
    assert_eq!(error["column"], 12);
    Ok(())
}
