//! Authorisation: the only module that speaks LDAP.
//!
//! - [`directory`]: the LDAP directory (service-account reads, user binds, group writes).
//! - [`policy`]: the function catalogue and the pure decision rules over `[auth]` config.
//! - [`service`]: `ccass auth`, the request/reply responder on `ccass.v1.auth.*`.
//! - [`client`]: [`AuthClient`], the typed, caching caller other services use.
//!
//! Directory layout, pending grants and the limit attribute are documented in
//! `src/auth/README.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Secret, check_range};

/// `[directory]` in config: the LDAP directory of users, participants and user groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    pub base_dn: String,
    pub bind_dn: String,
    /// Set it with `CCASS_DIRECTORY__BIND_PASSWORD`, never in a committed production file.
    pub bind_password: Secret<String>,
    pub connect_timeout_ms: u64,
    pub operation_timeout_ms: u64,
}

/// Whether a user group's functions reach only the holder's own participant or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupScope {
    /// The user's own participant and its accounts only.
    Own,
    /// Every participant (the clearing house's staff).
    Any,
}

/// `[auth.groups.<group>]`: what one predefined user group grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Function names from [`policy::Function`].
    pub functions: Vec<String>,
    pub scope: GroupScope,
}

/// `[auth]` in config: the authorisation service and its callers' cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The clearing house's own participant id (its staff are users of it). Only its users
    /// act across participants through groups of scope `any`.
    pub ccp_participant: String,
    /// How long [`AuthClient`] keeps an answer: directory changes take effect within it.
    pub cache_ttl_ms: u64,
    /// Entries an [`AuthClient`] cache holds before it starts afresh.
    pub cache_entries_max: usize,
    /// Requests one service instance handles at once.
    pub requests_in_flight_max: usize,
    /// How long a caller waits for the service's answer before denying.
    pub request_timeout_ms: u64,
    /// Participants whose group grants need a second administrator's approval (maker–checker).
    pub grant_approval_participants: Vec<String>,
    /// Predefined user groups by name.
    pub groups: BTreeMap<String, GroupConfig>,
    /// Which user groups each participant type (`ccp`, `broker`, ...) may be given.
    pub participant_types: BTreeMap<String, Vec<String>>,
}

impl AuthConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let key_error = |key: String, message: String| ConfigError::Key { key, message };
        crate::ids::ParticipantId::parse(&self.ccp_participant)
            .map_err(|error| key_error("auth.ccp_participant".into(), error.to_string()))?;
        check_range("auth.cache_ttl_ms", self.cache_ttl_ms, 0..=3_600_000)?;
        check_range(
            "auth.cache_entries_max",
            self.cache_entries_max,
            1..=10_000_000,
        )?;
        check_range(
            "auth.requests_in_flight_max",
            self.requests_in_flight_max,
            1..=100_000,
        )?;
        check_range(
            "auth.request_timeout_ms",
            self.request_timeout_ms,
            1..=600_000,
        )?;
        for participant in &self.grant_approval_participants {
            crate::ids::ParticipantId::parse(participant).map_err(|error| {
                key_error("auth.grant_approval_participants".into(), error.to_string())
            })?;
        }
        for (name, group) in &self.groups {
            if !policy::is_group_name(name) {
                return Err(key_error(
                    format!("auth.groups.{name}"),
                    "a group name is 1 to 64 of [a-z0-9-]".into(),
                ));
            }
            for function in &group.functions {
                if policy::Function::parse(function).is_none() {
                    return Err(key_error(
                        format!("auth.groups.{name}.functions"),
                        format!(
                            "unknown function `{function}` (known: {})",
                            policy::Function::names().join(", ")
                        ),
                    ));
                }
            }
        }
        for (participant_type, groups) in &self.participant_types {
            for group in groups {
                if !self.groups.contains_key(group) {
                    return Err(key_error(
                        format!("auth.participant_types.{participant_type}"),
                        format!("unknown group `{group}`: not in auth.groups"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cache_ttl_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

pub mod client;
pub mod directory;
pub mod policy;
pub mod service;

pub use client::AuthClient;
pub use directory::{Directory, DirectoryError, DirectoryProbe};
pub use policy::Function;
pub use service::AuthError;
