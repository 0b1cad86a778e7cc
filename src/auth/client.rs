//! [`AuthClient`]: how the gateway, the terminal and the settlement intake ask the auth
//! service, over NATS request/reply.
//!
//! Answers to `authorise` and `functions` are cached for `auth.cache_ttl_ms`, so a change in
//! the directory (a revoked grant) takes effect within that time. Transient denials (directory,
//! service or audit trail unavailable) are never cached, so service resumes as soon as the
//! cause is gone. Fails closed: no answer in `auth.request_timeout_ms` is a denial with
//! [`DenyCode::ServiceUnavailable`]. Authentication and administration are never cached.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AuthConfig;
use super::policy::Function;
use crate::bus::auth::{
    AdminAction, AdminResult, AdministerRequest, AuthReply, AuthenticateRequest, AuthoriseRequest,
    Authorised, Denial, DenyCode, FunctionsRequest, Principal, UserRef, UserRights, UsersReply,
    UsersRequest,
};
use crate::bus::subjects::{self, AuthOperation};
use crate::ids::ParticipantId;

/// What an `authorise` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The user's own participant.
    Own,
    /// A participant (for operations staff, any; for others, their own).
    Participant(ParticipantId),
    /// A stock account `B01234-01` (its owner is the participant in its id).
    Account(String),
}

struct Cached<V> {
    at: Instant,
    value: Result<V, Denial>,
}

struct Cache<K, V> {
    entries: HashMap<K, Cached<V>>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    fn get(&self, key: &K, ttl: Duration) -> Option<Result<V, Denial>> {
        self.entries
            .get(key)
            .filter(|cached| cached.at.elapsed() < ttl)
            .map(|cached| cached.value.clone())
    }

    fn put(&mut self, key: K, value: Result<V, Denial>, entries_max: usize) {
        if self.entries.len() >= entries_max {
            self.entries.clear();
        }
        self.entries.insert(
            key,
            Cached {
                at: Instant::now(),
                value,
            },
        );
    }
}

/// Whether a denial may be remembered: only decisions, never outages.
fn cacheable<V>(value: &Result<V, Denial>) -> bool {
    match value {
        Ok(_) => true,
        Err(denial) => !matches!(
            denial.code,
            DenyCode::DirectoryUnavailable
                | DenyCode::ServiceUnavailable
                | DenyCode::AuditUnavailable
        ),
    }
}

/// The typed, caching client of the auth service. Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct AuthClient {
    nats: async_nats::Client,
    timeout: Duration,
    ttl: Duration,
    entries_max: usize,
    authorise_cache: Arc<Mutex<Cache<AuthoriseRequest, Authorised>>>,
    functions_cache: Arc<Mutex<Cache<UserRef, UserRights>>>,
}

impl AuthClient {
    pub fn new(nats: async_nats::Client, config: &AuthConfig) -> AuthClient {
        AuthClient {
            nats,
            timeout: config.request_timeout(),
            ttl: config.cache_ttl(),
            entries_max: config.cache_entries_max,
            authorise_cache: Arc::new(Mutex::new(Cache {
                entries: HashMap::new(),
            })),
            functions_cache: Arc::new(Mutex::new(Cache {
                entries: HashMap::new(),
            })),
        }
    }

    async fn request<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        operation: AuthOperation,
        request: &Req,
    ) -> Result<Rep, Denial> {
        let body = serde_json::to_vec(request)
            .map_err(|error| Denial::new(DenyCode::MalformedRequest, error))?;
        let subject = subjects::auth(operation);
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(self.timeout));
        let answer = tokio::time::timeout(self.timeout, self.nats.send_request(subject, request))
            .await
            .map_err(|_| {
                Denial::new(
                    DenyCode::ServiceUnavailable,
                    format!("no answer within {} ms", self.timeout.as_millis()),
                )
            })?
            .map_err(|error| Denial::new(DenyCode::ServiceUnavailable, error))?;
        serde_json::from_slice::<AuthReply<Rep>>(&answer.payload)
            .map_err(|error| {
                Denial::new(DenyCode::ServiceUnavailable, format!("bad reply: {error}"))
            })?
            .into_result()
    }

    /// Certificate subject (mutual TLS) → user and participant.
    pub async fn authenticate_certificate(&self, subject: &str) -> Result<Principal, Denial> {
        self.request(
            AuthOperation::Authenticate,
            &AuthenticateRequest::Certificate {
                subject: subject.to_owned(),
            },
        )
        .await
    }

    /// User + password (the terminal's login) → user and participant.
    pub async fn authenticate_password(
        &self,
        participant: &str,
        uid: &str,
        password: &str,
    ) -> Result<Principal, Denial> {
        self.request(
            AuthOperation::Authenticate,
            &AuthenticateRequest::Password {
                participant: participant.to_owned(),
                uid: uid.to_owned(),
                password: password.to_owned(),
            },
        )
        .await
    }

    /// May `user` (as authentication returned it) perform `function` on `target`? Cached.
    pub async fn authorise(
        &self,
        user: &UserRef,
        function: Function,
        target: &Target,
    ) -> Result<Authorised, Denial> {
        let (participant, account) = match target {
            Target::Own => (None, None),
            Target::Participant(participant) => (Some(participant.to_string()), None),
            Target::Account(account) => (None, Some(account.clone())),
        };
        let request = AuthoriseRequest {
            user: user.clone(),
            function: function.name().to_owned(),
            participant,
            account,
        };
        if let Some(hit) = self.cached(&self.authorise_cache, &request) {
            return hit;
        }
        let value = self.request(AuthOperation::Authorise, &request).await;
        self.remember(&self.authorise_cache, request, &value);
        value
    }

    /// One user's groups, functions and SI input limits. Cached.
    pub async fn functions(&self, user: &UserRef) -> Result<UserRights, Denial> {
        if let Some(hit) = self.cached(&self.functions_cache, user) {
            return hit;
        }
        let value = self
            .request(
                AuthOperation::Functions,
                &FunctionsRequest { user: user.clone() },
            )
            .await;
        self.remember(&self.functions_cache, user.clone(), &value);
        value
    }

    /// Every user of a participant with their rights and limits (who may input, who may
    /// authorise). `caller` names the asking service in the audit trail. Not cached.
    pub async fn users(
        &self,
        participant: &ParticipantId,
        caller: &str,
    ) -> Result<Vec<UserRights>, Denial> {
        let reply: UsersReply = self
            .request(
                AuthOperation::Users,
                &UsersRequest {
                    participant: participant.to_string(),
                    caller: caller.to_owned(),
                },
            )
            .await?;
        Ok(reply.users)
    }

    /// Maker–checker of a settlement instruction: `checker` may authorise what `maker` input
    /// only if they are different users of the same participant and `checker` holds
    /// `si.authorise` there.
    pub async fn check_authoriser(
        &self,
        maker: &UserRef,
        checker: &UserRef,
    ) -> Result<Authorised, Denial> {
        if maker == checker {
            return Err(Denial::new(
                DenyCode::SameUser,
                format!("{checker} input the instruction"),
            ));
        }
        if maker.participant != checker.participant {
            return Err(Denial::new(
                DenyCode::OtherParticipant,
                format!("{checker} is not a user of {}", maker.participant),
            ));
        }
        let participant = ParticipantId::parse(&maker.participant)
            .map_err(|error| Denial::new(DenyCode::MalformedRequest, error))?;
        self.authorise(
            checker,
            Function::SiAuthorise,
            &Target::Participant(participant),
        )
        .await
    }

    /// Delegated administration with `actor`'s rights. Never cached.
    pub async fn administer(
        &self,
        actor: &UserRef,
        action: AdminAction,
    ) -> Result<AdminResult, Denial> {
        self.request(
            AuthOperation::Administer,
            &AdministerRequest {
                actor: actor.clone(),
                action,
            },
        )
        .await
    }

    fn cached<K: Eq + Hash, V: Clone>(
        &self,
        cache: &Mutex<Cache<K, V>>,
        key: &K,
    ) -> Option<Result<V, Denial>> {
        if self.ttl.is_zero() {
            return None;
        }
        cache.lock().ok()?.get(key, self.ttl)
    }

    fn remember<K: Eq + Hash, V: Clone>(
        &self,
        cache: &Mutex<Cache<K, V>>,
        key: K,
        value: &Result<V, Denial>,
    ) {
        if self.ttl.is_zero() || !cacheable(value) {
            return;
        }
        if let Ok(mut cache) = cache.lock() {
            cache.put(key, value.clone(), self.entries_max);
        }
    }
}
