//! The function catalogue and the decision rules: pure functions of `[auth]` config and what
//! the directory says about a user. No I/O here, so every rule is unit-tested.
//!
//! Rules:
//! - A user holds a group only if the directory lists them as a member **and** the group is
//!   configured **and** the user's participant type may be given it
//!   (`auth.participant_types`); stale membership in a group the type may not have grants
//!   nothing.
//! - A function is allowed when a held group grants it and the target participant (explicit,
//!   or the owner of the target account) is the user's own, or the group's scope is `any` and
//!   the user belongs to the clearing house (`auth.ccp_participant`): only its staff ever act
//!   across participants, whatever the rest of the config says.
//! - Administration of a user's groups is the function `participant.admin` applied to the
//!   target user's participant, and the group must be one that participant's type may be given.

use std::collections::BTreeSet;
use std::fmt;

use super::{AuthConfig, GroupScope};
use crate::bus::auth::DenyCode;
use crate::ids::ParticipantId;

/// What a user may be allowed to do. Callers name one in an authorise request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    /// Input a settlement instruction (maker).
    SiInput,
    /// Authorise a settlement instruction input by another user (checker).
    SiAuthorise,
    /// Cancel a settlement instruction.
    SiCancel,
    /// Enquire on settlement instructions.
    SiEnquiry,
    /// Enquire on stock and cash holdings.
    EnquiryHoldings,
    /// Enquire on settlement status and history.
    EnquirySettlement,
    /// Retrieve statements and reports.
    Statements,
    /// Administer users' group membership (delegated administration).
    ParticipantAdmin,
    /// Clearing-house operations: system-wide enquiry.
    OperationsEnquiry,
    /// Clearing-house operations: batch runs.
    OperationsBatch,
    /// Clearing-house operations: exception handling.
    OperationsExceptions,
    /// System administration: reference data, calendars, configuration.
    SystemAdmin,
}

impl Function {
    pub const ALL: [Function; 12] = [
        Function::SiInput,
        Function::SiAuthorise,
        Function::SiCancel,
        Function::SiEnquiry,
        Function::EnquiryHoldings,
        Function::EnquirySettlement,
        Function::Statements,
        Function::ParticipantAdmin,
        Function::OperationsEnquiry,
        Function::OperationsBatch,
        Function::OperationsExceptions,
        Function::SystemAdmin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::SiInput => "si.input",
            Function::SiAuthorise => "si.authorise",
            Function::SiCancel => "si.cancel",
            Function::SiEnquiry => "si.enquiry",
            Function::EnquiryHoldings => "enquiry.holdings",
            Function::EnquirySettlement => "enquiry.settlement",
            Function::Statements => "statements",
            Function::ParticipantAdmin => "participant.admin",
            Function::OperationsEnquiry => "operations.enquiry",
            Function::OperationsBatch => "operations.batch",
            Function::OperationsExceptions => "operations.exceptions",
            Function::SystemAdmin => "system.admin",
        }
    }

    pub fn parse(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        Function::ALL.iter().map(|f| f.name()).collect()
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user group name: 1 to 64 of `[a-z0-9-]` (safe in a DN and in config keys).
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What the directory says about a user, as far as decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    pub participant: ParticipantId,
    /// The participant type from the participant's entry (`broker`); empty when unknown.
    pub participant_type: String,
    /// Group names the directory lists the user in.
    pub groups: Vec<String>,
}

/// The decision rules over `[auth]` config.
#[derive(Debug, Clone)]
pub struct Policy {
    config: AuthConfig,
}

impl Policy {
    pub fn new(config: AuthConfig) -> Policy {
        Policy { config }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether `participant` is the clearing house itself (`auth.ccp_participant`).
    pub fn is_ccp(&self, participant: &ParticipantId) -> bool {
        participant.as_str() == self.config.ccp_participant
    }

    /// Whether a participant type may be given a group.
    pub fn group_available(&self, participant_type: &str, group: &str) -> bool {
        self.config.groups.contains_key(group)
            && self
                .config
                .participant_types
                .get(participant_type)
                .is_some_and(|groups| groups.iter().any(|g| g == group))
    }

    /// The groups that count for this user, sorted.
    pub fn effective_groups<'u>(&self, user: &'u UserFacts) -> Vec<&'u str> {
        let mut groups: Vec<&str> = user
            .groups
            .iter()
            .map(String::as_str)
            .filter(|group| self.group_available(&user.participant_type, group))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// Every function the user holds (on their own participant at least).
    pub fn functions(&self, user: &UserFacts) -> BTreeSet<Function> {
        self.effective_groups(user)
            .into_iter()
            .filter_map(|group| self.config.groups.get(group))
            .flat_map(|group| group.functions.iter())
            .filter_map(|name| Function::parse(name))
            .collect()
    }

    /// May `user` perform `function` on `target` (None: no particular participant, i.e. their
    /// own)? Ok names the group that grants it.
    pub fn decide(
        &self,
        user: &UserFacts,
        function: Function,
        target: Option<&ParticipantId>,
    ) -> Result<String, DenyCode> {
        let own = target.is_none_or(|target| *target == user.participant);
        let mut granted_on_own_only = false;
        for group in self.effective_groups(user) {
            let Some(config) = self.config.groups.get(group) else {
                continue;
            };
            if !config.functions.iter().any(|f| f == function.name()) {
                continue;
            }
            if own || (config.scope == GroupScope::Any && self.is_ccp(&user.participant)) {
                return Ok(group.to_owned());
            }
            granted_on_own_only = true;
        }
        Err(if granted_on_own_only {
            DenyCode::OtherParticipant
        } else {
            DenyCode::NotGranted
        })
    }

    /// May `actor` grant or revoke `group` for a user of `target` (of `target_type`)?
    pub fn may_administer(
        &self,
        actor: &UserFacts,
        target: &ParticipantId,
        target_type: &str,
        group: &str,
    ) -> Result<(), DenyCode> {
        self.decide(actor, Function::ParticipantAdmin, Some(target))?;
        if !self.group_available(target_type, group) {
            return Err(DenyCode::GroupNotAvailable);
        }
        Ok(())
    }

    /// Whether a grant to a user of `participant` waits for a second administrator.
    pub fn approval_required(&self, participant: &ParticipantId) -> bool {
        self.config
            .grant_approval_participants
            .iter()
            .any(|p| p == participant.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let table = crate::config::load_table(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            "test",
            Vec::new(),
        )
        .unwrap();
        let config: crate::config::Config = crate::config::deserialize(table).unwrap();
        Policy::new(config.auth)
    }

    fn user(participant: &str, participant_type: &str, groups: &[&str]) -> UserFacts {
        UserFacts {
            participant: ParticipantId::parse(participant).unwrap(),
            participant_type: participant_type.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn function_names_round_trip() {
        for function in Function::ALL {
            assert_eq!(Function::parse(function.name()), Some(function));
        }
        assert_eq!(Function::parse("si.*"), None);
    }

    #[test]
    fn own_scope_stops_at_the_participant() {
        let policy = policy();
        let ops = user("B01234", "broker", &["si-input"]);
        let other = ParticipantId::parse("B05678").unwrap();
        assert_eq!(
            policy.decide(&ops, Function::SiInput, None),
            Ok("si-input".into())
        );
        assert_eq!(
            policy.decide(&ops, Function::SiInput, Some(&other)),
            Err(DenyCode::OtherParticipant)
        );
        assert_eq!(
            policy.decide(&ops, Function::SiAuthorise, None),
            Err(DenyCode::NotGranted)
        );
    }

    #[test]
    fn a_group_the_participant_type_may_not_have_grants_nothing() {
        let policy = policy();
        let broker_with_ops = user("B01234", "broker", &["operations"]);
        assert!(policy.functions(&broker_with_ops).is_empty());
        let ccp_ops = user("HKSCC0", "ccp", &["operations"]);
        let other = ParticipantId::parse("B05678").unwrap();
        assert!(
            policy
                .decide(&ccp_ops, Function::OperationsEnquiry, Some(&other))
                .is_ok()
        );
    }

    #[test]
    fn administration_is_limited_to_own_participant_and_available_groups() {
        let policy = policy();
        let admin = user("B01234", "broker", &["participant-admin"]);
        let own = ParticipantId::parse("B01234").unwrap();
        let other = ParticipantId::parse("B05678").unwrap();
        assert_eq!(
            policy.may_administer(&admin, &own, "broker", "si-input"),
            Ok(())
        );
        assert_eq!(
            policy.may_administer(&admin, &own, "broker", "system-admin"),
            Err(DenyCode::GroupNotAvailable)
        );
        assert_eq!(
            policy.may_administer(&admin, &other, "broker", "si-input"),
            Err(DenyCode::OtherParticipant)
        );
        let sysadmin = user("HKSCC0", "ccp", &["system-admin"]);
        assert_eq!(
            policy.may_administer(&sysadmin, &other, "broker", "si-input"),
            Ok(())
        );
        // A scope-any group configured for another type still stops at the own participant.
        let mut config = policy.config().clone();
        config
            .participant_types
            .get_mut("broker")
            .unwrap()
            .push("system-admin".to_owned());
        let lenient = Policy::new(config);
        let broker_sysadmin = user("B01234", "broker", &["system-admin"]);
        assert_eq!(
            lenient.may_administer(&broker_sysadmin, &other, "broker", "si-input"),
            Err(DenyCode::OtherParticipant)
        );
        assert_eq!(
            lenient.may_administer(&broker_sysadmin, &own, "broker", "si-input"),
            Ok(())
        );
    }
}
