//! Rebuilds the crate when a migration is added or changed: refinery's
//! `embed_migrations!` reads migrations/payments/ at compile time but tells cargo nothing.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/payments");
}
