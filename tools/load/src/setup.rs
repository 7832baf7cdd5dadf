//! The unmeasured setup phase: connections, health, the operator's login, customers
//! signed up and logged in, accounts opened and funded from the cash vault.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::identity::identity_service_client::IdentityServiceClient;
use ferrobank_proto::identity::{CreateUserRequest, LoginRequest};
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use ferrobank_proto::ledger::transfer_batch_result::Outcome;
use ferrobank_proto::ledger::{
    AccountKind, CreateTransferBatchRequest, ListAccountsRequest, OpenAccountRequest, SystemRole,
    TransferSpec,
};
use futures::{StreamExt, TryStreamExt, stream};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::{Args, Keys};

/// Minor units each account starts with: enough for any run at up to 100 per transfer.
const FUNDING: i64 = 1_000_000_000;
/// Members per funding batch (the ledger accepts up to 1000).
const FUNDING_BATCH: usize = 500;
/// Setup calls in flight.
const SETUP_CONCURRENCY: usize = 8;

/// A bearer token ready to attach.
pub type Token = MetadataValue<Ascii>;

/// A customer signed up and logged in for this run.
#[derive(Clone)]
pub struct Customer {
    pub token: Token,
}

/// Everything the workload needs.
pub struct Fixture {
    /// One HTTP/2 connection per `--clients-per-connection` clients.
    pub channels: Vec<Channel>,
    /// The same to `--interleave-target`.
    pub interleave_channels: Option<Vec<Channel>>,
    pub customers: Vec<Customer>,
    /// Account ids, by customer (`accounts_by_customer[c]` are owned by customer c).
    pub accounts_by_customer: Vec<Vec<String>>,
    /// Every account id.
    pub all_accounts: Vec<String>,
    /// The hot account (owned by customer 0) with `--keys hot`.
    pub hot: Option<String>,
    /// Wall time the setup took.
    pub setup_secs: f64,
}

/// Attaches a bearer token to a message.
pub fn authed<T>(msg: T, token: &Token) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", token.clone());
    req
}

fn bearer(access_token: &str) -> anyhow::Result<Token> {
    format!("Bearer {access_token}")
        .parse()
        .context("access token is not valid ASCII metadata")
}

fn status_context(what: &str, status: Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: {} ({})",
        crate::stats::code_name(status.code()),
        status.message()
    )
}

/// Opens `n` HTTP/2 connections to `target`.
pub async fn connect(args: &Args, target: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(target.to_owned())
        .with_context(|| format!("bad target '{target}'"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(args.call_timeout)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(n);
    for i in 0..n {
        let ch = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {target} (connection {i})"))?;
        channels.push(ch);
    }
    Ok(channels)
}

/// Polls the gateway's health for the ledger until SERVING, for at most `wait`
/// (one attempt when `wait` is zero).
pub async fn wait_ready(args: &Args, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut last_err;
    loop {
        match check_health(args).await {
            Ok(()) => return Ok(()),
            Err(e) => last_err = e,
        }
        if Instant::now() >= deadline {
            return Err(last_err.context(format!("{} not SERVING", args.target)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn check_health(args: &Args) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(args.target.clone())
        .with_context(|| format!("bad --target '{}'", args.target))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .context("connecting")?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "ferrobank.ledger.v1.LedgerService".to_owned(),
        })
        .await
        .map_err(|s| status_context("health check", s))?;
    let status = resp.into_inner().status;
    ensure!(
        status == ServingStatus::Serving as i32,
        "health status {}",
        ServingStatus::try_from(status)
            .map(|s| s.as_str_name())
            .unwrap_or("unknown")
    );
    Ok(())
}

async fn login(channel: Channel, username: &str, password: &str) -> anyhow::Result<Token> {
    let resp = IdentityServiceClient::new(channel)
        .login(LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map_err(|s| status_context(&format!("login as '{username}'"), s))?;
    bearer(&resp.into_inner().access_token)
}

/// Runs the whole setup.
pub async fn prepare(args: &Args) -> anyhow::Result<Fixture> {
    let started = Instant::now();
    ensure!(args.clients > 0, "--clients must be positive");
    ensure!(
        args.clients_per_connection > 0,
        "--clients-per-connection must be positive"
    );
    let n_customers = args.customers.unwrap_or(args.clients).max(1);
    ensure!(
        args.accounts >= 2 * n_customers,
        "--accounts ({}) must be at least twice the customers ({n_customers})",
        args.accounts
    );
    ensure!(
        (1..=1000).contains(&args.batch_size),
        "--batch-size must be 1..=1000"
    );

    let n_connections = args.clients.div_ceil(args.clients_per_connection);
    let channels = connect(args, &args.target, n_connections).await?;
    let ch0 = channels[0].clone();

    // The operator.
    let ops_password = std::fs::read_to_string(&args.operator_password_file)
        .with_context(|| {
            format!(
                "reading the operator password from {}",
                args.operator_password_file.display()
            )
        })?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let ops = login(ch0.clone(), &args.operator_user, &ops_password)
        .await
        .context("operator login")?;
    let vault = LedgerServiceClient::new(ch0.clone())
        .list_accounts(authed(
            ListAccountsRequest {
                kind: AccountKind::System as i32,
                system_role: SystemRole::CashVault as i32,
                currency_code: args.currency.clone(),
                ..Default::default()
            },
            &ops,
        ))
        .await
        .map_err(|s| status_context("listing the cash vault", s))?
        .into_inner()
        .accounts
        .into_iter()
        .next()
        .with_context(|| format!("no {} cash vault", args.currency))?
        .id;

    // Customers: sign up and log in, a few at a time (password hashing is slow).
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = &run[..10];
    let customers: Vec<(String, Customer)> = stream::iter(0..n_customers)
        .map(|i| {
            let ch = channels[i % channels.len()].clone();
            async move {
                let username = format!("load-{run}-{i}");
                let password = uuid::Uuid::new_v4().simple().to_string();
                let user = IdentityServiceClient::new(ch.clone())
                    .create_user(CreateUserRequest {
                        request_id: uuid::Uuid::new_v4().to_string(),
                        username: username.clone(),
                        email: format!("{username}@load.invalid"),
                        password: password.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| status_context(&format!("signing up '{username}'"), s))?
                    .into_inner()
                    .user
                    .context("CreateUser returned no user")?;
                let token = login(ch, &username, &password).await?;
                anyhow::Ok((user.id, Customer { token }))
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
        .context("signing up customers")?;

    // Accounts: account j belongs to customer j % n_customers.
    let opened: Vec<(usize, String)> = stream::iter(0..args.accounts)
        .map(|j| {
            let c = j % n_customers;
            let (owner_id, cust) = &customers[c];
            let ch = channels[j % channels.len()].clone();
            let req = authed(
                OpenAccountRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    owner_id: owner_id.clone(),
                    currency_code: args.currency.clone(),
                    ..Default::default()
                },
                &cust.token,
            );
            async move {
                let acct = LedgerServiceClient::new(ch)
                    .open_account(req)
                    .await
                    .map_err(|s| status_context("opening an account", s))?
                    .into_inner()
                    .account
                    .context("OpenAccount returned no account")?;
                anyhow::Ok((c, acct.id))
            }
        })
        .buffered(SETUP_CONCURRENCY * 4)
        .try_collect()
        .await
        .context("opening accounts")?;
    let mut accounts_by_customer = vec![Vec::new(); n_customers];
    for (c, id) in &opened {
        accounts_by_customer[*c].push(id.clone());
    }
    let all_accounts: Vec<String> = opened.into_iter().map(|(_, id)| id).collect();

    // Funding: the operator books cash deposits from the vault, in batches.
    let mut ledger = LedgerServiceClient::new(ch0);
    for chunk in all_accounts.chunks(FUNDING_BATCH) {
        let resp = ledger
            .create_transfer_batch(authed(
                CreateTransferBatchRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    transfers: chunk
                        .iter()
                        .map(|id| TransferSpec {
                            debit_account_id: vault.clone(),
                            credit_account_id: id.clone(),
                            amount: FUNDING,
                            currency_code: args.currency.clone(),
                            description: "load test funding".to_owned(),
                            ..Default::default()
                        })
                        .collect(),
                    linked: false,
                },
                &ops,
            ))
            .await
            .map_err(|s| status_context("funding accounts", s))?
            .into_inner();
        for r in resp.results {
            if let Some(Outcome::Error(e)) = r.outcome {
                bail!(
                    "funding an account failed: {} ({})",
                    ErrorReason::try_from(e.reason)
                        .map(|r| r.as_str_name())
                        .unwrap_or("unknown reason"),
                    e.message
                );
            }
        }
    }

    let hot = (args.keys == Keys::Hot).then(|| accounts_by_customer[0][0].clone());
    let channels = match &args.workload_target {
        Some(target) => connect(args, target, n_connections).await?,
        None => channels,
    };
    let interleave_channels = match &args.interleave_target {
        Some(target) => Some(connect(args, target, n_connections).await?),
        None => None,
    };
    Ok(Fixture {
        channels,
        interleave_channels,
        customers: customers.into_iter().map(|(_, c)| c).collect(),
        accounts_by_customer,
        all_accounts,
        hot,
        setup_secs: started.elapsed().as_secs_f64(),
    })
}
