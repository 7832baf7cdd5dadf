//! Clients that no Ferrobank code generated, end to end through the gateway of the
//! in-process platform: Python stubs generated from proto/ by grpcio-tools
//! (clients/python/scenario.py), and `buf curl` through server reflection
//! (clients/python/scenario_buf.sh). Both run the same scenario — sign up, log in, open
//! accounts, an operator's cash deposit, a transfer, the journal, a refused overdraft —
//! and assert the balances themselves; the tests assert that they exit 0.
//!
//! The tools come from package registries through `scripts/tools.sh` (cached in
//! `.tools/venv`); `clients/python/generate.sh` regenerates the stubs on every run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use ferrobank::Platform;
use ferrobank_testkit::TestDb;

const OPERATOR: &str = "ops";
const OPERATOR_PASSWORD: &str = "operator passphrase for external clients";

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap()
}

/// The whole platform (identity with keys and Redis, ledger, payments, gateway) on port
/// 0, with an operator created the way `ferrobank admin create-user --role operator`
/// does it. The databases come first in the returned list: identity, ledger, payments.
async fn start_with_operator() -> (Platform, Vec<TestDb>) {
    let dbs = common::databases().await;
    let admin = ferrobank_identity::Identity::new(
        &dbs[0].settings,
        ferrobank_identity::IdentityConfig::ephemeral(),
    )
    .unwrap();
    admin
        .app()
        .create_user(
            None,
            true,
            ferrobank_identity::app::CreateUser {
                request_id: uuid::Uuid::new_v4(),
                username: OPERATOR.into(),
                email: "ops@example.test".into(),
                display_name: "Operator".into(),
                password: OPERATOR_PASSWORD.to_owned().into(),
                role: Some(ferrobank_auth::Role::Operator),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("creating the operator: {e}"));
    let keys =
        ferrobank_auth::keys::KeyRing::new(vec![ferrobank_auth::keys::PrivateKey::generate()])
            .unwrap();
    let platform = common::start(&dbs, keys).await;
    (platform, dbs)
}

/// Runs `command` on a blocking thread (so the in-process platform keeps serving) from
/// the repository root and returns what it did.
async fn output(mut command: Command) -> Output {
    command.current_dir(repo());
    let shown = format!("{command:?}");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{shown}: {e}"))
}

fn assert_success(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// Runs a tool-preparing script and returns the path it prints (its last stdout line).
async fn tool_path(script: &str, arg: Option<&str>) -> String {
    let mut command = Command::new(repo().join(script));
    command.args(arg);
    let out = output(command).await;
    assert_success(script, &out);
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(Path::new(&path).is_file(), "{script} printed {path:?}");
    path
}

/// Starts the platform, runs `client` against the gateway with the operator's
/// credentials, stops the platform, and asserts the client exited 0.
async fn run_scenario(what: &str, mut client: Command) {
    let (platform, _dbs) = start_with_operator().await;
    let gateway = platform.gateway_addr.to_string();
    let running = common::run(platform);

    client.args([gateway.as_str(), OPERATOR, OPERATOR_PASSWORD]);
    let out = output(client).await;

    running.stop().await;
    assert_success(what, &out);
}

/// Python stubs generated from proto/ with grpcio-tools run the scenario through the
/// gateway and find the balances, the journal and the overdraft's ErrorInfo reason as
/// the contract says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_stubs_run_the_scenario_through_the_gateway() {
    let python = tool_path("clients/python/generate.sh", None).await;
    let mut client = Command::new(python);
    client.arg(repo().join("clients/python/scenario.py"));
    run_scenario("clients/python/scenario.py", client).await;
}

/// `buf curl` with only server reflection (no proto files) runs the same scenario
/// through the gateway and finds the same balances, journal and overdraft reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_through_reflection_runs_the_scenario_through_the_gateway() {
    let buf = tool_path("scripts/tools.sh", Some("buf")).await;
    let mut client = Command::new(repo().join("clients/python/scenario_buf.sh"));
    client.env("BUF", buf);
    run_scenario("clients/python/scenario_buf.sh", client).await;
}
