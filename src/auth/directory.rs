//! The LDAP directory: connections bound as the service account, and the reads the rest of
//! ccass needs. Every operation is bounded by `directory.operation_timeout_ms`.

use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use super::DirectoryConfig;
use crate::telemetry::ops::{Probe, ProbeFuture};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("ldap directory at {url}: {message}")]
    Unavailable { url: String, message: String },
    #[error("ldap directory: {operation}: {message}")]
    Operation { operation: String, message: String },
}

#[derive(Clone)]
pub struct Directory {
    config: DirectoryConfig,
}

/// A user entry as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    pub uid: String,
}

impl Directory {
    pub fn new(config: DirectoryConfig) -> Directory {
        Directory { config }
    }

    fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.config.operation_timeout_ms)
    }

    fn unavailable(&self, error: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::Unavailable {
            url: self.config.url.clone(),
            message: error.to_string(),
        }
    }

    /// A connection bound as the service account (`directory.bind_dn`).
    async fn bind(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_millis(self.config.connect_timeout_ms));
        let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|error| self.unavailable(error))?;
        ldap3::drive!(connection);
        ldap.with_timeout(self.operation_timeout())
            .simple_bind(&self.config.bind_dn, self.config.bind_password.expose())
            .await
            .and_then(|result| result.success())
            .map_err(|error| {
                self.unavailable(format!("bind as {}: {error}", self.config.bind_dn))
            })?;
        Ok(ldap)
    }

    /// Succeeds when the directory answers a bind and a read of its base entry.
    pub async fn ping(&self) -> Result<(), DirectoryError> {
        let mut ldap = self.bind().await?;
        let outcome = ldap
            .with_timeout(self.operation_timeout())
            .search(
                &self.config.base_dn,
                Scope::Base,
                "(objectClass=*)",
                vec!["1.1"],
            )
            .await
            .and_then(|result| result.success());
        let _ = ldap.unbind().await;
        outcome.map(|_| ()).map_err(|error| {
            self.unavailable(format!("read base {}: {error}", self.config.base_dn))
        })
    }

    /// The users that are members of a user group (`cn=<group>,ou=groups,<base>`), by DN order.
    pub async fn users_in_group(&self, group: &str) -> Result<Vec<DirectoryUser>, DirectoryError> {
        let group_dn = format!(
            "cn={},ou=groups,{}",
            ldap3::dn_escape(group),
            self.config.base_dn
        );
        let filter = format!(
            "(&(objectClass=inetOrgPerson)(memberOf={}))",
            ldap3::ldap_escape(&group_dn)
        );
        let mut ldap = self.bind().await?;
        let outcome = ldap
            .with_timeout(self.operation_timeout())
            .search(&self.config.base_dn, Scope::Subtree, &filter, vec!["uid"])
            .await
            .and_then(|result| result.success());
        let _ = ldap.unbind().await;
        let (entries, _) = outcome.map_err(|error| DirectoryError::Operation {
            operation: format!("search members of {group}"),
            message: error.to_string(),
        })?;
        let mut users: Vec<DirectoryUser> = entries
            .into_iter()
            .map(SearchEntry::construct)
            .map(|entry| DirectoryUser {
                uid: entry
                    .attrs
                    .get("uid")
                    .and_then(|values| values.first())
                    .cloned()
                    .unwrap_or_default(),
                dn: entry.dn,
            })
            .collect();
        users.sort_by(|a, b| a.dn.cmp(&b.dn));
        Ok(users)
    }
}

/// Readiness of the directory.
pub struct DirectoryProbe(pub Directory);

impl Probe for DirectoryProbe {
    fn dependency(&self) -> &'static str {
        "ldap"
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move { self.0.ping().await.map_err(|error| error.to_string()) })
    }
}
