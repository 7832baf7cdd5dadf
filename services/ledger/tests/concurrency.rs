//! Many concurrent clients moving money in both directions among a few accounts, most
//! of it through one hot account: no deadlock or conflict reaches a client, and every
//! invariant holds afterwards.

mod common;

use std::collections::HashMap;

use common::{TestLedger, create, reason, spec};
use uuid::Uuid;

const TASKS: usize = 50;
const PER_TASK: usize = 200;
const ACCOUNTS: usize = 20;
const FUNDING: i64 = 5_000;

/// A tiny deterministic generator (xorshift64*), one per task.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// 50 tasks × 200 random transfers among 20 accounts plus a hot one (in ~80 % of
/// them), both directions: only INSUFFICIENT_FUNDS refusals, zero ABORTED or other
/// errors, each balance equals its funding plus the successful moves, money is
/// conserved, and `ledger.verify_invariants()` finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_keep_every_invariant() {
    let ledger = TestLedger::spawn().await;
    let hot = ledger.open(Uuid::now_v7()).await;
    let mut accounts = vec![hot.clone()];
    for _ in 0..ACCOUNTS {
        accounts.push(ledger.open(Uuid::now_v7()).await);
    }
    for a in &accounts {
        ledger.fund(a, FUNDING).await;
    }
    let vault = ledger.vault().await;
    let vault_before = ledger.balance(&vault).await;

    let tasks = (0..TASKS).map(|t| {
        let mut client = ledger.admin();
        let accounts = accounts.clone();
        tokio::spawn(async move {
            let mut rng =
                Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
            let mut deltas: HashMap<String, i64> = HashMap::new();
            let mut refused = 0usize;
            for _ in 0..PER_TASK {
                let n = accounts.len() as u64;
                let other = 1 + rng.below(n - 1) as usize;
                let (d, c) = if rng.below(10) < 8 {
                    if rng.below(2) == 0 {
                        (0, other)
                    } else {
                        (other, 0)
                    }
                } else {
                    let mut second = 1 + rng.below(n - 1) as usize;
                    if second == other {
                        second = if other == 1 { 2 } else { 1 };
                    }
                    (other, second)
                };
                let amount = 1 + rng.below(200) as i64;
                match client
                    .create_transfer(create(spec(&accounts[d], &accounts[c], amount)))
                    .await
                {
                    Ok(_) => {
                        *deltas.entry(accounts[d].clone()).or_default() -= amount;
                        *deltas.entry(accounts[c].clone()).or_default() += amount;
                    }
                    Err(status) if reason(&status) == "ERROR_REASON_INSUFFICIENT_FUNDS" => {
                        refused += 1
                    }
                    Err(status) => panic!("unexpected error: {status:?}"),
                }
            }
            (deltas, refused)
        })
    });
    let mut expected: HashMap<String, i64> =
        accounts.iter().map(|a| (a.clone(), FUNDING)).collect();
    let mut refused = 0;
    for result in futures::future::join_all(tasks).await {
        let (deltas, r) = result.unwrap();
        refused += r;
        for (account, delta) in deltas {
            *expected.get_mut(&account).unwrap() += delta;
        }
    }
    assert!(
        refused < TASKS * PER_TASK / 2,
        "most transfers should go through ({refused} refused)"
    );

    let mut total = 0i64;
    for a in &accounts {
        let balance = ledger.balance(a).await;
        assert_eq!(balance, expected[a], "account {a}");
        assert!(balance >= 0);
        total += balance;
    }
    assert_eq!(total, FUNDING * accounts.len() as i64, "money is conserved");
    assert_eq!(ledger.balance(&vault).await, vault_before);
    ledger.assert_invariants().await;
}
