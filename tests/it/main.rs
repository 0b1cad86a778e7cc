//! The one integration test binary: tests against real servers (see `harness`).

mod harness {
    pub mod postgres;
}
mod hostdb;
