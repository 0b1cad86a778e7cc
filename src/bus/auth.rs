//! Wire types of the auth service (`ccass.v1.auth.{operation}`, core NATS request/reply,
//! JSON bodies) and the subscription its responders join.
//!
//! Every reply is an [`AuthReply`]: either `{"outcome":"allowed", ...body}` or
//! `{"outcome":"denied","code":"directory_unavailable","reason":"directory unavailable: ..."}`.
//! A denial always carries a [`DenyCode`] (bounded: it labels metrics) and a human reason.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::BusError;
use super::subjects::{self, AuthOperation};

/// The queue group every auth responder joins (as `subjects/auth.toml` declares).
pub const QUEUE_GROUP: &str = "auth";

/// Joins the auth service's queue group on every auth operation's subject.
pub async fn subscribe(client: &async_nats::Client) -> Result<async_nats::Subscriber, BusError> {
    let wildcard = subjects::pattern_wildcard(subjects::AUTH.pattern);
    client
        .queue_subscribe(wildcard.clone(), QUEUE_GROUP.to_owned())
        .await
        .map_err(|error| BusError::Unavailable {
            url: String::new(),
            message: format!("subscribe {wildcard} (queue group {QUEUE_GROUP}): {error}"),
        })
}

/// The operation a request subject names, if any.
pub fn operation_of(subject: &str) -> Option<AuthOperation> {
    AuthOperation::ALL
        .into_iter()
        .find(|operation| subjects::auth(*operation).as_str() == subject)
}

/// Why a request was denied. Bounded set: used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyCode {
    /// The request did not parse or named something invalid.
    MalformedRequest,
    /// No such user (or participant) in the directory.
    UnknownUser,
    /// The password or certificate did not authenticate.
    BadCredentials,
    /// The directory did not answer (down, refused, timed out).
    DirectoryUnavailable,
    /// The directory refused a change.
    DirectoryRefused,
    /// None of the user's groups grants the function.
    NotGranted,
    /// The function is granted for the user's own participant only.
    OtherParticipant,
    /// The group may not be given to users of that participant type.
    GroupNotAvailable,
    /// Maker–checker: the second user must differ from the first.
    SameUser,
    /// No such pending grant.
    NoSuchGrant,
    /// The audit trail could not be written, so nothing is allowed.
    AuditUnavailable,
    /// The auth service did not answer in time (client side).
    ServiceUnavailable,
}

impl DenyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::MalformedRequest => "malformed_request",
            DenyCode::UnknownUser => "unknown_user",
            DenyCode::BadCredentials => "bad_credentials",
            DenyCode::DirectoryUnavailable => "directory_unavailable",
            DenyCode::DirectoryRefused => "directory_refused",
            DenyCode::NotGranted => "not_granted",
            DenyCode::OtherParticipant => "other_participant",
            DenyCode::GroupNotAvailable => "group_not_available",
            DenyCode::SameUser => "same_user",
            DenyCode::NoSuchGrant => "no_such_grant",
            DenyCode::AuditUnavailable => "audit_unavailable",
            DenyCode::ServiceUnavailable => "service_unavailable",
        }
    }

    /// The human phrase a reason starts with.
    pub fn phrase(self) -> &'static str {
        match self {
            DenyCode::MalformedRequest => "malformed request",
            DenyCode::UnknownUser => "unknown user",
            DenyCode::BadCredentials => "bad credentials",
            DenyCode::DirectoryUnavailable => "directory unavailable",
            DenyCode::DirectoryRefused => "directory refused the change",
            DenyCode::NotGranted => "function not granted",
            DenyCode::OtherParticipant => "not allowed on another participant",
            DenyCode::GroupNotAvailable => "group not available to the participant type",
            DenyCode::SameUser => "the second user must be a different user",
            DenyCode::NoSuchGrant => "no such pending grant",
            DenyCode::AuditUnavailable => "audit trail unavailable",
            DenyCode::ServiceUnavailable => "auth service unavailable",
        }
    }
}

impl fmt::Display for DenyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phrase())
    }
}

/// A denial: its code and a reason that starts with the code's phrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}")]
pub struct Denial {
    pub code: DenyCode,
    pub reason: String,
}

impl Denial {
    pub fn new(code: DenyCode, detail: impl fmt::Display) -> Denial {
        let detail = detail.to_string();
        Denial {
            code,
            reason: if detail.is_empty() {
                code.phrase().to_owned()
            } else {
                format!("{}: {detail}", code.phrase())
            },
        }
    }
}

impl From<DenyCode> for Denial {
    fn from(code: DenyCode) -> Denial {
        Denial::new(code, "")
    }
}

/// Every reply: allowed with a body, or denied with a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AuthReply<T> {
    Allowed(T),
    Denied(Denial),
}

impl<T> AuthReply<T> {
    pub fn into_result(self) -> Result<T, Denial> {
        match self {
            AuthReply::Allowed(body) => Ok(body),
            AuthReply::Denied(denial) => Err(denial),
        }
    }
}

impl<T> From<Result<T, Denial>> for AuthReply<T> {
    fn from(result: Result<T, Denial>) -> Self {
        match result {
            Ok(body) => AuthReply::Allowed(body),
            Err(denial) => AuthReply::Denied(denial),
        }
    }
}

/// A user: participant id and uid (`B01234` / `ops1`), as authentication returned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserRef {
    pub participant: String,
    pub uid: String,
}

/// `B01234.ops1` → participant `B01234`, uid `ops1` (checked by the service, not here).
impl std::str::FromStr for UserRef {
    type Err = String;

    fn from_str(text: &str) -> Result<UserRef, String> {
        let (participant, uid) = text
            .split_once('.')
            .ok_or_else(|| format!("`{text}` is not <participant>.<uid>"))?;
        Ok(UserRef {
            participant: participant.to_owned(),
            uid: uid.to_owned(),
        })
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.participant, self.uid)
    }
}

/// `authenticate`: a certificate subject (gateway, terminal over mutual TLS) or a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum AuthenticateRequest {
    Certificate {
        subject: String,
    },
    Password {
        participant: String,
        uid: String,
        password: String,
    },
}

/// The authenticated principal: who, of which participant (from the directory, never from
/// the caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user: UserRef,
    pub participant_type: String,
    pub display_name: String,
}

/// `authorise`: may `user` perform `function` on `participant` or on `account`? With neither,
/// the user's own participant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthoriseRequest {
    pub user: UserRef,
    pub function: String,
    #[serde(default)]
    pub participant: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
}

/// An allowed `authorise`: the group that grants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorised {
    pub group: String,
}

/// `functions`: one user's groups, functions and input limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FunctionsRequest {
    pub user: UserRef,
}

/// One user's rights: effective groups, functions (own participant), SI input limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRights {
    pub user: UserRef,
    pub participant_type: String,
    pub groups: Vec<String>,
    pub functions: Vec<String>,
    /// Maximum value of one instruction this user may input, by ISO currency code.
    pub input_limits: BTreeMap<String, Decimal>,
    pub may_input: bool,
    pub may_authorise: bool,
}

/// `users`: every user of a participant with their rights (maker–checker data).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsersRequest {
    pub participant: String,
    /// The asking service (`settlement-intake`), for the audit trail.
    pub caller: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersReply {
    pub users: Vec<UserRights>,
}

/// `administer`: delegated administration by `actor`, with the actor's rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdministerRequest {
    pub actor: UserRef,
    pub action: AdminAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminAction {
    /// Create a user under their participant, with no groups.
    AddUser {
        user: UserRef,
        /// Full name (`cn`).
        name: String,
        /// The subject of the user's client certificate, if they have one.
        #[serde(default)]
        cert_subject: Option<String>,
        /// An initial password for the terminal, if any (stored hashed by the directory).
        #[serde(default)]
        password: Option<String>,
    },
    /// Add `user` to `group` (pending when the participant requires approval).
    Grant { user: UserRef, group: String },
    /// Remove `user` from `group` (immediate).
    Revoke { user: UserRef, group: String },
    /// Approve a pending grant made by another administrator.
    Approve { grant_id: i64 },
    /// Reject a pending grant.
    Reject { grant_id: i64 },
    /// Show a user's rights.
    Show { user: UserRef },
    /// List the pending grants the actor may decide.
    Pending,
}

/// An allowed `administer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AdminResult {
    /// The directory was changed.
    Applied,
    /// The grant waits for a second administrator's approval.
    PendingApproval {
        grant_id: i64,
    },
    /// A pending grant was rejected.
    Rejected,
    Shown {
        rights: UserRights,
    },
    PendingGrants {
        grants: Vec<PendingGrant>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingGrant {
    pub grant_id: i64,
    pub user: UserRef,
    pub group: String,
    pub requested_by: String,
    /// RFC 3339.
    pub requested_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_subjects() {
        for operation in AuthOperation::ALL {
            assert_eq!(
                operation_of(subjects::auth(operation).as_str()),
                Some(operation)
            );
        }
        assert_eq!(operation_of("ccass.v1.auth.nope"), None);
    }

    #[test]
    fn queue_group_matches_the_catalogue() {
        let catalogue = super::super::catalogue::Catalogue::embedded().unwrap();
        let spec = catalogue
            .subjects
            .iter()
            .find(|s| s.builder == subjects::AUTH.builder)
            .unwrap();
        assert_eq!(spec.queue_group.as_deref(), Some(QUEUE_GROUP));
    }

    #[test]
    fn replies_are_tagged() {
        let denied: AuthReply<Authorised> = AuthReply::Denied(Denial::new(
            DenyCode::DirectoryUnavailable,
            "connection refused",
        ));
        let json = serde_json::to_value(&denied).unwrap();
        assert_eq!(json["outcome"], "denied");
        assert_eq!(json["code"], "directory_unavailable");
        assert_eq!(json["reason"], "directory unavailable: connection refused");
        let allowed: AuthReply<Authorised> = AuthReply::Allowed(Authorised {
            group: "si-input".into(),
        });
        let back: AuthReply<Authorised> =
            serde_json::from_str(&serde_json::to_string(&allowed).unwrap()).unwrap();
        assert_eq!(back, allowed);
    }
}
