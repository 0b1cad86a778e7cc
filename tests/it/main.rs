//! The one integration test binary (matklad: one binary links once). Tests that need servers
//! get them from `harness`; see its docs for the CCASS_TEST_SERVICES gate.

// Test code may unwrap: a panic is how a test fails (clippy.toml allows it in #[test] fns;
// this extends it to the harness and helpers).
#![allow(clippy::unwrap_used)]

mod harness;

mod auth;
mod bus;
mod cli;
mod cns;
mod cns_settlement;
mod codec;
mod config;
mod demo;
mod directory;
mod docs;
mod gateway;
mod hostdb;
mod ops;
mod relay;
mod settlement_bench;
mod settlement_engine;
mod settlement_intake;
mod settlement_leader;
mod statements;
mod terminal;
mod terminal_e2e;
