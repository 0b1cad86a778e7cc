//! The one integration test binary (matklad: one binary links once). Tests that need servers
//! get them from `harness`; see its docs for the CCASS_TEST_SERVICES gate.

mod harness;

mod bus;
mod cli;
mod config;
mod directory;
mod hostdb;
mod ops;
