//! The LDAP directory: connections bound as the service account, and the reads the rest of
//! ccass needs. Every operation is bounded by `directory.operation_timeout_ms`.
//!
//! Layout (see `tests/data/ldap/directory.ldif` and `src/auth/README.md`):
//! `uid=<uid>,ou=<participant>,ou=participants,<base>` users (inetOrgPerson, `description`
//! values `cert-subject=<subject DN>` and `si-input-limit=<CCY>:<amount>`),
//! `ou=<participant>,ou=participants,<base>` participants (`description:
//! participant-type=<type>`), `cn=<group>,ou=groups,<base>` user groups (groupOfNames), with
//! `memberOf` on users from the memberof overlay.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use rust_decimal::Decimal;

use super::DirectoryConfig;
use crate::ids::ParticipantId;
use crate::telemetry::ops::{Probe, ProbeFuture};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The server could not be reached, refused the service account, broke the connection or
    /// did not answer in time.
    #[error("ldap directory at {url}: {message}")]
    Unavailable { url: String, message: String },
    /// The server answered with an error result.
    #[error("ldap directory: {operation}: {message}")]
    Operation { operation: String, message: String },
}

impl DirectoryError {
    /// Whether the directory itself is unreachable (as opposed to refusing one operation).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DirectoryError::Unavailable { .. })
    }
}

/// `description` prefix of a user's client-certificate subject.
pub const CERT_SUBJECT_PREFIX: &str = "cert-subject=";
/// `description` prefix of a user's SI input limit: `si-input-limit=HKD:5000000`.
pub const INPUT_LIMIT_PREFIX: &str = "si-input-limit=";
/// `description` prefix of a participant's type: `participant-type=broker`.
pub const PARTICIPANT_TYPE_PREFIX: &str = "participant-type=";

/// LDAP result codes the directory layer branches on.
const RC_NO_SUCH_OBJECT: u32 = 32;
const RC_INVALID_CREDENTIALS: u32 = 49;
const RC_ATTRIBUTE_OR_VALUE_EXISTS: u32 = 20;
const RC_NO_SUCH_ATTRIBUTE: u32 = 16;
const RC_OBJECT_CLASS_VIOLATION: u32 = 65;

/// A user id: 1 to 64 of `[A-Za-z0-9._-]` (safe inside a DN without escaping surprises).
pub fn is_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A user as the auth service reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub dn: String,
    pub participant: ParticipantId,
    pub uid: String,
    pub display_name: String,
    /// Names of the groups the directory lists the user in (from `memberOf`), sorted.
    pub groups: Vec<String>,
    pub cert_subject: Option<String>,
    /// SI input limit per ISO currency code.
    pub input_limits: BTreeMap<String, Decimal>,
}

const USER_ATTRIBUTES: [&str; 4] = ["uid", "cn", "description", "memberOf"];

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

    /// A connection, not yet bound.
    async fn connect(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_millis(self.config.connect_timeout_ms));
        let (connection, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|error| self.unavailable(error))?;
        ldap3::drive!(connection);
        Ok(ldap)
    }

    /// A connection bound as the service account (`directory.bind_dn`).
    async fn bind(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let mut ldap = self.connect().await?;
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

impl Directory {
    /// An LDAP error of `operation`: a result code is the server's answer, anything else
    /// (I/O, timeout, broken connection) means the directory is unavailable.
    fn classify(&self, operation: &str, error: LdapError) -> DirectoryError {
        match error {
            LdapError::LdapResult { result } => DirectoryError::Operation {
                operation: operation.to_owned(),
                message: format!("result code {}: {}", result.rc, result.text),
            },
            other => self.unavailable(format!("{operation}: {other}")),
        }
    }

    fn participants_dn(&self) -> String {
        format!("ou=participants,{}", self.config.base_dn)
    }

    fn participant_dn(&self, participant: &ParticipantId) -> String {
        format!("ou={},{}", participant.as_str(), self.participants_dn())
    }

    /// The DN of a user; `uid` must satisfy [`is_uid`].
    pub fn user_dn(&self, participant: &ParticipantId, uid: &str) -> String {
        format!(
            "uid={},{}",
            ldap3::dn_escape(uid),
            self.participant_dn(participant)
        )
    }

    /// The DN of a user group; `group` must be a valid group name.
    pub fn group_dn(&self, group: &str) -> String {
        format!(
            "cn={},ou=groups,{}",
            ldap3::dn_escape(group),
            self.config.base_dn
        )
    }

    /// Runs one search as the service account; a base search of a missing entry is empty.
    async fn search(
        &self,
        operation: &str,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let mut ldap = self.bind().await?;
        let outcome = ldap
            .with_timeout(self.operation_timeout())
            .search(base, scope, filter, attributes.to_vec())
            .await;
        let _ = ldap.unbind().await;
        let result = outcome.map_err(|error| self.classify(operation, error))?;
        if result.1.rc == RC_NO_SUCH_OBJECT {
            return Ok(Vec::new());
        }
        let (entries, _) = result
            .success()
            .map_err(|error| self.classify(operation, error))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// Reads a user entry into a [`UserEntry`]; None when its DN is not a user's.
    fn user_entry(&self, entry: SearchEntry) -> Option<UserEntry> {
        let (uid, participant) = parse_user_dn(&entry.dn, &self.participants_dn())?;
        let group_suffix = format!(",ou=groups,{}", self.config.base_dn).to_ascii_lowercase();
        let mut groups: Vec<String> = entry
            .attrs
            .get("memberOf")
            .into_iter()
            .flatten()
            .filter_map(|dn| {
                let lower = dn.to_ascii_lowercase();
                let rdn = lower.strip_suffix(&group_suffix)?;
                let name = rdn.strip_prefix("cn=")?;
                super::policy::is_group_name(name).then(|| name.to_owned())
            })
            .collect();
        groups.sort();
        groups.dedup();
        let descriptions = entry.attrs.get("description").cloned().unwrap_or_default();
        let cert_subject = descriptions
            .iter()
            .find_map(|d| d.strip_prefix(CERT_SUBJECT_PREFIX))
            .map(str::to_owned);
        let input_limits = descriptions
            .iter()
            .filter_map(|d| d.strip_prefix(INPUT_LIMIT_PREFIX))
            .filter_map(parse_limit)
            .collect();
        let display_name = entry
            .attrs
            .get("cn")
            .and_then(|values| values.first())
            .cloned()
            .unwrap_or_default();
        Some(UserEntry {
            dn: entry.dn,
            participant,
            uid,
            display_name,
            groups,
            cert_subject,
            input_limits,
        })
    }

    /// One user, or None when the directory has no such user.
    pub async fn user(
        &self,
        participant: &ParticipantId,
        uid: &str,
    ) -> Result<Option<UserEntry>, DirectoryError> {
        if !is_uid(uid) {
            return Ok(None);
        }
        let entries = self
            .search(
                &format!("read user {participant}.{uid}"),
                &self.user_dn(participant, uid),
                Scope::Base,
                "(objectClass=inetOrgPerson)",
                &USER_ATTRIBUTES,
            )
            .await?;
        Ok(entries
            .into_iter()
            .next()
            .and_then(|entry| self.user_entry(entry)))
    }

    /// One user and their participant's type, in one search: None when the participant or
    /// the user is not in the directory.
    pub async fn user_and_participant_type(
        &self,
        participant: &ParticipantId,
        uid: &str,
    ) -> Result<Option<(UserEntry, String)>, DirectoryError> {
        if !is_uid(uid) {
            return Ok(None);
        }
        let participant_dn = self.participant_dn(participant);
        let filter = format!(
            "(|(objectClass=organizationalUnit)(&(objectClass=inetOrgPerson)(uid={})))",
            ldap3::ldap_escape(uid)
        );
        let entries = self
            .search(
                &format!("read user {participant}.{uid}"),
                &participant_dn,
                Scope::Subtree,
                &filter,
                &USER_ATTRIBUTES,
            )
            .await?;
        let mut participant_type = None;
        let mut user = None;
        for entry in entries {
            if entry.dn.eq_ignore_ascii_case(&participant_dn) {
                participant_type = Some(type_of(&entry));
            } else if let Some(found) = self.user_entry(entry)
                && found.uid == uid
                && found.participant == *participant
            {
                user = Some(found);
            }
        }
        Ok(participant_type.zip(user).map(|(kind, user)| (user, kind)))
    }

    /// The user whose certificate subject is `subject`; None when no user or several have it.
    pub async fn user_by_certificate(
        &self,
        subject: &str,
    ) -> Result<Option<UserEntry>, DirectoryError> {
        let filter = format!(
            "(&(objectClass=inetOrgPerson)(description={}))",
            ldap3::ldap_escape(format!("{CERT_SUBJECT_PREFIX}{subject}"))
        );
        let entries = self
            .search(
                "find user by certificate subject",
                &self.participants_dn(),
                Scope::Subtree,
                &filter,
                &USER_ATTRIBUTES,
            )
            .await?;
        let mut users: Vec<UserEntry> = entries
            .into_iter()
            .filter_map(|entry| self.user_entry(entry))
            .collect();
        Ok(if users.len() == 1 { users.pop() } else { None })
    }

    /// Every user of a participant, by uid.
    pub async fn users_of(
        &self,
        participant: &ParticipantId,
    ) -> Result<Vec<UserEntry>, DirectoryError> {
        let entries = self
            .search(
                &format!("list users of {participant}"),
                &self.participant_dn(participant),
                Scope::OneLevel,
                "(objectClass=inetOrgPerson)",
                &USER_ATTRIBUTES,
            )
            .await?;
        let mut users: Vec<UserEntry> = entries
            .into_iter()
            .filter_map(|entry| self.user_entry(entry))
            .collect();
        users.sort_by(|a, b| a.uid.cmp(&b.uid));
        Ok(users)
    }

    /// A participant's type (`participant-type=` in its entry's description); None when the
    /// participant is not in the directory, empty when it has no type.
    pub async fn participant_type(
        &self,
        participant: &ParticipantId,
    ) -> Result<Option<String>, DirectoryError> {
        let entries = self
            .search(
                &format!("read participant {participant}"),
                &self.participant_dn(participant),
                Scope::Base,
                "(objectClass=organizationalUnit)",
                &["description"],
            )
            .await?;
        Ok(entries.first().map(type_of))
    }

    /// Checks a user's password with a bind as that user: Ok(false) for a wrong password or
    /// an unknown user. An empty password is refused here (LDAP would treat it as an
    /// unauthenticated bind and succeed).
    pub async fn check_password(
        &self,
        participant: &ParticipantId,
        uid: &str,
        password: &str,
    ) -> Result<bool, DirectoryError> {
        if password.is_empty() || !is_uid(uid) {
            return Ok(false);
        }
        let dn = self.user_dn(participant, uid);
        let mut ldap = self.connect().await?;
        let outcome = ldap
            .with_timeout(self.operation_timeout())
            .simple_bind(&dn, password)
            .await;
        let _ = ldap.unbind().await;
        let result = outcome.map_err(|error| self.classify("bind as user", error))?;
        match result.rc {
            0 => Ok(true),
            RC_INVALID_CREDENTIALS => Ok(false),
            rc => Err(DirectoryError::Operation {
                operation: format!("bind as {dn}"),
                message: format!("result code {rc}: {}", result.text),
            }),
        }
    }

    async fn modify_group(
        &self,
        operation: &str,
        group: &str,
        modification: Mod<String>,
    ) -> Result<u32, DirectoryError> {
        let mut ldap = self.bind().await?;
        let outcome = ldap
            .with_timeout(self.operation_timeout())
            .modify(&self.group_dn(group), vec![modification])
            .await;
        let _ = ldap.unbind().await;
        let result = outcome.map_err(|error| self.classify(operation, error))?;
        Ok(result.rc)
    }

    /// Adds a user to a group (idempotent).
    pub async fn add_to_group(&self, group: &str, user_dn: &str) -> Result<(), DirectoryError> {
        let operation = format!("add {user_dn} to group {group}");
        let values = HashSet::from([user_dn.to_owned()]);
        match self
            .modify_group(&operation, group, Mod::Add("member".to_owned(), values))
            .await?
        {
            0 | RC_ATTRIBUTE_OR_VALUE_EXISTS => Ok(()),
            rc => Err(DirectoryError::Operation {
                operation,
                message: format!("result code {rc}"),
            }),
        }
    }

    /// Removes a user from a group (idempotent). A groupOfNames needs a member, so the last
    /// member is replaced by the service account's DN, which is no user and grants nothing.
    pub async fn remove_from_group(
        &self,
        group: &str,
        user_dn: &str,
    ) -> Result<(), DirectoryError> {
        let operation = format!("remove {user_dn} from group {group}");
        let values = HashSet::from([user_dn.to_owned()]);
        match self
            .modify_group(&operation, group, Mod::Delete("member".to_owned(), values))
            .await?
        {
            0 | RC_NO_SUCH_ATTRIBUTE => Ok(()),
            RC_OBJECT_CLASS_VIOLATION => {
                let placeholder = HashSet::from([self.config.bind_dn.clone()]);
                match self
                    .modify_group(
                        &operation,
                        group,
                        Mod::Replace("member".to_owned(), placeholder),
                    )
                    .await?
                {
                    0 => Ok(()),
                    rc => Err(DirectoryError::Operation {
                        operation,
                        message: format!("result code {rc}"),
                    }),
                }
            }
            rc => Err(DirectoryError::Operation {
                operation,
                message: format!("result code {rc}"),
            }),
        }
    }
}

impl Directory {
    /// Creates a user under its participant: inetOrgPerson with `cn` = `name`, optionally a
    /// certificate subject and an initial password (set with the Password Modify extended
    /// operation, so the server stores it hashed). Returns the new DN.
    pub async fn add_user(
        &self,
        participant: &ParticipantId,
        uid: &str,
        name: &str,
        cert_subject: Option<&str>,
        password: Option<&str>,
    ) -> Result<String, DirectoryError> {
        let dn = self.user_dn(participant, uid);
        let operation = format!("add user {dn}");
        let surname = name.split_whitespace().last().unwrap_or(uid).to_owned();
        let mut attributes: Vec<(String, HashSet<String>)> = vec![
            (
                "objectClass".into(),
                HashSet::from(["inetOrgPerson".into()]),
            ),
            ("uid".into(), HashSet::from([uid.to_owned()])),
            ("cn".into(), HashSet::from([name.to_owned()])),
            ("sn".into(), HashSet::from([surname])),
            ("ou".into(), HashSet::from([participant.to_string()])),
        ];
        if let Some(subject) = cert_subject {
            attributes.push((
                "description".into(),
                HashSet::from([format!("{CERT_SUBJECT_PREFIX}{subject}")]),
            ));
        }
        let mut ldap = self.bind().await?;
        let added = ldap
            .with_timeout(self.operation_timeout())
            .add(&dn, attributes)
            .await
            .and_then(|result| result.success());
        let outcome = match (added, password) {
            (Err(error), _) => Err(error),
            (Ok(_), None) => Ok(()),
            (Ok(_), Some(password)) => ldap
                .with_timeout(self.operation_timeout())
                .extended(ldap3::exop::PasswordModify {
                    user_id: Some(&dn),
                    old_pass: None,
                    new_pass: Some(password),
                })
                .await
                .and_then(|result| result.success())
                .map(|_| ()),
        };
        let _ = ldap.unbind().await;
        outcome.map_err(|error| self.classify(&operation, error))?;
        Ok(dn)
    }
}

/// A participant entry's type (`participant-type=` in its description), empty when absent.
fn type_of(entry: &SearchEntry) -> String {
    entry
        .attrs
        .get("description")
        .into_iter()
        .flatten()
        .find_map(|d| d.strip_prefix(PARTICIPANT_TYPE_PREFIX))
        .unwrap_or_default()
        .to_owned()
}

/// `uid=<uid>,ou=<participant>,<participants_dn>` → (uid, participant).
fn parse_user_dn(dn: &str, participants_dn: &str) -> Option<(String, ParticipantId)> {
    let lower_suffix = format!(",{}", participants_dn.to_ascii_lowercase());
    if !dn.to_ascii_lowercase().ends_with(&lower_suffix) {
        return None;
    }
    let head = &dn[..dn.len() - lower_suffix.len()];
    let (uid_rdn, ou_rdn) = head.split_once(',')?;
    let uid = uid_rdn
        .strip_prefix("uid=")
        .or_else(|| uid_rdn.strip_prefix("UID="))?;
    let participant = ou_rdn
        .strip_prefix("ou=")
        .or_else(|| ou_rdn.strip_prefix("OU="))?;
    if !is_uid(uid) {
        return None;
    }
    Some((uid.to_owned(), ParticipantId::parse(participant).ok()?))
}

/// `HKD:5000000` → (HKD, 5000000); None unless a 3-letter upper-case code and an amount ≥ 0.
fn parse_limit(text: &str) -> Option<(String, Decimal)> {
    let (currency, amount) = text.split_once(':')?;
    let valid_currency = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    let amount = Decimal::from_str(amount.trim()).ok()?;
    (valid_currency && amount >= Decimal::ZERO).then(|| (currency.to_owned(), amount))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_dns_and_limits_parse() {
        let base = "ou=participants,dc=ccass,dc=test";
        assert_eq!(
            parse_user_dn("uid=ops1,ou=B01234,ou=participants,dc=ccass,dc=test", base),
            Some(("ops1".into(), ParticipantId::parse("B01234").unwrap()))
        );
        assert_eq!(parse_user_dn("cn=admin,dc=ccass,dc=test", base), None);
        assert_eq!(
            parse_user_dn("uid=x,ou=bad,ou=participants,dc=ccass,dc=test", base),
            None
        );
        assert_eq!(
            parse_limit("HKD:5000000.50"),
            Some(("HKD".into(), Decimal::new(500000050, 2)))
        );
        assert_eq!(parse_limit("hkd:1"), None);
        assert_eq!(parse_limit("HKD:-1"), None);
        assert_eq!(parse_limit("HKD"), None);
        assert!(is_uid("ops1") && !is_uid("a,b") && !is_uid("") && !is_uid("*"));
    }
}
