//! The primary and reporting pools are told apart by `application_name` in
//! `pg_stat_activity`, and reporting reads really arrive at the streaming replica.

use ferrobank_config::ReportingFallback;
use ferrobank_db::{DataSource, ReportingPool, StoreError, build_pool};
use ferrobank_testkit::{TestDb, env};

/// Each pool's connections carry their own application_name; the reporting one is on
/// a server in recovery (the replica), the primary one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_tagged_and_reporting_reads_hit_the_replica() {
    let env = env().await;
    assert!(
        env.has_replica(),
        "the test stack must include the streaming replica"
    );
    let db = TestDb::empty("ledger").await.unwrap();
    env.wait_for_replica().await.unwrap();

    let primary = build_pool(&db.settings.primary).unwrap();
    let reporting = ReportingPool::new(&db.settings, primary.clone()).unwrap();

    let p = primary.get().await.unwrap();
    let row = p
        .query_one(
            "SELECT current_setting('application_name'), pg_is_in_recovery(), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ledger");
    assert!(
        !row.get::<_, bool>(1),
        "primary pool is on a server in recovery"
    );
    let primary_pid: i32 = row.get(2);

    let (r, source) = reporting.get().await.unwrap();
    assert_eq!(source, DataSource::Replica);
    let row = r
        .query_one(
            "SELECT current_setting('application_name'), pg_is_in_recovery(), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ledger-reporting");
    assert!(
        row.get::<_, bool>(1),
        "reporting pool is not on the replica"
    );
    let replica_pid: i32 = row.get(2);

    // pg_stat_activity on each server shows the pool's connection under its name.
    let admin = env.admin_client("postgres").await.unwrap();
    let name: String = admin
        .query_one(
            "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
            &[&primary_pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "ledger");
    let replica_admin = env.replica_admin_client("postgres").await.unwrap();
    let name: String = replica_admin
        .query_one(
            "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
            &[&replica_pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "ledger-reporting");
}

/// A replica without the service's database — created on the primary a moment ago and
/// not replayed yet, or a replica set up wrong — is as good as down: a reporting read
/// goes to the primary when the fallback says so, else fails REPLICA_UNAVAILABLE; never
/// an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_database_counts_as_down() {
    let db = TestDb::empty("ledger").await.unwrap();
    let mut settings = db.settings.clone();
    let reporting = settings
        .reporting
        .as_mut()
        .expect("the stack has a replica");
    let name = reporting
        .url
        .config()
        .get_dbname()
        .expect("a database name")
        .to_owned();
    reporting.url = reporting
        .url
        .expose()
        .replacen(&format!("/{name}"), "/ferrobank_no_such_database", 1)
        .parse()
        .unwrap();
    let primary = build_pool(&settings.primary).unwrap();

    settings.reporting_fallback = ReportingFallback::Primary;
    let pool = ReportingPool::new(&settings, primary.clone()).unwrap();
    let (_, source) = pool.get().await.expect("read from the primary");
    assert_eq!(source, DataSource::Primary);

    settings.reporting_fallback = ReportingFallback::Unavailable;
    let pool = ReportingPool::new(&settings, primary).unwrap();
    let refused = pool.get().await.expect_err("no replica to read from");
    assert!(
        matches!(refused, StoreError::ReplicaUnavailable(_)),
        "{refused:?}"
    );
}
