//! SI intake: validate MT540–543 from INBOUND, persist them in micro-batches, match them,
//! apply cancellations, and report every outcome by MT548 through the outbox.
//!
//! ```text
//!  INBOUND (consumer settlement-intake, shared by the workers)
//!    ──► one transaction per fetched batch: message_journal, instructions, status history,
//!        instruction_matches, outbox (MT548 PACK/REJT/MACH/CAND/CANP/DEND and one
//!        instruction event beside each) ──► commit ──► ack
//!  unmatched reporter (every unmatched_scan_interval_ms) ──► MT548 MTCH//NMAT with reason
//!  outbox ──► relay (crate::relay) ──► OUTBOUND, EVENTS
//! ```
//!
//! Decisions:
//! - Idempotency: a redelivered message finds its stream sequence in `message_journal` and
//!   changes nothing; a reused sender's reference is refused (`REJT` with `DUPL`) by the
//!   unique key of `instructions` and never stored twice.
//! - Rejected messages are journalled and reported but not stored as instructions (their
//!   references may name nothing that exists).
//! - Rights: the inbound subject's participant must own the account and block 1's logical
//!   terminal must be that participant's. Maker–checker (pending authorisation) belongs to
//!   terminal input and is not handled here.
//! - The counterparty is the `DEAG` (receipts) or `REAG` (deliveries) party, as a CCASS
//!   participant id under a proprietary scheme (`:95R::DEAG/CCASS/B05678`) or as the
//!   participant's logical terminal (`:95P::`, 8 or 12 characters).
//! - A cancellation (`23G:CANC` with `PREV`) is stored as an instruction of function CANC
//!   with status `cancelled` once applied, `received` while it waits for the counterparty's
//!   cancellation of a matched pair. A bilaterally cancelled pair's match row is deleted.
//! - Matching and cancellation of one (ISIN, settlement date) are serialised by an advisory
//!   lock taken in key order at the start of the batch transaction.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use time::{Date, OffsetDateTime};

use super::matching;
use super::metrics as names;
use crate::bus::instructions::InstructionEvent;
use crate::bus::{self, subjects};
use crate::cns::calendar::Calendar;
use crate::config::{ConfigError, check_range};
use crate::hostdb::intake::{self as sql, InstructionRow, OutboxRow};
use crate::hostdb::{HostDbError, Pool};
use crate::ids::ParticipantId;
use crate::iso15022::build::{self, Envelope, ReasonSpec, StatusAdviceSpec, StatusSpec};
use crate::iso15022::fields::{Function, FunctionCode, PartyId};
use crate::iso15022::views::{PaymentType, SettlementDirection, SettlementInstruction};
use crate::iso15022::{self, Disposition, ParseOptions, ReasonCode};

/// `[intake]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Intake workers started by `ccass settlement` / `ccass up` (one consumer shared).
    pub workers: usize,
    /// Messages taken per fetch, persisted in one transaction (the micro-batch).
    pub fetch_messages_max: usize,
    /// How long a fetch waits for messages before persisting what it has.
    pub fetch_wait_ms: u64,
    /// How long a worker waits before retrying after the host database failed.
    pub retry_delay_ms: u64,
    /// How often a worker reloads participants, accounts and securities.
    pub reference_refresh_ms: u64,
    /// Largest quantity accepted in one instruction.
    pub quantity_max: i64,
    /// Largest settlement amount accepted, in minor units.
    pub amount_max_minor: i64,
    /// Two DVP amounts within this many minor units match.
    pub dvp_amount_tolerance_minor: i64,
    /// An SI still unmatched this long after input is reported NMAT with its reason.
    pub unmatched_report_delay_ms: u64,
    /// How often the unmatched report looks for such SIs.
    pub unmatched_scan_interval_ms: u64,
    /// SIs reported unmatched per scan transaction.
    pub unmatched_scan_batch_max: i64,
    /// Outbox rows the relay publishes per transaction (publishes pipelined).
    pub relay_batch_max: i64,
    /// How long the relay sleeps when the outbox is empty.
    pub relay_poll_interval_ms: u64,
}

impl IntakeConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        check_range("intake.workers", self.workers, 1..=64)?;
        check_range(
            "intake.fetch_messages_max",
            self.fetch_messages_max,
            1..=4096,
        )?;
        check_range("intake.fetch_wait_ms", self.fetch_wait_ms, 1..=60_000)?;
        check_range("intake.retry_delay_ms", self.retry_delay_ms, 1..=600_000)?;
        check_range(
            "intake.reference_refresh_ms",
            self.reference_refresh_ms,
            1..=86_400_000,
        )?;
        check_range("intake.quantity_max", self.quantity_max, 1..=i64::MAX)?;
        check_range(
            "intake.amount_max_minor",
            self.amount_max_minor,
            1..=i64::MAX,
        )?;
        check_range(
            "intake.dvp_amount_tolerance_minor",
            self.dvp_amount_tolerance_minor,
            0..=1_000_000_000,
        )?;
        check_range(
            "intake.unmatched_report_delay_ms",
            self.unmatched_report_delay_ms,
            0..=86_400_000,
        )?;
        check_range(
            "intake.unmatched_scan_interval_ms",
            self.unmatched_scan_interval_ms,
            1..=3_600_000,
        )?;
        check_range(
            "intake.unmatched_scan_batch_max",
            self.unmatched_scan_batch_max,
            1..=100_000,
        )?;
        check_range("intake.relay_batch_max", self.relay_batch_max, 1..=100_000)?;
        check_range(
            "intake.relay_poll_interval_ms",
            self.relay_poll_interval_ms,
            1..=60_000,
        )?;
        Ok(())
    }
}

/// Reference data intake validates against.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    /// participant → (active, logical terminal).
    participants: HashMap<String, (bool, String)>,
    /// logical terminal (8 or 12 characters) → participant.
    by_terminal: HashMap<String, String>,
    /// account → (participant, active).
    accounts: HashMap<String, (String, bool)>,
    /// isin → (currency, active).
    securities: HashMap<String, (String, bool)>,
    /// The CCP's logical terminal: the sender of every MT548.
    own_terminal: String,
}

impl Reference {
    pub fn new(rows: &sql::IntakeReferenceRows, ccp_participant: &str) -> Reference {
        let mut reference = Reference::default();
        for (id, status, terminal) in &rows.participants {
            reference
                .participants
                .insert(id.clone(), (status == "active", terminal.clone()));
            reference.by_terminal.insert(terminal.clone(), id.clone());
            reference
                .by_terminal
                .insert(terminal.chars().take(8).collect(), id.clone());
            if id == ccp_participant {
                reference.own_terminal = terminal.clone();
            }
        }
        for (id, participant, status) in &rows.stock_accounts {
            reference
                .accounts
                .insert(id.clone(), (participant.clone(), status == "active"));
        }
        for (isin, currency, status) in &rows.securities {
            reference
                .securities
                .insert(isin.clone(), (currency.clone(), status == "active"));
        }
        reference
    }

    pub async fn load(pool: &Pool, ccp_participant: &str) -> Result<Reference, HostDbError> {
        Ok(Reference::new(
            &sql::load_reference(pool).await?,
            ccp_participant,
        ))
    }

    fn terminal(&self, participant: &str) -> Option<&str> {
        self.participants
            .get(participant)
            .map(|(_, terminal)| terminal.as_str())
    }
}

/// Why a message was refused: the MT548 reason and a narrative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ReasonCode,
    pub detail: String,
}

fn refuse(reason: ReasonCode, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// A message that passed validation: the instruction to store (status set by intake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub row: InstructionRow,
}

/// Validates one MT540–543 from `participant` against the codec, reference data, rights and
/// the calendar. Pure: duplicates and cancellation targets are checked in the transaction.
pub fn evaluate(
    reference: &Reference,
    calendar: &Calendar,
    config: &IntakeConfig,
    today: Date,
    participant: &str,
    text: &str,
) -> Result<Accepted, Refusal> {
    let report = iso15022::check(text, ParseOptions::fin());
    if let Some(problem) = report
        .problems
        .iter()
        .find(|problem| problem.severity() == iso15022::Severity::Error)
    {
        let reason = match problem.disposition {
            Disposition::Reject(reason) => reason,
            Disposition::Nak(_) => ReasonCode::Narr,
        };
        return Err(refuse(
            reason,
            format!(
                "{} at line {}: {}",
                problem.code.as_str(),
                problem.line,
                problem.message
            ),
        ));
    }
    let message = report.message;
    let view = SettlementInstruction::from_message(&message)
        .map_err(|error| refuse(ReasonCode::Narr, error.to_string()))?;
    if view.confirmation {
        return Err(refuse(ReasonCode::Narr, "mt544-547 are not instructions"));
    }
    let Some((active, terminal)) = reference.participants.get(participant) else {
        return Err(refuse(
            ReasonCode::Narr,
            format!("{participant} is not a participant"),
        ));
    };
    if !active {
        return Err(refuse(
            ReasonCode::Narr,
            format!("{participant} is not active"),
        ));
    }
    let sender_terminal = message
        .basic_header
        .as_ref()
        .map(|header| header.logical_terminal)
        .unwrap_or_default();
    // The participant's registered terminal, or the PSS terminal the gateway admits for it
    // (its id padded to 12, `B01234XXXXXX`: `gateway::protocol::check_logical_terminal`).
    let gateway_terminal =
        crate::gateway::protocol::check_logical_terminal(sender_terminal, participant);
    if sender_terminal != terminal && gateway_terminal.is_err() {
        return Err(refuse(
            ReasonCode::Narr,
            format!("sender {sender_terminal} is not the terminal of {participant}"),
        ));
    }
    match reference.accounts.get(view.account) {
        Some((owner, true)) if owner == participant => {}
        Some((owner, _)) if owner != participant => {
            return Err(refuse(
                ReasonCode::Safe,
                format!(
                    "account {} is not an account of {participant}",
                    view.account
                ),
            ));
        }
        _ => {
            return Err(refuse(
                ReasonCode::Safe,
                format!("account {} is unknown or not active", view.account),
            ));
        }
    }
    let counterparty_role = match view.direction {
        SettlementDirection::Receive => "DEAG",
        SettlementDirection::Deliver => "REAG",
    };
    let party = view
        .party(counterparty_role)
        .ok_or_else(|| refuse(ReasonCode::Ddea, format!("{counterparty_role} is missing")))?;
    let counterparty = match party.id {
        PartyId::Proprietary { id, .. } => reference
            .participants
            .contains_key(id)
            .then(|| id.to_owned()),
        PartyId::Bic(bic) => reference.by_terminal.get(bic).cloned(),
        _ => None,
    }
    .ok_or_else(|| {
        refuse(
            ReasonCode::Ddea,
            format!("{counterparty_role} is not a participant"),
        )
    })?;
    if counterparty == participant {
        return Err(refuse(
            ReasonCode::Ddea,
            "counterparty is the sender itself",
        ));
    }
    let counterparty_account = match party.safekeeping_account {
        Some(account) => match reference.accounts.get(account) {
            Some((owner, _)) if *owner == counterparty => Some(account.to_owned()),
            _ => {
                return Err(refuse(
                    ReasonCode::Safe,
                    format!("account {account} is not an account of {counterparty}"),
                ));
            }
        },
        None => None,
    };
    let isin = view
        .instrument
        .isin
        .map(|isin| isin.as_str().to_owned())
        .ok_or_else(|| refuse(ReasonCode::Dsec, "no isin"))?;
    let Some((security_currency, security_active)) = reference.securities.get(&isin) else {
        return Err(refuse(ReasonCode::Dsec, format!("{isin} is unknown")));
    };
    if !security_active {
        return Err(refuse(ReasonCode::Dsec, format!("{isin} is not active")));
    }
    let settlement_date = view.settlement_date.date();
    if settlement_date < today {
        return Err(refuse(
            ReasonCode::Ddat,
            format!("settlement date {settlement_date} is past"),
        ));
    }
    if !calendar.covers(settlement_date) {
        return Err(refuse(
            ReasonCode::Ddat,
            format!(
                "settlement date {settlement_date} is beyond the holiday calendar (cns.holidays_known_through)"
            ),
        ));
    }
    if !calendar.is_business_day(settlement_date) {
        return Err(refuse(
            ReasonCode::Ddat,
            format!("settlement date {settlement_date} is not a business day"),
        ));
    }
    let quantity = whole(view.quantity.value)
        .filter(|quantity| (1..=config.quantity_max).contains(quantity))
        .ok_or_else(|| {
            refuse(
                ReasonCode::Dqua,
                format!("quantity {} out of range", view.quantity.value),
            )
        })?;
    let (currency_code, amount_minor) = match (view.payment, view.settlement_amount) {
        (PaymentType::Free, _) => (None, None),
        (PaymentType::AgainstPayment, None) => {
            return Err(refuse(ReasonCode::Dmon, "settlement amount missing"));
        }
        (PaymentType::AgainstPayment, Some(amount)) => {
            if amount.currency() != security_currency {
                return Err(refuse(
                    ReasonCode::Dmon,
                    format!(
                        "currency {} is not {security_currency} of {isin}",
                        amount.currency()
                    ),
                ));
            }
            let minor = whole(amount.value * Decimal::ONE_HUNDRED)
                .filter(|minor| (1..=config.amount_max_minor).contains(minor))
                .ok_or_else(|| {
                    refuse(
                        ReasonCode::Dmon,
                        format!("amount {} out of range", amount.value),
                    )
                })?;
            (Some(security_currency.clone()), Some(minor))
        }
    };
    let (function, previous_reference) = match view.function.code {
        FunctionCode::Newm => ("NEWM", None),
        FunctionCode::Canc => (
            "CANC",
            Some(
                view.previous_reference()
                    .ok_or_else(|| refuse(ReasonCode::Refe, "cancellation without PREV"))?
                    .to_owned(),
            ),
        ),
        _ => {
            return Err(refuse(
                ReasonCode::Narr,
                "function is neither NEWM nor CANC",
            ));
        }
    };
    let real_time = message.text.fields().iter().any(|field| {
        field.tag == "22F" && field.value.starts_with(":RTGS/") && field.value.ends_with("YRTG")
    });
    let partial_settlement_allowed = message.text.fields().iter().any(|field| {
        field.tag == "22F" && field.value.starts_with(":STCO/") && field.value.ends_with("PART")
    });
    Ok(Accepted {
        row: InstructionRow {
            instruction_id: 0,
            participant_id: participant.to_owned(),
            sender_reference: view.reference.to_owned(),
            message_type: view.message_type.0.to_string(),
            function: function.to_owned(),
            previous_reference,
            direction: match view.direction {
                SettlementDirection::Receive => "receive",
                SettlementDirection::Deliver => "deliver",
            }
            .to_owned(),
            payment: match view.payment {
                PaymentType::Free => "FOP",
                PaymentType::AgainstPayment => "DVP",
            }
            .to_owned(),
            account_id: view.account.to_owned(),
            counterparty_participant_id: counterparty,
            counterparty_account_id: counterparty_account,
            isin,
            quantity,
            trade_date: view.trade_date.map(|date| date.date()),
            settlement_date,
            currency_code,
            amount_minor,
            partial_settlement_allowed,
            real_time,
            status: String::new(),
        },
    })
}

fn whole(value: Decimal) -> Option<i64> {
    (value.fract().is_zero()).then(|| value.to_i64()).flatten()
}

/// A message taken from INBOUND.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The participant of the inbound subject (the authenticated sender).
    pub participant: String,
    pub message_type: String,
    pub stream_sequence: u64,
    pub text: String,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub accepted: usize,
    pub rejected: usize,
    pub matched_pairs: usize,
    pub cancelled: usize,
    pub redelivered: usize,
}

/// MT548s of one batch, written to the outbox and the message journal.
pub(crate) struct Reports<'r> {
    reference: &'r Reference,
    rows: Vec<(String, String, Vec<u8>, String)>,
    events: Vec<OutboxRow>,
}

impl<'r> Reports<'r> {
    pub(crate) fn new(reference: &'r Reference) -> Reports<'r> {
        Reports {
            reference,
            rows: Vec::new(),
            events: Vec::new(),
        }
    }

    pub(crate) fn add(
        &mut self,
        participant: &str,
        reference: String,
        related: &str,
        cast: bool,
        (qualifier, code): (&str, &str),
        reason: Option<(&str, ReasonCode, &str)>,
    ) {
        let narrative: String = reason
            .map(|(_, _, text)| {
                text.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || " /-?:().,'+".contains(c) {
                            c
                        } else {
                            ' '
                        }
                    })
                    .take(35)
                    .collect()
            })
            .unwrap_or_default();
        let reasons: Vec<ReasonSpec<'_>> = reason
            .map(|(reason_qualifier, code, _)| ReasonSpec {
                qualifier: reason_qualifier,
                code,
                narrative: (!narrative.trim().is_empty()).then_some(narrative.as_str()),
            })
            .into_iter()
            .collect();
        let statuses = [StatusSpec {
            qualifier,
            code,
            reasons: &reasons,
        }];
        let receiver = self
            .reference
            .terminal(participant)
            .unwrap_or("XXXXXXXXXXXX");
        let envelope = Envelope {
            sender: &self.reference.own_terminal,
            receiver,
            session: 1,
            sequence: 1,
        };
        let related = if related.is_empty() {
            "NONREF"
        } else {
            related
        };
        let spec = StatusAdviceSpec {
            reference: &reference,
            function: Function {
                code: if cast {
                    FunctionCode::Cast
                } else {
                    FunctionCode::Inst
                },
                subfunction: None,
            },
            prepared: None,
            related_reference: related,
            statuses: &statuses,
            transaction: None,
        };
        let text = match build::status_advice(Some(&envelope), &spec) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(%error, participant, "intake: cannot build mt548");
                return;
            }
        };
        let status = match code {
            "REJT" => "rejected",
            "PACK" | "NMAT" => "unmatched",
            "MACH" => "matched",
            "CAND" => "cancelled",
            "CANP" => "cancellation_pending",
            _ => "cancellation_denied",
        };
        self.event(
            &reference,
            InstructionEvent {
                participant: participant.to_owned(),
                sender_reference: related.to_owned(),
                status: status.to_owned(),
                reason_code: reason.map(|(_, code, _)| code.as_str().to_owned()),
            },
        );
        self.rows.push((
            participant.to_owned(),
            reference,
            text.into_bytes(),
            related.to_owned(),
        ));
    }

    /// An instruction event beside the MT548 `advice_reference` (its dedupe key).
    fn event(&mut self, advice_reference: &str, event: InstructionEvent) {
        let Ok(id) = ParticipantId::parse(&event.participant) else {
            return;
        };
        let payload = match serde_json::to_vec(&event) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "intake: cannot encode instruction event");
                return;
            }
        };
        self.events.push(OutboxRow {
            subject: subjects::events(&id, subjects::EventKind::Instruction)
                .as_str()
                .to_owned(),
            dedupe_id: format!("event.{}.{advice_reference}", event.participant),
            payload,
        });
    }

    pub(crate) async fn write(
        self,
        transaction: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), HostDbError> {
        let mut outbox = Vec::with_capacity(self.rows.len());
        for (participant, reference, payload, _) in &self.rows {
            let Ok(id) = ParticipantId::parse(participant) else {
                continue;
            };
            let text = String::from_utf8_lossy(payload);
            let digest = Sha256::digest(payload);
            sql::journal_outbound(transaction, participant, "548", reference, &digest, &text)
                .await?;
            outbox.push(OutboxRow {
                subject: subjects::outbound(&id).as_str().to_owned(),
                dedupe_id: format!("mt548.{participant}.{reference}"),
                payload: payload.clone(),
            });
        }
        outbox.extend(self.events);
        sql::insert_outbox(transaction, &outbox).await
    }
}

/// The `:20C::SEME//` of a refused message when it can be read (so the MT548 names it).
fn readable_reference(text: &str) -> Option<String> {
    let message = iso15022::parse(text, ParseOptions::fin()).ok()?;
    let view = SettlementInstruction::from_message(&message).ok()?;
    let reference = view.reference;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/?:().,'+ -".contains(c);
    (!reference.is_empty() && reference.len() <= 16 && reference.chars().all(allowed))
        .then(|| reference.to_owned())
}

fn match_key(isin: &str, settlement_date: Date) -> i32 {
    // FNV-1a: stable across processes (std's hasher is randomly seeded).
    let mut hash: u32 = 0x811c_9dc5;
    for byte in isin
        .bytes()
        .chain(settlement_date.to_julian_day().to_le_bytes())
    {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

/// Persists, matches and reports one fetched batch in ONE transaction.
pub async fn process_batch(
    pool: &Pool,
    reference: &Reference,
    calendar: &Calendar,
    config: &IntakeConfig,
    statements: &crate::statements::StatementsConfig,
    stream: &str,
    messages: &[Inbound],
) -> Result<BatchReport, HostDbError> {
    let today = OffsetDateTime::now_utc().date();
    let evaluated: Vec<Result<Accepted, Refusal>> = messages
        .iter()
        .map(|message| {
            evaluate(
                reference,
                calendar,
                config,
                today,
                &message.participant,
                &message.text,
            )
        })
        .collect();
    let keys: BTreeSet<i32> = evaluated
        .iter()
        .filter_map(|outcome| outcome.as_ref().ok())
        .map(|accepted| match_key(&accepted.row.isin, accepted.row.settlement_date))
        .collect();
    let mut client = crate::hostdb::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(|error| HostDbError::from_postgres("begin intake batch", error))?;
    for key in keys {
        sql::lock_match_key(&transaction, key).await?;
    }
    let mut report = BatchReport::default();
    let mut reports = Reports {
        reference,
        rows: Vec::new(),
        events: Vec::new(),
    };
    for (message, outcome) in messages.iter().zip(evaluated) {
        let sender_reference = match &outcome {
            Ok(accepted) => Some(accepted.row.sender_reference.clone()),
            Err(_) => readable_reference(&message.text),
        };
        let journalled =
            journal(&transaction, stream, message, sender_reference.as_deref()).await?;
        let Some(message_id) = journalled else {
            report.redelivered += 1;
            continue;
        };
        let own = |suffix: char| format!("{suffix}{message_id:X}");
        if message.message_type == "549" {
            // A statement request: answered in this transaction (src/statements/request.rs).
            let answered = crate::statements::request::answer(
                &transaction,
                statements,
                &reference.own_terminal,
                &message.participant,
                message_id,
                &message.text,
            )
            .await;
            match answered {
                // Counted by ccass_statements_requests_total, not as an accepted SI.
                Ok(Ok(_pages)) => {}
                Ok(Err(refused)) => {
                    report.rejected += 1;
                    let related = crate::statements::request::parse(&message.text)
                        .map(|request| request.reference)
                        .unwrap_or_default();
                    reports.add(
                        &message.participant,
                        own('R'),
                        &related,
                        false,
                        ("IPRC", "REJT"),
                        Some(("REJT", refused.reason, &refused.detail)),
                    );
                }
                Err(crate::statements::StatementError::Db(error)) => return Err(error),
                Err(error) => {
                    tracing::error!(%error, participant = %message.participant, "intake: statement request not answered");
                    report.rejected += 1;
                    reports.add(
                        &message.participant,
                        own('R'),
                        "",
                        false,
                        ("IPRC", "REJT"),
                        Some(("REJT", ReasonCode::Narr, "statement cannot be produced")),
                    );
                }
            }
            continue;
        }
        let accepted = match outcome {
            Ok(accepted) => accepted,
            Err(refusal) => {
                report.rejected += 1;
                let related = readable_reference(&message.text).unwrap_or_default();
                reports.add(
                    &message.participant,
                    own('R'),
                    &related,
                    false,
                    ("IPRC", "REJT"),
                    Some(("REJT", refusal.reason, &refusal.detail)),
                );
                continue;
            }
        };
        let mut row = accepted.row;
        let reference_text = row.sender_reference.clone();
        if row.function == "CANC" {
            let previous = row.previous_reference.clone().unwrap_or_default();
            let target =
                sql::instruction_by_reference(&transaction, &row.participant_id, &previous).await?;
            let Some(target) = target.filter(|target| target.function == "NEWM") else {
                report.rejected += 1;
                reports.add(
                    &row.participant_id,
                    own('R'),
                    &reference_text,
                    true,
                    ("IPRC", "REJT"),
                    Some(("REJT", ReasonCode::Refe, "no instruction with this PREV")),
                );
                continue;
            };
            let state = if target.status == "matched" {
                // Decide against the settled state no run can change under us.
                sql::hold_off_settlement_runs(&transaction).await?;
                sql::match_state(&transaction, target.instruction_id).await?
            } else {
                None
            };
            // Denied: an SI past matching, or a pair a run settled (even in part: stock and
            // money have moved).
            let denial = match state.filter(|state| state.settled_quantity > 0) {
                // Swept after a run settled its pair in full (V0016).
                _ if target.status == "settled" => {
                    Some(Some("instruction already settled".to_owned()))
                }
                _ if target.status != "unmatched" && target.status != "matched" => Some(None),
                Some(state) if state.complete => {
                    Some(Some("instruction already settled".to_owned()))
                }
                Some(state) => Some(Some(format!("{} already settled", state.settled_quantity))),
                None => None,
            };
            if let Some(narrative) = denial {
                report.rejected += 1;
                reports.add(
                    &row.participant_id,
                    own('D'),
                    &reference_text,
                    true,
                    ("CPRC", "DEND"),
                    narrative
                        .as_deref()
                        .map(|narrative| ("DEND", ReasonCode::Dset, narrative)),
                );
                continue;
            }
            let counterpart = match state {
                Some(state) => {
                    sql::instruction_by_id(&transaction, state.counterpart_instruction_id).await?
                }
                None => None,
            };
            let counterpart_request = match &counterpart {
                Some(counterpart) => {
                    sql::cancellation_request(
                        &transaction,
                        &counterpart.participant_id,
                        &counterpart.sender_reference,
                    )
                    .await?
                }
                None => None,
            };
            let bilateral = counterpart_request.is_some();
            let cancellable = target.status == "unmatched" || bilateral;
            row.status = if cancellable { "cancelled" } else { "received" }.to_owned();
            let Some(cancel_id) = sql::insert_instruction(&transaction, &row, message_id).await?
            else {
                report.rejected += 1;
                reports.add(
                    &row.participant_id,
                    own('R'),
                    &reference_text,
                    true,
                    ("IPRC", "REJT"),
                    Some(("REJT", ReasonCode::Dupl, "duplicate sender reference")),
                );
                continue;
            };
            sql::insert_history(&transaction, cancel_id, &row.status, None, None).await?;
            report.accepted += 1;
            if !cancellable {
                reports.add(
                    &row.participant_id,
                    own('P'),
                    &reference_text,
                    true,
                    ("CPRC", "CANP"),
                    None,
                );
                continue;
            }
            if let Some(request_id) = counterpart_request {
                // The counterparty's request waited for this one: both are now applied.
                sql::set_status(&transaction, request_id, "cancelled", None, None).await?;
            }
            let mut cancelled = vec![target];
            if let Some(counterpart) = counterpart {
                sql::delete_match(&transaction, counterpart.instruction_id).await?;
                cancelled.push(counterpart);
            }
            for (index, instruction) in cancelled.iter().enumerate() {
                sql::set_status(
                    &transaction,
                    instruction.instruction_id,
                    "cancelled",
                    Some("CANC"),
                    None,
                )
                .await?;
                report.cancelled += 1;
                reports.add(
                    &instruction.participant_id,
                    format!("C{message_id:X}{index}"),
                    &instruction.sender_reference,
                    true,
                    ("CPRC", "CAND"),
                    None,
                );
            }
            continue;
        }
        row.status = "unmatched".to_owned();
        let Some(instruction_id) = sql::insert_instruction(&transaction, &row, message_id).await?
        else {
            report.rejected += 1;
            reports.add(
                &row.participant_id,
                own('R'),
                &reference_text,
                false,
                ("IPRC", "REJT"),
                Some(("REJT", ReasonCode::Dupl, "duplicate sender reference")),
            );
            continue;
        };
        row.instruction_id = instruction_id;
        sql::insert_history(&transaction, instruction_id, "unmatched", None, None).await?;
        report.accepted += 1;
        reports.add(
            &row.participant_id,
            own('A'),
            &reference_text,
            false,
            ("IPRC", "PACK"),
            None,
        );
        let candidates = sql::match_candidates(&transaction, &row).await?;
        if let Some(found) =
            matching::find_match(&row, &candidates, config.dvp_amount_tolerance_minor)
        {
            let (delivering, receiving) = if row.direction == "deliver" {
                (row.instruction_id, found.instruction_id)
            } else {
                (found.instruction_id, row.instruction_id)
            };
            sql::insert_match(&transaction, delivering, receiving).await?;
            for (index, instruction) in [&row, found].into_iter().enumerate() {
                sql::set_status(
                    &transaction,
                    instruction.instruction_id,
                    "matched",
                    None,
                    None,
                )
                .await?;
                reports.add(
                    &instruction.participant_id,
                    format!("M{message_id:X}{index}"),
                    &instruction.sender_reference,
                    false,
                    ("MTCH", "MACH"),
                    None,
                );
            }
            report.matched_pairs += 1;
        }
    }
    reports.write(&transaction).await?;
    transaction
        .commit()
        .await
        .map_err(|error| HostDbError::from_postgres("commit intake batch", error))?;
    Ok(report)
}

/// Journals an inbound message of `stream`: its id, or None when its stream sequence is
/// journalled already (a redelivery).
async fn journal(
    transaction: &tokio_postgres::Transaction<'_>,
    stream: &str,
    message: &Inbound,
    sender_reference: Option<&str>,
) -> Result<Option<i64>, HostDbError> {
    let digest = Sha256::digest(message.text.as_bytes());
    sql::journal_inbound(
        transaction,
        &sql::InboundMessageRow {
            participant_id: &message.participant,
            message_type: &message.message_type,
            sender_reference,
            fin_text: &message.text,
            text_sha256: &digest,
            nats_stream: stream,
            nats_stream_sequence: message.stream_sequence as i64,
        },
    )
    .await
}

/// Rejects `message`, which the host database refused to store as [`process_batch`] would
/// (it failed alone with an error for which [`HostDbError::refuses_the_data`]): the message
/// is journalled (NULs replaced, as the journal stores every text) and answered with MT548
/// `IPRC//REJT` reason NARR, in one transaction, so that it no longer comes back and blocks
/// the messages behind it. The sender is told that the message could not be stored; the
/// database's own error is for the operator's log, not for the participant.
pub async fn reject_unstorable(
    pool: &Pool,
    reference: &Reference,
    stream: &str,
    message: &Inbound,
) -> Result<BatchReport, HostDbError> {
    let mut client = crate::hostdb::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(|error| HostDbError::from_postgres("begin unstorable rejection", error))?;
    let related = readable_reference(&message.text);
    let journalled = journal(&transaction, stream, message, related.as_deref()).await?;
    let mut report = BatchReport::default();
    let Some(message_id) = journalled else {
        report.redelivered += 1;
        return Ok(report);
    };
    let mut reports = Reports {
        reference,
        rows: Vec::new(),
        events: Vec::new(),
    };
    reports.add(
        &message.participant,
        format!("R{message_id:X}"),
        related.as_deref().unwrap_or_default(),
        false,
        ("IPRC", "REJT"),
        Some((
            "REJT",
            ReasonCode::Narr,
            "the host database cannot store this message; not processed",
        )),
    );
    report.rejected += 1;
    reports.write(&transaction).await?;
    transaction
        .commit()
        .await
        .map_err(|error| HostDbError::from_postgres("commit unstorable rejection", error))?;
    Ok(report)
}

/// Reports SIs unmatched `unmatched_report_delay_ms` after input: MT548 `MTCH//NMAT` with the
/// reason (see [`matching`]), once per SI. Returns how many were reported.
pub async fn report_unmatched(
    pool: &Pool,
    reference: &Reference,
    config: &IntakeConfig,
) -> Result<usize, HostDbError> {
    let due = sql::unmatched_unreported(
        pool,
        config.unmatched_report_delay_ms as f64 / 1000.0,
        config.unmatched_scan_batch_max,
    )
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut client = crate::hostdb::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(|error| HostDbError::from_postgres("begin unmatched report", error))?;
    let mut reports = Reports {
        reference,
        rows: Vec::new(),
        events: Vec::new(),
    };
    // The same match locks as intake, in key order: an SI matched meanwhile is skipped.
    let keys: BTreeSet<i32> = due
        .iter()
        .map(|instruction| match_key(&instruction.isin, instruction.settlement_date))
        .collect();
    for key in keys {
        sql::lock_match_key(&transaction, key).await?;
    }
    let mut count = 0;
    for instruction in &due {
        let current = sql::instruction_by_id(&transaction, instruction.instruction_id).await?;
        if current.is_none_or(|current| current.status != "unmatched") {
            continue;
        }
        let candidates = sql::unmatched_candidates(&transaction, instruction).await?;
        let reason =
            matching::unmatched_reason(instruction, &candidates, config.dvp_amount_tolerance_minor);
        sql::insert_history(
            &transaction,
            instruction.instruction_id,
            "unmatched",
            Some(reason.as_str()),
            None,
        )
        .await?;
        reports.add(
            &instruction.participant_id,
            format!("N{:X}", instruction.instruction_id),
            &instruction.sender_reference,
            false,
            ("MTCH", "NMAT"),
            Some(("NMAT", reason, "")),
        );
        count += 1;
    }
    reports.write(&transaction).await?;
    transaction
        .commit()
        .await
        .map_err(|error| HostDbError::from_postgres("commit unmatched report", error))?;
    Ok(count)
}

/// The shared `settlement-intake` consumer (created by `ccass bus init`).
pub async fn intake_consumer(
    jetstream: &jetstream::Context,
) -> Result<jetstream::consumer::PullConsumer, crate::bus::BusError> {
    let failed = |operation: &str, error: String| crate::bus::BusError::JetStream {
        operation: operation.to_owned(),
        message: error,
    };
    let stream = jetstream
        .get_stream(subjects::INBOUND_STREAM)
        .await
        .map_err(|error| failed("get stream INBOUND", error.to_string()))?;
    stream
        .get_consumer(subjects::INTAKE_CONSUMER)
        .await
        .map_err(|error| failed("get consumer settlement-intake", error.to_string()))
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}

/// One intake worker on the shared `settlement-intake` consumer: fetch, process the batch in
/// one transaction, then ack. Runs until `shutdown` turns true.
pub async fn run_worker(
    config: IntakeConfig,
    statements: crate::statements::StatementsConfig,
    calendar: Calendar,
    ccp_participant: String,
    pool: Pool,
    consumer: jetstream::consumer::PullConsumer,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let retry_delay = Duration::from_millis(config.retry_delay_ms);
    let refresh = Duration::from_millis(config.reference_refresh_ms);
    let mut loaded: Option<(Reference, std::time::Instant)> = None;
    while !*shutdown.borrow() {
        if loaded
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= refresh)
        {
            match Reference::load(&pool, &ccp_participant).await {
                Ok(reference) => loaded = Some((reference, std::time::Instant::now())),
                Err(error) => {
                    tracing::warn!(%error, "intake: cannot load reference data; retrying");
                    sleep_or_shutdown(retry_delay, &mut shutdown).await;
                    continue;
                }
            }
        }
        let Some((reference, _)) = loaded.as_ref() else {
            continue;
        };
        let fetched = consumer
            .fetch()
            .max_messages(config.fetch_messages_max)
            .expires(Duration::from_millis(config.fetch_wait_ms))
            .messages()
            .await;
        let mut messages = match fetched {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "intake: fetch failed; retrying");
                sleep_or_shutdown(retry_delay, &mut shutdown).await;
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = shutdown.changed() => None,
            };
            let Some(Ok(message)) = next else { break };
            let Some((participant, message_type)) = subjects::inbound_parts(&message.subject)
            else {
                tracing::error!(subject = %message.subject, "intake: not an inbound subject; terminated");
                let _ = message.ack_with(jetstream::AckKind::Term).await;
                continue;
            };
            let stream_sequence = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(error) => {
                    tracing::warn!(%error, "intake: message without stream info; left for redelivery");
                    continue;
                }
            };
            batch.push(Inbound {
                participant: participant.to_string(),
                message_type: message_type.to_string(),
                stream_sequence,
                text: String::from_utf8_lossy(&message.payload).into_owned(),
            });
            acks.push(message);
        }
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let processed = process_batch(
            &pool,
            reference,
            &calendar,
            &config,
            &statements,
            subjects::INBOUND_STREAM,
            &batch,
        )
        .await;
        match processed {
            Ok(report) => {
                tracing::debug!(?report, "intake: batch committed");
                metrics::histogram!(names::BATCH_TRANSACTION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                record_batch(&report);
                acknowledge(&acks).await;
            }
            Err(error) if error.refuses_the_data() => {
                // One message the database refuses must not hold back the rest, nor come
                // back for ever: each message alone, and the refused one rejected.
                metrics::counter!(names::BATCH_FAILURES_TOTAL).increment(1);
                tracing::warn!(%error, messages = batch.len(), "intake: the host database refused the batch; processing its messages one by one");
                for (position, (inbound, message)) in batch.iter().zip(&acks).enumerate() {
                    let alone = process_batch(
                        &pool,
                        reference,
                        &calendar,
                        &config,
                        &statements,
                        subjects::INBOUND_STREAM,
                        std::slice::from_ref(inbound),
                    )
                    .await;
                    let outcome = match alone {
                        Err(error) if error.refuses_the_data() => {
                            metrics::counter!(names::MESSAGES_UNSTORABLE_TOTAL).increment(1);
                            tracing::error!(%error, participant = %inbound.participant, stream_sequence = inbound.stream_sequence, "intake: the host database refuses this message; rejecting it (MT548 REJT NARR)");
                            reject_unstorable(&pool, reference, subjects::INBOUND_STREAM, inbound)
                                .await
                        }
                        other => other,
                    };
                    match outcome {
                        Ok(report) => {
                            record_batch(&report);
                            acknowledge(std::slice::from_ref(message)).await;
                        }
                        Err(error) => {
                            metrics::counter!(names::BATCH_FAILURES_TOTAL).increment(1);
                            tracing::warn!(%error, participant = %inbound.participant, stream_sequence = inbound.stream_sequence, "intake: message not committed; it and the rest of its batch are left for redelivery");
                            bus::redeliver_after(&acks[position..], retry_delay).await;
                            sleep_or_shutdown(retry_delay, &mut shutdown).await;
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                metrics::counter!(names::BATCH_FAILURES_TOTAL).increment(1);
                tracing::warn!(%error, "intake: batch not committed; left for redelivery");
                bus::redeliver_after(&acks, retry_delay).await;
                sleep_or_shutdown(retry_delay, &mut shutdown).await;
            }
        }
    }
}

/// Counts what a committed intake transaction did.
fn record_batch(report: &BatchReport) {
    metrics::counter!(names::MESSAGES_ACCEPTED_TOTAL).increment(report.accepted as u64);
    metrics::counter!(names::MESSAGES_REJECTED_TOTAL).increment(report.rejected as u64);
    metrics::counter!(names::MESSAGES_REDELIVERED_TOTAL).increment(report.redelivered as u64);
    metrics::counter!(names::PAIRS_MATCHED_TOTAL).increment(report.matched_pairs as u64);
    metrics::counter!(names::INSTRUCTIONS_CANCELLED_TOTAL).increment(report.cancelled as u64);
}

/// Acknowledges committed messages (sent together, not awaited one by one).
async fn acknowledge(messages: &[jetstream::Message]) {
    let acked = futures::future::join_all(messages.iter().map(|message| message.ack())).await;
    for result in acked {
        if let Err(error) = result {
            tracing::warn!(%error, "intake: ack failed; the message will be redelivered and found journalled");
        }
    }
}

/// Reports unmatched SIs every `unmatched_scan_interval_ms` until `shutdown`.
pub async fn run_unmatched_reporter(
    config: IntakeConfig,
    ccp_participant: String,
    pool: Pool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(config.unmatched_scan_interval_ms);
    while !*shutdown.borrow() {
        match Reference::load(&pool, &ccp_participant).await {
            Ok(reference) => {
                if let Err(error) = report_unmatched(&pool, &reference, &config).await {
                    tracing::warn!(%error, "intake: unmatched report failed; retrying");
                }
            }
            Err(error) => tracing::warn!(%error, "intake: cannot load reference data"),
        }
        sleep_or_shutdown(interval, &mut shutdown).await;
    }
}

/// Starts what `ccass settlement` runs: `intake.workers` intake workers on the shared
/// consumer, the unmatched reporter and the outbox relay, all stopping when `stopped` turns
/// true.
pub async fn spawn_services(
    config: &crate::config::Config,
    pool: &Pool,
    jetstream: &jetstream::Context,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::bus::BusError> {
    let consumer = intake_consumer(jetstream).await?;
    names::describe_all();
    let mut tasks: Vec<_> = (0..config.intake.workers)
        .map(|_| {
            tokio::spawn(run_worker(
                config.intake.clone(),
                config.statements.clone(),
                config.cns.calendar(),
                config.cns.ccp_participant.clone(),
                pool.clone(),
                consumer.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    tasks.push(tokio::spawn(run_unmatched_reporter(
        config.intake.clone(),
        config.cns.ccp_participant.clone(),
        pool.clone(),
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(crate::relay::run(
        pool.clone(),
        jetstream.clone(),
        config.intake.relay_batch_max,
        Duration::from_millis(config.intake.relay_poll_interval_ms),
        Duration::from_millis(config.intake.retry_delay_ms),
        stopped.clone(),
    )));
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use time::macros::date;

    use super::*;
    use crate::iso15022::MessageType;
    use crate::iso15022::build::SettlementInstructionSpec;
    use crate::iso15022::fields::{Amount, Isin, Quantity, QuantityKind};
    use crate::iso15022::views::Party;

    const TODAY: Date = date!(2026 - 11 - 24);

    fn reference() -> Reference {
        let rows = sql::IntakeReferenceRows {
            participants: vec![
                ("HKSCC0".into(), "active".into(), "HKSCHKHHAXXX".into()),
                ("B01234".into(), "active".into(), "HBSLHKHHAXXX".into()),
                ("B05678".into(), "active".into(), "KWBLHKHHAXXX".into()),
            ],
            stock_accounts: vec![
                ("B01234-01".into(), "B01234".into(), "active".into()),
                ("B05678-01".into(), "B05678".into(), "active".into()),
            ],
            securities: vec![("GB0005405286".into(), "HKD".into(), "active".into())],
        };
        Reference::new(&rows, "HKSCC0")
    }

    fn config() -> IntakeConfig {
        IntakeConfig {
            workers: 1,
            fetch_messages_max: 1,
            fetch_wait_ms: 1,
            retry_delay_ms: 1,
            reference_refresh_ms: 1,
            quantity_max: 1_000_000,
            amount_max_minor: 1_000_000_000,
            dvp_amount_tolerance_minor: 0,
            unmatched_report_delay_ms: 0,
            unmatched_scan_interval_ms: 1,
            unmatched_scan_batch_max: 1,
            relay_batch_max: 1,
            relay_poll_interval_ms: 1,
        }
    }

    fn message(sender: &str, account: &str, settlement_date: Date, currency: [u8; 3]) -> String {
        let parties = [
            Party {
                role: "DEAG",
                id: PartyId::Proprietary {
                    scheme: "CCASS",
                    id: "B05678",
                },
                safekeeping_account: None,
            },
            Party {
                role: "PSET",
                id: PartyId::Bic("CCASHKHH"),
                safekeeping_account: None,
            },
        ];
        let spec = SettlementInstructionSpec {
            message_type: MessageType(541),
            function: Function {
                code: FunctionCode::Newm,
                subfunction: None,
            },
            reference: "REF1",
            links: &[],
            prepared: None,
            trade_date: None,
            settlement_date,
            isin: Isin::parse("GB0005405286").unwrap(),
            description: None,
            quantity: Quantity {
                kind: QuantityKind::Unit,
                value: Decimal::new(400, 0),
            },
            account,
            transaction_type: "TRAD",
            parties: &parties,
            settlement_amount: Some(Amount {
                currency,
                value: Decimal::new(12_345, 2),
            }),
        };
        let envelope = Envelope {
            sender,
            receiver: "HKSCHKHHAXXX",
            session: 1,
            sequence: 1,
        };
        build::settlement_instruction(Some(&envelope), &spec).unwrap()
    }

    fn outcome(text: &str) -> Result<Accepted, ReasonCode> {
        let calendar =
            Calendar::new([date!(2026 - 12 - 25)], 2).known_through(date!(2027 - 12 - 31));
        evaluate(&reference(), &calendar, &config(), TODAY, "B01234", text)
            .map_err(|refusal| refusal.reason)
    }

    #[test]
    fn evaluate_accepts_a_valid_receipt_and_names_each_refusal() {
        // Goal: the reference-data, rights and calendar checks each refuse with their
        // reason. Method: one valid MT541, then one field spoilt at a time.
        let date = date!(2026 - 11 - 26);
        let accepted = outcome(&message("HBSLHKHHAXXX", "B01234-01", date, *b"HKD")).unwrap();
        assert_eq!(accepted.row.counterparty_participant_id, "B05678");
        assert_eq!(accepted.row.amount_minor, Some(12_345));
        assert_eq!(accepted.row.quantity, 400);
        // Another participant's terminal in block 1.
        assert_eq!(
            outcome(&message("KWBLHKHHAXXX", "B01234-01", date, *b"HKD")).unwrap_err(),
            ReasonCode::Narr
        );
        // Another participant's account.
        assert_eq!(
            outcome(&message("HBSLHKHHAXXX", "B05678-01", date, *b"HKD")).unwrap_err(),
            ReasonCode::Safe
        );
        // A Saturday, a holiday, a past date and a weekday after the holiday horizon.
        for bad_date in [
            date!(2026 - 11 - 28),
            date!(2026 - 12 - 25),
            date!(2026 - 11 - 23),
            date!(2028 - 01 - 03),
        ] {
            assert_eq!(
                outcome(&message("HBSLHKHHAXXX", "B01234-01", bad_date, *b"HKD")).unwrap_err(),
                ReasonCode::Ddat
            );
        }
        // Not the security's currency.
        assert_eq!(
            outcome(&message("HBSLHKHHAXXX", "B01234-01", date, *b"USD")).unwrap_err(),
            ReasonCode::Dmon
        );
        // Not a FIN message at all.
        assert!(outcome("garbage").is_err());
    }
}
