//! Bad configuration stops the binary with a non-zero exit and one line naming the
//! setting (flag and environment variable), without echoing a secret.

use std::process::Command;

fn ferrobank(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrobank"));
    cmd.env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ferrobank");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line(stderr: &str) {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr:?}"
    );
}

/// An unparseable database URL names LEDGER_DATABASE_URL and does not print the password.
#[test]
fn unparseable_url_names_the_setting() {
    let (code, stderr) = ferrobank(
        &["ledger"],
        &[(
            "LEDGER_DATABASE_URL",
            "postgres://ledger:s3cr3t-pw@:notaport/ledger",
        )],
    );
    assert_ne!(code, 0);
    assert_one_line(&stderr);
    assert!(stderr.contains("LEDGER_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("--ledger-database-url"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-pw"), "password leaked: {stderr}");
}

/// A missing database URL (it carries the role's password: a required secret) is
/// named, flag and variable.
#[test]
fn missing_secret_names_the_setting() {
    let (code, stderr) = ferrobank(&["ledger"], &[]);
    assert_ne!(code, 0);
    assert_one_line(&stderr);
    assert!(stderr.contains("missing required setting"), "{stderr}");
    assert!(stderr.contains("LEDGER_DATABASE_URL"), "{stderr}");
}

/// A listen address that is not host:port is named.
#[test]
fn bad_listen_address_names_the_setting() {
    let (code, stderr) = ferrobank(&["gateway", "--gateway-addr", "localhost-ish"], &[]);
    assert_ne!(code, 0);
    assert_one_line(&stderr);
    assert!(stderr.contains("FERROBANK_GATEWAY_ADDR"), "{stderr}");
}

/// `migrate ledger` without any ledger URL says which setting is missing.
#[test]
fn migrate_without_url_names_the_setting() {
    let (code, stderr) = ferrobank(&["migrate", "ledger"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("LEDGER_DATABASE_URL"), "{stderr}");
}

/// A CORS origin with a path or a wildcard names the setting.
#[test]
fn bad_cors_origin_names_the_setting() {
    for origin in ["*", "https://app.example.com/path", "app.example.com"] {
        let (code, stderr) = ferrobank(&["gateway"], &[("FERROBANK_GATEWAY_CORS_ORIGINS", origin)]);
        assert_eq!(code, 2, "{origin}: {stderr}");
        assert_one_line(&stderr);
        assert!(stderr.contains("--gateway-cors-origins"), "{stderr}");
        assert!(stderr.contains("not an origin"), "{stderr}");
    }
}
