//! migration-lint: an AST-based linter for Postgres migrations, run as a CI gate before
//! anything touches a database.
//!
//! Each file is parsed by the real Postgres parser (libpg_query through the `pg_query`
//! crate) and its statements are walked in order; no regular expression ever reads SQL.
//! Every rule has a stable code (`MIG001`), a kebab-case name, and a recipe in
//! `docs/runbooks/safe-migrations.md`. The `ferrobank lint-migrations` subcommand hosts the
//! CLI through [`LintArgs`] and [`run`].
//!
//! ```
//! let findings = ferrobank_migration_lint::lint_source(
//!     "V2__index.sql",
//!     "CREATE INDEX accounts_owner ON accounts (owner_id);",
//! )
//! .expect("valid SQL");
//! let codes: Vec<_> = findings.iter().map(|f| f.rule.code()).collect();
//! assert_eq!(codes, ["MIG001", "MIG015"]);
//! ```

mod check;
mod directive;
mod report;
mod rule;
mod source;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::SerializeStruct;

pub use rule::{RUNBOOK, Rule, UnknownRule};

use check::FileChecker;
use directive::Directive;
use source::LineIndex;

/// Arguments of `ferrobank lint-migrations`.
#[derive(clap::Args, Debug, Clone)]
pub struct LintArgs {
    /// Files or directories (recursing into *.sql), default "migrations"
    pub paths: Vec<PathBuf>,
    /// Output format: `text` for people, `json` for tools
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Output format of [`run`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `file:line:column: CODE name: message` plus the recipe link.
    #[default]
    Text,
    /// One JSON document: `{"files": n, "findings": [...], "errors": [...]}`.
    Json,
}

/// Exit code: no findings, no errors.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code: at least one finding.
pub const EXIT_FINDINGS: i32 = 1;
/// Exit code: a file could not be read or parsed (takes precedence over findings).
pub const EXIT_ERROR: i32 = 2;

/// One rule firing on one statement (or on one directive comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file, as given or found.
    pub path: String,
    /// 1-based line of the statement's first token (or of the directive comment).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub rule: Rule,
    /// One line naming the table, column or index.
    pub message: String,
}

impl Finding {
    /// The runbook link for this finding's rule.
    pub fn recipe(&self) -> String {
        self.rule.recipe()
    }
}

impl Serialize for Finding {
    /// `{path, line, column, code, name, message, recipe}`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Finding", 7)?;
        s.serialize_field("path", &self.path)?;
        s.serialize_field("line", &self.line)?;
        s.serialize_field("column", &self.column)?;
        s.serialize_field("code", self.rule.code())?;
        s.serialize_field("name", self.rule.name())?;
        s.serialize_field("message", &self.message)?;
        s.serialize_field("recipe", &self.recipe())?;
        s.end()
    }
}

/// The Postgres parser rejected a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{path}:{line}:{column}: parse error: {message}")]
pub struct ParseError {
    pub path: String,
    /// 1-based line where the parser gave up.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Byte offset where the parser gave up.
    pub offset: usize,
    /// libpg_query's message, e.g. `syntax error at or near "TABEL"`.
    pub message: String,
}

/// Why a file produced no findings at all.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl LintError {
    fn io(path: &Path, source: io::Error) -> Self {
        LintError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The result of linting a set of paths.
#[derive(Debug, Default)]
pub struct Report {
    /// Files read (parsed or not).
    pub files: usize,
    pub findings: Vec<Finding>,
    pub errors: Vec<LintError>,
}

impl Report {
    /// 2 if any file failed to read or parse, else 1 if anything fired, else 0.
    pub fn exit_code(&self) -> i32 {
        if !self.errors.is_empty() {
            EXIT_ERROR
        } else if !self.findings.is_empty() {
            EXIT_FINDINGS
        } else {
            EXIT_CLEAN
        }
    }
}

/// Runs the linter as the CLI does: lints `args.paths` (default `migrations`, where a
/// missing default directory means zero files), writes the report to `out`, and returns
/// the exit code: 0 clean, 1 findings, 2 parse or I/O error.
pub fn run(args: &LintArgs, out: &mut dyn io::Write) -> i32 {
    let report = if args.paths.is_empty() {
        let default = PathBuf::from("migrations");
        if default.exists() {
            lint_paths(&[default])
        } else {
            Report::default()
        }
    } else {
        lint_paths(&args.paths)
    };
    let written = match args.format {
        Format::Text => report::text(&report, out),
        Format::Json => report::json(&report, out),
    };
    match written {
        Ok(()) => report.exit_code(),
        Err(_) => EXIT_ERROR,
    }
}

/// Lints files and directories (recursing into `*.sql`, in path order). A path that does
/// not exist is an error; a file named explicitly is linted whatever its extension.
pub fn lint_paths(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for path in paths {
        let files = match collect(path) {
            Ok(files) => files,
            Err(e) => {
                report.errors.push(e);
                continue;
            }
        };
        for file in files {
            report.files += 1;
            match lint_file(&file) {
                Ok(findings) => report.findings.extend(findings),
                Err(e) => report.errors.push(e),
            }
        }
    }
    report
}

/// Reads and lints one file.
pub fn lint_file(path: &Path) -> Result<Vec<Finding>, LintError> {
    let sql = std::fs::read_to_string(path).map_err(|e| LintError::io(path, e))?;
    Ok(lint_source(&path.display().to_string(), &sql)?)
}

fn collect(path: &Path) -> Result<Vec<PathBuf>, LintError> {
    let meta = std::fs::metadata(path).map_err(|e| LintError::io(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| LintError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LintError::io(&dir, e))?;
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "sql") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// An ignore directive attached to a statement, and which of its rules fired.
struct Ignore {
    line: usize,
    column: usize,
    rules: Vec<Rule>,
    used: Vec<bool>,
}

/// Lints one migration's text. `path` is only used to label findings.
///
/// Returns the findings sorted by position, or the parser's error with its position.
pub fn lint_source(path: &str, sql: &str) -> Result<Vec<Finding>, ParseError> {
    let lines = LineIndex::new(sql);
    let parsed = source::parse(path, sql, &lines)?;
    let finding = |(line, column): (usize, usize), rule: Rule, message: String| Finding {
        path: path.to_owned(),
        line,
        column,
        rule,
        message,
    };

    let mut findings = Vec::new();
    let mut ignores: HashMap<usize, Vec<Ignore>> = HashMap::new();
    let mut no_transaction = false;
    for comment in &parsed.comments {
        let pos = lines.position(comment.start);
        if lines.starts_line(comment.start) && directive::is_no_transaction_marker(comment.text) {
            no_transaction = true;
        }
        match directive::parse(comment.text) {
            Directive::None => {}
            Directive::Malformed(why) => findings.push(finding(
                pos,
                Rule::MalformedDirective,
                format!("malformed migration-lint directive: {why}"),
            )),
            Directive::MissingReason { rules } => findings.push(finding(
                pos,
                Rule::IgnoreWithoutReason,
                format!(
                    "ignore={} has no reason: add reason=\"why this is safe here\"",
                    rules.join(",")
                ),
            )),
            Directive::Ignore { rules, .. } => match (directive::resolve(&rules), comment.above) {
                (Err(why), _) => findings.push(finding(
                    pos,
                    Rule::IgnoreUnknownRule,
                    format!("ignore names {why}"),
                )),
                (Ok(_), None) => findings.push(finding(
                    pos,
                    Rule::UnusedIgnore,
                    format!(
                        "ignore={} is not directly above a statement, so it applies to nothing",
                        rules.join(",")
                    ),
                )),
                (Ok(resolved), Some(stmt)) => ignores.entry(stmt).or_default().push(Ignore {
                    line: pos.0,
                    column: pos.1,
                    used: vec![false; resolved.len()],
                    rules: resolved,
                }),
            },
        }
    }

    let mut checker = FileChecker::new(no_transaction, parsed.statements.len());
    for (i, stmt) in parsed.statements.iter().enumerate() {
        let pos = lines.position(stmt.start);
        for hit in checker.check(&stmt.node, pos.0) {
            let suppressed = ignores.get_mut(&i).is_some_and(|list| {
                list.iter_mut()
                    .any(|ig| match ig.rules.iter().position(|r| *r == hit.rule) {
                        Some(k) => {
                            ig.used[k] = true;
                            true
                        }
                        None => false,
                    })
            });
            if !suppressed {
                findings.push(finding(pos, hit.rule, hit.message));
            }
        }
    }

    for (stmt, list) in &ignores {
        let stmt_line = parsed
            .statements
            .get(*stmt)
            .map_or(0, |s| lines.position(s.start).0);
        for ig in list {
            for (rule, used) in ig.rules.iter().zip(&ig.used) {
                if !used {
                    findings.push(finding(
                        (ig.line, ig.column),
                        Rule::UnusedIgnore,
                        format!(
                            "ignore={} matched no finding on the statement at line {stmt_line}",
                            rule.code()
                        ),
                    ));
                }
            }
        }
    }

    findings.sort_by_key(|a| (a.line, a.column, a.rule));
    Ok(findings)
}
