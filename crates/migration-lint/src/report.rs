//! Renders a [`Report`] for people (text) or tools (JSON).

use std::io;

use serde::Serialize;

use crate::{LintError, Report};

/// `path:line:column: CODE name: message`, the recipe link under it, then a summary line.
pub fn text(report: &Report, out: &mut dyn io::Write) -> io::Result<()> {
    for error in &report.errors {
        match error {
            LintError::Parse(e) => writeln!(out, "{e}")?,
            LintError::Io { .. } => writeln!(out, "error: {error}")?,
        }
    }
    for f in &report.findings {
        writeln!(
            out,
            "{}:{}:{}: {} {}: {}",
            f.path,
            f.line,
            f.column,
            f.rule.code(),
            f.rule.name(),
            f.message
        )?;
        writeln!(out, "    recipe: {}", f.recipe())?;
    }
    writeln!(
        out,
        "migration-lint: {} finding(s), {} error(s) in {} file(s)",
        report.findings.len(),
        report.errors.len(),
        report.files
    )
}

#[derive(Serialize)]
struct JsonError<'a> {
    kind: &'static str,
    path: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    files: usize,
    findings: &'a [crate::Finding],
    errors: Vec<JsonError<'a>>,
}

/// `{"files": n, "findings": [...], "errors": [...]}` followed by a newline.
pub fn json(report: &Report, out: &mut dyn io::Write) -> io::Result<()> {
    let errors = report
        .errors
        .iter()
        .map(|e| match e {
            LintError::Parse(p) => JsonError {
                kind: "parse",
                path: &p.path,
                line: Some(p.line),
                column: Some(p.column),
                message: p.message.clone(),
            },
            LintError::Io { path, source } => JsonError {
                kind: "io",
                path,
                line: None,
                column: None,
                message: source.to_string(),
            },
        })
        .collect();
    let doc = JsonReport {
        files: report.files,
        findings: &report.findings,
        errors,
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
