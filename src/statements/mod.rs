//! Statements: MT535 (holdings), MT536 (the day's movements) and MT537 (pending
//! instructions) for each of a participant's stock accounts.
//!
//! * [`render`] / [`render_pages`] are pure: from a participant's [`StatementData`] to
//!   canonical FIN pages, each built by [`build::statement`] (which validates its own output)
//!   and paged with `28E` ([`paging`]) within `statements.page_chars_max` characters and
//!   `statements.page_entries_max` entries. The terminal offers them as downloads.
//! * [`load`] reads the data in one transaction (SQL in `hostdb::statements`): holdings are
//!   the stored balances (`holdings`) at the time of the statement, movements are every leg of
//!   the date's `holding_movements` rows on the participant's accounts, pending are its new
//!   instructions not settled in full (a settled SI keeps status `matched` until the sweep
//!   after the run moves it to `settled`; its settlement is a `complete` marker in
//!   `instruction_settlements`).
//! * End of day ([`schedule`], run by `ccass up`): at `statements.end_of_day_time` (local,
//!   after the day's last Batch Settlement Run, checked at load; a run still holding the
//!   leader lock then is waited for) on business days, every
//!   participant with an account gets its three statements on its outbound subject through
//!   the outbox, one transaction per participant. Dedupe ids make a repeat (a restart, a
//!   second `ccass up`) a no-op: each page is queued once.
//! * On demand: `ccass statements` prints them; an MT549 from a PSS is answered through the
//!   outbox ([`request`]).

pub mod paging;
pub mod request;

use std::future::Future;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use time::{Date, OffsetDateTime, UtcOffset};

use crate::bus::subjects;
use crate::config::{ConfigError, check_range};
use crate::hostdb::statements::{self as sql, HoldingRow, MovementRow, PendingRow};
use crate::hostdb::{HostDbError, Pool};
use crate::ids::{Isin, ParticipantId};
use crate::iso15022::MessageType;
use crate::iso15022::build::{
    self, BuildError, Envelope, HoldingSpec, StatementEntry, StatementSpec, TransactionSpec,
};
use crate::iso15022::fields::{Function, FunctionCode, Quantity, QuantityKind};
use paging::{PageLimits, PagingError};

/// `[statements]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementsConfig {
    /// Whether `ccass up` sends the end-of-day statements.
    pub end_of_day_enabled: bool,
    /// Local time `HH:MM` (offset `settlement.utc_offset_minutes`) of the end-of-day
    /// statements; after the last of `settlement.run_times`.
    pub end_of_day_time: String,
    /// Most characters of one statement page, envelope included (FIN text is at most 10,000).
    pub page_chars_max: usize,
    /// Most holdings or transactions on one page.
    pub page_entries_max: usize,
    /// Most pages of one statement (`28E` numbers up to 99,999; references hold 4 digits).
    pub pages_max: usize,
    /// How often the end-of-day scheduler looks at the clock.
    pub scheduler_poll_ms: u64,
    /// Wait before retrying end-of-day statements that failed.
    pub retry_delay_ms: u64,
}

impl StatementsConfig {
    pub(crate) fn check(
        &self,
        settlement: &crate::settlement::SettlementConfig,
    ) -> Result<(), ConfigError> {
        check_range(
            "statements.page_chars_max",
            self.page_chars_max,
            1_000..=10_000,
        )?;
        check_range(
            "statements.page_entries_max",
            self.page_entries_max,
            1..=1_000,
        )?;
        check_range("statements.pages_max", self.pages_max, 1..=9_999)?;
        check_range(
            "statements.scheduler_poll_ms",
            self.scheduler_poll_ms,
            10..=3_600_000,
        )?;
        check_range(
            "statements.retry_delay_ms",
            self.retry_delay_ms,
            10..=3_600_000,
        )?;
        let end_of_day = self.end_of_day()?;
        if let Some(last_run) = settlement.run_times_of_day()?.last()
            && end_of_day <= *last_run
        {
            return Err(ConfigError::Key {
                key: "statements.end_of_day_time".to_owned(),
                message: format!("must be after the last settlement run ({last_run})"),
            });
        }
        Ok(())
    }

    /// `end_of_day_time`, parsed.
    pub fn end_of_day(&self) -> Result<time::Time, ConfigError> {
        let format = time::macros::format_description!("[hour]:[minute]");
        time::Time::parse(&self.end_of_day_time, &format).map_err(|error| ConfigError::Key {
            key: "statements.end_of_day_time".to_owned(),
            message: format!("expected HH:MM: {error}"),
        })
    }

    /// The page limits.
    pub fn limits(&self) -> PageLimits {
        PageLimits {
            chars_max: self.page_chars_max,
            entries_max: self.page_entries_max,
            pages_max: self.pages_max,
        }
    }
}

/// Which statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// MT535, statement of holdings.
    Holdings,
    /// MT536, statement of transactions (the day's movements).
    Transactions,
    /// MT537, statement of pending transactions.
    Pending,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Holdings, Kind::Transactions, Kind::Pending];

    pub fn message_type(self) -> MessageType {
        MessageType(match self {
            Kind::Holdings => 535,
            Kind::Transactions => 536,
            Kind::Pending => 537,
        })
    }

    pub fn from_message_type(number: u16) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.message_type().0 == number)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Holdings => "holdings",
            Kind::Transactions => "transactions",
            Kind::Pending => "pending",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!("unknown statement kind {text:?}: holdings, transactions or pending")
            })
    }
}

/// Why statements could not be made or sent.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error(transparent)]
    Db(#[from] HostDbError),
    #[error("unknown participant {0}")]
    UnknownParticipant(String),
    #[error("statement of {account}: {source}")]
    Paging {
        account: String,
        source: PagingError,
    },
    #[error("statement of {account}: {source}")]
    Build { account: String, source: BuildError },
    #[error("statement of {account}: page {page} has {chars} characters, more than {chars_max}")]
    PageTooLong {
        account: String,
        page: usize,
        chars: usize,
        chars_max: usize,
    },
    #[error("statement data: {0}")]
    Data(String),
}

/// What a participant's statements are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementData {
    /// Its stock accounts, ascending: each gets a statement, with activity or not.
    pub accounts: Vec<String>,
    pub holdings: Vec<HoldingRow>,
    pub movements: Vec<MovementRow>,
    pub pending: Vec<PendingRow>,
}

/// Who sends, who receives, how the pages are named.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions<'a> {
    /// The CCP's logical terminal (block 1).
    pub sender: &'a str,
    /// The participant's logical terminal (block 2).
    pub receiver: &'a str,
    /// Start of every page's `20C::SEME` (at most 10 characters; account and page number
    /// follow).
    pub reference_prefix: &'a str,
    /// `22F::SFRE`: `DAIL` at end of day, `ADHO` on request.
    pub frequency: &'a str,
    pub limits: PageLimits,
}

/// One built page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPage {
    pub kind: Kind,
    pub account: String,
    /// `20C::SEME`.
    pub reference: String,
    /// Canonical FIN text (CRLF).
    pub text: String,
}

/// The pages of `kind` for every account of `data`, or of `account` alone, as FIN text.
pub fn render(
    kind: Kind,
    date: Date,
    data: &StatementData,
    account: Option<&str>,
    options: &RenderOptions<'_>,
) -> Result<Vec<String>, StatementError> {
    Ok(render_pages(kind, date, data, account, options)?
        .into_iter()
        .map(|page| page.text)
        .collect())
}

/// Keeps X-character-set letters of a security name for `35B` (one line of 35).
fn description(name: &str) -> String {
    let kept: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " /-?:().,'+".contains(c) {
                c
            } else {
                ' '
            }
        })
        .take(35)
        .collect();
    kept.trim_end().to_owned()
}

/// A reference usable in `20C` (at most 16 X characters, no leading or trailing slash, no
/// `//`), else `NONREF`.
fn related(reference: &str) -> &str {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/?:().,'+ -".contains(c);
    if !reference.is_empty()
        && reference.len() <= 16
        && reference.chars().all(allowed)
        && !reference.starts_with('/')
        && !reference.ends_with('/')
        && !reference.contains("//")
    {
        reference
    } else {
        "NONREF"
    }
}

fn units(quantity: i64) -> Quantity {
    Quantity {
        kind: QuantityKind::Unit,
        value: Decimal::from(quantity),
    }
}

fn isin(text: &str) -> Result<Isin, StatementError> {
    Isin::parse(text).map_err(|error| StatementError::Data(format!("isin {text}: {error}")))
}

/// Like [`render`], with each page's account and reference.
pub fn render_pages(
    kind: Kind,
    date: Date,
    data: &StatementData,
    only_account: Option<&str>,
    options: &RenderOptions<'_>,
) -> Result<Vec<RenderedPage>, StatementError> {
    if options.reference_prefix.len() > 10 {
        return Err(StatementError::Data(format!(
            "reference prefix {:?} longer than 10 characters",
            options.reference_prefix
        )));
    }
    let envelope = Envelope {
        sender: options.sender,
        receiver: options.receiver,
        session: 1,
        sequence: 1,
    };
    let mut out = Vec::new();
    for account in data
        .accounts
        .iter()
        .filter(|account| only_account.is_none_or(|only| only == account.as_str()))
    {
        let descriptions: Vec<String>;
        let mut holdings = Vec::new();
        let mut transactions = Vec::new();
        match kind {
            Kind::Holdings => {
                let rows: Vec<&HoldingRow> = data
                    .holdings
                    .iter()
                    .filter(|row| &row.account_id == account)
                    .collect();
                descriptions = rows
                    .iter()
                    .map(|row| description(&row.security_name))
                    .collect();
                for (row, description) in rows.iter().zip(&descriptions) {
                    holdings.push(HoldingSpec {
                        isin: isin(&row.isin)?,
                        description: (!description.is_empty()).then_some(description.as_str()),
                        aggregate: units(row.quantity),
                        available: None,
                    });
                }
            }
            Kind::Transactions => {
                for row in data
                    .movements
                    .iter()
                    .filter(|row| &row.account_id == account)
                {
                    transactions.push(TransactionSpec {
                        related_reference: related(
                            row.sender_reference
                                .as_deref()
                                .unwrap_or(&row.journal_reference),
                        ),
                        isin: isin(&row.isin)?,
                        quantity: units(row.quantity),
                        receive_deliver: if row.received { "RECE" } else { "DELI" },
                        payment: if row.payment.as_deref() == Some("DVP") {
                            "APMT"
                        } else {
                            "FREE"
                        },
                        settlement_date: row.settlement_date,
                    });
                }
            }
            Kind::Pending => {
                for row in data.pending.iter().filter(|row| &row.account_id == account) {
                    transactions.push(TransactionSpec {
                        related_reference: related(&row.sender_reference),
                        isin: isin(&row.isin)?,
                        quantity: units(row.quantity),
                        receive_deliver: if row.direction == "receive" {
                            "RECE"
                        } else {
                            "DELI"
                        },
                        payment: if row.payment == "DVP" { "APMT" } else { "FREE" },
                        settlement_date: row.settlement_date,
                    });
                }
            }
        }
        let sizes: Vec<usize> = match kind {
            Kind::Holdings => holdings
                .iter()
                .map(|holding| build::statement_entry_chars(StatementEntry::Holding(holding)))
                .collect(),
            _ => transactions
                .iter()
                .map(|spec| {
                    build::statement_entry_chars(StatementEntry::Transaction {
                        posted: kind == Kind::Transactions,
                        spec,
                    })
                })
                .collect(),
        };
        let account_suffix = account.rsplit('-').next().unwrap_or(account);
        let reference =
            |page: usize| format!("{}{}{:04}", options.reference_prefix, account_suffix, page);
        let build_page = |index: usize, count: usize, range: std::ops::Range<usize>| {
            let reference = reference(index + 1);
            let spec = StatementSpec {
                message_type: kind.message_type(),
                page: paging::page(index, count),
                reference: &reference,
                function: Function {
                    code: FunctionCode::Newm,
                    subfunction: None,
                },
                statement_date: date,
                period: None,
                frequency: options.frequency,
                update_type: "COMP",
                account,
                holdings: if kind == Kind::Holdings {
                    &holdings[range.clone()]
                } else {
                    &[]
                },
                transactions: if kind == Kind::Holdings {
                    &[]
                } else {
                    &transactions[range]
                },
            };
            build::statement(Some(&envelope), &spec)
                .map(|text| (reference.clone(), text))
                .map_err(|source| StatementError::Build {
                    account: account.clone(),
                    source,
                })
        };
        // The fixed part of a page with activity: one entry's page less that entry.
        let fixed_chars = match sizes.first() {
            Some(first) => build_page(0, 1, 0..1)?.1.len() - first,
            None => 0,
        };
        let ranges = paging::pack(&sizes, fixed_chars, options.limits).map_err(|source| {
            StatementError::Paging {
                account: account.clone(),
                source,
            }
        })?;
        let count = ranges.len();
        for (index, range) in ranges.into_iter().enumerate() {
            let (reference, text) = build_page(index, count, range)?;
            if text.len() > options.limits.chars_max {
                return Err(StatementError::PageTooLong {
                    account: account.clone(),
                    page: index + 1,
                    chars: text.len(),
                    chars_max: options.limits.chars_max,
                });
            }
            out.push(RenderedPage {
                kind,
                account: account.clone(),
                reference,
                text,
            });
        }
    }
    Ok(out)
}

/// A participant's statement data for `date`, read in `transaction`, and its logical
/// terminal.
pub async fn load(
    transaction: &tokio_postgres::Transaction<'_>,
    participant: &str,
    date: Date,
) -> Result<(String, StatementData), StatementError> {
    let (terminal, accounts) = sql::participant_accounts(transaction, participant)
        .await?
        .ok_or_else(|| StatementError::UnknownParticipant(participant.to_owned()))?;
    let data = StatementData {
        accounts,
        holdings: sql::holdings(transaction, participant).await?,
        movements: sql::movements(transaction, participant, date).await?,
        pending: sql::pending(transaction, participant).await?,
    };
    Ok((terminal, data))
}

/// The CCP's logical terminal: the sender of statements.
pub async fn own_terminal(
    transaction: &tokio_postgres::Transaction<'_>,
    ccp_participant: &str,
) -> Result<String, StatementError> {
    Ok(sql::participant_accounts(transaction, ccp_participant)
        .await?
        .ok_or_else(|| StatementError::UnknownParticipant(ccp_participant.to_owned()))?
        .0)
}

/// Puts `pages` on the participant's outbound subject through the outbox (dedupe id
/// `stmt.{participant}.{reference}`); returns how many were new.
pub async fn enqueue(
    transaction: &tokio_postgres::Transaction<'_>,
    participant: &str,
    pages: &[RenderedPage],
) -> Result<u64, StatementError> {
    let id = ParticipantId::parse(participant)
        .map_err(|_| StatementError::UnknownParticipant(participant.to_owned()))?;
    let subject = subjects::outbound(&id);
    let owned: Vec<(String, String, [u8; 32])> = pages
        .iter()
        .map(|page| {
            (
                format!("stmt.{participant}.{}", page.reference),
                format!("{:03}", page.kind.message_type().0),
                Sha256::digest(page.text.as_bytes()).into(),
            )
        })
        .collect();
    let rows: Vec<sql::StatementPageRow<'_>> = pages
        .iter()
        .zip(&owned)
        .map(
            |(page, (dedupe_id, message_type, digest))| sql::StatementPageRow {
                participant_id: participant,
                subject: subject.as_str(),
                dedupe_id,
                message_type,
                sender_reference: &page.reference,
                text_sha256: digest,
                fin_text: &page.text,
            },
        )
        .collect();
    Ok(sql::enqueue_pages(transaction, &rows).await?)
}

/// What one end-of-day pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndOfDayReport {
    pub participants: usize,
    /// Pages queued now (pages queued by an earlier pass are not counted).
    pub pages_queued: u64,
}

/// End-of-day statements of `date` for every participant with an account: one transaction
/// per participant; idempotent.
pub async fn send_end_of_day(
    pool: &Pool,
    config: &StatementsConfig,
    ccp_participant: &str,
    date: Date,
) -> Result<EndOfDayReport, StatementError> {
    let mut client = crate::hostdb::client(pool).await?;
    let participants = {
        let transaction = client
            .transaction()
            .await
            .map_err(|error| HostDbError::from_postgres("begin statements", error))?;
        let participants = sql::participants_with_accounts(&transaction).await?;
        transaction
            .commit()
            .await
            .map_err(|error| HostDbError::from_postgres("end statements listing", error))?;
        participants
    };
    let mut report = EndOfDayReport::default();
    let prefix_date = format!(
        "{:02}{:02}{:02}",
        date.year() % 100,
        u8::from(date.month()),
        date.day()
    );
    for participant in &participants {
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(|error| HostDbError::from_postgres("begin participant statements", error))?;
        let sender = own_terminal(&transaction, ccp_participant).await?;
        let (receiver, data) = load(&transaction, participant, date).await?;
        let mut pages = Vec::new();
        for kind in Kind::ALL {
            let prefix = format!("{}{prefix_date}", kind.message_type().0);
            let options = RenderOptions {
                sender: &sender,
                receiver: &receiver,
                reference_prefix: &prefix,
                frequency: "DAIL",
                limits: config.limits(),
            };
            pages.extend(render_pages(kind, date, &data, None, &options)?);
        }
        report.pages_queued += enqueue(&transaction, participant, &pages).await?;
        transaction
            .commit()
            .await
            .map_err(|error| HostDbError::from_postgres("commit participant statements", error))?;
        report.participants += 1;
    }
    Ok(report)
}

/// The end-of-day statements of `ccass up`: on each business day, once the local time is
/// past `end_of_day_time`, sends that day's statements (also after a restart later that day:
/// pages already queued are not queued again); retries after `retry_delay_ms` on failure.
/// Ends when `shutdown` completes.
pub async fn schedule(
    pool: Pool,
    config: StatementsConfig,
    settlement: crate::settlement::SettlementConfig,
    calendar: crate::cns::calendar::Calendar,
    ccp_participant: String,
    shutdown: impl Future<Output = ()>,
) {
    let end_of_day = match config.end_of_day() {
        Ok(time) => time,
        Err(error) => {
            tracing::error!(%error, "statements scheduler: bad end-of-day time");
            return;
        }
    };
    let offset = UtcOffset::from_whole_seconds(i32::from(settlement.utc_offset_minutes) * 60)
        .unwrap_or(UtcOffset::UTC);
    let poll = Duration::from_millis(config.scheduler_poll_ms);
    let retry = Duration::from_millis(config.retry_delay_ms);
    let mut sent: Option<Date> = None;
    let mut delay = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = poll;
        let local = OffsetDateTime::now_utc().to_offset(offset);
        let today = local.date();
        if local.time() < end_of_day || sent == Some(today) || !calendar.is_business_day(today) {
            continue;
        }
        // The day's last run may still be running: wait until it has committed.
        match sql::settlement_run_in_progress(&pool, settlement.leader_lock_key).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!("end-of-day statements wait for the settlement run in progress");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "end-of-day statements: probe the run leader lock");
                delay = retry;
                continue;
            }
        }
        match send_end_of_day(&pool, &config, &ccp_participant, today).await {
            Ok(report) => {
                sent = Some(today);
                ::metrics::counter!(metrics::PAGES_QUEUED_TOTAL, "trigger" => "end_of_day")
                    .increment(report.pages_queued);
                tracing::info!(
                    date = %today,
                    participants = report.participants,
                    pages = report.pages_queued,
                    "end-of-day statements queued"
                );
            }
            Err(error) => {
                ::metrics::counter!(metrics::FAILURES_TOTAL).increment(1);
                tracing::error!(%error, "end-of-day statements failed; retrying");
                delay = retry;
            }
        }
    }
}

pub mod metrics {
    //! Metric names of statements.

    /// Statement pages put in the outbox, by trigger (`end_of_day`, `request`).
    pub const PAGES_QUEUED_TOTAL: &str = "ccass_statements_pages_queued_total";
    /// End-of-day passes that failed (retried).
    pub const FAILURES_TOTAL: &str = "ccass_statements_failures_total";
    /// MT549 requests answered (`answered`) or refused with an MT548 (`refused`).
    pub const REQUESTS_TOTAL: &str = "ccass_statements_requests_total";

    pub fn describe_all() {
        ::metrics::describe_counter!(
            PAGES_QUEUED_TOTAL,
            "statement pages (MT535/536/537) put in the outbox, by trigger (end_of_day, request)"
        );
        ::metrics::describe_counter!(
            FAILURES_TOTAL,
            "end-of-day statement passes that failed (retried after statements.retry_delay_ms)"
        );
        ::metrics::describe_counter!(
            REQUESTS_TOTAL,
            "MT549 statement requests, by outcome (answered, refused)"
        );
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::iso15022::fields::Continuation;
    use crate::iso15022::views::Statement;
    use crate::iso15022::{ParseOptions, check};

    const DATE: Date = date!(2026 - 11 - 24);
    const ISINS: [&str; 3] = ["HK0005000010", "HK0700000000", "GB0005405286"];

    fn data(count: usize) -> StatementData {
        let account = |index: usize| format!("B01234-0{}", 1 + index % 2);
        StatementData {
            accounts: vec!["B01234-01".into(), "B01234-02".into(), "B01234-03".into()],
            holdings: (0..count)
                .map(|index| HoldingRow {
                    account_id: account(index),
                    isin: ISINS[index % 3].into(),
                    security_name: format!("Security & Co {index}"),
                    quantity: 1_000 + index as i64,
                })
                .collect(),
            movements: (0..count)
                .map(|index| MovementRow {
                    movement_id: index as i64,
                    account_id: account(index),
                    received: index % 3 == 0,
                    isin: ISINS[index % 3].into(),
                    quantity: 100 + index as i64,
                    movement_kind: "settlement".into(),
                    settlement_date: DATE,
                    journal_reference: format!("match:{index}"),
                    sender_reference: (index % 2 == 0).then(|| format!("REF{index}")),
                    payment: Some("DVP".into()),
                })
                .collect(),
            pending: (0..count)
                .map(|index| PendingRow {
                    instruction_id: index as i64,
                    account_id: account(index),
                    sender_reference: format!("P{index}"),
                    isin: ISINS[index % 3].into(),
                    quantity: 10 + index as i64,
                    direction: "deliver".into(),
                    payment: "FOP".into(),
                    settlement_date: DATE,
                    status: "unmatched".into(),
                })
                .collect(),
        }
    }

    fn options(chars_max: usize, entries_max: usize) -> RenderOptions<'static> {
        RenderOptions {
            sender: "CCASHKH0AXXX",
            receiver: "BROKHKH0AXXX",
            reference_prefix: "535261124",
            frequency: "DAIL",
            limits: PageLimits {
                chars_max,
                entries_max,
                pages_max: 9_999,
            },
        }
    }

    /// Every page validates; page numbers run 1.. with MORE..LAST (or ONLY); the entries of
    /// all pages of an account, in order, are exactly the account's rows.
    #[test]
    fn pages_validate_and_rejoin_losslessly() {
        let data = data(150);
        for (chars_max, entries_max) in [(2_000, 1_000), (9_000, 7), (10_000, 1_000)] {
            for kind in Kind::ALL {
                let pages = render_pages(kind, DATE, &data, None, &options(chars_max, entries_max))
                    .unwrap();
                for account in &data.accounts {
                    let own: Vec<&RenderedPage> = pages
                        .iter()
                        .filter(|page| &page.account == account)
                        .collect();
                    assert!(!own.is_empty(), "every account gets a statement");
                    let mut quantities = Vec::new();
                    for (index, page) in own.iter().enumerate() {
                        assert!(page.text.len() <= chars_max);
                        let report = check(&page.text, ParseOptions::fin());
                        assert!(report.is_valid(), "{:?}", report.problems);
                        let statement = Statement::from_message(&report.message).unwrap();
                        assert_eq!(statement.message_type, kind.message_type());
                        assert_eq!(statement.account, account);
                        assert_eq!(statement.reference, page.reference);
                        assert_eq!(statement.page.number as usize, index + 1);
                        let expected = match (own.len(), index + 1 == own.len()) {
                            (1, _) => Continuation::Only,
                            (_, true) => Continuation::Last,
                            _ => Continuation::More,
                        };
                        assert_eq!(statement.page.continuation, expected);
                        if kind == Kind::Holdings {
                            quantities.extend(statement.holdings.iter().map(|holding| {
                                (
                                    holding.instrument.isin.unwrap().to_string(),
                                    holding.aggregate.unwrap().value,
                                )
                            }));
                        } else {
                            quantities.extend(statement.transactions.iter().map(|line| {
                                (
                                    line.instrument.unwrap().isin.unwrap().to_string(),
                                    line.quantity.unwrap().value,
                                )
                            }));
                        }
                    }
                    let expected: Vec<(String, Decimal)> = match kind {
                        Kind::Holdings => data
                            .holdings
                            .iter()
                            .filter(|row| &row.account_id == account)
                            .map(|row| (row.isin.clone(), Decimal::from(row.quantity)))
                            .collect(),
                        Kind::Transactions => data
                            .movements
                            .iter()
                            .filter(|row| &row.account_id == account)
                            .map(|row| (row.isin.clone(), Decimal::from(row.quantity)))
                            .collect(),
                        Kind::Pending => data
                            .pending
                            .iter()
                            .filter(|row| &row.account_id == account)
                            .map(|row| (row.isin.clone(), Decimal::from(row.quantity)))
                            .collect(),
                    };
                    assert_eq!(quantities, expected, "{kind:?} {account} {chars_max}");
                    if chars_max == 2_000 && account != "B01234-03" {
                        assert!(own.len() > 1, "small pages split {kind:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_entry_longer_than_a_page_is_refused_and_references_are_sanitised() {
        let error =
            render_pages(Kind::Holdings, DATE, &data(3), None, &options(300, 10)).unwrap_err();
        assert!(matches!(error, StatementError::Paging { .. }), "{error}");
        assert_eq!(related("match:17"), "match:17");
        assert_eq!(related("a//b"), "NONREF");
        assert_eq!(related("0123456789abcdefg"), "NONREF");
        assert_eq!(description("A & B  "), "A   B");
        assert_eq!("pending".parse::<Kind>(), Ok(Kind::Pending));
        assert!("weekly".parse::<Kind>().is_err());
    }
}
