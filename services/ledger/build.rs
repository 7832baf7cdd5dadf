//! Rebuilds the crate when a migration is added or changed: refinery's
//! `embed_migrations!` reads migrations/ledger/ at compile time but tells cargo nothing.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/ledger");
}
