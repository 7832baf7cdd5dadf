//! `ferrobank migrate` semantics: running the migrations twice, or from two tasks at
//! once (each with its own connection, as two processes would), leaves one correct
//! schema with every version applied exactly once.

use ferrobank_testkit::TestDb;

type Runner = fn() -> refinery::Runner;

const SERVICES: [(&str, Runner); 3] = [
    ("identity", ferrobank_identity::migrations),
    ("ledger", ferrobank_ledger::migrations),
    ("payments", ferrobank_payments::migrations),
];

async fn history(db: &TestDb) -> Vec<i32> {
    let client = db.admin().await.unwrap();
    client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn expected(runner: Runner) -> Vec<i32> {
    let mut versions: Vec<i32> = runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .collect();
    versions.sort_unstable();
    versions
}

/// A second run applies nothing and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_is_a_no_op() {
    for (service, runner) in SERVICES {
        let db = TestDb::empty(service).await.unwrap();
        let url = &db.settings.direct_url;
        let first = ferrobank_db::migrate(url, service, runner()).await.unwrap();
        assert_eq!(first.applied.len(), expected(runner).len(), "{service}");
        let second = ferrobank_db::migrate(url, service, runner()).await.unwrap();
        assert!(second.applied.is_empty(), "{service}: {:?}", second.applied);
        assert_eq!(history(&db).await, expected(runner), "{service}");
    }
}

/// Two concurrent runs serialize on the advisory lock: together they apply each
/// version once, and neither fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    for (service, runner) in SERVICES {
        let db = TestDb::empty(service).await.unwrap();
        let url = db.settings.direct_url.clone();
        let a = tokio::spawn({
            let url = url.clone();
            async move { ferrobank_db::migrate(&url, service, runner()).await }
        });
        let b = tokio::spawn(async move { ferrobank_db::migrate(&url, service, runner()).await });
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        assert_eq!(
            a.applied.len() + b.applied.len(),
            expected(runner).len(),
            "{service}: {a:?} {b:?}"
        );
        assert_eq!(history(&db).await, expected(runner), "{service}");
    }
}
