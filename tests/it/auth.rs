//! The auth service against real servers: a private slapd per test (loaded from the fixture,
//! written to, killed and restarted), a private nats-server, a fresh migrated database. Every
//! test drives the service through [`AuthClient`] over NATS, as the gateway, the terminal and
//! the intake will, and checks the audit trail afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ccass::auth::client::Target;
use ccass::auth::service::{AuthService, serve};
use ccass::auth::{AuthClient, AuthConfig, Directory, DirectoryConfig, Function, GroupScope};
use ccass::bus::auth::{AdminAction, AdminResult, DenyCode, UserRef};
use ccass::hostdb::audit_trail::{self, AuditOutcome, AuditRow};
use ccass::ids::ParticipantId;
use tokio::sync::oneshot;

use crate::harness::ldap::Slapd;
use crate::harness::nats::{NatsServer, initialised_bus};
use crate::harness::postgres::{self, TestDatabase};

/// One auth service on private servers, and a client of it.
struct World {
    slapd: Slapd,
    _nats: NatsServer,
    database: TestDatabase,
    auth: AuthConfig,
    client: AuthClient,
    nats_client: async_nats::Client,
    stop: Option<oneshot::Sender<()>>,
    service: Option<tokio::task::JoinHandle<()>>,
}

impl World {
    /// `configure` adjusts `[auth]` (cache time, maker–checker) before the service starts.
    async fn start(
        test: &str,
        configure: impl FnOnce(&mut AuthConfig, &mut DirectoryConfig),
    ) -> Option<World> {
        let database = postgres::database(test).await?;
        let nats = NatsServer::start().await?;
        let slapd = Slapd::start().await?;
        let config = crate::harness::test_config();
        let mut auth = config.auth.clone();
        let mut directory = slapd.directory_config();
        configure(&mut auth, &mut directory);
        let nats_client = async_nats::connect(nats.url()).await.unwrap();
        let service = Arc::new(AuthService::new(
            directory,
            auth.clone(),
            database.pool.clone(),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn({
            let nats_client = nats_client.clone();
            async move {
                serve(service, nats_client, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        // The subscription is in place once the server has seen it: a flush round trip.
        nats_client.flush().await.unwrap();
        let client = AuthClient::new(nats_client.clone(), &auth);
        let world = World {
            slapd,
            _nats: nats,
            database,
            auth,
            client,
            nats_client,
            stop: Some(stop),
            service: Some(handle),
        };
        world.wait_until_answering().await;
        Some(world)
    }

    async fn wait_until_answering(&self) {
        let started = Instant::now();
        let client = self.uncached_client();
        loop {
            match client.functions(&user("B01234", "ops1")).await {
                Err(denial) if denial.code == DenyCode::ServiceUnavailable => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "auth service never answered: {denial}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return,
            }
        }
    }

    /// A client with caching off (every call reaches the service).
    fn uncached_client(&self) -> AuthClient {
        let mut auth = self.auth.clone();
        auth.cache_ttl_ms = 0;
        AuthClient::new(self.nats_client.clone(), &auth)
    }

    fn directory(&self) -> Directory {
        Directory::new(self.slapd.directory_config())
    }

    async fn audit(&self, action_prefix: &str) -> Vec<AuditRow> {
        audit_trail::list(&self.database.pool, action_prefix, 100_000)
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(service) = self.service.take() {
            tokio::time::timeout(Duration::from_secs(10), service)
                .await
                .expect("auth service stops on shutdown")
                .unwrap();
        }
    }
}

fn user(participant: &str, uid: &str) -> UserRef {
    UserRef {
        participant: participant.to_owned(),
        uid: uid.to_owned(),
    }
}

fn participant(id: &str) -> ParticipantId {
    ParticipantId::parse(id).unwrap()
}

const GROUPS: [&str; 7] = [
    "si-input",
    "si-authorise",
    "enquiry",
    "statements",
    "participant-admin",
    "operations",
    "system-admin",
];

/// Sets a user's membership to exactly `groups`, as the service account (test setup).
async fn set_groups(directory: &Directory, who: &UserRef, groups: &[&str]) {
    let dn = directory.user_dn(&participant(&who.participant), &who.uid);
    for group in GROUPS {
        if groups.contains(&group) {
            directory.add_to_group(group, &dn).await.unwrap();
        } else {
            directory.remove_from_group(group, &dn).await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_authorisation_matrix_follows_the_config() {
    // Goal: every (user group × function × own/other participant) combination is allowed
    // exactly when the config says so, and is audited.
    // Method: for each group, give one user of a participant type that may hold it (and one
    // of a type that may not) exactly that group, then ask `authorise` for every function on
    // their own participant and on another; the oracle is computed here from `[auth]`.
    let Some(world) = World::start("auth_matrix", |_, _| {}).await else {
        return;
    };
    let client = world.uncached_client();
    let directory = world.directory();
    let broker_user = user("B01234", "ops1");
    let ccp_user = user("HKSCC0", "op1");
    let mut asked = 0usize;
    let mut allowed = 0usize;
    for group in GROUPS {
        let group_config = world
            .auth
            .groups
            .get(group)
            .unwrap_or_else(|| panic!("group {group} missing from [auth.groups]"));
        for (who, participant_type, other) in [
            (&broker_user, "broker", "B05678"),
            (&ccp_user, "ccp", "B01234"),
        ] {
            set_groups(&directory, who, &[group]).await;
            let type_may_hold = world.auth.participant_types[participant_type]
                .iter()
                .any(|g| g == group);
            for function in Function::ALL {
                let grants = group_config.functions.iter().any(|f| f == function.name());
                for (target, is_own) in [
                    (Target::Own, true),
                    (Target::Participant(participant(&who.participant)), true),
                    (Target::Participant(participant(other)), false),
                    (Target::Account(format!("{other}-01")), false),
                ] {
                    let across = group_config.scope == GroupScope::Any
                        && who.participant == world.auth.ccp_participant;
                    let expected = type_may_hold && grants && (is_own || across);
                    let answer = client.authorise(who, function, &target).await;
                    asked += 1;
                    assert_eq!(
                        answer.is_ok(),
                        expected,
                        "{who} in {group} ({participant_type}): {function} on {target:?}: {answer:?}"
                    );
                    match answer {
                        Ok(authorised) => {
                            allowed += 1;
                            assert_eq!(authorised.group, group);
                        }
                        Err(denial) => {
                            let code = if type_may_hold && grants {
                                DenyCode::OtherParticipant
                            } else {
                                DenyCode::NotGranted
                            };
                            assert_eq!(denial.code, code, "{who} {group} {function} {target:?}");
                        }
                    }
                }
            }
        }
    }
    assert!(allowed > 0 && allowed < asked, "{allowed} of {asked}");

    let rows = world.audit("auth.authorise").await;
    assert_eq!(rows.len(), asked, "one audit row per authorise request");
    let allowed_rows = rows
        .iter()
        .filter(|row| row.record.outcome == AuditOutcome::Allowed)
        .count();
    assert_eq!(allowed_rows, allowed);
    let refused = rows
        .iter()
        .find(|row| row.record.outcome == AuditOutcome::Refused)
        .unwrap();
    assert!(refused.record.detail["code"].is_string(), "{refused:?}");
    assert!(refused.record.detail["function"].is_string(), "{refused:?}");
    world.stop().await;
}

#[tokio::test]
async fn authentication_by_certificate_and_password() {
    // Goal: certificate subject and password both map to the directory's user and
    // participant; anything else is denied with its reason and audited.
    let Some(world) = World::start("auth_authenticate", |_, _| {}).await else {
        return;
    };
    let client = &world.client;
    let principal = client
        .authenticate_certificate("CN=ops1,OU=B01234,O=ccass")
        .await
        .unwrap();
    assert_eq!(principal.user, user("B01234", "ops1"));
    assert_eq!(principal.participant_type, "broker");
    let unknown = client
        .authenticate_certificate("CN=ops1,OU=B99999,O=ccass")
        .await
        .unwrap_err();
    assert_eq!(unknown.code, DenyCode::UnknownUser);

    let principal = client
        .authenticate_password("B05678", "auth1", "ccass-dev-B05678-auth1")
        .await
        .unwrap();
    assert_eq!(principal.user, user("B05678", "auth1"));
    for (participant, uid, password, code) in [
        (
            "B05678",
            "auth1",
            "ccass-dev-B01234-auth1",
            DenyCode::BadCredentials,
        ),
        ("B05678", "auth1", "", DenyCode::BadCredentials),
        ("B05678", "nobody", "x", DenyCode::BadCredentials),
        ("b05678", "auth1", "x", DenyCode::MalformedRequest),
        ("B05678", "a,uid=x", "x", DenyCode::MalformedRequest),
        // Denied for what it is, and audited: a NUL would have refused the audit row.
        ("B05678", "auth\u{0}1", "x", DenyCode::MalformedRequest),
    ] {
        let denial = client
            .authenticate_password(participant, uid, password)
            .await
            .unwrap_err();
        assert_eq!(denial.code, code, "{participant}.{uid}: {denial}");
    }

    // A body that is not a request: denied, never silently dropped.
    let reply = world
        .nats_client
        .request(
            ccass::bus::subjects::auth(ccass::bus::subjects::AuthOperation::Authorise),
            "{not json".into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["outcome"], "denied");
    assert_eq!(reply["code"], "malformed_request");

    let rows = world.audit("auth.authenticate").await;
    assert_eq!(rows.len(), 9, "{rows:#?}");
    assert!(
        rows.iter()
            .any(|row| row.record.actor == "B05678.auth\u{FFFD}1"),
        "{rows:#?}"
    );
    assert_eq!(rows[0].record.actor, "cert:CN=ops1,OU=B01234,O=ccass");
    assert_eq!(rows[0].record.outcome, AuditOutcome::Allowed);
    assert_eq!(rows[0].record.participant_id.as_deref(), Some("B01234"));
    assert_eq!(rows[3].record.actor, "B05678.auth1");
    assert_eq!(rows[3].record.outcome, AuditOutcome::Refused);
    assert_eq!(rows[3].record.detail["code"], "bad_credentials");
    assert!(
        rows.iter()
            .all(|row| !row.record.detail.to_string().contains("ccass-dev-")),
        "no password in the audit trail"
    );
    assert_eq!(world.audit("auth.authorise").await.len(), 1);
    world.stop().await;
}

#[tokio::test]
async fn delegation_is_limited_to_own_participant_and_available_groups() {
    // Goal: a participant admin manages only their own participant's users and only groups
    // its type may be given; the clearing house's system admin manages any; every attempt is
    // audited; a grant takes effect at once when no approval is configured.
    let Some(world) = World::start("auth_delegation", |_, _| {}).await else {
        return;
    };
    let client = world.uncached_client();
    let admin = user("B01234", "admin1");
    let sysadmin = user("HKSCC0", "sysadmin1");
    let grant = |who: UserRef, group: &str| AdminAction::Grant {
        user: who,
        group: group.to_owned(),
    };

    // Across participants: refused, and nothing changed.
    let denial = client
        .administer(&admin, grant(user("B05678", "ops1"), "si-authorise"))
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::OtherParticipant, "{denial}");
    let denial = client
        .administer(
            &admin,
            AdminAction::Revoke {
                user: user("B05678", "ops1"),
                group: "si-input".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::OtherParticipant, "{denial}");
    let rights = client.functions(&user("B05678", "ops1")).await.unwrap();
    assert_eq!(rights.groups, vec!["si-input"]);

    // A group the participant type may not have: refused.
    let denial = client
        .administer(&admin, grant(user("B01234", "ops1"), "system-admin"))
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::GroupNotAvailable, "{denial}");

    // A user without participant-admin: refused.
    let denial = client
        .administer(
            &user("B01234", "ops1"),
            grant(user("B01234", "ops1"), "si-authorise"),
        )
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::NotGranted, "{denial}");

    // Own participant, available group: applied in the directory.
    assert_eq!(
        client
            .administer(&admin, grant(user("B01234", "ops1"), "si-authorise"))
            .await
            .unwrap(),
        AdminResult::Applied
    );
    assert!(
        client
            .authorise(&user("B01234", "ops1"), Function::SiAuthorise, &Target::Own)
            .await
            .is_ok()
    );

    // The system admin manages any participant.
    assert_eq!(
        client
            .administer(&sysadmin, grant(user("B05678", "ops1"), "statements"))
            .await
            .unwrap(),
        AdminResult::Applied
    );
    let rights = client.functions(&user("B05678", "ops1")).await.unwrap();
    assert!(
        rights.functions.contains(&"statements".to_owned()),
        "{rights:?}"
    );
    let shown = client
        .administer(
            &sysadmin,
            AdminAction::Show {
                user: user("B05678", "ops1"),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(shown, AdminResult::Shown { ref rights } if rights.groups.contains(&"statements".to_owned()))
    );
    let denial = client
        .administer(
            &admin,
            AdminAction::Show {
                user: user("B05678", "ops1"),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::OtherParticipant);

    let rows = world.audit("auth.administer").await;
    let outcomes: Vec<(&str, AuditOutcome, Option<&str>)> = rows
        .iter()
        .map(|row| {
            (
                row.record.action.as_str(),
                row.record.outcome,
                row.record.detail["code"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (
                "auth.administer.grant",
                AuditOutcome::Refused,
                Some("other_participant")
            ),
            (
                "auth.administer.revoke",
                AuditOutcome::Refused,
                Some("other_participant")
            ),
            (
                "auth.administer.grant",
                AuditOutcome::Refused,
                Some("group_not_available")
            ),
            (
                "auth.administer.grant",
                AuditOutcome::Refused,
                Some("not_granted")
            ),
            ("auth.administer.grant", AuditOutcome::Allowed, None),
            ("auth.administer.grant", AuditOutcome::Allowed, None),
            ("auth.administer.show", AuditOutcome::Allowed, None),
            (
                "auth.administer.show",
                AuditOutcome::Refused,
                Some("other_participant")
            ),
        ]
    );
    assert_eq!(rows[0].record.actor, "B01234.admin1");
    assert_eq!(rows[0].record.participant_id.as_deref(), Some("B01234"));
    assert_eq!(
        rows[0].record.target.as_deref(),
        Some("B05678.ops1 group si-authorise")
    );
    world.stop().await;
}

#[tokio::test]
async fn a_grant_waits_for_a_second_administrator_when_configured() {
    // Goal: maker–checker of delegated administration: with B01234 listed, a grant is pending
    // until a different entitled administrator approves it; the requester cannot approve it;
    // a rejected grant never takes effect.
    let Some(world) = World::start("auth_grant_approval", |auth, _| {
        auth.grant_approval_participants = vec!["B01234".to_owned()];
    })
    .await
    else {
        return;
    };
    let client = world.uncached_client();
    let admin1 = user("B01234", "admin1");
    let auth1 = user("B01234", "auth1");
    let ops1 = user("B01234", "ops1");

    // admin1 asks for auth1 to become a second participant admin; admin1 cannot approve it.
    let AdminResult::PendingApproval { grant_id } = client
        .administer(
            &admin1,
            AdminAction::Grant {
                user: auth1.clone(),
                group: "participant-admin".into(),
            },
        )
        .await
        .unwrap()
    else {
        panic!("grant should be pending");
    };
    let denial = client
        .administer(&admin1, AdminAction::Approve { grant_id })
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::SameUser, "{denial}");
    // Another participant's admin cannot approve it either.
    let denial = client
        .administer(&user("B05678", "auth1"), AdminAction::Approve { grant_id })
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::NotGranted, "{denial}");
    assert!(
        client
            .authorise(&auth1, Function::ParticipantAdmin, &Target::Own)
            .await
            .is_err(),
        "pending grants have no effect"
    );
    // The clearing house's system admin approves.
    let pending = client
        .administer(&user("HKSCC0", "sysadmin1"), AdminAction::Pending)
        .await
        .unwrap();
    assert!(
        matches!(pending, AdminResult::PendingGrants { ref grants } if grants.len() == 1 && grants[0].grant_id == grant_id && grants[0].requested_by == "B01234.admin1"),
        "{pending:?}"
    );
    assert_eq!(
        client
            .administer(
                &user("HKSCC0", "sysadmin1"),
                AdminAction::Approve { grant_id }
            )
            .await
            .unwrap(),
        AdminResult::Applied
    );
    assert!(
        client
            .authorise(&auth1, Function::ParticipantAdmin, &Target::Own)
            .await
            .is_ok()
    );
    let denial = client
        .administer(&auth1, AdminAction::Approve { grant_id })
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::NoSuchGrant, "decided once: {denial}");

    // Now two participant admins: one grants, the other approves or rejects.
    let AdminResult::PendingApproval { grant_id } = client
        .administer(
            &admin1,
            AdminAction::Grant {
                user: ops1.clone(),
                group: "statements".into(),
            },
        )
        .await
        .unwrap()
    else {
        panic!("grant should be pending");
    };
    assert_eq!(
        client
            .administer(&auth1, AdminAction::Reject { grant_id })
            .await
            .unwrap(),
        AdminResult::Rejected
    );
    assert!(
        client
            .authorise(&ops1, Function::Statements, &Target::Own)
            .await
            .is_err()
    );
    let AdminResult::PendingApproval { grant_id } = client
        .administer(
            &auth1,
            AdminAction::Grant {
                user: ops1.clone(),
                group: "statements".into(),
            },
        )
        .await
        .unwrap()
    else {
        panic!("grant should be pending");
    };
    assert_eq!(
        client
            .administer(&admin1, AdminAction::Approve { grant_id })
            .await
            .unwrap(),
        AdminResult::Applied
    );
    assert!(
        client
            .authorise(&ops1, Function::Statements, &Target::Own)
            .await
            .is_ok()
    );

    let rows = world.audit("auth.administer.approve").await;
    let outcomes: Vec<(String, AuditOutcome)> = rows
        .iter()
        .map(|row| (row.record.actor.clone(), row.record.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("B01234.admin1".to_owned(), AuditOutcome::Refused),
            ("B05678.auth1".to_owned(), AuditOutcome::Refused),
            ("HKSCC0.sysadmin1".to_owned(), AuditOutcome::Allowed),
            ("B01234.auth1".to_owned(), AuditOutcome::Refused),
            ("B01234.admin1".to_owned(), AuditOutcome::Allowed),
        ]
    );
    assert_eq!(rows[0].record.detail["code"], "same_user");
    world.stop().await;
}

#[tokio::test]
async fn a_revoked_grant_stops_working_within_the_cache_time() {
    // Goal: callers cache answers for `auth.cache_ttl_ms` only: after a revocation, the
    // caching client denies at the latest one cache time later.
    let Some(world) = World::start("auth_revocation", |auth, _| {
        auth.cache_ttl_ms = 1000;
    })
    .await
    else {
        return;
    };
    let ops1 = user("B01234", "ops1");
    let client = &world.client;
    client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await
        .unwrap();
    let revoked = world
        .uncached_client()
        .administer(
            &user("B01234", "admin1"),
            AdminAction::Revoke {
                user: ops1.clone(),
                group: "si-input".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked, AdminResult::Applied);
    let revoked_at = Instant::now();
    // Within the cache time the cached allow may still be served...
    let cached = client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await;
    assert!(
        cached.is_ok(),
        "answer cached for the cache time: {cached:?}"
    );
    // ...and once it has passed, the revocation holds.
    tokio::time::sleep(world.auth.cache_ttl()).await;
    let denial = client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::NotGranted, "{denial}");
    assert!(revoked_at.elapsed() < world.auth.cache_ttl() + Duration::from_secs(2));
    let rights = client.functions(&ops1).await.unwrap();
    assert!(!rights.may_input, "{rights:?}");

    let rows = world.audit("auth.").await;
    let trail: Vec<(&str, AuditOutcome)> = rows
        .iter()
        .map(|row| (row.record.action.as_str(), row.record.outcome))
        .filter(|(action, _)| *action != "auth.functions")
        .collect();
    // The cached answer reached no service, so it has no row of its own.
    assert_eq!(
        trail,
        vec![
            ("auth.authorise", AuditOutcome::Allowed),
            ("auth.administer.revoke", AuditOutcome::Allowed),
            ("auth.authorise", AuditOutcome::Refused),
        ]
    );
    world.stop().await;
}

#[tokio::test]
async fn maker_checker_data_and_input_limits() {
    // Goal: the service tells who may input and who may authorise, with input limits per
    // currency, and checks an authoriser against the maker.
    let Some(world) = World::start("auth_maker_checker", |_, _| {}).await else {
        return;
    };
    let client = &world.client;
    let users = client.users(&participant("B01234"), "test").await.unwrap();
    let names: Vec<(String, bool, bool)> = users
        .iter()
        .map(|u| (u.user.uid.clone(), u.may_input, u.may_authorise))
        .collect();
    assert_eq!(
        names,
        vec![
            ("admin1".to_owned(), false, false),
            ("auth1".to_owned(), false, true),
            ("ops1".to_owned(), true, false),
        ]
    );
    let ops1 = &users[2];
    assert_eq!(
        ops1.input_limits.get("HKD").map(ToString::to_string),
        Some("10000000".to_owned())
    );
    assert_eq!(
        ops1.input_limits.get("USD").map(ToString::to_string),
        Some("1000000.50".to_owned())
    );

    let maker = user("B01234", "ops1");
    assert!(
        client
            .check_authoriser(&maker, &user("B01234", "auth1"))
            .await
            .is_ok()
    );
    for (checker, code) in [
        (user("B01234", "ops1"), DenyCode::SameUser),
        (user("B05678", "auth1"), DenyCode::OtherParticipant),
        (user("B01234", "admin1"), DenyCode::NotGranted),
        (user("B01234", "ghost"), DenyCode::UnknownUser),
    ] {
        let denial = client.check_authoriser(&maker, &checker).await.unwrap_err();
        assert_eq!(denial.code, code, "{checker}: {denial}");
    }
    let rows = world.audit("auth.users").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.actor, "service:test");
    world.stop().await;
}

#[tokio::test]
async fn a_directory_outage_denies_everything_and_service_resumes_when_it_returns() {
    // Goal: fail closed: with slapd stopped every operation is denied with "directory
    // unavailable" (and audited as such); once slapd is back, the same service instance
    // answers again without a restart.
    let Some(mut world) = World::start("auth_outage", |_, _| {}).await else {
        return;
    };
    let client = world.client.clone();
    let ops1 = user("B01234", "ops1");
    client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await
        .unwrap();

    world.slapd.kill();
    // Let the cached allow expire: from now on every answer comes from the service.
    tokio::time::sleep(world.auth.cache_ttl()).await;
    let outcomes = [
        client
            .authorise(&ops1, Function::SiInput, &Target::Own)
            .await
            .map(|_| ()),
        client.functions(&ops1).await.map(|_| ()),
        client
            .authenticate_certificate("CN=ops1,OU=B01234,O=ccass")
            .await
            .map(|_| ()),
        client
            .authenticate_password("B01234", "ops1", "ccass-dev-B01234-ops1")
            .await
            .map(|_| ()),
        client
            .users(&participant("B01234"), "test")
            .await
            .map(|_| ()),
        client
            .administer(
                &user("B01234", "admin1"),
                AdminAction::Grant {
                    user: ops1.clone(),
                    group: "statements".into(),
                },
            )
            .await
            .map(|_| ()),
    ];
    for outcome in &outcomes {
        let denial = outcome.as_ref().unwrap_err();
        assert_eq!(denial.code, DenyCode::DirectoryUnavailable, "{denial}");
        assert!(
            denial.reason.starts_with("directory unavailable"),
            "{}",
            denial.reason
        );
    }
    // Outage denials are never cached: service resumes as soon as the directory does.
    world.slapd.resume().await;
    client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await
        .unwrap();
    client
        .authenticate_password("B01234", "ops1", "ccass-dev-B01234-ops1")
        .await
        .unwrap();

    let rows = world.audit("auth.").await;
    let unavailable = rows
        .iter()
        .filter(|row| row.record.detail["code"] == "directory_unavailable")
        .count();
    assert_eq!(unavailable, outcomes.len(), "{rows:#?}");
    assert_eq!(
        rows.last().unwrap().record.outcome,
        AuditOutcome::Allowed,
        "{rows:#?}"
    );
    world.stop().await;
}

/// Runs `ccass admin --as <actor> <args>` against the world's NATS server.
async fn admin_cli(world: &World, actor: &str, password: &str, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccass"))
        .arg("admin")
        .arg("--as")
        .arg(actor)
        .args(args)
        .current_dir(crate::harness::repo_root())
        .env("CCASS_ENV", "test")
        .env("CCASS_TELEMETRY__LOG_FILTER", "warn")
        .env("CCASS_BUS__URL", world._nats.url())
        .env("CCASS_ADMIN_PASSWORD", password)
        .env("CCASS_ADMIN_NEW_PASSWORD", "first-password-1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run ccass admin");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn the_admin_command_acts_with_the_callers_rights() {
    // Goal: `ccass admin user add|grant|revoke|show` goes through the service as the caller,
    // so it is subject to the same rules (and audit) as any other channel.
    let Some(world) = World::start("auth_admin_cli", |_, _| {}).await else {
        return;
    };
    let sysadmin = ("HKSCC0.sysadmin1", "ccass-dev-HKSCC0-sysadmin1");
    let admin = ("B01234.admin1", "ccass-dev-B01234-admin1");

    let (ok, text) = admin_cli(
        &world,
        sysadmin.0,
        sysadmin.1,
        &[
            "user",
            "add",
            "B05678.new1",
            "--name",
            "B05678 New User",
            "--cert-subject",
            "CN=new1,OU=B05678,O=ccass",
        ],
    )
    .await;
    assert!(ok, "{text}");
    let client = world.uncached_client();
    let principal = client
        .authenticate_certificate("CN=new1,OU=B05678,O=ccass")
        .await
        .unwrap();
    assert_eq!(principal.user, user("B05678", "new1"));
    assert_eq!(principal.display_name, "B05678 New User");
    client
        .authenticate_password("B05678", "new1", "first-password-1")
        .await
        .unwrap();

    let (ok, text) = admin_cli(
        &world,
        admin.0,
        admin.1,
        &["user", "grant", "B05678.new1", "si-input"],
    )
    .await;
    assert!(
        !ok && text.contains("not allowed on another participant"),
        "{text}"
    );
    let (ok, text) = admin_cli(
        &world,
        admin.0,
        admin.1,
        &["user", "add", "B05678.new2", "--name", "X Y"],
    )
    .await;
    assert!(
        !ok && text.contains("not allowed on another participant"),
        "{text}"
    );
    let (ok, text) = admin_cli(&world, admin.0, "wrong", &["user", "show", "B01234.ops1"]).await;
    assert!(!ok && text.contains("bad credentials"), "{text}");

    let (ok, text) = admin_cli(
        &world,
        sysadmin.0,
        sysadmin.1,
        &["user", "grant", "B05678.new1", "si-input"],
    )
    .await;
    assert!(ok, "{text}");
    let (ok, text) = admin_cli(&world, admin.0, admin.1, &["user", "show", "B01234.ops1"]).await;
    assert!(ok && text.contains("\"si.input\""), "{text}");
    let (ok, text) = admin_cli(
        &world,
        admin.0,
        admin.1,
        &["user", "revoke", "B01234.ops1", "enquiry"],
    )
    .await;
    assert!(ok, "{text}");
    let rights = client.functions(&user("B01234", "ops1")).await.unwrap();
    assert_eq!(rights.groups, vec!["si-input"]);
    assert!(
        client
            .authorise(&user("B05678", "new1"), Function::SiInput, &Target::Own)
            .await
            .is_ok()
    );

    let rows = world.audit("auth.administer.add_user").await;
    let outcomes: Vec<(&str, AuditOutcome)> = rows
        .iter()
        .map(|row| (row.record.actor.as_str(), row.record.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("HKSCC0.sysadmin1", AuditOutcome::Allowed),
            ("B01234.admin1", AuditOutcome::Refused),
        ]
    );
    assert_eq!(rows[0].record.detail["password_set"], true);
    assert!(!rows[0].record.detail.to_string().contains("first-password"));
    world.stop().await;
}

#[tokio::test]
async fn ccass_up_answers_auth_requests_and_counts_denials_in_metrics() {
    // Goal: `ccass up` runs the auth service; denials are counted by reason on /metrics.
    // Method: `ccass up` in-process on private servers; ask, stop slapd, ask again, scrape.
    let Some(database) = postgres::database("auth_up").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(mut slapd) = Slapd::start().await else {
        return;
    };
    let mut config = crate::harness::test_config();
    config.hostdb = database.config.clone();
    config.bus = nats.bus_config();
    config.directory = slapd.directory_config();
    let (nats_client, _jetstream) = initialised_bus(&config.bus, "test").await;
    let mut auth = config.auth.clone();
    auth.cache_ttl_ms = 0;
    let client = AuthClient::new(nats_client, &auth);

    let listeners = ccass::up::Listeners::bind(&config).await.unwrap();
    let ops = listeners.ops.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let up = tokio::spawn(ccass::up::run(config, listeners, async {
        let _ = stopped.await;
    }));

    let ops1 = user("B01234", "ops1");
    let started = Instant::now();
    while let Err(denial) = client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await
    {
        assert_eq!(denial.code, DenyCode::ServiceUnavailable, "{denial}");
        assert!(started.elapsed() < Duration::from_secs(15), "{denial}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slapd.kill();
    let denial = client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::DirectoryUnavailable, "{denial}");

    let (status, text) = crate::ops::get(ops, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|error| panic!("invalid prometheus text: {error}\n{text}"));
    let counted = |metric: &str, label: &str, value: &str| {
        scrape.samples.iter().any(|s| {
            s.metric == metric
                && s.labels.get("operation") == Some("authorise")
                && s.labels.get(label) == Some(value)
        })
    };
    assert!(
        counted("ccass_auth_requests_total", "outcome", "allowed"),
        "{text}"
    );
    assert!(
        counted("ccass_auth_denials_total", "code", "directory_unavailable"),
        "{text}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), up)
        .await
        .expect("ccass up stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_directory_that_stops_answering_is_a_timeout_denial() {
    // Goal: a hung directory (accepts connections, answers nothing) is denied within the
    // directory's operation timeout with "directory unavailable", and recovers by itself.
    // The short operation timeout bounds every LDAP round trip of this world, the healthy
    // ones too (connect, bind, search): on a loaded machine a healthy one may exceed it, and
    // when the test's runtime thread is descheduled past the deadline, the timer can fire
    // before the connection task has read an answer that came in time. So the healthy steps
    // before the pause and after it wait until the directory answers (each failure must be
    // "directory unavailable"), and only the hung step is held to the timeout.
    let Some(world) = World::start("auth_hang", |_, directory| {
        directory.operation_timeout_ms = 300;
    })
    .await
    else {
        return;
    };
    let client = world.uncached_client();
    let ops1 = user("B01234", "ops1");
    authorised_eventually(&client, &ops1).await;
    world.slapd.pause();
    let started = Instant::now();
    let denial = client
        .authorise(&ops1, Function::SiInput, &Target::Own)
        .await
        .unwrap_err();
    assert_eq!(denial.code, DenyCode::DirectoryUnavailable, "{denial}");
    assert!(denial.reason.contains("timeout"), "{denial}");
    assert!(started.elapsed() < world.auth.request_timeout(), "{denial}");
    world.slapd.unpause();
    authorised_eventually(&client, &ops1).await;
    world.stop().await;
}

/// Authorises `user`'s `si.input` until the directory answers: a "directory unavailable"
/// denial (a slow answer on a busy machine) is tried again for up to 10 s; any other denial,
/// or none allowed by then, fails the test.
async fn authorised_eventually(client: &AuthClient, user: &UserRef) {
    let started = Instant::now();
    loop {
        match client
            .authorise(user, Function::SiInput, &Target::Own)
            .await
        {
            Ok(_) => return,
            Err(denial)
                if denial.code == DenyCode::DirectoryUnavailable
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(denial) => panic!("{user} not authorised: {denial}"),
        }
    }
}

#[tokio::test]
async fn several_instances_share_the_load_in_the_queue_group() {
    // Goal: instances join the queue group `auth`: each request is answered once, by one of
    // them, and both take a share. Method: a second instance with its own database, so the
    // audit rows tell which instance answered.
    let Some(world) = World::start("auth_queue_a", |_, _| {}).await else {
        return;
    };
    let Some(second_database) = postgres::database("auth_queue_b").await else {
        return;
    };
    let second = Arc::new(AuthService::new(
        world.slapd.directory_config(),
        world.auth.clone(),
        second_database.pool.clone(),
    ));
    let (stop_second, second_stopped) = oneshot::channel::<()>();
    let second_task = tokio::spawn(serve(second, world.nats_client.clone(), async {
        let _ = second_stopped.await;
    }));
    world.nats_client.flush().await.unwrap();

    let client = world.uncached_client();
    let before = world.audit("auth.authorise").await.len();
    let requests = 60;
    for _ in 0..requests {
        client
            .authorise(&user("B01234", "ops1"), Function::SiInput, &Target::Own)
            .await
            .unwrap();
    }
    let first_share = world.audit("auth.authorise").await.len() - before;
    let second_share = audit_trail::list(&second_database.pool, "auth.authorise", 1000)
        .await
        .unwrap()
        .len();
    assert_eq!(first_share + second_share, requests, "each answered once");
    assert!(
        first_share > 0 && second_share > 0,
        "both instances answer: {first_share} + {second_share}"
    );
    stop_second.send(()).unwrap();
    second_task.await.unwrap().unwrap();
    world.stop().await;
}
