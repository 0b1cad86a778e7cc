//! The demo's settlement day as data: which SIs each PSS sends, when, and what the system must
//! make of them. Pure and deterministic: the same reference data, pair count and seed give the
//! same messages (but for the run tag in every sender's reference) and the same expectations.
//!
//! Categories of pairs (each with its own range of board lots, so an SI of one category can
//! never match an SI of another):
//!
//! | category | lots | what happens |
//! |---|---|---|
//! | normal | 1–10 | both sides instruct in wave 1, within the deliverer's stock and the receiver's cash: settles in run 1 |
//! | short of stock | 11–13 | the deliverer's account holds none of the security and receives none all day: recycled `LACK` to the end |
//! | stock arrives | 14–16 | Y→Z in wave 1 fails `LACK` in run 1; X→Y in wave 2 brings the stock, both settle in run 2 (chain) |
//! | mismatched | 17–19 | the receiver's amount is 10% above the deliverer's: both stay unmatched |
//! | short of cash | 20–22 | the receiver (the participant with the least cash) pays more than it has: recycled `MONY` |
//! | cancelled | 23–25 | the deliverer instructs alone and cancels before the first run |
//! | rejected | 1 | a counterparty account that does not exist: refused by intake (`REJT`); an account of another participant would be NAKed by the gateway (`G05`) before intake |
//!
//! Stock and cash are budgeted from the opening balances only (never from what a run brings), and
//! no SI but the designed X→Y delivers into an account that must stay short, so every outcome is
//! independent of the order in which intake matched the pairs.

use std::collections::{BTreeMap, HashSet};

use rust_decimal::Decimal;
use time::Date;

use crate::cns::feed::SplitMix64;
use crate::hostdb::seed::ReferenceData;
use crate::ids::Isin;
use crate::iso15022::MessageType;
use crate::iso15022::build::{self, Envelope, SettlementInstructionSpec};
use crate::iso15022::fields::{Amount, Function, FunctionCode, PartyId, Quantity, QuantityKind};
use crate::iso15022::views::{Linkage, Party};

/// One message a PSS sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub participant: String,
    pub reference: String,
    pub text: String,
}

/// What the system must make of the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Instructions (NEWM) matched into pairs.
    pub matched_instructions: u64,
    pub unmatched_instructions: u64,
    pub cancelled_instructions: u64,
    /// Messages refused by intake.
    pub rejected_messages: u64,
    /// Pairs settled by each of the day's runs (`PlanInput::runs` entries): the normal pairs
    /// in the first, the chains whose stock arrives in wave two in the second, none later.
    pub settled_pairs_by_run: Vec<u64>,
    /// Money settled by each run, HKD minor units.
    pub settled_value_minor_by_run: Vec<i64>,
    /// Pairs still unsettled after the last run, by reason.
    pub failed_lack_pairs: u64,
    pub failed_mony_pairs: u64,
}

/// The day's messages and what must come of them.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Before the first run.
    pub wave_one: Vec<Outgoing>,
    /// Cancellations, once wave one is stored.
    pub cancellations: Vec<Outgoing>,
    /// Between the first and the second run (the stock that arrives).
    pub wave_two: Vec<Outgoing>,
    pub expected: Expected,
    /// Pairs per category, for the summary.
    pub counts: CategoryCounts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CategoryCounts {
    pub normal: usize,
    pub short_of_stock: usize,
    pub stock_arrives: usize,
    pub mismatched: usize,
    pub short_of_cash: usize,
    pub cancelled: usize,
    pub rejected: usize,
}

impl CategoryCounts {
    /// The split of `pairs`: a few percent of each exception, at least one of each.
    pub fn split(pairs: usize) -> CategoryCounts {
        let share = |percent: usize| (pairs * percent / 100).max(1);
        let mut counts = CategoryCounts {
            normal: 0,
            short_of_stock: share(6),
            stock_arrives: share(5),
            mismatched: share(8),
            short_of_cash: share(5),
            cancelled: share(6),
            rejected: share(1),
        };
        let exceptions = counts.short_of_stock
            + counts.stock_arrives
            + counts.mismatched
            + counts.short_of_cash
            + counts.cancelled
            + counts.rejected;
        counts.normal = pairs.saturating_sub(exceptions);
        counts
    }
}

/// Who and what the plan is for.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub reference: &'a ReferenceData,
    /// Participants with a PSS in the demo (the others neither send nor receive).
    pub participants: &'a [String],
    /// `BIC` of the place of settlement (`PSET`).
    pub place_of_settlement_bic: &'a str,
    pub settlement_date: Date,
    pub trade_date: Date,
    pub pairs: usize,
    /// The day's Batch Settlement Runs (at least 2: wave two arrives after the first).
    pub runs: usize,
    pub seed: u64,
    /// Prefix of every sender's reference (at most 5 characters): unique per demo run, so
    /// JetStream's duplicate window never mistakes this run's SIs for the last one's.
    pub run_tag: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the demo needs at least {minimum} pairs, not {pairs}")]
    TooFewPairs { pairs: usize, minimum: usize },
    #[error("the plan needs at least 2 runs, not {0}")]
    TooFewRuns(usize),
    #[error("the demo needs at least three participants with a PSS and accounts")]
    TooFewParticipants,
    #[error(
        "the reference data holds too little stock for {pairs} pairs (ran out at pair {at} of category {category}): use fewer pairs"
    )]
    OutOfStock {
        pairs: usize,
        at: usize,
        category: &'static str,
    },
    #[error("run tag {0:?} must be 1 to 5 letters or digits")]
    RunTag(String),
    #[error("reference data: {0}")]
    Reference(String),
    #[error("build message: {0}")]
    Build(#[from] build::BuildError),
}

pub const MINIMUM_PAIRS: usize = 10;
/// Distinct (account, security) holdings the short-of-stock pairs share.
const SHORT_KEYS_MAX: usize = 6;
const HKD: &str = "HKD";

#[derive(Debug, Clone)]
struct Account {
    id: String,
    participant: String,
}

#[derive(Debug, Clone)]
struct Security {
    isin: String,
    board_lot: i64,
    price_minor: i64,
}

/// One side's instruction as the planner sees it.
#[derive(Debug, Clone)]
struct Side<'p> {
    participant: &'p str,
    account: &'p str,
    counterparty: &'p str,
    counterparty_account: &'p str,
}

struct Planner<'a> {
    input: &'a PlanInput<'a>,
    random: SplitMix64,
    accounts: Vec<Account>,
    securities: Vec<Security>,
    /// Stock not yet promised, per (account index, security index).
    stock: BTreeMap<(usize, usize), i64>,
    /// HKD cash not yet promised, per participant.
    cash: BTreeMap<String, i64>,
    /// (account, security) that must receive nothing but the designed stock: the union of
    /// `short_keys` (never receive) and `middle_keys` (receive in wave two only).
    reserved: HashSet<(usize, usize)>,
    short_keys: HashSet<(usize, usize)>,
    middle_keys: HashSet<(usize, usize)>,
    /// The participant whose cash the short-of-cash pairs exceed (it pays for nothing else).
    poorest: String,
    poorest_cash_minor: i64,
    terminals: BTreeMap<String, String>,
    ccp_terminal: String,
    sequence: u32,
}

/// Plans the day.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    if input.pairs < MINIMUM_PAIRS {
        return Err(PlanError::TooFewPairs {
            pairs: input.pairs,
            minimum: MINIMUM_PAIRS,
        });
    }
    if input.run_tag.is_empty()
        || input.run_tag.len() > 5
        || !input.run_tag.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(PlanError::RunTag(input.run_tag.to_owned()));
    }
    if input.runs < 2 {
        return Err(PlanError::TooFewRuns(input.runs));
    }
    let mut planner = Planner::new(input)?;
    let counts = CategoryCounts::split(input.pairs);
    let mut plan = Plan {
        counts,
        expected: Expected {
            settled_pairs_by_run: vec![0; input.runs],
            settled_value_minor_by_run: vec![0; input.runs],
            ..Expected::default()
        },
        ..Plan::default()
    };
    // Exceptions first: they reserve the accounts that must stay short.
    let mut wave_one: Vec<Vec<Outgoing>> = Vec::new();
    for index in 0..counts.short_of_stock {
        wave_one.push(planner.short_of_stock(index, &mut plan)?);
    }
    for index in 0..counts.stock_arrives {
        let (first, second) = planner.stock_arrives(index, &mut plan)?;
        wave_one.push(first);
        plan.wave_two.extend(second);
    }
    for index in 0..counts.short_of_cash {
        wave_one.push(planner.short_of_cash(index, &mut plan)?);
    }
    for index in 0..counts.mismatched {
        wave_one.push(planner.mismatched(index, &mut plan)?);
    }
    for index in 0..counts.cancelled {
        let (newm, canc) = planner.cancelled(index, &mut plan)?;
        wave_one.push(newm);
        plan.cancellations.push(canc);
    }
    for index in 0..counts.rejected {
        wave_one.push(planner.rejected(index, &mut plan)?);
    }
    for index in 0..counts.normal {
        wave_one.push(planner.normal(index, &mut plan)?);
    }
    // Interleave the categories as a real day would, deterministically.
    for i in (1..wave_one.len()).rev() {
        let j = planner.random.below(i as u64 + 1) as usize;
        wave_one.swap(i, j);
    }
    plan.wave_one = wave_one.into_iter().flatten().collect();
    Ok(plan)
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput<'a>) -> Result<Planner<'a>, PlanError> {
        let reference = input.reference;
        let mut random = SplitMix64::new(input.seed ^ 0x00de_3000_0000_0001);
        let accounts: Vec<Account> = reference
            .stock_accounts
            .iter()
            .filter(|account| input.participants.contains(&account.participant))
            .map(|account| Account {
                id: account.id.clone(),
                participant: account.participant.clone(),
            })
            .collect();
        let with_accounts: HashSet<&str> =
            accounts.iter().map(|a| a.participant.as_str()).collect();
        if with_accounts.len() < 3 {
            return Err(PlanError::TooFewParticipants);
        }
        let securities: Vec<Security> = reference
            .securities
            .iter()
            .filter(|security| security.currency == HKD)
            .map(|security| Security {
                isin: security.isin.clone(),
                board_lot: security.board_lot.max(1),
                // HKD 5.00 to 400.00 a share, in cents.
                price_minor: 500 + random.below(39_500) as i64,
            })
            .collect();
        if securities.is_empty() {
            return Err(PlanError::Reference("no HKD security".to_owned()));
        }
        let mut stock = BTreeMap::new();
        for holding in &reference.opening_holdings {
            let account = accounts.iter().position(|a| a.id == holding.account);
            let security = securities.iter().position(|s| s.isin == holding.isin);
            if let (Some(account), Some(security)) = (account, security) {
                *stock.entry((account, security)).or_insert(0) += holding.quantity;
            }
        }
        let mut cash = BTreeMap::new();
        for opening in &reference.opening_cash {
            if opening.currency == HKD && with_accounts.contains(opening.participant.as_str()) {
                let minor = (opening.amount * Decimal::ONE_HUNDRED)
                    .trunc()
                    .try_into()
                    .map_err(|_| {
                        PlanError::Reference(format!("cash of {} too large", opening.participant))
                    })?;
                cash.insert(opening.participant.clone(), minor);
            }
        }
        let (poorest, poorest_cash_minor) = with_accounts
            .iter()
            .map(|participant| {
                (
                    (*participant).to_owned(),
                    cash.get(*participant).copied().unwrap_or(0),
                )
            })
            .min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
            .ok_or(PlanError::TooFewParticipants)?;
        let terminals = reference
            .participants
            .iter()
            .map(|p| (p.id.clone(), p.logical_terminal.clone()))
            .collect();
        let ccp_terminal = reference
            .participants
            .iter()
            .find(|p| p.participant_type == crate::hostdb::seed::ParticipantType::Ccp)
            .map(|p| p.logical_terminal.clone())
            .ok_or_else(|| PlanError::Reference("no ccp participant".to_owned()))?;
        Ok(Planner {
            input,
            random,
            accounts,
            securities,
            stock,
            cash,
            reserved: HashSet::new(),
            short_keys: HashSet::new(),
            middle_keys: HashSet::new(),
            poorest,
            poorest_cash_minor,
            terminals,
            ccp_terminal,
            sequence: 0,
        })
    }

    fn reference(&self, category: char, index: usize) -> String {
        format!("{}{category}{index}", self.input.run_tag)
    }

    fn lots_in(&mut self, range: std::ops::RangeInclusive<i64>) -> i64 {
        range.start() + self.random.below((range.end() - range.start() + 1) as u64) as i64
    }

    /// A (account, security) holding at least `lots` board lots of unpromised shares, whose
    /// owner is not `exclude_participant` and which `accept` admits, chosen at random;
    /// promises them.
    fn take_stock(
        &mut self,
        lots: i64,
        exclude_participant: Option<&str>,
        accept: impl Fn(&Self, usize, usize) -> bool,
    ) -> Option<(usize, usize, i64)> {
        let candidates: Vec<(usize, usize)> = self
            .stock
            .iter()
            .filter(|((account, security), available)| {
                **available >= lots * self.securities[*security].board_lot
                    && exclude_participant != Some(self.accounts[*account].participant.as_str())
            })
            .map(|(key, _)| *key)
            .filter(|(account, security)| accept(self, *account, *security))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (account, security) = candidates[self.random.below(candidates.len() as u64) as usize];
        let quantity = lots * self.securities[security].board_lot;
        if let Some(available) = self.stock.get_mut(&(account, security)) {
            *available -= quantity;
        }
        Some((account, security, quantity))
    }

    /// Whether some account of another participant than the owner of `account` may receive
    /// `security`.
    fn has_receiver(&self, account: usize, security: usize) -> bool {
        let owner = &self.accounts[account].participant;
        (0..self.accounts.len()).any(|other| {
            self.accounts[other].participant != *owner
                && !self.reserved.contains(&(other, security))
        })
    }

    /// An account of another participant than `not_participant` that may receive `security`.
    fn receiver(&mut self, not_participant: &str, security: usize) -> Option<usize> {
        self.counterparty(not_participant, Some(security))
    }

    /// An account of another participant than `not_participant`; with `security`, one that
    /// may receive it (pairs that never settle need not care).
    fn counterparty(&mut self, not_participant: &str, security: Option<usize>) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.accounts.len())
            .filter(|account| {
                self.accounts[*account].participant != not_participant
                    && security
                        .is_none_or(|security| !self.reserved.contains(&(*account, security)))
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.random.below(candidates.len() as u64) as usize])
    }

    /// Against payment when the receiver can pay from its unpromised cash (and neither side
    /// is the poorest participant, whose cash stays for the short-of-cash pairs); promises it.
    fn payment(
        &mut self,
        deliverer: usize,
        receiver: usize,
        security: usize,
        quantity: i64,
    ) -> Option<i64> {
        let payer = self.accounts[receiver].participant.clone();
        if payer == self.poorest || self.accounts[deliverer].participant == self.poorest {
            return None;
        }
        let amount = quantity * self.securities[security].price_minor;
        let cash = self.cash.get_mut(&payer)?;
        if *cash < amount {
            return None;
        }
        *cash -= amount;
        Some(amount)
    }

    /// Both sides of a pair, the receiver's amount possibly different.
    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        deliverer: usize,
        receiver: usize,
        security: usize,
        quantity: i64,
        amount_minor: Option<i64>,
        receiver_amount_minor: Option<i64>,
        reference: &str,
    ) -> Result<Vec<Outgoing>, PlanError> {
        let deliverer_account = self.accounts[deliverer].clone();
        let receiver_account = self.accounts[receiver].clone();
        let deliver = self.instruction(
            &Side {
                participant: &deliverer_account.participant,
                account: &deliverer_account.id,
                counterparty: &receiver_account.participant,
                counterparty_account: &receiver_account.id,
            },
            true,
            security,
            quantity,
            amount_minor,
            &format!("{reference}D"),
            None,
        )?;
        let receive = self.instruction(
            &Side {
                participant: &receiver_account.participant,
                account: &receiver_account.id,
                counterparty: &deliverer_account.participant,
                counterparty_account: &deliverer_account.id,
            },
            false,
            security,
            quantity,
            receiver_amount_minor,
            &format!("{reference}R"),
            None,
        )?;
        Ok(vec![deliver, receive])
    }

    #[allow(clippy::too_many_arguments)]
    fn instruction(
        &mut self,
        side: &Side<'_>,
        deliver: bool,
        security: usize,
        quantity: i64,
        amount_minor: Option<i64>,
        reference: &str,
        cancels: Option<&str>,
    ) -> Result<Outgoing, PlanError> {
        let role = if deliver { "REAG" } else { "DEAG" };
        let parties = [
            Party {
                role,
                id: PartyId::Proprietary {
                    scheme: "CCASS",
                    id: side.counterparty,
                },
                safekeeping_account: Some(side.counterparty_account),
            },
            Party {
                role: "PSET",
                id: PartyId::Bic(self.input.place_of_settlement_bic),
                safekeeping_account: None,
            },
        ];
        let links = cancels.map(|previous| {
            [Linkage {
                qualifier: "PREV",
                reference: previous,
            }]
        });
        let isin = Isin::parse(&self.securities[security].isin)
            .map_err(|error| PlanError::Reference(error.to_string()))?;
        let number = match (deliver, amount_minor.is_some()) {
            (false, false) => 540,
            (false, true) => 541,
            (true, false) => 542,
            (true, true) => 543,
        };
        let sender = crate::pss::default_logical_terminal(side.participant);
        self.sequence = self.sequence % 999_999 + 1;
        let envelope = Envelope {
            sender: &sender,
            receiver: &self.ccp_terminal,
            session: 1,
            sequence: self.sequence,
        };
        let spec = SettlementInstructionSpec {
            message_type: MessageType(number),
            function: Function {
                code: if cancels.is_some() {
                    FunctionCode::Canc
                } else {
                    FunctionCode::Newm
                },
                subfunction: None,
            },
            reference,
            links: links.as_ref().map_or(&[], |links| links.as_slice()),
            prepared: None,
            trade_date: Some(self.input.trade_date),
            settlement_date: self.input.settlement_date,
            isin,
            description: None,
            quantity: Quantity {
                kind: QuantityKind::Unit,
                value: Decimal::from(quantity),
            },
            account: side.account,
            transaction_type: "TRAD",
            parties: &parties,
            settlement_amount: amount_minor.map(|minor| Amount {
                currency: *b"HKD",
                value: Decimal::new(minor, 2),
            }),
        };
        let text = build::settlement_instruction(Some(&envelope), &spec)?;
        // Only registered participants send; the terminal map is for the summary's sake.
        debug_assert!(self.terminals.contains_key(side.participant));
        Ok(Outgoing {
            participant: side.participant.to_owned(),
            reference: reference.to_owned(),
            text,
        })
    }

    /// Whether an account of another participant than the owner of `account` holds none of
    /// `security` and may be made to wait for it (with a receiver of its own after it).
    fn has_middle(&self, account: usize, security: usize) -> bool {
        let owner = &self.accounts[account].participant;
        (0..self.accounts.len()).any(|middle| {
            self.accounts[middle].participant != *owner
                && self.accounts[middle].participant != self.poorest
                && !self.stock.contains_key(&(middle, security))
                && !self.short_keys.contains(&(middle, security))
                && self.has_receiver(middle, security)
        })
    }

    fn out_of_stock(&self, at: usize, category: &'static str) -> PlanError {
        PlanError::OutOfStock {
            pairs: self.input.pairs,
            at,
            category,
        }
    }

    /// An (account, security) with no stock that never receives any, reserved (several
    /// short pairs may share one).
    fn empty_holding(&mut self) -> Option<(usize, usize)> {
        // A few keys serve every short pair, leaving the other empty holdings to the pairs
        // whose stock arrives.
        if self.short_keys.len() >= SHORT_KEYS_MAX {
            let keys: Vec<(usize, usize)> = self.short_keys.iter().copied().collect();
            let mut keys = keys;
            keys.sort_unstable();
            return Some(keys[self.random.below(keys.len() as u64) as usize]);
        }
        let candidates: Vec<(usize, usize)> = (0..self.accounts.len())
            .flat_map(|account| (0..self.securities.len()).map(move |security| (account, security)))
            .filter(|key| {
                !self.stock.contains_key(key)
                    && self.accounts[key.0].participant != self.poorest
                    && !self.middle_keys.contains(key)
                    && self.has_receiver(key.0, key.1)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let key = candidates[self.random.below(candidates.len() as u64) as usize];
        self.reserved.insert(key);
        self.short_keys.insert(key);
        Some(key)
    }

    fn short_of_stock(
        &mut self,
        index: usize,
        plan: &mut Plan,
    ) -> Result<Vec<Outgoing>, PlanError> {
        let (account, security) = self
            .empty_holding()
            .ok_or_else(|| self.out_of_stock(index, "short of stock"))?;
        let participant = self.accounts[account].participant.clone();
        let receiver = self
            .receiver(&participant, security)
            .ok_or_else(|| self.out_of_stock(index, "short of stock"))?;
        let lots = self.lots_in(11..=13);
        let quantity = lots * self.securities[security].board_lot;
        plan.expected.matched_instructions += 2;
        plan.expected.failed_lack_pairs += 1;
        self.pair(
            account,
            receiver,
            security,
            quantity,
            None,
            None,
            &self.reference('S', index),
        )
    }

    fn stock_arrives(
        &mut self,
        index: usize,
        plan: &mut Plan,
    ) -> Result<(Vec<Outgoing>, Vec<Outgoing>), PlanError> {
        let lots = self.lots_in(14..=16);
        // X holds the stock; Y (another participant) holds none of it; Z receives from Y.
        let (source, security, quantity) = self
            .take_stock(lots, None, |planner, account, security| {
                planner.has_middle(account, security)
            })
            .ok_or_else(|| self.out_of_stock(index, "stock arrives"))?;
        let x_participant = self.accounts[source].participant.clone();
        let middle = (0..self.accounts.len())
            .filter(|account| {
                self.accounts[*account].participant != x_participant
                    && self.accounts[*account].participant != self.poorest
                    && !self.stock.contains_key(&(*account, security))
                    && !self.short_keys.contains(&(*account, security))
                    && self.has_receiver(*account, security)
            })
            .collect::<Vec<_>>();
        if middle.is_empty() {
            return Err(self.out_of_stock(index, "stock arrives"));
        }
        let middle = middle[self.random.below(middle.len() as u64) as usize];
        self.reserved.insert((middle, security));
        self.middle_keys.insert((middle, security));
        let y_participant = self.accounts[middle].participant.clone();
        let receiver = self
            .receiver(&y_participant, security)
            .ok_or_else(|| self.out_of_stock(index, "stock arrives"))?;
        let onward_amount = self.payment(middle, receiver, security, quantity);
        let arriving_amount = self.payment(source, middle, security, quantity);
        let first = self.pair(
            middle,
            receiver,
            security,
            quantity,
            onward_amount,
            onward_amount,
            &self.reference('Y', index),
        )?;
        let second = self.pair(
            source,
            middle,
            security,
            quantity,
            arriving_amount,
            arriving_amount,
            &self.reference('X', index),
        )?;
        plan.expected.matched_instructions += 4;
        plan.expected.settled_pairs_by_run[1] += 2;
        plan.expected.settled_value_minor_by_run[1] +=
            onward_amount.unwrap_or(0) + arriving_amount.unwrap_or(0);
        Ok((first, second))
    }

    fn short_of_cash(&mut self, index: usize, plan: &mut Plan) -> Result<Vec<Outgoing>, PlanError> {
        let lots = self.lots_in(20..=22);
        let poorest = self.poorest.clone();
        let (deliverer, security, quantity) = self
            .take_stock(lots, Some(&poorest), |planner, _, security| {
                (0..planner.accounts.len()).any(|account| {
                    planner.accounts[account].participant == planner.poorest
                        && !planner.reserved.contains(&(account, security))
                })
            })
            .ok_or_else(|| self.out_of_stock(index, "short of cash"))?;
        let receivers: Vec<usize> = (0..self.accounts.len())
            .filter(|account| {
                self.accounts[*account].participant == poorest
                    && !self.reserved.contains(&(*account, security))
            })
            .collect();
        if receivers.is_empty() {
            return Err(self.out_of_stock(index, "short of cash"));
        }
        let receiver = receivers[self.random.below(receivers.len() as u64) as usize];
        // More than the poorest participant ever holds (it is paid for nothing all day).
        let amount = self.poorest_cash_minor + 10_000_000 + index as i64 * 10_000;
        plan.expected.matched_instructions += 2;
        plan.expected.failed_mony_pairs += 1;
        self.pair(
            deliverer,
            receiver,
            security,
            quantity,
            Some(amount),
            Some(amount),
            &self.reference('M', index),
        )
    }

    fn mismatched(&mut self, index: usize, plan: &mut Plan) -> Result<Vec<Outgoing>, PlanError> {
        let deliverer = self.random.below(self.accounts.len() as u64) as usize;
        let security = self.random.below(self.securities.len() as u64) as usize;
        let participant = self.accounts[deliverer].participant.clone();
        let receiver = self
            .counterparty(&participant, None)
            .ok_or_else(|| self.out_of_stock(index, "mismatched"))?;
        let lots = self.lots_in(17..=19);
        let quantity = lots * self.securities[security].board_lot;
        let amount = quantity * self.securities[security].price_minor;
        let claimed = amount + (amount / 10).max(10_000);
        plan.expected.unmatched_instructions += 2;
        self.pair(
            deliverer,
            receiver,
            security,
            quantity,
            Some(amount),
            Some(claimed),
            &self.reference('U', index),
        )
    }

    fn cancelled(
        &mut self,
        index: usize,
        plan: &mut Plan,
    ) -> Result<(Vec<Outgoing>, Outgoing), PlanError> {
        let deliverer = self.random.below(self.accounts.len() as u64) as usize;
        let security = self.random.below(self.securities.len() as u64) as usize;
        let account = self.accounts[deliverer].clone();
        let receiver = self
            .counterparty(&account.participant, None)
            .ok_or_else(|| self.out_of_stock(index, "cancelled"))?;
        let receiver = self.accounts[receiver].clone();
        let lots = self.lots_in(23..=25);
        let quantity = lots * self.securities[security].board_lot;
        let side = Side {
            participant: &account.participant,
            account: &account.id,
            counterparty: &receiver.participant,
            counterparty_account: &receiver.id,
        };
        let reference = self.reference('C', index);
        let newm = self.instruction(&side, true, security, quantity, None, &reference, None)?;
        let canc = self.instruction(
            &side,
            true,
            security,
            quantity,
            None,
            &self.reference('K', index),
            Some(&reference),
        )?;
        plan.expected.cancelled_instructions += 1;
        Ok((vec![newm], canc))
    }

    fn rejected(&mut self, index: usize, plan: &mut Plan) -> Result<Vec<Outgoing>, PlanError> {
        // The sender's own account (the gateway authorises that) against a counterparty
        // account that does not exist: intake refuses it (REJT).
        let sender = self.random.below(self.accounts.len() as u64) as usize;
        let sender = self.accounts[sender].clone();
        let Some(foreign) = self
            .accounts
            .iter()
            .find(|account| account.participant != sender.participant)
            .cloned()
        else {
            return Err(PlanError::TooFewParticipants);
        };
        let security = self.random.below(self.securities.len() as u64) as usize;
        let quantity = self.securities[security].board_lot;
        let unknown_account = format!("{}-99", foreign.participant);
        let side = Side {
            participant: &sender.participant,
            account: &sender.id,
            counterparty: &foreign.participant,
            counterparty_account: &unknown_account,
        };
        plan.expected.rejected_messages += 1;
        Ok(vec![self.instruction(
            &side,
            true,
            security,
            quantity,
            None,
            &self.reference('J', index),
            None,
        )?])
    }

    fn normal(&mut self, index: usize, plan: &mut Plan) -> Result<Vec<Outgoing>, PlanError> {
        let lots = self.lots_in(1..=10);
        // Fewer lots when the stock runs low, never more than one attempt per size.
        let mut found = None;
        for lots in (1..=lots).rev() {
            if let Some(taken) = self.take_stock(lots, None, Planner::has_receiver) {
                found = Some(taken);
                break;
            }
        }
        let (deliverer, security, quantity) =
            found.ok_or_else(|| self.out_of_stock(index, "normal"))?;
        let participant = self.accounts[deliverer].participant.clone();
        let receiver = self
            .receiver(&participant, security)
            .ok_or_else(|| self.out_of_stock(index, "normal"))?;
        let amount = self.payment(deliverer, receiver, security, quantity);
        plan.expected.matched_instructions += 2;
        plan.expected.settled_pairs_by_run[0] += 1;
        plan.expected.settled_value_minor_by_run[0] += amount.unwrap_or(0);
        self.pair(
            deliverer,
            receiver,
            security,
            quantity,
            amount,
            amount,
            &self.reference('N', index),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> ReferenceData {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/reference/demo.toml");
        crate::hostdb::seed::load_file(&path).unwrap()
    }

    fn input<'a>(
        reference: &'a ReferenceData,
        participants: &'a [String],
        seed: u64,
    ) -> PlanInput<'a> {
        PlanInput {
            reference,
            participants,
            place_of_settlement_bic: "CCASHKHH",
            settlement_date: time::macros::date!(2026 - 11 - 26),
            trade_date: time::macros::date!(2026 - 11 - 24),
            pairs: 400,
            runs: 4,
            seed,
            run_tag: "T0001",
        }
    }

    fn participants() -> Vec<String> {
        ["B01234", "B05678", "C00123", "I00456"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn the_plan_is_deterministic_and_every_message_is_valid() {
        // Goal: the same seed gives the same messages; each is a valid MT540–543 with a unique
        // reference of at most 16 characters. Method: plan twice, then check every message
        // with the codec.
        let reference = reference();
        let participants = participants();
        let first = plan(&input(&reference, &participants, 7)).unwrap();
        let second = plan(&input(&reference, &participants, 7)).unwrap();
        assert_eq!(first.wave_one, second.wave_one);
        assert_eq!(first.expected, second.expected);
        let other = plan(&input(&reference, &participants, 8)).unwrap();
        assert_ne!(first.wave_one, other.wave_one);
        let mut references = HashSet::new();
        for message in first
            .wave_one
            .iter()
            .chain(&first.cancellations)
            .chain(&first.wave_two)
        {
            assert!(message.reference.len() <= 16, "{}", message.reference);
            assert!(references.insert((message.participant.clone(), message.reference.clone())));
            let report =
                crate::iso15022::check(&message.text, crate::iso15022::ParseOptions::fin());
            assert!(
                report
                    .problems
                    .iter()
                    .all(|problem| problem.severity() != crate::iso15022::Severity::Error),
                "{:?}\n{}",
                report.problems,
                message.text
            );
        }
    }

    #[test]
    fn expectations_add_up_to_the_categories() {
        // Goal: the expected outcome follows from the category split. Method: 400 pairs.
        let reference = reference();
        let participants = participants();
        let plan = plan(&input(&reference, &participants, 1)).unwrap();
        let counts = plan.counts;
        assert_eq!(counts, CategoryCounts::split(400));
        let expected = &plan.expected;
        assert_eq!(
            expected.matched_instructions as usize,
            2 * (counts.normal + counts.short_of_stock + counts.short_of_cash)
                + 4 * counts.stock_arrives
        );
        assert_eq!(
            expected.unmatched_instructions as usize,
            2 * counts.mismatched
        );
        assert_eq!(expected.settled_pairs_by_run[0] as usize, counts.normal);
        assert_eq!(
            expected.settled_pairs_by_run[1] as usize,
            2 * counts.stock_arrives
        );
        assert_eq!(expected.settled_pairs_by_run.len(), 4);
        assert_eq!(expected.settled_pairs_by_run[2..], [0, 0]);
        assert_eq!(expected.failed_lack_pairs as usize, counts.short_of_stock);
        assert_eq!(expected.failed_mony_pairs as usize, counts.short_of_cash);
        assert!(expected.settled_value_minor_by_run[0] > 0);
        assert_eq!(plan.wave_two.len(), 2 * counts.stock_arrives);
        assert_eq!(plan.cancellations.len(), counts.cancelled);
        assert_eq!(
            plan.wave_one.len(),
            2 * (counts.normal
                + counts.short_of_stock
                + counts.stock_arrives
                + counts.mismatched
                + counts.short_of_cash)
                + counts.cancelled
                + counts.rejected
        );
    }

    #[test]
    fn bad_inputs_are_refused_with_their_reason() {
        // Goal: too few pairs, a bad run tag, more pairs than the stock allows: clear errors.
        let reference = reference();
        let participants = participants();
        let mut few = input(&reference, &participants, 1);
        few.pairs = 3;
        assert!(matches!(plan(&few), Err(PlanError::TooFewPairs { .. })));
        let mut one_run = input(&reference, &participants, 1);
        one_run.runs = 1;
        assert_eq!(plan(&one_run).unwrap_err(), PlanError::TooFewRuns(1));
        let mut tag = input(&reference, &participants, 1);
        tag.run_tag = "TOOLONG";
        assert!(matches!(plan(&tag), Err(PlanError::RunTag(_))));
        // The command's default fits the demo reference data.
        let mut default = input(&reference, &participants, 1);
        default.pairs = 2_000;
        let planned = plan(&default);
        assert!(planned.is_ok(), "{:?}", planned.err());
        let mut many = input(&reference, &participants, 1);
        many.pairs = 50_000;
        assert!(matches!(plan(&many), Err(PlanError::OutOfStock { .. })));
    }
}
