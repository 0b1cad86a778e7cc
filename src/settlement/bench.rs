//! `ccass bench settlement`: the Batch Settlement Run engine ([`run::run_now`], the real run
//! path) against two SQL baselines on the same generated day, measured in the same run.
//!
//! 1. Generate a day (seeded): `instructions` settlement instructions, i.e. `instructions / 2`
//!    matched pairs (each a deliver and a receive SI; the target counts SIs),
//!    securities and participants Zipf-skewed, 90 % DvP, 20 % allowing partial settlement.
//!    Opening balances cover every pair except a `short_share` that lacks stock or money;
//!    some deliverers are funded only by receipts of the same day (chains).
//!    With `settled_days`, the same pairs also for that many prior days, settled in full
//!    by earlier runs (the history a run finds after days of operation).
//! 2. Load it into a fresh template database with COPY BINARY (not timed as the run), then
//!    copy the template three times (`CREATE DATABASE … TEMPLATE`): the same starting state
//!    for each contender.
//! 3. Engine: `run_now` on copy 1, phases load / settle / write / commit.
//! 4. Baseline (a): one SQL transaction per pair on copy 2, over the first `baseline_pairs`
//!    pairs, as a rate and extrapolated to the whole day.
//! 5. Baseline (b): the best set-based SQL on copy 3, one transaction.
//! 6. With `rounds` > 1, steps 3 and 5 again on fresh copies, as many rounds. Run to run,
//!    on the shared 2-CPU machine, the engine's time and the set-based SQL's each varied by
//!    a factor of about two (3.2-7.6 s and 5.1-9.6 s at a million SIs, over two sessions),
//!    enough to turn one round's verdict either way. So every round is printed, the engine
//!    and the set-based SQL of one round are compared with each other (they ran within half
//!    a minute of each other), and the targets are judged on the medians: the engine's
//!    median end-to-end time, the median of the rounds' ratios. With an even count the
//!    slower time and the lower ratio count.
//!
//! Databases: `ccass_bench_settlement_*` on the configured server, dropped afterwards unless
//! `keep_database`.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use time::Date;

use super::run::{self, RunError, RunOptions, RunReport};
use crate::cns::bench::synthetic_reference;
use crate::cns::feed::{SplitMix64, Zipf};
use crate::config::Config;
use crate::hostdb::cns as reference_sql;
use crate::hostdb::settlement_bench::{self as sql, BenchDay, BenchPair};
use crate::hostdb::{self, HostDbError};
use crate::telemetry::cpu;

const TEMPLATE_DATABASE: &str = "ccass_bench_settlement_template";
const RUN_DATABASE: &str = "ccass_bench_settlement_run";
const EACH_DATABASE: &str = "ccass_bench_settlement_each";
const SET_DATABASE: &str = "ccass_bench_settlement_set";
/// Rounds at most: each takes about half a minute at a million SIs.
const ROUNDS_MAX: usize = 20;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Settlement instructions: `instructions / 2` matched pairs (each two SIs).
    pub instructions: usize,
    pub seed: u64,
    pub participants: usize,
    pub securities: usize,
    /// Share of pairs whose deliverer lacks the stock or whose receiver lacks the money.
    pub short_share: f64,
    /// Pairs settled one transaction each (baseline a).
    pub baseline_pairs: usize,
    /// Prior settlement days already settled in full in the database (each as many pairs
    /// as the day to settle): the history a run finds after days of operation.
    pub settled_days: usize,
    /// Rounds of the engine and the set-based SQL, each on fresh copies (at least 1).
    pub rounds: usize,
    pub keep_database: bool,
}

impl BenchOptions {
    /// Matched pairs generated: half the instructions (an odd one out is dropped).
    pub fn pair_count(&self) -> usize {
        self.instructions / 2
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Db(#[from] HostDbError),
    #[error(transparent)]
    Migrate(#[from] hostdb::migrate::MigrateError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("bad bench options: {0}")]
    Options(String),
}

/// One round: the engine and the set-based SQL, each on a fresh copy of the same day.
#[derive(Debug, Clone)]
pub struct Round {
    pub run: RunReport,
    /// `run_now` end to end (connect, lock, load, settle, write, commit), without the sweep
    /// after the commit (`run.sweep`, its own transaction).
    pub run_total: Duration,
    /// CPU time this process spent during `run_now` (the client's share of the run; the
    /// rest of `run_total` is the server's work or waiting for it). `None` without procfs.
    pub run_client_cpu: Option<Duration>,
    pub set_settled: i64,
    pub set: Duration,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub pairs: usize,
    pub participants: usize,
    pub securities: usize,
    pub short_share: f64,
    pub seed: u64,
    pub settled_days: usize,
    pub generate: Duration,
    pub load: Duration,
    /// In the order run; never empty.
    pub rounds: Vec<Round>,
    pub each_pairs: usize,
    pub each_settled: usize,
    pub each: Duration,
    /// Why the `CHECKPOINT` before a timed phase failed (`None`: every phase had one).
    pub checkpoint_refused: Option<String>,
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Two rates are printed for the engine and each baseline: due pairs processed per second
/// (the day's size over the time) and pairs settled in full per second (the work done). The
/// targets against the baselines compare pairs settled per second: the set-based SQL is a
/// single pass that leaves more than a third of the day unsettled (the engine recycles
/// and chains), so by due pairs it would be credited with settling work it did not do.
/// Partial settlements are not counted for the engine (the baselines make none).
impl Round {
    pub fn run_pairs_per_second(&self) -> f64 {
        per_second(self.run.pairs_due, self.run_total)
    }

    pub fn run_settled_per_second(&self) -> f64 {
        per_second(self.run.settled_count, self.run_total)
    }

    pub fn set_pairs_per_second(&self, pairs: usize) -> f64 {
        per_second(pairs, self.set)
    }

    pub fn set_settled_per_second(&self) -> f64 {
        per_second(usize::try_from(self.set_settled).unwrap_or(0), self.set)
    }

    /// The engine's pairs settled per second over the set-based SQL's, in this round.
    pub fn over_set(&self) -> f64 {
        self.run_settled_per_second() / self.set_settled_per_second().max(1e-9)
    }
}

impl BenchReport {
    /// The index in `rounds` of the engine's median end-to-end time (of an even count, the
    /// slower of the middle two): its figures are the ones the targets are judged on.
    pub fn median_round_index(&self) -> usize {
        let mut by_time: Vec<usize> = (0..self.rounds.len()).collect();
        by_time.sort_by_key(|&index| self.rounds[index].run_total);
        by_time[by_time.len() / 2]
    }

    pub fn median_round(&self) -> &Round {
        &self.rounds[self.median_round_index()]
    }

    pub fn run_pairs_per_second(&self) -> f64 {
        self.median_round().run_pairs_per_second()
    }

    pub fn each_pairs_per_second(&self) -> f64 {
        per_second(self.each_pairs, self.each)
    }

    pub fn each_settled_per_second(&self) -> f64 {
        per_second(self.each_settled, self.each)
    }

    /// The engine's (median round's) pairs settled per second over the per-transaction
    /// baseline's.
    pub fn over_each(&self) -> f64 {
        self.median_round().run_settled_per_second() / self.each_settled_per_second().max(1e-9)
    }

    /// The median of the rounds' ratios over the set-based SQL (of an even count, the
    /// lower of the middle two).
    pub fn over_set(&self) -> f64 {
        let mut ratios: Vec<f64> = self.rounds.iter().map(Round::over_set).collect();
        ratios.sort_by(f64::total_cmp);
        ratios[(ratios.len() - 1) / 2]
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let round_number = 1 + self.median_round_index();
        let median = self.median_round();
        let run = &median.run;
        writeln!(
            f,
            "settlement bench: {} matched pairs ({} SIs), {} participants, {} securities, \
             short share {:.1} %, seed {}",
            self.pairs,
            2 * self.pairs,
            self.participants,
            self.securities,
            100.0 * self.short_share,
            self.seed
        )?;
        writeln!(
            f,
            "history: {} prior settled day(s) in the database ({} pairs settled in full)",
            self.settled_days,
            self.settled_days * self.pairs
        )?;
        writeln!(
            f,
            "setup (not timed as the run): generate {:.2} s, load by COPY BINARY {:.2} s; {}",
            self.generate.as_secs_f64(),
            self.load.as_secs_f64(),
            match &self.checkpoint_refused {
                None => "a CHECKPOINT before each timed phase (none writes back the setup's pages)"
                    .to_owned(),
                Some(error) => format!(
                    "CHECKPOINT refused ({error}): timings may include writing back the setup"
                ),
            }
        )?;
        let engine = self.run_pairs_per_second();
        writeln!(
            f,
            "engine (run_now), round {round_number} of {} (the median end-to-end time): {:.3} s \
             end to end = load {:.3} + settle {:.3} + write {:.3} + commit {:.3} (+ {:.3} \
             connect/lock/record); {:.0} due pairs/s ({:.0} SIs/s), {:.0} pairs settled/s",
            self.rounds.len(),
            median.run_total.as_secs_f64(),
            run.load.as_secs_f64(),
            run.settle.as_secs_f64(),
            run.write.as_secs_f64(),
            run.commit.as_secs_f64(),
            median
                .run_total
                .saturating_sub(run.load + run.settle + run.write + run.commit)
                .as_secs_f64(),
            engine,
            2.0 * engine,
            median.run_settled_per_second()
        )?;
        if let Some(cpu) = median.run_client_cpu {
            writeln!(
                f,
                "  client CPU during the run {:.3} s (the rest: the server's work or waiting)",
                cpu.as_secs_f64()
            )?;
        }
        writeln!(
            f,
            "  load = begin {:.3} + CNS shorts {:.3} + due pairs {:.3} + balances {:.3}",
            run.load_steps.begin.as_secs_f64(),
            run.load_steps.cns_shorts.as_secs_f64(),
            run.load_steps.pairs.as_secs_f64(),
            run.load_steps.balances.as_secs_f64()
        )?;
        writeln!(
            f,
            "  due read loaded {} open instructions, {} matches, {} pairs with settled markers",
            run.loaded.instructions, run.loaded.matches, run.loaded.settled_pairs
        )?;
        writeln!(
            f,
            "  then (own transaction, not in end to end) sweep {:.3} s: {} instructions to \
             settled",
            run.sweep.as_secs_f64(),
            run.swept_instruction_count
        )?;
        writeln!(
            f,
            "  write = balances applied while the rest is built {:.3} (build {:.3}, of it \
             confirmation rows {:.3}) + markers {:.3} + outbox {:.3}; the journals by COPY on \
             connections of their own meanwhile, waited for at commit {:.3}",
            run.write_steps.build_and_balances.as_secs_f64(),
            run.write_steps.build.as_secs_f64(),
            run.write_steps.build_messages.as_secs_f64(),
            run.write_steps.markers.as_secs_f64(),
            run.write_steps.outbox.as_secs_f64(),
            run.write_steps.journals_wait.as_secs_f64()
        )?;
        writeln!(
            f,
            "  settled {} of {} pairs ({} partially, {} recycled); first pass alone {}, chain \
             resolution {} more ({} retries); value settled {:.2} % of due",
            run.settled_count,
            run.pairs_due,
            run.partially_settled_count,
            run.recycled_count,
            run.first_pass_settled_count,
            run.settled_count - run.first_pass_settled_count,
            run.chain_retry_count,
            100.0 * run.value_efficiency()
        )?;
        writeln!(
            f,
            "  wrote {} holding and {} cash movements, {} settled markers, {} confirmations in \
             {} compact outbox rows",
            run.holding_movements_count,
            run.cash_movements_count,
            run.settled_count + run.partially_settled_count,
            run.confirmations_count,
            run.outbox_count
        )?;
        let each = self.each_pairs_per_second();
        let each_extrapolated = self.pairs as f64 / each.max(1e-9);
        writeln!(
            f,
            "baseline (a) one SQL transaction per pair: {} pairs in {:.3} s ({} settled) = \
             {:.0} due pairs/s -> {:.1} s for the day, {:.0} pairs settled/s; engine is \
             {:.1}x by pairs settled ({:.1}x by due pairs)",
            self.each_pairs,
            self.each.as_secs_f64(),
            self.each_settled,
            each,
            each_extrapolated,
            self.each_settled_per_second(),
            self.over_each(),
            engine / each.max(1e-9)
        )?;
        writeln!(
            f,
            "baseline (b) set-based SQL, one transaction, single pass; each round beside the \
             engine in the same round:"
        )?;
        for (index, round) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "  round {}: set-based {:.3} s ({} settled) = {:.0} due pairs/s, {:.0} pairs \
                 settled/s; engine {:.3} s, {:.0} pairs settled/s; engine is {:.2}x by pairs \
                 settled ({:.2}x by due pairs)",
                index + 1,
                round.set.as_secs_f64(),
                round.set_settled,
                round.set_pairs_per_second(self.pairs),
                round.set_settled_per_second(),
                round.run_total.as_secs_f64(),
                round.run_settled_per_second(),
                round.over_set(),
                round.run_pairs_per_second() / round.set_pairs_per_second(self.pairs).max(1e-9)
            )?;
        }
        let instructions_per_second = 2.0 * engine;
        write!(
            f,
            "targets, median of {} round(s): >= 200000 SIs/s ({:.0}) {}; >= 50x per-transaction \
             ({:.1}x) {}; >= 2.5x set-based ({:.2}x), by pairs settled per second, {}",
            self.rounds.len(),
            instructions_per_second,
            verdict(instructions_per_second >= 200_000.0),
            self.over_each(),
            verdict(self.over_each() >= 50.0),
            self.over_set(),
            verdict(self.over_set() >= 2.5)
        )
    }
}

/// Generates the day (pure, seeded). `board_lots` per security.
pub fn generate(
    options: &BenchOptions,
    participants: Vec<String>,
    isins: Vec<String>,
    board_lots: &[i64],
    settlement_date: Date,
) -> BenchDay {
    let mut random = SplitMix64::new(options.seed);
    let security_ranks = Zipf::new(isins.len(), 1.1);
    let participant_ranks = Zipf::new(participants.len(), 0.9);
    // Price per unit in minor units, fixed per security.
    let prices: Vec<i64> = (0..isins.len())
        .map(|_| 10 + random.below(50_000) as i64)
        .collect();
    let mut stock_needed: HashMap<(u32, u32), i64> = HashMap::new();
    let mut stock_received: HashMap<(u32, u32), i64> = HashMap::new();
    let mut cash_needed = vec![0i64; participants.len()];
    let pair_count = options.pair_count();
    let mut pairs = Vec::with_capacity(pair_count);
    for _ in 0..pair_count {
        let deliverer = participant_ranks.sample(&mut random) as u32;
        let mut receiver = participant_ranks.sample(&mut random) as u32;
        if receiver == deliverer {
            receiver = (receiver + 1) % participants.len() as u32;
        }
        let security = security_ranks.sample(&mut random) as u32;
        let lots = 1 + random.below(4) as i64;
        let quantity = lots * board_lots[security as usize];
        let dvp = random.unit() < 0.9;
        let amount_minor = dvp.then(|| quantity * prices[security as usize]);
        let partial_allowed = random.unit() < 0.2;
        let short = random.unit() < options.short_share;
        let money_short = random.unit() < 0.5 && short && dvp;
        let stock_short = short && !money_short;
        if !stock_short {
            *stock_needed.entry((deliverer, security)).or_default() += quantity;
            *stock_received.entry((receiver, security)).or_default() += quantity;
        }
        if let Some(amount) = amount_minor.filter(|_| !money_short) {
            cash_needed[receiver as usize] += amount;
        }
        pairs.push(BenchPair {
            deliverer,
            receiver,
            security,
            quantity,
            amount_minor,
            partial_allowed,
        });
    }
    // A deliverer that also receives the security the same day starts with only part of
    // what it delivers: the rest comes from its receipts (chains).
    let mut holdings: Vec<(u32, u32, i64)> = stock_needed
        .iter()
        .map(|(&(participant, security), &needed)| {
            let received = stock_received
                .get(&(participant, security))
                .copied()
                .unwrap_or(0);
            (participant, security, needed - received.min(needed) / 2)
        })
        .filter(|(_, _, quantity)| *quantity > 0)
        .collect();
    holdings.sort_unstable();
    BenchDay {
        settlement_date,
        participants,
        isins,
        holdings,
        cash_minor: cash_needed,
        pairs,
    }
}

/// A date for the generated pairs: the first weekday after today in the market's local
/// time, so its input cut-off is still ahead and every generated pair is due.
fn settlement_date(config: &super::SettlementConfig) -> Date {
    let offset = time::UtcOffset::from_whole_seconds(i32::from(config.utc_offset_minutes) * 60)
        .unwrap_or(time::UtcOffset::UTC);
    let today = time::OffsetDateTime::now_utc().to_offset(offset).date();
    let mut date = today.next_day().unwrap_or(today);
    while matches!(
        date.weekday(),
        time::Weekday::Saturday | time::Weekday::Sunday
    ) {
        date = date.next_day().unwrap_or(date);
    }
    date
}

pub async fn run(config: &Config, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    if options.participants < 2 || options.securities < 1 || options.pair_count() < 1 {
        return Err(BenchError::Options(
            "need at least 2 participants, 1 security and 2 instructions (one pair)".to_owned(),
        ));
    }
    if !(1..=ROUNDS_MAX).contains(&options.rounds) {
        return Err(BenchError::Options(format!(
            "rounds {} is not within 1..={ROUNDS_MAX}",
            options.rounds
        )));
    }
    if !(0.0..=1.0).contains(&options.short_share) {
        return Err(BenchError::Options(format!(
            "short share {} is not within 0..=1",
            options.short_share
        )));
    }
    let admin = hostdb::connect_as(&config.hostdb, "ccass-bench")?;
    let result = measure(config, options, &admin).await;
    if !options.keep_database {
        for name in [RUN_DATABASE, EACH_DATABASE, SET_DATABASE, TEMPLATE_DATABASE] {
            reference_sql::drop_database(&admin, name).await?;
        }
    }
    result
}

async fn measure(
    config: &Config,
    options: &BenchOptions,
    admin: &hostdb::Pool,
) -> Result<BenchReport, BenchError> {
    let date = settlement_date(&config.settlement);
    reference_sql::recreate_database(admin, TEMPLATE_DATABASE).await?;
    // Setup and baselines may run long statements; the engine's run keeps the configured
    // statement timeout.
    let unbounded = |database: &str| {
        let mut hostdb = config.hostdb.with_database(database);
        hostdb.statement_timeout_ms = 0;
        hostdb::connect_as(&hostdb, "ccass-bench")
    };
    let template = unbounded(TEMPLATE_DATABASE)?;
    hostdb::migrate::run(&template).await?;
    let reference = synthetic_reference(
        &config.cns.ccp_participant,
        options.participants,
        options.securities,
    );
    reference_sql::insert_reference(&template, &reference).await?;
    let started = Instant::now();
    let participants: Vec<String> = reference
        .participants
        .iter()
        .filter(|p| p.participant_type != "ccp")
        .map(|p| p.participant_id.clone())
        .collect();
    let isins = reference
        .securities
        .iter()
        .map(|s| s.isin.clone())
        .collect();
    let lots: Vec<i64> = reference
        .securities
        .iter()
        .map(|s| i64::from(s.board_lot))
        .collect();
    let day = generate(options, participants, isins, &lots, date);
    let generate_time = started.elapsed();
    let started = Instant::now();
    sql::load_day(&template, &day, options.settled_days).await?;
    let load = started.elapsed();
    template.close();
    drop(template);
    for name in [RUN_DATABASE, EACH_DATABASE, SET_DATABASE] {
        copy_when_free(admin, name).await?;
    }

    // Each timed phase starts with nothing dirty: the setup wrote the day and three copies of
    // it (several GB of WAL), whose write-back would otherwise land in whichever phase runs
    // next, and each phase leaves its own writes for the next.
    let mut checkpoint_refused: Option<String> = None;
    let (mut each_pairs, mut each_settled, mut each) = (0, 0, Duration::ZERO);
    let mut checkpoint = async || {
        if checkpoint_refused.is_none()
            && let Err(error) = sql::checkpoint(admin).await
        {
            tracing::warn!(%error, "bench: checkpoint refused; timings may include write-back");
            checkpoint_refused = Some(error.to_string());
        }
    };
    let mut rounds = Vec::with_capacity(options.rounds);
    for round in 0..options.rounds {
        if round > 0 {
            for name in [RUN_DATABASE, SET_DATABASE] {
                copy_when_free(admin, name).await?;
            }
        }
        checkpoint().await;
        let pool = hostdb::connect_as(&config.hostdb.with_database(RUN_DATABASE), "ccass-bench")?;
        let run_options = RunOptions::leader("bench".to_owned());
        let cpu_before = cpu::process_cpu_time();
        let started = Instant::now();
        let run = run::run_now(&pool, &config.settlement, date, &run_options).await?;
        let run_total = started.elapsed().saturating_sub(run.sweep);
        let run_client_cpu = cpu::process_cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        pool.close();

        if round == 0 {
            checkpoint().await;
            let pool = unbounded(EACH_DATABASE)?;
            let started = Instant::now();
            (each_pairs, each_settled) =
                sql::settle_one_transaction_each(&pool, date, options.baseline_pairs as i64)
                    .await?;
            each = started.elapsed();
            pool.close();
        }

        checkpoint().await;
        let pool = unbounded(SET_DATABASE)?;
        let started = Instant::now();
        let set_settled = sql::settle_set_based(&pool, date).await?;
        let set = started.elapsed();
        pool.close();
        rounds.push(Round {
            run,
            run_total,
            run_client_cpu,
            set_settled,
            set,
        });
    }

    Ok(BenchReport {
        pairs: day.pairs.len(),
        participants: options.participants,
        securities: options.securities,
        short_share: options.short_share,
        seed: options.seed,
        settled_days: options.settled_days,
        generate: generate_time,
        load,
        rounds,
        each_pairs,
        each_settled,
        each,
        checkpoint_refused,
    })
}

/// Copies the template once its last connection is gone (closing a pool ends its sessions
/// asynchronously).
async fn copy_when_free(admin: &hostdb::Pool, name: &str) -> Result<(), BenchError> {
    let mut attempt = 0;
    loop {
        match sql::copy_database(admin, TEMPLATE_DATABASE, name).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 50 => {
                attempt += 1;
                tracing::debug!(%error, "template still in use; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(short_share: f64) -> BenchOptions {
        BenchOptions {
            instructions: 10_000,
            seed: 7,
            participants: 50,
            securities: 40,
            short_share,
            baseline_pairs: 10,
            settled_days: 0,
            rounds: 1,
            keep_database: false,
        }
    }

    fn day(short_share: f64) -> BenchDay {
        let participants = (0..50).map(|i| format!("B{:05}", 10_000 + i)).collect();
        let isins = (0..40).map(|i| format!("ISIN{i}")).collect();
        generate(
            &options(short_share),
            participants,
            isins,
            &[100; 40],
            time::macros::date!(2026 - 11 - 25),
        )
    }

    #[test]
    fn the_same_seed_generates_the_same_day() {
        // Goal: the three contenders and reruns see the same data. Method: generate twice.
        assert_eq!(day(0.05), day(0.05));
        assert_ne!(day(0.05).holdings, day(0.2).holdings);
    }

    #[test]
    fn pairs_are_between_different_participants_and_skewed() {
        // Goal: valid pairs (no self-delivery), Zipf-skewed securities. Method: count.
        let day = day(0.05);
        assert!(day.pairs.iter().all(|p| p.deliverer != p.receiver));
        let top = day.pairs.iter().filter(|p| p.security == 0).count();
        let last = day.pairs.iter().filter(|p| p.security == 39).count();
        assert!(top > 10 * last.max(1), "top {top}, last {last}");
    }

    #[test]
    fn openings_fund_more_without_shortage() {
        // Goal: the short share takes funding away. Method: compare total opening stock
        // and money with and without shorts.
        let funded = day(0.0);
        let short = day(0.5);
        let stock = |day: &BenchDay| day.holdings.iter().map(|h| h.2).sum::<i64>();
        let cash = |day: &BenchDay| day.cash_minor.iter().sum::<i64>();
        assert!(stock(&short) < stock(&funded));
        assert!(cash(&short) < cash(&funded));
    }

    fn round(run_ms: u64, settled_count: usize, set_ms: u64) -> Round {
        Round {
            run: RunReport {
                pairs_due: 1000,
                settled_count,
                ..RunReport::default()
            },
            run_total: Duration::from_millis(run_ms),
            run_client_cpu: None,
            set_settled: 300,
            set: Duration::from_millis(set_ms),
        }
    }

    fn bench_report(rounds: Vec<Round>) -> BenchReport {
        BenchReport {
            pairs: 1000,
            participants: 2,
            securities: 1,
            short_share: 0.0,
            seed: 1,
            settled_days: 0,
            generate: Duration::ZERO,
            load: Duration::ZERO,
            rounds,
            each_pairs: 10,
            each_settled: 9,
            each: Duration::from_secs(1),
            checkpoint_refused: None,
        }
    }

    #[test]
    fn baselines_are_compared_by_pairs_settled_per_second() {
        // Goal: a baseline that leaves pairs unsettled is not credited with them. Method: the
        // engine and the set-based SQL take the same time over the same 1000 due pairs; the
        // engine settles 900 and the SQL 300, so the engine is 3x, not 1x.
        let report = bench_report(vec![round(1000, 900, 1000)]);
        assert_eq!(report.over_set(), 3.0);
        assert_eq!(report.over_each(), 100.0);
        let printed = report.to_string();
        assert!(
            printed.contains(">= 2.5x set-based (3.00x), by pairs settled per second, met"),
            "{printed}"
        );
        assert!(
            printed.contains("engine is 3.00x by pairs settled (1.00x by due pairs)"),
            "{printed}"
        );
    }

    #[test]
    fn targets_are_judged_on_the_medians_of_the_rounds() {
        // Goal: one lucky or unlucky round does not decide a target. Method: three rounds
        // with engine times 4, 6 and 5 s (900 settled each) and set-based times that make
        // the rounds' ratios 2.25x, 3.75x and 2.70x (set: 300 settled in 3, 7.5 and 4.5 s):
        // the engine's figures are round 3's (5 s, the median time), the ratio is 2.70x (the
        // median ratio, from a round that is not the median time's), and every round is
        // printed. With two rounds, the slower time and the lower ratio count.
        let report = bench_report(vec![
            round(4000, 900, 3000),
            round(6000, 900, 7500),
            round(5000, 900, 4500),
        ]);
        assert_eq!(report.median_round().run_total, Duration::from_secs(5));
        assert!(
            (report.over_set() - 2.7).abs() < 1e-9,
            "{}",
            report.over_set()
        );
        assert!((report.run_pairs_per_second() - 200.0).abs() < 1e-9);
        let printed = report.to_string();
        assert!(
            printed.contains("round 3 of 3 (the median end-to-end time): 5.000 s"),
            "{printed}"
        );
        for ratio in ["2.25x", "3.75x", "2.70x"] {
            assert!(
                printed.contains(&format!("engine is {ratio} by pairs settled")),
                "{printed}"
            );
        }
        assert!(
            printed.contains(
                "targets, median of 3 round(s): >= 200000 SIs/s (400) NOT met; >= 50x \
                 per-transaction (20.0x) NOT met; >= 2.5x set-based (2.70x), by pairs settled \
                 per second, met"
            ),
            "{printed}"
        );

        let two = bench_report(vec![round(4000, 900, 3000), round(6000, 900, 7500)]);
        assert_eq!(two.median_round().run_total, Duration::from_secs(6));
        assert!((two.over_set() - 2.25).abs() < 1e-9, "{}", two.over_set());
    }
}
