//! The rule catalogue: stable codes, kebab-case names and runbook anchors.
//!
//! **Invariant:** a code is never reused or renumbered once released; retired rules keep
//! their number. Every rule has a section in `docs/runbooks/safe-migrations.md` whose
//! heading is `### <CODE> <name>`, so its anchor is `<code lowercased>-<name>`
//! (a test checks the runbook against [`Rule::ALL`]).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where the runbook lives, relative to the repository root.
pub const RUNBOOK: &str = "docs/runbooks/safe-migrations.md";

macro_rules! rules {
    ($($variant:ident => $code:literal, $name:literal, $summary:literal;)*) => {
        /// One lint rule. Codes `MIG0xx` judge statements; codes `MIG9xx` judge the
        /// `-- migration-lint:` directives themselves and cannot be ignored.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $(
                #[doc = $summary]
                $variant,
            )*
        }

        impl Rule {
            /// Every rule, in code order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),*];

            /// The stable code, e.g. `MIG001`.
            pub fn code(self) -> &'static str {
                match self { $(Rule::$variant => $code),* }
            }

            /// The stable kebab-case name, e.g. `create-index-non-concurrently`.
            pub fn name(self) -> &'static str {
                match self { $(Rule::$variant => $name),* }
            }

            /// One line saying what fires the rule.
            pub fn summary(self) -> &'static str {
                match self { $(Rule::$variant => $summary),* }
            }
        }
    };
}

rules! {
    CreateIndexNonConcurrently => "MIG001", "create-index-non-concurrently",
        "CREATE INDEX on an existing table without CONCURRENTLY";
    ConcurrentlyNotAlone => "MIG002", "concurrently-not-alone",
        "a CONCURRENTLY statement in a file that has other statements";
    ConcurrentlyInTransaction => "MIG003", "concurrently-in-transaction",
        "a CONCURRENTLY statement in a file without `-- refinery:noTransaction`, or after BEGIN";
    DropIndexNonConcurrently => "MIG004", "drop-index-non-concurrently",
        "DROP INDEX (of an index not created in this file) without CONCURRENTLY";
    AddColumnVolatileDefault => "MIG005", "add-column-volatile-default",
        "ADD COLUMN whose value is computed per row (volatile default, serial, identity, stored)";
    AddColumnNotNullWithoutDefault => "MIG006", "add-column-not-null-without-default",
        "ADD COLUMN ... NOT NULL without a DEFAULT on an existing table";
    AlterColumnType => "MIG007", "alter-column-type",
        "ALTER COLUMN ... TYPE on an existing table";
    SetNotNullWithoutCheck => "MIG008", "set-not-null-without-check",
        "SET NOT NULL with no VALIDATE CONSTRAINT on the same table earlier in the file";
    ConstraintWithoutNotValid => "MIG009", "constraint-without-not-valid",
        "FOREIGN KEY or CHECK constraint added to an existing table without NOT VALID";
    UniqueWithoutIndex => "MIG010", "unique-without-index",
        "UNIQUE / PRIMARY KEY / EXCLUDE constraint added to an existing table without USING INDEX";
    DropColumn => "MIG011", "drop-column",
        "DROP COLUMN on an existing table";
    DropTable => "MIG012", "drop-table",
        "DROP TABLE of an existing table";
    RenameColumn => "MIG013", "rename-column",
        "RENAME COLUMN on an existing table";
    RenameTable => "MIG014", "rename-table",
        "RENAME of an existing table";
    MissingLockTimeout => "MIG015", "missing-lock-timeout",
        "a SHARE-or-stronger lock on an existing table with no non-zero SET lock_timeout first";
    VacuumFull => "MIG016", "vacuum-full",
        "VACUUM FULL";
    Cluster => "MIG017", "cluster",
        "CLUSTER";
    Truncate => "MIG018", "truncate",
        "TRUNCATE of an existing table";
    ReindexNonConcurrently => "MIG019", "reindex-non-concurrently",
        "REINDEX without CONCURRENTLY";
    TransactionControl => "MIG020", "transaction-control",
        "BEGIN / COMMIT / ROLLBACK in a file that refinery already runs in a transaction";
    ValidateInSameTransaction => "MIG021", "validate-in-same-transaction",
        "VALIDATE CONSTRAINT of a constraint added NOT VALID in the same file";
    IgnoreWithoutReason => "MIG900", "ignore-without-reason",
        "an ignore directive with a missing or empty reason";
    IgnoreUnknownRule => "MIG901", "ignore-unknown-rule",
        "an ignore directive naming an unknown or non-ignorable rule";
    UnusedIgnore => "MIG902", "unused-ignore",
        "an ignore directive that suppressed nothing, or is not directly above a statement";
    MalformedDirective => "MIG903", "malformed-directive",
        "a `-- migration-lint:` comment that does not parse";
}

impl Rule {
    /// The anchor of this rule's section in the runbook (GitHub's heading slug).
    pub fn anchor(self) -> String {
        format!("{}-{}", self.code().to_ascii_lowercase(), self.name())
    }

    /// The link printed with every finding: `docs/runbooks/safe-migrations.md#<anchor>`.
    pub fn recipe(self) -> String {
        format!("{RUNBOOK}#{}", self.anchor())
    }

    /// Whether an ignore directive may name this rule. The directive rules may not:
    /// they guard the escape hatch itself.
    pub fn is_ignorable(self) -> bool {
        !matches!(
            self,
            Rule::IgnoreWithoutReason
                | Rule::IgnoreUnknownRule
                | Rule::UnusedIgnore
                | Rule::MalformedDirective
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// A rule code or name that matches no rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rule {0:?}")]
pub struct UnknownRule(pub String);

impl FromStr for Rule {
    type Err = UnknownRule;

    /// Accepts the code (`MIG001`, any case) or the name (`create-index-non-concurrently`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::ALL
            .iter()
            .copied()
            .find(|r| r.code().eq_ignore_ascii_case(s) || r.name() == s)
            .ok_or_else(|| UnknownRule(s.to_owned()))
    }
}

impl Serialize for Rule {
    /// Serialized as its code; findings carry the name separately.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes and names are unique, so an ignore can never mean two rules.
    #[test]
    fn codes_and_names_are_unique() {
        let mut codes: Vec<_> = Rule::ALL.iter().map(|r| r.code()).collect();
        let mut names: Vec<_> = Rule::ALL.iter().map(|r| r.name()).collect();
        codes.sort_unstable();
        names.sort_unstable();
        codes.dedup();
        names.dedup();
        assert_eq!(codes.len(), Rule::ALL.len());
        assert_eq!(names.len(), Rule::ALL.len());
    }

    /// Both spellings parse back to the same rule.
    #[test]
    fn parses_code_and_name() {
        for rule in Rule::ALL {
            assert_eq!(rule.code().parse::<Rule>(), Ok(*rule));
            assert_eq!(rule.name().parse::<Rule>(), Ok(*rule));
        }
        assert_eq!(
            "mig001".parse::<Rule>(),
            Ok(Rule::CreateIndexNonConcurrently)
        );
        assert!("MIG999".parse::<Rule>().is_err());
    }
}
