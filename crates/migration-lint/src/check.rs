//! The rules: a walk over one file's statements, in order, carrying what earlier
//! statements established (tables created here, `SET lock_timeout`, validated constraints).
//!
//! **Invariant:** a table created earlier in the same file is new — nobody else can hold a
//! lock on it or run code against it — so the existing-table rules skip it.

use std::fmt;

use pg_query::NodeEnum;
use pg_query::protobuf::{
    AlterTableCmd, AlterTableType, ColumnDef, ConstrType, Constraint, DefElem, DropStmt, IndexStmt,
    Node, ObjectType, RangeVar, ReindexObjectType, ReindexStmt, RenameStmt, TransactionStmtKind,
    TypeName, VariableSetKind, VariableSetStmt, a_const,
};

use crate::rule::Rule;

/// A rule firing on one statement, before ignores are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: Rule,
    pub message: String,
}

/// A (possibly schema-qualified) table name as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    schema: Option<String>,
    name: String,
}

impl Table {
    fn from_range_var(rv: &RangeVar) -> Self {
        Self {
            schema: (!rv.schemaname.is_empty()).then(|| rv.schemaname.clone()),
            name: rv.relname.clone(),
        }
    }

    /// From a qualified-name list (`DROP TABLE a.b`): the last part is the name.
    fn from_name_list(items: &[Node]) -> Option<Self> {
        let parts: Vec<&str> = items.iter().filter_map(string_value).collect();
        let (name, rest) = parts.split_last()?;
        Some(Self {
            schema: rest.last().map(|s| (*s).to_owned()),
            name: (*name).to_owned(),
        })
    }

    /// Same table, assuming an unqualified name may mean any schema on the search path.
    fn same_as(&self, other: &Table) -> bool {
        self.name == other.name
            && match (&self.schema, &other.schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The table-level locks the rules talk about (all conflict with ordinary writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lock {
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

impl fmt::Display for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lock::Share => "SHARE",
            Lock::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            Lock::Exclusive => "EXCLUSIVE",
            Lock::AccessExclusive => "ACCESS EXCLUSIVE",
        })
    }
}

/// What one statement did, for the file-level rules.
#[derive(Default)]
struct Effect {
    hits: Vec<Hit>,
    /// The strongest SHARE-or-stronger lock taken on an existing relation, and on what.
    strong_lock: Option<(Lock, String)>,
    /// Set for statements that refuse to run inside a transaction block (CONCURRENTLY).
    concurrent: Option<String>,
}

impl Effect {
    fn hit(&mut self, rule: Rule, message: String) {
        self.hits.push(Hit { rule, message });
    }

    fn lock(&mut self, lock: Lock, target: String) {
        if self
            .strong_lock
            .as_ref()
            .is_none_or(|(held, _)| lock > *held)
        {
            self.strong_lock = Some((lock, target));
        }
    }
}

/// State carried from one statement to the next within a file.
pub struct FileChecker {
    /// The file carries refinery's `-- refinery:noTransaction` annotation.
    no_transaction: bool,
    statement_count: usize,
    created_tables: Vec<Table>,
    created_indexes: Vec<String>,
    /// A non-zero `SET [LOCAL] lock_timeout` is in force.
    lock_timeout: bool,
    /// Line of an explicit BEGIN not yet closed by COMMIT/ROLLBACK.
    open_begin: Option<usize>,
    /// Tables with a validated CHECK (VALIDATE CONSTRAINT, or a CHECK added without NOT VALID).
    validated: Vec<Table>,
    /// Constraints added NOT VALID in this file.
    not_valid: Vec<(Table, String)>,
}

impl FileChecker {
    pub fn new(no_transaction: bool, statement_count: usize) -> Self {
        Self {
            no_transaction,
            statement_count,
            created_tables: Vec::new(),
            created_indexes: Vec::new(),
            lock_timeout: false,
            open_begin: None,
            validated: Vec::new(),
            not_valid: Vec::new(),
        }
    }

    fn is_new(&self, table: &Table) -> bool {
        self.created_tables.iter().any(|t| t.same_as(table))
    }

    fn is_existing(&self, rv: &RangeVar) -> bool {
        !self.is_new(&Table::from_range_var(rv))
    }

    /// Checks one statement, starting on `line`, and updates the file state.
    pub fn check(&mut self, node: &NodeEnum, line: usize) -> Vec<Hit> {
        let mut effect = Effect::default();
        match node {
            NodeEnum::IndexStmt(stmt) => self.create_index(stmt, &mut effect),
            NodeEnum::DropStmt(stmt) => self.drop(stmt, &mut effect),
            NodeEnum::AlterTableStmt(stmt) => {
                if stmt.objtype == ObjectType::ObjectTable as i32
                    && let Some(rv) = &stmt.relation
                {
                    self.alter_table(rv, &stmt.cmds, &mut effect);
                }
            }
            NodeEnum::RenameStmt(stmt) => self.rename(stmt, &mut effect),
            NodeEnum::CreateStmt(stmt) => {
                let Some(rv) = &stmt.relation else {
                    return effect.hits;
                };
                // Foreign keys lock the referenced table; PARTITION OF / INHERITS lock the parent.
                let constraints = stmt
                    .table_elts
                    .iter()
                    .filter_map(|n| match &n.node {
                        Some(NodeEnum::ColumnDef(col)) => Some(col.constraints.iter()),
                        _ => None,
                    })
                    .flatten()
                    .chain(stmt.table_elts.iter())
                    .chain(stmt.constraints.iter())
                    .filter_map(as_constraint);
                for c in constraints {
                    self.foreign_key_lock(c, &mut effect);
                }
                for parent in stmt.inh_relations.iter().filter_map(as_range_var) {
                    if self.is_existing(parent) {
                        effect.lock(
                            Lock::AccessExclusive,
                            Table::from_range_var(parent).to_string(),
                        );
                    }
                }
                self.created_tables.push(Table::from_range_var(rv));
            }
            NodeEnum::CreateTableAsStmt(stmt) => {
                if let Some(rv) = stmt.into.as_ref().and_then(|i| i.rel.as_ref()) {
                    self.created_tables.push(Table::from_range_var(rv));
                }
            }
            NodeEnum::TruncateStmt(stmt) => {
                for rv in stmt.relations.iter().filter_map(as_range_var) {
                    if self.is_existing(rv) {
                        let table = Table::from_range_var(rv);
                        effect.hit(
                            Rule::Truncate,
                            format!(
                                "TRUNCATE {table} takes ACCESS EXCLUSIVE and deletes every \
                                 row the running code expects"
                            ),
                        );
                        effect.lock(Lock::AccessExclusive, table.to_string());
                    }
                }
            }
            NodeEnum::VacuumStmt(stmt) => {
                let full = stmt.is_vacuumcmd
                    && stmt
                        .options
                        .iter()
                        .filter_map(as_def_elem)
                        .any(|d| d.defname == "full" && def_elem_enabled(d));
                if full {
                    let rels: Vec<&RangeVar> = stmt
                        .rels
                        .iter()
                        .filter_map(|n| match &n.node {
                            Some(NodeEnum::VacuumRelation(v)) => v.relation.as_ref(),
                            _ => None,
                        })
                        .collect();
                    let target = if rels.is_empty() {
                        Some("every table in the database".to_owned())
                    } else {
                        let existing: Vec<String> = rels
                            .iter()
                            .filter(|rv| self.is_existing(rv))
                            .map(|rv| Table::from_range_var(rv).to_string())
                            .collect();
                        (!existing.is_empty()).then(|| existing.join(", "))
                    };
                    if let Some(target) = target {
                        effect.hit(
                            Rule::VacuumFull,
                            format!(
                                "VACUUM FULL {target} rewrites under ACCESS EXCLUSIVE: \
                                 reads and writes wait for the whole rewrite"
                            ),
                        );
                        effect.lock(Lock::AccessExclusive, target);
                    }
                }
            }
            NodeEnum::ClusterStmt(stmt) => {
                let target = match &stmt.relation {
                    None => Some("every previously clustered table".to_owned()),
                    Some(rv) if self.is_existing(rv) => Some(Table::from_range_var(rv).to_string()),
                    Some(_) => None,
                };
                if let Some(target) = target {
                    effect.hit(
                        Rule::Cluster,
                        format!(
                            "CLUSTER {target} rewrites under ACCESS EXCLUSIVE: reads \
                             and writes wait for the whole rewrite"
                        ),
                    );
                    effect.lock(Lock::AccessExclusive, target);
                }
            }
            NodeEnum::ReindexStmt(stmt) => self.reindex(stmt, &mut effect),
            NodeEnum::TransactionStmt(stmt) => {
                let kind = stmt.kind;
                let word = match TransactionStmtKind::try_from(kind) {
                    Ok(TransactionStmtKind::TransStmtBegin) => Some("BEGIN"),
                    Ok(TransactionStmtKind::TransStmtStart) => Some("START TRANSACTION"),
                    Ok(TransactionStmtKind::TransStmtCommit) => Some("COMMIT"),
                    Ok(TransactionStmtKind::TransStmtRollback) => Some("ROLLBACK"),
                    Ok(TransactionStmtKind::TransStmtPrepare) => Some("PREPARE TRANSACTION"),
                    Ok(TransactionStmtKind::TransStmtCommitPrepared) => Some("COMMIT PREPARED"),
                    Ok(TransactionStmtKind::TransStmtRollbackPrepared) => Some("ROLLBACK PREPARED"),
                    _ => None,
                };
                if let Some(word) = word {
                    if !self.no_transaction {
                        effect.hit(
                            Rule::TransactionControl,
                            format!(
                                "{word} in a migration that refinery already runs in one \
                                 transaction: it ends or nests that transaction, so the \
                                 file and its schema-history row stop being atomic"
                            ),
                        );
                    }
                    self.open_begin = matches!(word, "BEGIN" | "START TRANSACTION").then_some(line);
                }
            }
            NodeEnum::VariableSetStmt(stmt) => self.variable_set(stmt),
            NodeEnum::LockStmt(stmt) => {
                let lock = match pg_query::LockMode::try_from(stmt.mode) {
                    Ok(pg_query::LockMode::ShareLock) => Some(Lock::Share),
                    Ok(pg_query::LockMode::ShareRowExclusiveLock) => Some(Lock::ShareRowExclusive),
                    Ok(pg_query::LockMode::ExclusiveLock) => Some(Lock::Exclusive),
                    Ok(pg_query::LockMode::AccessExclusiveLock) => Some(Lock::AccessExclusive),
                    _ => None,
                };
                if let Some(lock) = lock {
                    for rv in stmt.relations.iter().filter_map(as_range_var) {
                        if self.is_existing(rv) {
                            effect.lock(lock, Table::from_range_var(rv).to_string());
                        }
                    }
                }
            }
            NodeEnum::CreateTrigStmt(stmt) => {
                if let Some(rv) = stmt.relation.as_ref().filter(|rv| self.is_existing(rv)) {
                    effect.lock(
                        Lock::ShareRowExclusive,
                        Table::from_range_var(rv).to_string(),
                    );
                }
            }
            NodeEnum::RefreshMatViewStmt(stmt) => {
                if let Some(rv) = stmt.relation.as_ref().filter(|rv| self.is_existing(rv)) {
                    let lock = if stmt.concurrent {
                        Lock::Exclusive
                    } else {
                        Lock::AccessExclusive
                    };
                    effect.lock(lock, Table::from_range_var(rv).to_string());
                }
            }
            _ => {}
        }

        if let Some(what) = effect.concurrent.take() {
            self.concurrency_rules(&what, &mut effect);
        }
        if let Some((lock, target)) = effect.strong_lock.take()
            && !self.lock_timeout
        {
            let statement = statement_name(node);
            effect.hit(
                Rule::MissingLockTimeout,
                format!(
                    "{statement} takes {lock} on {target} with no non-zero `SET \
                     lock_timeout` earlier in this file: queued behind a long \
                     transaction, it blocks all traffic to {target} while it \
                     waits"
                ),
            );
        }
        effect.hits
    }

    fn concurrency_rules(&self, what: &str, effect: &mut Effect) {
        let others = self.statement_count.saturating_sub(1);
        if others > 0 {
            effect.hit(
                Rule::ConcurrentlyNotAlone,
                format!(
                    "{what} must be the only statement in its file: the \
                     {others} other statement(s) run with it as one implicit \
                     transaction block, which it refuses"
                ),
            );
        }
        if let Some(begin) = self.open_begin {
            effect.hit(
                Rule::ConcurrentlyInTransaction,
                format!(
                    "{what} follows the BEGIN on line {begin} and cannot run \
                     inside a transaction block"
                ),
            );
        } else if !self.no_transaction {
            effect.hit(
                Rule::ConcurrentlyInTransaction,
                format!(
                    "{what} cannot run inside a transaction block, and refinery \
                     runs this file in one: mark the file `-- \
                     refinery:noTransaction`"
                ),
            );
        }
    }

    fn create_index(&mut self, stmt: &IndexStmt, effect: &mut Effect) {
        let name = display_name(&stmt.idxname);
        if let Some(rv) = &stmt.relation {
            let table = Table::from_range_var(rv);
            if stmt.concurrent {
                effect.concurrent = Some(format!("CREATE INDEX CONCURRENTLY {name} ON {table}"));
            } else if self.is_existing(rv) {
                effect.hit(
                    Rule::CreateIndexNonConcurrently,
                    format!(
                        "CREATE INDEX {name} ON {table} without CONCURRENTLY holds \
                         a SHARE lock on existing table {table} (writes blocked) \
                         for the whole build"
                    ),
                );
                effect.lock(Lock::Share, table.to_string());
            }
        }
        if !stmt.idxname.is_empty() {
            self.created_indexes.push(stmt.idxname.clone());
        }
    }

    fn drop(&mut self, stmt: &DropStmt, effect: &mut Effect) {
        let names = || {
            stmt.objects.iter().filter_map(|n| match &n.node {
                Some(NodeEnum::List(list)) => Table::from_name_list(&list.items),
                _ => None,
            })
        };
        match ObjectType::try_from(stmt.remove_type) {
            Ok(ObjectType::ObjectIndex) => {
                for index in names() {
                    if stmt.concurrent {
                        effect.concurrent = Some(format!("DROP INDEX CONCURRENTLY {index}"));
                    } else if !self.created_indexes.contains(&index.name) {
                        effect.hit(
                            Rule::DropIndexNonConcurrently,
                            format!(
                                "DROP INDEX {index} without CONCURRENTLY takes ACCESS \
                                 EXCLUSIVE on its table: reads and writes wait"
                            ),
                        );
                        effect.lock(Lock::AccessExclusive, format!("the table of index {index}"));
                    }
                }
            }
            Ok(ObjectType::ObjectTable) => {
                for table in names() {
                    if !self.is_new(&table) {
                        effect.hit(
                            Rule::DropTable,
                            format!(
                                "DROP TABLE {table} breaks the running code that still uses \
                                 it"
                            ),
                        );
                        effect.lock(Lock::AccessExclusive, table.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    fn alter_table(&mut self, rv: &RangeVar, cmds: &[Node], effect: &mut Effect) {
        let table = Table::from_range_var(rv);
        let existing = self.is_existing(rv);
        for cmd in cmds.iter().filter_map(|n| match &n.node {
            Some(NodeEnum::AlterTableCmd(cmd)) => Some(cmd),
            _ => None,
        }) {
            let subtype =
                AlterTableType::try_from(cmd.subtype).unwrap_or(AlterTableType::Undefined);
            let constraint = cmd.def.as_deref().and_then(as_constraint);

            // Bookkeeping that holds for new and existing tables alike.
            match subtype {
                AlterTableType::AtValidateConstraint => {
                    let added_here = self
                        .not_valid
                        .iter()
                        .any(|(t, name)| t.same_as(&table) && *name == cmd.name);
                    if added_here {
                        effect.hit(
                            Rule::ValidateInSameTransaction,
                            format!(
                                "VALIDATE CONSTRAINT {} on {table} in the file that added \
                                 it NOT VALID: the lock taken by the ADD is held through \
                                 the validating scan",
                                cmd.name
                            ),
                        );
                    }
                    self.validated.push(table.clone());
                }
                AlterTableType::AtAddConstraint => {
                    if let Some(c) = constraint {
                        if c.skip_validation {
                            self.not_valid.push((table.clone(), c.conname.clone()));
                        } else if c.contype == ConstrType::ConstrCheck as i32 {
                            self.validated.push(table.clone());
                        }
                        self.foreign_key_lock(c, effect);
                    }
                }
                _ => {}
            }
            if let Some(c) = cmd.def.as_deref().and_then(as_column_def) {
                for c in c.constraints.iter().filter_map(as_constraint) {
                    self.foreign_key_lock(c, effect);
                }
            }
            if !existing {
                continue;
            }

            if let Some(lock) = alter_lock(subtype, cmd, constraint) {
                effect.lock(lock, table.to_string());
            }
            match subtype {
                AlterTableType::AtAddColumn => {
                    if let Some(col) = cmd.def.as_deref().and_then(as_column_def) {
                        add_column(&table, col, effect);
                    }
                }
                AlterTableType::AtAlterColumnType => {
                    let ty = cmd
                        .def
                        .as_deref()
                        .and_then(as_column_def)
                        .and_then(|c| c.type_name.as_ref())
                        .map_or_else(|| "?".to_owned(), type_name);
                    effect.hit(
                        Rule::AlterColumnType,
                        format!(
                            "ALTER COLUMN {table}.{} TYPE {ty} rewrites {table} and its \
                             indexes under ACCESS EXCLUSIVE unless the change is \
                             binary-coercible",
                            cmd.name
                        ),
                    );
                }
                AlterTableType::AtSetNotNull
                    if !self.validated.iter().any(|t| t.same_as(&table)) =>
                {
                    effect.hit(
                        Rule::SetNotNullWithoutCheck,
                        format!(
                            "SET NOT NULL on {table}.{} scans the whole table under \
                             ACCESS EXCLUSIVE: validate a CHECK ({} IS NOT NULL) \
                             constraint first",
                            cmd.name, cmd.name
                        ),
                    );
                }
                AlterTableType::AtDropColumn => effect.hit(
                    Rule::DropColumn,
                    format!(
                        "DROP COLUMN {table}.{} breaks the running code that still \
                         reads or writes it",
                        cmd.name
                    ),
                ),
                AlterTableType::AtAddConstraint => {
                    if let Some(c) = constraint {
                        let validated = self.validated.iter().any(|t| t.same_as(&table));
                        add_constraint(&table, c, effect, validated);
                    }
                }
                AlterTableType::AtDetachPartition => {
                    if let Some(NodeEnum::PartitionCmd(p)) =
                        cmd.def.as_deref().and_then(|n| n.node.as_ref())
                        && p.concurrent
                    {
                        let part = p
                            .name
                            .as_ref()
                            .map(|r| Table::from_range_var(r).to_string())
                            .unwrap_or_default();
                        effect.concurrent = Some(format!("DETACH PARTITION {part} CONCURRENTLY"));
                    }
                }
                _ => {}
            }
        }
    }

    /// A foreign key takes SHARE ROW EXCLUSIVE on the table it references.
    fn foreign_key_lock(&self, c: &Constraint, effect: &mut Effect) {
        if c.contype == ConstrType::ConstrForeign as i32
            && let Some(pk) = c.pktable.as_ref().filter(|pk| self.is_existing(pk))
        {
            effect.lock(
                Lock::ShareRowExclusive,
                Table::from_range_var(pk).to_string(),
            );
        }
    }

    fn rename(&mut self, stmt: &RenameStmt, effect: &mut Effect) {
        let Some(rv) = stmt.relation.as_ref().filter(|rv| self.is_existing(rv)) else {
            return;
        };
        let table = Table::from_range_var(rv);
        let rename_type = ObjectType::try_from(stmt.rename_type).unwrap_or(ObjectType::Undefined);
        let on_table = stmt.relation_type == ObjectType::ObjectTable as i32;
        match rename_type {
            ObjectType::ObjectColumn if on_table => effect.hit(
                Rule::RenameColumn,
                format!(
                    "RENAME COLUMN {table}.{} TO {} breaks the running code \
                     that uses the old name",
                    stmt.subname, stmt.newname
                ),
            ),
            ObjectType::ObjectTable => effect.hit(
                Rule::RenameTable,
                format!(
                    "RENAME of table {table} TO {} breaks the running code that \
                     uses the old name",
                    stmt.newname
                ),
            ),
            _ => {}
        }
        if matches!(
            rename_type,
            ObjectType::ObjectTable | ObjectType::ObjectColumn | ObjectType::ObjectTabconstraint
        ) {
            effect.lock(Lock::AccessExclusive, table.to_string());
        }
    }

    fn reindex(&mut self, stmt: &ReindexStmt, effect: &mut Effect) {
        let concurrently = stmt
            .params
            .iter()
            .filter_map(as_def_elem)
            .any(|d| d.defname == "concurrently" && def_elem_enabled(d));
        let (kind, target, is_new) = match ReindexObjectType::try_from(stmt.kind) {
            Ok(ReindexObjectType::ReindexObjectIndex) => {
                let name = stmt
                    .relation
                    .as_ref()
                    .map_or_else(String::new, |r| r.relname.clone());
                let is_new = self.created_indexes.contains(&name);
                ("INDEX", name, is_new)
            }
            Ok(ReindexObjectType::ReindexObjectTable) => match &stmt.relation {
                Some(rv) => (
                    "TABLE",
                    Table::from_range_var(rv).to_string(),
                    !self.is_existing(rv),
                ),
                None => ("TABLE", String::new(), false),
            },
            Ok(ReindexObjectType::ReindexObjectSchema) => ("SCHEMA", stmt.name.clone(), false),
            Ok(ReindexObjectType::ReindexObjectSystem) => ("SYSTEM", stmt.name.clone(), false),
            _ => ("DATABASE", stmt.name.clone(), false),
        };
        if concurrently {
            effect.concurrent = Some(format!("REINDEX {kind} CONCURRENTLY {target}"));
        } else if !is_new {
            effect.hit(
                Rule::ReindexNonConcurrently,
                format!(
                    "REINDEX {kind} {target} without CONCURRENTLY blocks writes \
                     to the table, and reads that would use the index"
                ),
            );
            effect.lock(
                Lock::AccessExclusive,
                format!("the index(es) of {kind} {target}"),
            );
        }
    }

    fn variable_set(&mut self, stmt: &VariableSetStmt) {
        let kind = VariableSetKind::try_from(stmt.kind).unwrap_or(VariableSetKind::Undefined);
        if kind == VariableSetKind::VarResetAll {
            self.lock_timeout = false;
            return;
        }
        if !stmt.name.eq_ignore_ascii_case("lock_timeout") {
            return;
        }
        self.lock_timeout = kind == VariableSetKind::VarSetValue
            && stmt
                .args
                .first()
                .and_then(|n| match &n.node {
                    Some(NodeEnum::AConst(c)) => c.val.as_ref(),
                    _ => None,
                })
                .is_some_and(is_nonzero_duration);
    }
}

/// The lock one ALTER TABLE subcommand takes on its table, when it is SHARE or stronger
/// (PostgreSQL 15–18, `AlterTableGetLockLevel`). `None` for the subcommands that take only
/// SHARE UPDATE EXCLUSIVE, which conflicts with neither reads nor writes.
fn alter_lock(
    subtype: AlterTableType,
    cmd: &AlterTableCmd,
    constraint: Option<&Constraint>,
) -> Option<Lock> {
    use AlterTableType as T;
    match subtype {
        T::AtAddConstraint
            if constraint.is_some_and(|c| c.contype == ConstrType::ConstrForeign as i32) =>
        {
            Some(Lock::ShareRowExclusive)
        }
        T::AtEnableTrig
        | T::AtEnableAlwaysTrig
        | T::AtEnableReplicaTrig
        | T::AtDisableTrig
        | T::AtEnableTrigAll
        | T::AtDisableTrigAll
        | T::AtEnableTrigUser
        | T::AtDisableTrigUser => Some(Lock::ShareRowExclusive),
        T::AtValidateConstraint
        | T::AtSetStatistics
        | T::AtClusterOn
        | T::AtDropCluster
        | T::AtSetRelOptions
        | T::AtResetRelOptions
        | T::AtReplaceRelOptions
        | T::AtAttachPartition => None,
        T::AtDetachPartition
            if matches!(
                cmd.def.as_deref().and_then(|n| n.node.as_ref()),
                Some(NodeEnum::PartitionCmd(p)) if p.concurrent
            ) =>
        {
            None
        }
        _ => Some(Lock::AccessExclusive),
    }
}

fn add_column(table: &Table, col: &ColumnDef, effect: &mut Effect) {
    let name = format!("{table}.{}", col.colname);
    let constraints: Vec<&Constraint> = col.constraints.iter().filter_map(as_constraint).collect();
    let has = |t: ConstrType| constraints.iter().any(|c| c.contype == t as i32);

    let serial = col
        .type_name
        .as_ref()
        .and_then(|t| t.names.last())
        .and_then(string_value)
        .filter(|n| {
            matches!(
                *n,
                "serial" | "serial2" | "serial4" | "serial8" | "smallserial" | "bigserial"
            )
        });
    let default = constraints
        .iter()
        .find(|c| c.contype == ConstrType::ConstrDefault as i32)
        .and_then(|c| c.raw_expr.as_deref())
        .or(col.raw_default.as_deref());
    let stored = constraints
        .iter()
        .any(|c| c.contype == ConstrType::ConstrGenerated as i32 && c.generated_kind != "v");

    let per_row = if let Some(serial) = serial {
        Some(format!("type {serial} fills every row from nextval()"))
    } else if has(ConstrType::ConstrIdentity) {
        Some("an identity column fills every row from nextval()".to_owned())
    } else if stored {
        Some("a STORED generated column is computed for every row".to_owned())
    } else {
        default
            .and_then(volatility)
            .map(|why| format!("its default {why}"))
    };
    if let Some(why) = per_row {
        effect.hit(
            Rule::AddColumnVolatileDefault,
            format!("ADD COLUMN {name} rewrites the whole table under ACCESS EXCLUSIVE: {why}"),
        );
    }

    let fills_itself = default.is_some()
        || serial.is_some()
        || has(ConstrType::ConstrIdentity)
        || has(ConstrType::ConstrGenerated);
    if (col.is_not_null || has(ConstrType::ConstrNotnull) || has(ConstrType::ConstrPrimary))
        && !fills_itself
    {
        effect.hit(
            Rule::AddColumnNotNullWithoutDefault,
            format!(
                "ADD COLUMN {name} NOT NULL without a DEFAULT fails on a \
                 non-empty table and breaks inserts from the running code"
            ),
        );
    }

    for c in &constraints {
        match ConstrType::try_from(c.contype) {
            Ok(ConstrType::ConstrCheck) => effect.hit(
                Rule::ConstraintWithoutNotValid,
                format!(
                    "ADD COLUMN {name} with an inline CHECK scans {table} under \
                     ACCESS EXCLUSIVE (an inline constraint cannot be NOT \
                     VALID)"
                ),
            ),
            Ok(ConstrType::ConstrForeign) => {
                let pk = c
                    .pktable
                    .as_ref()
                    .map(Table::from_range_var)
                    .map_or_else(String::new, |t| t.to_string());
                effect.hit(
                    Rule::ConstraintWithoutNotValid,
                    format!(
                        "ADD COLUMN {name} REFERENCES {pk} is validated at once, \
                         under SHARE ROW EXCLUSIVE on {table} and {pk} (an inline \
                         constraint cannot be NOT VALID)"
                    ),
                );
            }
            Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) => effect.hit(
                Rule::UniqueWithoutIndex,
                format!(
                    "ADD COLUMN {name} with an inline {} builds its index under \
                     ACCESS EXCLUSIVE on {table}",
                    constraint_kind(c)
                ),
            ),
            _ => {}
        }
    }
}

/// `validated`: a CHECK on the table was validated earlier in the file (see MIG008).
fn add_constraint(table: &Table, c: &Constraint, effect: &mut Effect, validated: bool) {
    let name = display_name(&c.conname);
    match ConstrType::try_from(c.contype) {
        Ok(ConstrType::ConstrForeign) if !c.skip_validation => {
            let pk = c
                .pktable
                .as_ref()
                .map(Table::from_range_var)
                .map_or_else(String::new, |t| t.to_string());
            effect.hit(
                Rule::ConstraintWithoutNotValid,
                format!(
                    "ADD CONSTRAINT {name} FOREIGN KEY on {table} without NOT \
                     VALID checks every row while holding SHARE ROW EXCLUSIVE \
                     on {table} and {pk}"
                ),
            );
        }
        Ok(ConstrType::ConstrCheck) if !c.skip_validation => effect.hit(
            Rule::ConstraintWithoutNotValid,
            format!(
                "ADD CONSTRAINT {name} CHECK on {table} without NOT VALID \
                 scans every row under ACCESS EXCLUSIVE"
            ),
        ),
        Ok(ConstrType::ConstrNotnull) if !c.skip_validation && !validated => effect.hit(
            Rule::SetNotNullWithoutCheck,
            format!(
                "ADD CONSTRAINT {name} NOT NULL on {table} scans the whole \
                 table under ACCESS EXCLUSIVE: validate a CHECK (... IS NOT \
                 NULL) constraint first"
            ),
        ),
        Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) if c.indexname.is_empty() => {
            effect.hit(
                Rule::UniqueWithoutIndex,
                format!(
                    "ADD CONSTRAINT {name} {} on {table} builds its index under \
                     ACCESS EXCLUSIVE: build it CONCURRENTLY, then ADD \
                     CONSTRAINT ... USING INDEX",
                    constraint_kind(c)
                ),
            );
        }
        Ok(ConstrType::ConstrExclusion) => effect.hit(
            Rule::UniqueWithoutIndex,
            format!(
                "ADD CONSTRAINT {name} EXCLUDE on {table} builds its index \
                 under ACCESS EXCLUSIVE and has no USING INDEX form"
            ),
        ),
        _ => {}
    }
}

fn constraint_kind(c: &Constraint) -> &'static str {
    if c.contype == ConstrType::ConstrPrimary as i32 {
        "PRIMARY KEY"
    } else {
        "UNIQUE"
    }
}

/// Functions known not to be volatile, so a default calling them is evaluated once at
/// ALTER time and stored in the catalog (no rewrite, PostgreSQL 11+).
const NON_VOLATILE: &[&str] = &[
    "now",
    "transaction_timestamp",
    "statement_timestamp",
    "current_date",
    "current_timestamp",
    "localtimestamp",
    "lower",
    "upper",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "abs",
    "round",
    "floor",
    "ceil",
    "make_interval",
    "make_date",
    "to_timestamp",
    "jsonb_build_object",
    "jsonb_build_array",
    "json_build_object",
    "json_build_array",
    "to_jsonb",
    "array_fill",
];

/// Functions known to be volatile, named as such in messages.
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "txid_current",
    "pg_current_xact_id",
];

/// Why a default expression must be computed per row, or `None` if it is provably not.
fn volatility(node: &Node) -> Option<String> {
    let children: Vec<&Node> = match node.node.as_ref()? {
        NodeEnum::AConst(_) | NodeEnum::SqlvalueFunction(_) => Vec::new(),
        NodeEnum::TypeCast(c) => c.arg.as_deref().into_iter().collect(),
        NodeEnum::CollateClause(c) => c.arg.as_deref().into_iter().collect(),
        NodeEnum::AExpr(e) => e
            .lexpr
            .as_deref()
            .into_iter()
            .chain(e.rexpr.as_deref())
            .collect(),
        NodeEnum::BoolExpr(e) => e.args.iter().collect(),
        NodeEnum::NullTest(e) => e.arg.as_deref().into_iter().collect(),
        NodeEnum::CoalesceExpr(e) => e.args.iter().collect(),
        NodeEnum::MinMaxExpr(e) => e.args.iter().collect(),
        NodeEnum::AArrayExpr(e) => e.elements.iter().collect(),
        NodeEnum::List(l) => l.items.iter().collect(),
        NodeEnum::CaseExpr(e) => e
            .arg
            .as_deref()
            .into_iter()
            .chain(e.args.iter())
            .chain(e.defresult.as_deref())
            .collect(),
        NodeEnum::CaseWhen(w) => w
            .expr
            .as_deref()
            .into_iter()
            .chain(w.result.as_deref())
            .collect(),
        NodeEnum::FuncCall(f) => {
            let name = f.funcname.last().and_then(string_value).unwrap_or("?");
            if VOLATILE.contains(&name) {
                return Some(format!("calls volatile function {name}()"));
            }
            if !NON_VOLATILE.contains(&name) {
                return Some(format!(
                    "calls {name}(), which the linter cannot prove non-volatile"
                ));
            }
            f.args.iter().collect()
        }
        _ => return Some("uses an expression the linter cannot prove non-volatile".to_owned()),
    };
    children.into_iter().find_map(volatility)
}

/// Whether a `lock_timeout` value is a non-zero duration (`0`, `'0'`, `'0s'` disable it).
fn is_nonzero_duration(val: &a_const::Val) -> bool {
    match val {
        a_const::Val::Ival(i) => i.ival > 0,
        a_const::Val::Fval(f) => f.fval.parse::<f64>().is_ok_and(|v| v > 0.0),
        a_const::Val::Sval(s) => {
            let s = s.sval.trim();
            let number_len = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            s.get(..number_len)
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        }
        _ => false,
    }
}

fn def_elem_enabled(d: &DefElem) -> bool {
    match d.arg.as_deref().and_then(|n| n.node.as_ref()) {
        None => true,
        Some(NodeEnum::Boolean(b)) => b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival != 0,
        Some(NodeEnum::String(s)) => !matches!(
            s.sval.to_ascii_lowercase().as_str(),
            "false" | "off" | "0" | "no"
        ),
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(a_const::Val::Boolval(b)) => b.boolval,
            Some(a_const::Val::Ival(i)) => i.ival != 0,
            Some(a_const::Val::Sval(s)) => !matches!(
                s.sval.to_ascii_lowercase().as_str(),
                "false" | "off" | "0" | "no"
            ),
            _ => true,
        },
        Some(_) => true,
    }
}

fn type_name(t: &TypeName) -> String {
    let mut name = t
        .names
        .iter()
        .filter_map(string_value)
        .filter(|n| *n != "pg_catalog")
        .collect::<Vec<_>>()
        .join(".");
    let mods: Vec<String> = t
        .typmods
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::AConst(c)) => match &c.val {
                Some(a_const::Val::Ival(i)) => Some(i.ival.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if !mods.is_empty() {
        name = format!("{name}({})", mods.join(","));
    }
    if !t.array_bounds.is_empty() {
        name.push_str("[]");
    }
    name
}

/// The SQL command a statement node came from, for messages.
fn statement_name(node: &NodeEnum) -> &'static str {
    match node {
        NodeEnum::IndexStmt(_) => "CREATE INDEX",
        NodeEnum::DropStmt(d) if d.remove_type == ObjectType::ObjectIndex as i32 => "DROP INDEX",
        NodeEnum::DropStmt(_) => "DROP TABLE",
        NodeEnum::AlterTableStmt(_) => "ALTER TABLE",
        NodeEnum::RenameStmt(_) => "ALTER TABLE ... RENAME",
        NodeEnum::CreateStmt(_) => "CREATE TABLE",
        NodeEnum::TruncateStmt(_) => "TRUNCATE",
        NodeEnum::VacuumStmt(_) => "VACUUM FULL",
        NodeEnum::ClusterStmt(_) => "CLUSTER",
        NodeEnum::ReindexStmt(_) => "REINDEX",
        NodeEnum::LockStmt(_) => "LOCK TABLE",
        NodeEnum::CreateTrigStmt(_) => "CREATE TRIGGER",
        NodeEnum::RefreshMatViewStmt(_) => "REFRESH MATERIALIZED VIEW",
        _ => "this statement",
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() { "(unnamed)" } else { name }
}

fn string_value(node: &Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
        _ => None,
    }
}

fn as_constraint(node: &Node) -> Option<&Constraint> {
    match &node.node {
        Some(NodeEnum::Constraint(c)) => Some(c),
        _ => None,
    }
}

fn as_column_def(node: &Node) -> Option<&ColumnDef> {
    match &node.node {
        Some(NodeEnum::ColumnDef(c)) => Some(c),
        _ => None,
    }
}

fn as_range_var(node: &Node) -> Option<&RangeVar> {
    match &node.node {
        Some(NodeEnum::RangeVar(rv)) => Some(rv),
        _ => None,
    }
}

fn as_def_elem(node: &Node) -> Option<&DefElem> {
    match &node.node {
        Some(NodeEnum::DefElem(d)) => Some(d),
        _ => None,
    }
}
