//! Typed subject builders: the only way ccass code makes a subject string.
//!
//! Each builder renders one [`SubjectPattern`]; [`ALL`] lists them, and a test holds that list
//! equal to the catalogue in `subjects/*.toml`. Tokens come from validated types, so a subject
//! never holds `.`, `*`, `>` or white space inside a token.

use std::fmt;

use crate::ids::ParticipantId;

/// A subject built by one of the builders below.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

impl Subject {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({})", self.0)
    }
}

impl From<Subject> for async_nats::Subject {
    fn from(subject: Subject) -> Self {
        async_nats::Subject::from(subject.0)
    }
}

impl async_nats::subject::ToSubject for Subject {
    fn to_subject(&self) -> async_nats::Subject {
        async_nats::Subject::from(self.0.as_str())
    }
}

/// A subject pattern as declared in the catalogue: `{name}` marks a token a builder fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectPattern {
    pub builder: &'static str,
    pub pattern: &'static str,
}

impl SubjectPattern {
    /// Fills the placeholders in order. The count is fixed by each builder's signature, so a
    /// mismatch is a programming error caught by the catalogue test.
    fn render(&self, tokens: &[&str]) -> Subject {
        let mut placeholders = 0;
        let rendered: Vec<&str> = self
            .pattern
            .split('.')
            .map(|part| {
                if part.starts_with('{') {
                    placeholders += 1;
                    tokens[placeholders - 1]
                } else {
                    part
                }
            })
            .collect();
        assert_eq!(placeholders, tokens.len(), "tokens for {}", self.pattern);
        Subject(rendered.join("."))
    }

    pub fn matches(&self, subject: &str) -> bool {
        pattern_matches(self.pattern, subject)
    }
}

/// Whether a concrete subject has a pattern's shape (a `{placeholder}` matches any one token).
pub fn pattern_matches(pattern: &str, subject: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let subject: Vec<&str> = subject.split('.').collect();
    pattern.len() == subject.len()
        && pattern
            .iter()
            .zip(&subject)
            .all(|(p, s)| !s.is_empty() && (p.starts_with('{') || p == s))
}

/// A pattern with every placeholder as the single-token wildcard `*`.
pub fn pattern_wildcard(pattern: &str) -> String {
    pattern
        .split('.')
        .map(|part| if part.starts_with('{') { "*" } else { part })
        .collect::<Vec<_>>()
        .join(".")
}

pub const INBOUND: SubjectPattern = SubjectPattern {
    builder: "inbound",
    pattern: "ccass.v1.inbound.{participant}.{message_type}",
};
pub const OUTBOUND: SubjectPattern = SubjectPattern {
    builder: "outbound",
    pattern: "ccass.v1.outbound.{participant}",
};
pub const TRADES: SubjectPattern = SubjectPattern {
    builder: "trades",
    pattern: "ccass.v1.trades.{market}",
};
pub const EVENTS: SubjectPattern = SubjectPattern {
    builder: "events",
    pattern: "ccass.v1.events.{participant}.{kind}",
};
pub const AUTH: SubjectPattern = SubjectPattern {
    builder: "auth",
    pattern: "ccass.v1.auth.{operation}",
};
pub const SETTLEMENT_RUN: SubjectPattern = SubjectPattern {
    builder: "settlement_run",
    pattern: "ccass.v1.settlement.run.{run_id}",
};

/// Every pattern the code builds; must equal the catalogue.
pub const ALL: &[SubjectPattern] = &[INBOUND, OUTBOUND, TRADES, EVENTS, AUTH, SETTLEMENT_RUN];

/// An ISO 15022 message type number (`540` for MT540): the token `mt540`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageTypeNumber(u16);

impl MessageTypeNumber {
    pub fn new(number: u16) -> Option<MessageTypeNumber> {
        (100..=999)
            .contains(&number)
            .then_some(MessageTypeNumber(number))
    }
}

/// An exchange market code, lower case, e.g. `xhkg`: 1 to 16 of `[a-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market(String);

impl Market {
    pub const LEN_MAX: usize = 16;

    pub fn parse(text: &str) -> Option<Market> {
        let valid = !text.is_empty()
            && text.len() <= Self::LEN_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        valid.then(|| Market(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What changed, for live consumers of `ccass.v1.events.{participant}.{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Instruction,
    Settlement,
    Trade,
    Run,
    Session,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Instruction,
        EventKind::Settlement,
        EventKind::Trade,
        EventKind::Run,
        EventKind::Session,
    ];

    pub fn token(self) -> &'static str {
        match self {
            EventKind::Instruction => "instruction",
            EventKind::Settlement => "settlement",
            EventKind::Trade => "trade",
            EventKind::Run => "run",
            EventKind::Session => "session",
        }
    }
}

/// Requests answered by the auth service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOperation {
    Authenticate,
    Authorise,
    Functions,
    Users,
    Administer,
}

impl AuthOperation {
    pub const ALL: [AuthOperation; 5] = [
        AuthOperation::Authenticate,
        AuthOperation::Authorise,
        AuthOperation::Functions,
        AuthOperation::Users,
        AuthOperation::Administer,
    ];

    pub fn token(self) -> &'static str {
        match self {
            AuthOperation::Authenticate => "authenticate",
            AuthOperation::Authorise => "authorise",
            AuthOperation::Functions => "functions",
            AuthOperation::Users => "users",
            AuthOperation::Administer => "administer",
        }
    }
}

pub fn inbound(participant: &ParticipantId, message_type: MessageTypeNumber) -> Subject {
    INBOUND.render(&[participant.as_str(), &format!("mt{}", message_type.0)])
}

/// The stream of inbound participant messages.
pub const INBOUND_STREAM: &str = "INBOUND";
/// The durable consumer of INBOUND shared by the intake workers.
pub const INTAKE_CONSUMER: &str = "settlement-intake";

/// The participant and message type number of an inbound subject
/// (`ccass.v1.inbound.B01234.mt541` → `B01234`, 541).
pub fn inbound_parts(subject: &str) -> Option<(ParticipantId, u16)> {
    if !INBOUND.matches(subject) {
        return None;
    }
    let mut tokens = subject.rsplit('.');
    let message_type = tokens.next()?.strip_prefix("mt")?.parse().ok()?;
    let participant = ParticipantId::parse(tokens.next()?).ok()?;
    Some((participant, message_type))
}

pub fn outbound(participant: &ParticipantId) -> Subject {
    OUTBOUND.render(&[participant.as_str()])
}

pub fn trades(market: &Market) -> Subject {
    TRADES.render(&[&market.0])
}

pub fn events(participant: &ParticipantId, kind: EventKind) -> Subject {
    EVENTS.render(&[participant.as_str(), kind.token()])
}

pub fn auth(operation: AuthOperation) -> Subject {
    AUTH.render(&[operation.token()])
}

pub fn settlement_run(run_id: u64) -> Subject {
    SETTLEMENT_RUN.render(&[&run_id.to_string()])
}

/// One subject from each builder and each enum value, for tests against the catalogue.
pub fn examples() -> Vec<(&'static str, Subject)> {
    let participant = ParticipantId::parse("B01234").expect("valid example id");
    let mut examples = vec![
        (
            INBOUND.builder,
            inbound(&participant, MessageTypeNumber(540)),
        ),
        (OUTBOUND.builder, outbound(&participant)),
        (
            TRADES.builder,
            trades(&Market::parse("xhkg").expect("valid example market")),
        ),
        (SETTLEMENT_RUN.builder, settlement_run(42)),
    ];
    examples.extend(
        EventKind::ALL
            .iter()
            .map(|kind| (EVENTS.builder, events(&participant, *kind))),
    );
    examples.extend(
        AuthOperation::ALL
            .iter()
            .map(|operation| (AUTH.builder, auth(*operation))),
    );
    examples
}
