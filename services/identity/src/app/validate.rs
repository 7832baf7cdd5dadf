//! Field rules: usernames, emails, display names and the password policy.

use super::IdentityError;

/// Longest password accepted (characters); argon2 is fed the whole thing.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A few passwords so common that length alone does not save them.
const COMMON: &[&str] = &[
    "password1234",
    "passwordpassword",
    "123456789012",
    "qwertyuiopas",
    "letmeinletmein",
    "administrator",
    "ferrobank123",
];

/// 3 to 64 of lowercase letters, digits, '.', '_' and '-'.
pub fn username(value: &str) -> Result<(), IdentityError> {
    let ok = (3..=64).contains(&value.len())
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(IdentityError::invalid(
            "username",
            "must be 3 to 64 characters of a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

/// A plausible address: one '@', a non-empty local part, a dotted domain, no spaces.
pub fn email(field: &'static str, value: &str) -> Result<(), IdentityError> {
    let bad = || IdentityError::invalid(field, "must be an email address like name@example.com");
    if value.len() > 254 || value.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(())
}

/// Up to 128 characters, no control characters.
pub fn display_name(field: &'static str, value: &str) -> Result<(), IdentityError> {
    if value.chars().count() > 128 || value.chars().any(char::is_control) {
        return Err(IdentityError::invalid(
            field,
            "must be at most 128 characters without control characters",
        ));
    }
    Ok(())
}

/// The password policy (NIST 800-63B style: length, not trivially guessable, no
/// composition rules). The error names the rule broken.
pub fn password(
    field: &'static str,
    value: &str,
    min_chars: usize,
    username: &str,
) -> Result<(), IdentityError> {
    let weak = |rule: String| IdentityError::WeakPassword { field, rule };
    let chars = value.chars().count();
    if chars < min_chars {
        return Err(weak(format!("must be at least {min_chars} characters")));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(weak(format!(
            "must be at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    let lower = value.to_lowercase();
    if !username.is_empty() && lower.contains(&username.to_lowercase()) {
        return Err(weak("must not contain the username".to_owned()));
    }
    let mut distinct: Vec<char> = value.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err(weak("must use at least 4 different characters".to_owned()));
    }
    if COMMON.contains(&lower.as_str()) {
        return Err(weak("must not be a commonly used password".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each password rule refuses its case and names itself; a good password passes.
    #[test]
    fn password_rules_name_themselves() {
        let rule = |pw: &str| match password("password", pw, 12, "alice") {
            Err(IdentityError::WeakPassword { rule, .. }) => rule,
            other => panic!("{pw}: {other:?}"),
        };
        assert!(rule("short").contains("at least 12"));
        assert!(rule("xxalice-is-great").contains("username"));
        assert!(rule("abababababab").contains("4 different"));
        assert!(rule("Password1234").contains("commonly used"));
        assert!(password("password", "correct horse battery", 12, "alice").is_ok());
    }

    /// Usernames and emails follow the documented shapes.
    #[test]
    fn usernames_and_emails() {
        assert!(username("alice.b-1_x").is_ok());
        for bad in ["Al", "Alice", "a b c", &"x".repeat(65)] {
            assert!(username(bad).is_err(), "{bad}");
        }
        assert!(email("email", "a@b.co").is_ok());
        for bad in ["a", "@b.co", "a@b", "a@@b.co", "a b@c.de", "a@b.co."] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
    }
}
