//! A Postgres connection URL whose password never reaches `Debug` or a log line.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

/// A validated Postgres URL (`postgres://user:pw@host:port/db`) or key-value string.
#[derive(Clone)]
pub struct PgUrl {
    raw: SecretString,
    config: tokio_postgres::Config,
}

impl PgUrl {
    /// The parsed connection settings (the password included; keep them out of logs).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The URL text, password included; for child processes such as pg_dump, never logs.
    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }

    /// A safe description: user, host, port and database, no password.
    pub fn redacted(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgres://{}@{}:{}/{}",
            self.config.get_user().unwrap_or(""),
            host,
            port,
            self.config.get_dbname().unwrap_or("")
        )
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({})", self.redacted())
    }
}

impl FromStr for PgUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("empty".to_owned());
        }
        let config = tokio_postgres::Config::from_str(s)
            // The parser's message never quotes the input, so no password leaks here.
            .map_err(|e| format!("not a Postgres URL ({e})"))?;
        if config.get_hosts().is_empty() {
            return Err("missing host".to_owned());
        }
        if config.get_dbname().is_none() {
            return Err("missing database name".to_owned());
        }
        if config.get_user().is_none() {
            return Err("missing user".to_owned());
        }
        Ok(Self {
            raw: SecretString::from(s.to_owned()),
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug output never carries the password.
    #[test]
    fn debug_hides_password() {
        let url: PgUrl = "postgres://ledger:hunter2@127.0.0.1:5432/ledger"
            .parse()
            .unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ledger@127.0.0.1:5432/ledger"), "{shown}");
    }

    /// Garbage is refused with a reason and without echoing the input.
    #[test]
    fn rejects_garbage() {
        let err = "postgres://u:secretpw@".parse::<PgUrl>().unwrap_err();
        assert!(!err.contains("secretpw"), "{err}");
        assert!("not a url at all".parse::<PgUrl>().is_err());
        assert!("postgres://u@127.0.0.1:5432".parse::<PgUrl>().is_err());
    }
}
