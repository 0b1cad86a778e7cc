//! Authorisation: the only module that speaks LDAP.

use serde::Deserialize;

use crate::config::Secret;

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

pub mod directory;

pub use directory::{Directory, DirectoryError, DirectoryProbe};
