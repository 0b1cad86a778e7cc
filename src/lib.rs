//! ccass: a Central Clearing And Settlement System.
//!
//! Modules in reading order (see ARCHITECTURE.md for the code map and invariants):
//! - [`iso15022`]: the ISO 15022 codec (sans I/O): parse, validate, typed views, builders.
//! - [`config`]: typed configuration from `config/` and `CCASS_` overrides.
//! - [`telemetry`]: tracing, metrics, the ops port.
//! - [`hostdb`]: PostgreSQL, the system of record (the only SQL).
//! - [`bus`]: NATS and JetStream (the only subject strings and wire payloads).
//! - [`auth`]: the LDAP directory (the only LDAP).
//! - [`cns`]: CNS clearing: trade feed, capture, novation and netting, positions.
//! - [`pki`]: the system CA, participants' client certificates, revocation.
//! - [`gateway`]: the Participant Gateway (TLS sessions, ACK/NAK, publish to INBOUND).
//! - [`pss`]: the PSS client library participants' back offices use to reach the gateway.
//! - [`statements`]: MT535/536/537 statements: end of day, on request (MT549), on demand.
//! - [`demo`]: `ccass demo`, a settlement day end to end through the real channels.
//! - [`terminal`]: the HTTPS web terminal (login by certificate and password, SI input with
//!   maker–checker, enquiries, operations).

pub mod auth;
pub mod bus;
pub mod cns;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod hostdb;
pub mod ids;
pub mod iso15022;
pub mod pki;
pub mod pss;
pub mod relay;
pub mod settlement;
pub mod statements;
pub mod telemetry;
pub mod terminal;
pub mod up;
