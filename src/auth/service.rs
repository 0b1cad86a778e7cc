//! `ccass auth`: answers `ccass.v1.auth.{operation}` requests in the queue group `auth`, so
//! several instances share the load.
//!
//! Every request is decided from the directory as it is now (no cache here; callers cache
//! for `auth.cache_ttl_ms`), written to the audit trail with who, what and the outcome, and
//! counted in `/metrics`. Fails closed: an unreachable directory, an unknown user or a
//! malformed request is a denial with a specific reason, and an audit row that cannot be
//! written turns an allow into a denial. Each request opens its own directory connection, so
//! service resumes by itself when the directory comes back.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::directory::{Directory, DirectoryError, UserEntry, is_uid};
use super::policy::{Function, Policy, UserFacts, is_group_name};
use super::{AuthConfig, DirectoryConfig};
use crate::bus::auth::{
    AdminAction, AdminResult, AdministerRequest, AuthReply, AuthenticateRequest, AuthoriseRequest,
    Authorised, Denial, DenyCode, FunctionsRequest, PendingGrant, Principal, UserRef, UserRights,
    UsersReply, UsersRequest,
};
use crate::bus::subjects::AuthOperation;
use crate::bus::{self, BusError};
use crate::config::Config;
use crate::hostdb::audit_trail::{self, AuditOutcome, AuditRecord};
use crate::hostdb::{self, HostDbError, Pool};
use crate::ids::ParticipantId;

/// Metric names of the auth service.
pub const REQUESTS_TOTAL: &str = "ccass_auth_requests_total";
pub const DENIALS_TOTAL: &str = "ccass_auth_denials_total";

pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "auth requests answered, by operation and outcome (allowed, denied)"
    );
    metrics::describe_counter!(
        DENIALS_TOTAL,
        "auth requests denied, by operation and reason code (directory_unavailable, not_granted, ...)"
    );
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("postgres for the audit trail: {0}")]
    HostDb(#[from] HostDbError),
}

/// Runs the auth service until `shutdown` completes, then finishes the requests in hand.
pub async fn run(
    config: Config,
    nats: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AuthError> {
    let pool = hostdb::connect_as(&config.hostdb, "ccass-auth")?;
    let service = Arc::new(AuthService::new(config.directory, config.auth, pool));
    serve(service, nats, shutdown).await
}

/// Serves requests with an existing [`AuthService`] until `shutdown` completes.
pub async fn serve(
    service: Arc<AuthService>,
    nats: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AuthError> {
    describe_metrics();
    let mut subscriber = bus::auth::subscribe(&nats).await?;
    let permits = Arc::new(Semaphore::new(
        service.policy.config().requests_in_flight_max,
    ));
    let mut in_flight = JoinSet::new();
    tracing::info!(
        queue_group = bus::auth::QUEUE_GROUP,
        "auth service: answering requests"
    );
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => break,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        while in_flight.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let service = service.clone();
        let nats = nats.clone();
        in_flight.spawn(async move {
            let _permit = permit;
            let Some(reply_to) = message.reply.clone() else {
                return;
            };
            let body = service
                .handle(message.subject.as_str(), &message.payload)
                .await;
            if let Err(error) = nats.publish(reply_to, body.into()).await {
                tracing::warn!(%error, "auth service: reply not sent");
            }
        });
    }
    let _ = subscriber.unsubscribe().await;
    while in_flight.join_next().await.is_some() {}
    let _ = nats.flush().await;
    tracing::info!("auth service: stopped");
    Ok(())
}

/// The decisions, independent of NATS (tests call [`AuthService::handle`] directly too).
pub struct AuthService {
    directory: Directory,
    policy: Policy,
    pool: Pool,
}

/// What one request decided, before it is audited.
struct Decided<T> {
    result: Result<T, Denial>,
    audit: AuditRecord,
}

fn denial_from_directory(error: DirectoryError) -> Denial {
    Denial::new(DenyCode::DirectoryUnavailable, error)
}

fn malformed(detail: impl std::fmt::Display) -> Denial {
    Denial::new(DenyCode::MalformedRequest, detail)
}

fn parse_participant(text: &str) -> Result<ParticipantId, Denial> {
    ParticipantId::parse(text).map_err(malformed)
}

fn parse_user(user: &UserRef) -> Result<ParticipantId, Denial> {
    if !is_uid(&user.uid) {
        return Err(malformed(format!("uid `{}` is not valid", user.uid)));
    }
    parse_participant(&user.participant)
}

/// The owner of a stock account `B01234-01`.
fn account_owner(account: &str) -> Result<ParticipantId, Denial> {
    let (participant, suffix) = account
        .split_once('-')
        .ok_or_else(|| malformed(format!("account `{account}` is not <participant>-<nn>")))?;
    if suffix.len() != 2 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(
            "account `{account}` is not <participant>-<nn>"
        )));
    }
    parse_participant(participant)
}

impl AuthService {
    pub fn new(directory: DirectoryConfig, auth: AuthConfig, pool: Pool) -> AuthService {
        AuthService {
            directory: Directory::new(directory),
            policy: Policy::new(auth),
            pool,
        }
    }

    /// Answers one request: `subject` names the operation, `payload` is its JSON body. Always
    /// returns a reply body (a denial when anything fails).
    pub async fn handle(&self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let Some(operation) = bus::auth::operation_of(subject) else {
            let decided: Decided<()> = Decided {
                result: Err(malformed(format!("unknown auth subject {subject}"))),
                audit: AuditRecord {
                    actor: "unknown".to_owned(),
                    participant_id: None,
                    action: "auth.unknown".to_owned(),
                    target: Some(subject.to_owned()),
                    outcome: AuditOutcome::Refused,
                    detail: serde_json::json!({}),
                },
            };
            let result = self.audit(decided).await;
            self.count("unknown", result.as_ref().map(|_| ()));
            return encode(&AuthReply::from(result));
        };
        match operation {
            AuthOperation::Authenticate => {
                self.answer(operation, payload, |r| self.authenticate(r))
                    .await
            }
            AuthOperation::Authorise => {
                self.answer(operation, payload, |r| self.authorise(r)).await
            }
            AuthOperation::Functions => {
                self.answer(operation, payload, |r| self.functions(r)).await
            }
            AuthOperation::Users => self.answer(operation, payload, |r| self.users(r)).await,
            AuthOperation::Administer => {
                self.answer(operation, payload, |r| self.administer(r))
                    .await
            }
        }
    }

    async fn answer<Req, Rep, F, Fut>(
        &self,
        operation: AuthOperation,
        payload: &[u8],
        decide: F,
    ) -> Vec<u8>
    where
        Req: DeserializeOwned,
        Rep: Serialize,
        F: FnOnce(Req) -> Fut,
        Fut: Future<Output = Decided<Rep>>,
    {
        let decided = match serde_json::from_slice::<Req>(payload) {
            Ok(request) => decide(request).await,
            // The position only: a serde message may quote a value (a password).
            Err(error) => Decided {
                result: Err(malformed(format!(
                    "{:?} error at line {} column {}",
                    error.classify(),
                    error.line(),
                    error.column()
                ))),
                audit: AuditRecord {
                    actor: "unknown".to_owned(),
                    participant_id: None,
                    action: format!("auth.{}", operation.token()),
                    target: None,
                    outcome: AuditOutcome::Refused,
                    detail: serde_json::json!({}),
                },
            },
        };
        let result = self.audit(decided).await;
        self.count(operation.token(), result.as_ref().map(|_| ()));
        encode(&AuthReply::from(result))
    }

    /// Writes the audit row; an allow that cannot be audited becomes a denial.
    async fn audit<T>(&self, decided: Decided<T>) -> Result<T, Denial> {
        let Decided { result, mut audit } = decided;
        audit.outcome = if result.is_ok() {
            AuditOutcome::Allowed
        } else {
            AuditOutcome::Refused
        };
        if let (Err(denial), Some(detail)) = (&result, audit.detail.as_object_mut()) {
            detail.insert("code".to_owned(), denial.code.as_str().into());
            detail.insert("reason".to_owned(), denial.reason.clone().into());
        }
        match audit_trail::append(&self.pool, &audit).await {
            Ok(_) => result,
            Err(error) => {
                tracing::error!(%error, action = %audit.action, actor = %audit.actor, "audit trail not written: denying");
                Err(Denial::new(DenyCode::AuditUnavailable, error))
            }
        }
    }

    fn count(&self, operation: &'static str, result: Result<(), &Denial>) {
        let outcome = if result.is_ok() { "allowed" } else { "denied" };
        metrics::counter!(REQUESTS_TOTAL, "operation" => operation, "outcome" => outcome)
            .increment(1);
        if let Err(denial) = result {
            metrics::counter!(DENIALS_TOTAL, "operation" => operation, "code" => denial.code.as_str())
                .increment(1);
        }
    }

    /// The user's directory entry and the facts decisions need; `UnknownUser` when absent.
    async fn load_user(
        &self,
        participant: &ParticipantId,
        uid: &str,
    ) -> Result<(UserEntry, UserFacts), Denial> {
        let (entry, participant_type) = self
            .directory
            .user_and_participant_type(participant, uid)
            .await
            .map_err(denial_from_directory)?
            .ok_or_else(|| Denial::new(DenyCode::UnknownUser, format!("{participant}.{uid}")))?;
        let facts = UserFacts {
            participant: entry.participant.clone(),
            participant_type,
            groups: entry.groups.clone(),
        };
        Ok((entry, facts))
    }

    async fn facts(&self, entry: &UserEntry) -> Result<UserFacts, Denial> {
        let participant_type = self
            .directory
            .participant_type(&entry.participant)
            .await
            .map_err(denial_from_directory)?
            .ok_or_else(|| {
                Denial::new(
                    DenyCode::UnknownUser,
                    format!("participant {} not in the directory", entry.participant),
                )
            })?;
        Ok(UserFacts {
            participant: entry.participant.clone(),
            participant_type,
            groups: entry.groups.clone(),
        })
    }

    fn rights(&self, entry: &UserEntry, facts: &UserFacts) -> UserRights {
        let functions = self.policy.functions(facts);
        UserRights {
            user: user_ref(entry),
            participant_type: facts.participant_type.clone(),
            groups: self
                .policy
                .effective_groups(facts)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            functions: functions.iter().map(|f| f.name().to_owned()).collect(),
            input_limits: entry.input_limits.clone(),
            may_input: functions.contains(&Function::SiInput),
            may_authorise: functions.contains(&Function::SiAuthorise),
        }
    }

    fn principal(entry: &UserEntry, facts: &UserFacts) -> Principal {
        Principal {
            user: user_ref(entry),
            participant_type: facts.participant_type.clone(),
            display_name: entry.display_name.clone(),
        }
    }

    async fn authenticate(&self, request: AuthenticateRequest) -> Decided<Principal> {
        let (actor, method) = match &request {
            AuthenticateRequest::Certificate { subject } => {
                (format!("cert:{subject}"), "certificate")
            }
            AuthenticateRequest::Password {
                participant, uid, ..
            } => (format!("{participant}.{uid}"), "password"),
        };
        let result = async {
            let (entry, facts) = match &request {
                AuthenticateRequest::Certificate { subject } => {
                    let entry = self
                        .directory
                        .user_by_certificate(subject)
                        .await
                        .map_err(denial_from_directory)?
                        .ok_or_else(|| {
                            Denial::new(DenyCode::UnknownUser, "no user has this certificate")
                        })?;
                    let facts = self.facts(&entry).await?;
                    (entry, facts)
                }
                AuthenticateRequest::Password {
                    participant,
                    uid,
                    password,
                } => {
                    let participant = parse_participant(participant)?;
                    if !is_uid(uid) {
                        return Err(malformed(format!("uid `{uid}` is not valid")));
                    }
                    let valid = self
                        .directory
                        .check_password(&participant, uid, password)
                        .await
                        .map_err(denial_from_directory)?;
                    if !valid {
                        return Err(DenyCode::BadCredentials.into());
                    }
                    self.load_user(&participant, uid).await?
                }
            };
            Ok(Self::principal(&entry, &facts))
        }
        .await;
        let participant_id = result.as_ref().ok().map(|p| p.user.participant.clone());
        let detail = match &result {
            Ok(principal) => {
                serde_json::json!({"method": method, "user": principal.user.to_string()})
            }
            Err(_) => serde_json::json!({"method": method}),
        };
        Decided {
            result,
            audit: AuditRecord {
                actor,
                participant_id,
                action: "auth.authenticate".to_owned(),
                target: None,
                outcome: AuditOutcome::Refused,
                detail,
            },
        }
    }

    async fn authorise(&self, request: AuthoriseRequest) -> Decided<Authorised> {
        let target_text = match (&request.participant, &request.account) {
            (_, Some(account)) => format!("{} on account {account}", request.function),
            (Some(participant), None) => format!("{} on {participant}", request.function),
            (None, None) => request.function.clone(),
        };
        let mut detail = serde_json::json!({
            "function": request.function,
            "participant": request.participant,
            "account": request.account,
        });
        let mut participant_id = None;
        let result = async {
            let participant = parse_user(&request.user)?;
            let function = Function::parse(&request.function)
                .ok_or_else(|| malformed(format!("unknown function `{}`", request.function)))?;
            let mut target = request
                .participant
                .as_deref()
                .map(parse_participant)
                .transpose()?;
            if let Some(account) = &request.account {
                let owner = account_owner(account)?;
                if target.as_ref().is_some_and(|t| *t != owner) {
                    return Err(malformed(format!(
                        "account {account} does not belong to {}",
                        request.participant.as_deref().unwrap_or_default()
                    )));
                }
                target = Some(owner);
            }
            let (_, facts) = self.load_user(&participant, &request.user.uid).await?;
            participant_id = Some(facts.participant.to_string());
            let group = self
                .policy
                .decide(&facts, function, target.as_ref())
                .map_err(|code| {
                    Denial::new(code, format!("{} may not {target_text}", request.user))
                })?;
            Ok(Authorised { group })
        }
        .await;
        if let (Ok(authorised), Some(map)) = (&result, detail.as_object_mut()) {
            map.insert("group".to_owned(), authorised.group.clone().into());
        }
        Decided {
            result,
            audit: AuditRecord {
                actor: request.user.to_string(),
                participant_id,
                action: "auth.authorise".to_owned(),
                target: Some(target_text),
                outcome: AuditOutcome::Refused,
                detail,
            },
        }
    }

    async fn functions(&self, request: FunctionsRequest) -> Decided<UserRights> {
        let mut participant_id = None;
        let result = async {
            let participant = parse_user(&request.user)?;
            let (entry, facts) = self.load_user(&participant, &request.user.uid).await?;
            participant_id = Some(facts.participant.to_string());
            Ok(self.rights(&entry, &facts))
        }
        .await;
        Decided {
            result,
            audit: AuditRecord {
                actor: request.user.to_string(),
                participant_id,
                action: "auth.functions".to_owned(),
                target: None,
                outcome: AuditOutcome::Refused,
                detail: serde_json::json!({}),
            },
        }
    }

    async fn users(&self, request: UsersRequest) -> Decided<UsersReply> {
        let result = async {
            let participant = parse_participant(&request.participant)?;
            let entries = self
                .directory
                .users_of(&participant)
                .await
                .map_err(denial_from_directory)?;
            let Some(first) = entries.first() else {
                return Ok(UsersReply { users: Vec::new() });
            };
            let facts = self.facts(first).await?;
            let users = entries
                .iter()
                .map(|entry| {
                    let facts = UserFacts {
                        groups: entry.groups.clone(),
                        ..facts.clone()
                    };
                    self.rights(entry, &facts)
                })
                .collect();
            Ok(UsersReply { users })
        }
        .await;
        Decided {
            result,
            audit: AuditRecord {
                actor: format!("service:{}", request.caller),
                participant_id: None,
                action: "auth.users".to_owned(),
                target: Some(request.participant.clone()),
                outcome: AuditOutcome::Refused,
                detail: serde_json::json!({}),
            },
        }
    }

    async fn administer(&self, request: AdministerRequest) -> Decided<AdminResult> {
        let (action, target) = match &request.action {
            AdminAction::AddUser { user, .. } => ("add_user", Some(user.to_string())),
            AdminAction::Grant { user, group } => ("grant", Some(format!("{user} group {group}"))),
            AdminAction::Revoke { user, group } => {
                ("revoke", Some(format!("{user} group {group}")))
            }
            AdminAction::Approve { grant_id } => ("approve", Some(format!("grant {grant_id}"))),
            AdminAction::Reject { grant_id } => ("reject", Some(format!("grant {grant_id}"))),
            AdminAction::Show { user } => ("show", Some(user.to_string())),
            AdminAction::Pending => ("pending", None),
        };
        let mut participant_id = None;
        let mut detail = serde_json::json!({});
        let result = async {
            let actor_participant = parse_user(&request.actor)?;
            let (_, actor) = self
                .load_user(&actor_participant, &request.actor.uid)
                .await?;
            participant_id = Some(actor.participant.to_string());
            self.administer_as(&request.actor, &actor, &request.action, &mut detail)
                .await
        }
        .await;
        Decided {
            result,
            audit: AuditRecord {
                actor: request.actor.to_string(),
                participant_id,
                action: format!("auth.administer.{action}"),
                target,
                outcome: AuditOutcome::Refused,
                detail,
            },
        }
    }

    /// The target user's entry and participant type, checked to exist.
    async fn target_user(&self, user: &UserRef) -> Result<(UserEntry, UserFacts), Denial> {
        let participant = parse_user(user)?;
        self.load_user(&participant, &user.uid).await
    }

    async fn administer_as(
        &self,
        actor_ref: &UserRef,
        actor: &UserFacts,
        action: &AdminAction,
        detail: &mut serde_json::Value,
    ) -> Result<AdminResult, Denial> {
        let refused =
            |code: DenyCode, what: String| Denial::new(code, format!("{actor_ref} may not {what}"));
        match action {
            AdminAction::AddUser {
                user,
                name,
                cert_subject,
                password,
            } => {
                let participant = parse_user(user)?;
                if name.trim().is_empty() {
                    return Err(malformed("a user needs a name"));
                }
                self.policy
                    .decide(actor, Function::ParticipantAdmin, Some(&participant))
                    .map_err(|code| refused(code, format!("add user {user}")))?;
                let participant_type = self
                    .directory
                    .participant_type(&participant)
                    .await
                    .map_err(denial_from_directory)?;
                if participant_type.is_none() {
                    return Err(Denial::new(
                        DenyCode::UnknownUser,
                        format!("participant {participant} not in the directory"),
                    ));
                }
                detail["cert_subject"] = cert_subject.clone().into();
                detail["password_set"] = password.is_some().into();
                self.directory
                    .add_user(
                        &participant,
                        &user.uid,
                        name.trim(),
                        cert_subject.as_deref(),
                        password.as_deref().filter(|p| !p.is_empty()),
                    )
                    .await
                    .map_err(directory_write_denial)?;
                Ok(AdminResult::Applied)
            }
            AdminAction::Grant { user, group } => {
                if !is_group_name(group) {
                    return Err(malformed(format!("group `{group}` is not a group name")));
                }
                let (entry, target) = self.target_user(user).await?;
                self.policy
                    .may_administer(actor, &target.participant, &target.participant_type, group)
                    .map_err(|code| refused(code, format!("grant {group} to {user}")))?;
                if self.policy.approval_required(&target.participant) {
                    let request = audit_trail::request_grant(
                        &self.pool,
                        target.participant.as_str(),
                        &entry.uid,
                        group,
                        &actor_ref.to_string(),
                    )
                    .await
                    .map_err(|error| Denial::new(DenyCode::AuditUnavailable, error))?;
                    detail["grant_id"] = request.grant_id.into();
                    return Ok(AdminResult::PendingApproval {
                        grant_id: request.grant_id,
                    });
                }
                self.directory
                    .add_to_group(group, &entry.dn)
                    .await
                    .map_err(directory_write_denial)?;
                Ok(AdminResult::Applied)
            }
            AdminAction::Revoke { user, group } => {
                if !is_group_name(group) {
                    return Err(malformed(format!("group `{group}` is not a group name")));
                }
                let (entry, target) = self.target_user(user).await?;
                self.policy
                    .decide(actor, Function::ParticipantAdmin, Some(&target.participant))
                    .map_err(|code| refused(code, format!("revoke {group} from {user}")))?;
                if !self.policy.config().groups.contains_key(group) {
                    return Err(Denial::new(
                        DenyCode::GroupNotAvailable,
                        format!("`{group}` is not a predefined user group"),
                    ));
                }
                self.directory
                    .remove_from_group(group, &entry.dn)
                    .await
                    .map_err(directory_write_denial)?;
                Ok(AdminResult::Applied)
            }
            AdminAction::Approve { grant_id } | AdminAction::Reject { grant_id } => {
                let approve = matches!(action, AdminAction::Approve { .. });
                let grant = audit_trail::pending_grant(&self.pool, *grant_id)
                    .await
                    .map_err(|error| Denial::new(DenyCode::AuditUnavailable, error))?
                    .ok_or_else(|| {
                        Denial::new(DenyCode::NoSuchGrant, format!("grant {grant_id}"))
                    })?;
                let user = UserRef {
                    participant: grant.participant_id.clone(),
                    uid: grant.uid.clone(),
                };
                detail["grant"] = serde_json::json!({
                    "user": user.to_string(),
                    "group": grant.group,
                    "requested_by": grant.requested_by,
                });
                let (entry, target) = self.target_user(&user).await?;
                self.policy
                    .may_administer(
                        actor,
                        &target.participant,
                        &target.participant_type,
                        &grant.group,
                    )
                    .map_err(|code| refused(code, format!("decide grant {grant_id}")))?;
                if grant.requested_by == actor_ref.to_string() {
                    return Err(Denial::new(
                        DenyCode::SameUser,
                        format!("{actor_ref} requested grant {grant_id}"),
                    ));
                }
                if approve {
                    self.directory
                        .add_to_group(&grant.group, &entry.dn)
                        .await
                        .map_err(directory_write_denial)?;
                }
                audit_trail::decide_grant(&self.pool, *grant_id, approve, &actor_ref.to_string())
                    .await
                    .map_err(|error| Denial::new(DenyCode::AuditUnavailable, error))?;
                Ok(if approve {
                    AdminResult::Applied
                } else {
                    AdminResult::Rejected
                })
            }
            AdminAction::Show { user } => {
                let (entry, target) = self.target_user(user).await?;
                if *user != *actor_ref {
                    self.policy
                        .decide(actor, Function::ParticipantAdmin, Some(&target.participant))
                        .map_err(|code| refused(code, format!("show {user}")))?;
                }
                Ok(AdminResult::Shown {
                    rights: self.rights(&entry, &target),
                })
            }
            AdminAction::Pending => {
                self.policy
                    .decide(actor, Function::ParticipantAdmin, None)
                    .map_err(|code| refused(code, "list pending grants".to_owned()))?;
                let grants = audit_trail::pending_grants(&self.pool, None)
                    .await
                    .map_err(|error| Denial::new(DenyCode::AuditUnavailable, error))?;
                let grants = grants
                    .into_iter()
                    .filter(|grant| {
                        ParticipantId::parse(&grant.participant_id).is_ok_and(|participant| {
                            self.policy
                                .decide(actor, Function::ParticipantAdmin, Some(&participant))
                                .is_ok()
                        })
                    })
                    .map(|grant| PendingGrant {
                        grant_id: grant.grant_id,
                        user: UserRef {
                            participant: grant.participant_id,
                            uid: grant.uid,
                        },
                        group: grant.group,
                        requested_by: grant.requested_by,
                        requested_at: grant
                            .requested_at
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                    })
                    .collect();
                Ok(AdminResult::PendingGrants { grants })
            }
        }
    }
}

fn directory_write_denial(error: DirectoryError) -> Denial {
    if error.is_unavailable() {
        Denial::new(DenyCode::DirectoryUnavailable, error)
    } else {
        Denial::new(DenyCode::DirectoryRefused, error)
    }
}

fn user_ref(entry: &UserEntry) -> UserRef {
    UserRef {
        participant: entry.participant.to_string(),
        uid: entry.uid.clone(),
    }
}

fn encode<T: Serialize>(reply: &AuthReply<T>) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_else(|error| {
        // Serialising these types cannot fail; answer a denial rather than nothing.
        format!(
            r#"{{"outcome":"denied","code":"malformed_request","reason":"encode reply: {error}"}}"#
        )
        .into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_belong_to_their_prefix() {
        assert_eq!(account_owner("B01234-01").unwrap().as_str(), "B01234");
        assert!(account_owner("B01234").is_err());
        assert!(account_owner("B01234-1").is_err());
        assert!(account_owner("b01234-01").is_err());
    }
}
