//! `ccass bench cns`: in-memory netting against Postgres `GROUP BY` on the same trades, and
//! capture end to end from the trade subject to persisted positions.
//!
//! The benchmark owns a database (`ccass_bench_cns` on the configured server, dropped and
//! created) with generated reference data, and a stream of its own on the configured NATS
//! server (`CNS_BENCH`, subject `ccassbench.trades.benchcns`, created empty by each run and
//! deleted afterwards: it never depends on or fills the shared TRADES stream). Steps, on one
//! generated day of trades:
//! 1. net the CNS trades in memory on one thread (best of three passes);
//! 2. publish every batch to the bench trade subject (timed separately);
//! 3. start capture workers on a consumer of that subject and time until every batch is
//!    captured, netted and committed (end to end from the subject to persisted positions:
//!    trades, markers and position deltas durable), then fold the deltas into position rows
//!    (timed separately: the cut-off's first step) and print the time per capture phase;
//! 4. net the captured trades with one SQL `GROUP BY` (the baseline), over a plain table of one
//!    row per trade copied from the trade sets untimed;
//! 5. check the persisted positions against the in-memory netting.

use std::fmt;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;

use super::capture::{self, Reference};
use super::feed::{self, SyntheticTrade, Universe};
use super::netting::{NettableTrade, trade_amount_minor};
use super::{CnsConfig, format_date};
use crate::bus::subjects::Market;
use crate::bus::trades::{self, TradeBatch};
use crate::config::Config;
use crate::hostdb::cns::{self as sql, CurrencyRow, ParticipantRow, ReferenceRows, SecurityRow};
use crate::hostdb::{self, HostDbError};

pub const BENCH_DATABASE: &str = "ccass_bench_cns";
pub const BENCH_MARKET: &str = "benchcns";
const BENCH_CONSUMER: &str = "cns-bench";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub trades: usize,
    pub seed: u64,
    pub participants: usize,
    pub securities: usize,
    pub workers: usize,
    pub keep_database: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Db(#[from] HostDbError),
    #[error(transparent)]
    Migrate(#[from] hostdb::migrate::MigrateError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Catalogue(#[from] crate::bus::catalogue::CatalogueError),
    #[error(transparent)]
    Feed(#[from] feed::FeedError),
    #[error("jetstream {operation}: {message}")]
    JetStream { operation: String, message: String },
    #[error("capture did not finish: {captured} of {expected} batches after {waited_s} s")]
    Stalled {
        captured: i64,
        expected: usize,
        waited_s: u64,
    },
    #[error("persisted positions disagree with the in-memory netting: {0}")]
    Disagree(String),
}

fn jetstream_error(operation: &str) -> impl Fn(String) -> BenchError + '_ {
    move |message| BenchError::JetStream {
        operation: operation.to_owned(),
        message,
    }
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub trades: usize,
    pub cns_trades: usize,
    pub batches: usize,
    pub workers: usize,
    pub stock_positions: usize,
    pub money_positions: usize,
    pub in_memory: Duration,
    pub group_by: Duration,
    /// The faster SQL form (`sql::GroupByForm`), the one `group_by` timed.
    pub group_by_form: &'static str,
    pub publish: Duration,
    pub end_to_end: Duration,
    /// Folding the appended position deltas into position rows (the cut-off's first step).
    pub fold: Duration,
    /// Capture time per phase, summed over the workers.
    pub capture_phases: Vec<(&'static str, Duration)>,
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let in_memory = per_second(self.cns_trades, self.in_memory);
        let group_by = per_second(self.cns_trades, self.group_by);
        writeln!(
            f,
            "cns bench: {} trades ({} cns, {} isolated) in {} batches",
            self.trades,
            self.cns_trades,
            self.trades - self.cns_trades,
            self.batches
        )?;
        writeln!(
            f,
            "in-memory netting, one thread:  {:>12.0} trades/s ({:.3} s)",
            in_memory,
            self.in_memory.as_secs_f64()
        )?;
        writeln!(
            f,
            "postgres group by netting:      {:>12.0} trades/s ({:.3} s, {})  in-memory is {:.1}x",
            group_by,
            self.group_by.as_secs_f64(),
            self.group_by_form,
            in_memory / group_by.max(1e-9)
        )?;
        writeln!(
            f,
            "publish to the trade subject:   {:>12.0} trades/s ({:.3} s)",
            per_second(self.trades, self.publish),
            self.publish.as_secs_f64()
        )?;
        writeln!(
            f,
            "end to end, subject -> persisted positions ({} workers): {:.0} trades/s ({:.3} s)",
            self.workers,
            per_second(self.trades, self.end_to_end),
            self.end_to_end.as_secs_f64()
        )?;
        writeln!(
            f,
            "  then folding the position deltas into position rows: {:.3} s (the cut-off does it; with it {:.0} trades/s)",
            self.fold.as_secs_f64(),
            per_second(self.trades, self.end_to_end + self.fold)
        )?;
        let phases: Vec<String> = self
            .capture_phases
            .iter()
            .map(|(name, total)| format!("{name} {:.3}", total.as_secs_f64()))
            .collect();
        writeln!(
            f,
            "capture phases, seconds summed over workers: {}",
            phases.join(", ")
        )?;
        write!(
            f,
            "compression: {} cns trades -> {} stock positions ({:.1}:1) and {} money positions",
            self.cns_trades,
            self.stock_positions,
            self.cns_trades as f64 / self.stock_positions.max(1) as f64,
            self.money_positions
        )
    }
}

/// Generated reference data: the CCP, `participants` brokers, `securities` HKD securities.
pub fn synthetic_reference(ccp: &str, participants: usize, securities: usize) -> ReferenceRows {
    let mut participant_rows = vec![ParticipantRow {
        participant_id: ccp.to_owned(),
        participant_type: "ccp".to_owned(),
        status: "active".to_owned(),
    }];
    participant_rows.extend((0..participants).map(|i| ParticipantRow {
        participant_id: format!("B{:05}", i + 10_000),
        participant_type: "broker".to_owned(),
        status: "active".to_owned(),
    }));
    const BOARD_LOTS: [i32; 6] = [100, 200, 400, 500, 1000, 2000];
    let security_rows = (0..securities)
        .map(|i| SecurityRow {
            isin: isin_for(&format!("HK{:09}", 100_000_000 + i)),
            stock_code: format!("{:05}", 10_000 + i),
            currency_code: "HKD".to_owned(),
            board_lot: BOARD_LOTS[i % BOARD_LOTS.len()],
            status: "active".to_owned(),
        })
        .collect();
    ReferenceRows {
        participants: participant_rows,
        securities: security_rows,
        currencies: vec![CurrencyRow {
            currency_code: "HKD".to_owned(),
            minor_units: 2,
        }],
    }
}

/// `prefix` (11 characters) with its ISIN check digit.
fn isin_for(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        crate::ids::isin_check_digit(prefix.as_bytes())
    )
}

/// A business day to date the generated trades.
fn trade_date(config: &CnsConfig) -> time::Date {
    let calendar = config.calendar();
    let mut date = time::OffsetDateTime::now_utc().date();
    while !calendar.is_business_day(date) {
        date = date.next_day().unwrap_or(date);
    }
    date
}

pub async fn run(config: &Config, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let ccp = &config.cns.ccp_participant;
    let admin = hostdb::connect_as(&config.hostdb, "ccass-bench")?;
    sql::recreate_database(&admin, BENCH_DATABASE).await?;
    let bench_config = config.hostdb.with_database(BENCH_DATABASE);
    let pool = hostdb::connect_as(&bench_config, "ccass-bench")?;
    hostdb::migrate::run(&pool).await?;
    let rows = synthetic_reference(ccp, options.participants, options.securities);
    sql::insert_reference(&pool, &rows).await?;
    let reference = Reference::load(&pool, ccp).await?;
    let universe = Universe::from_reference(&sql::load_reference(&pool).await?, ccp)?;

    let trades = feed::generate(&universe, options.trades, options.seed);
    let (cns_trades, in_memory, stock_positions, money_positions) =
        net_in_memory(&reference, &universe, &trades);

    let report = end_to_end(config, options, &pool, &universe, &trades).await;
    let report = match report {
        Ok(measured) => {
            let settlement_date = config
                .cns
                .calendar()
                .settlement_date(trade_date(&config.cns));
            // The fairest baseline: the trades as a plain table of rows, vacuumed (caches
            // warm, hint bits set), then each straightforward form once; the faster counts.
            sql::materialize_baseline_trades(&pool, BENCH_MARKET).await?;
            let mut group_by = Duration::MAX;
            let mut group_by_form = sql::GroupByForm::UnionAll;
            let mut group_by_positions = 0;
            for form in sql::GroupByForm::ALL {
                let started = Instant::now();
                group_by_positions = sql::group_by_netting(&pool, BENCH_MARKET, form).await?;
                if started.elapsed() < group_by {
                    group_by = started.elapsed();
                    group_by_form = form;
                }
            }
            // After the baseline: the fold's dead delta rows wake autovacuum, which would
            // slow a GROUP BY timed after it (measured: 0.77 s before, 1.97 s after, 1 M).
            let started = Instant::now();
            let mut client = hostdb::client(&pool).await?;
            sql::fold_position_deltas_now(&mut client, settlement_date).await?;
            drop(client);
            let fold = started.elapsed();
            let stored = sql::stock_position_count(&pool, settlement_date).await?;
            if stored != stock_positions as i64 || group_by_positions != stock_positions as i64 {
                return Err(BenchError::Disagree(format!(
                    "{stock_positions} stock positions in memory, {stored} persisted, {group_by_positions} by group by"
                )));
            }
            Ok(BenchReport {
                trades: trades.len(),
                cns_trades,
                batches: measured.batches,
                workers: options.workers,
                stock_positions,
                money_positions,
                in_memory,
                group_by,
                group_by_form: group_by_form.name(),
                publish: measured.publish,
                end_to_end: measured.elapsed,
                fold,
                capture_phases: measured.phases,
            })
        }
        Err(error) => Err(error),
    };
    drop(pool);
    if !options.keep_database {
        sql::drop_database(&admin, BENCH_DATABASE).await?;
    }
    report
}

/// Nets the CNS trades in memory on this thread: best of three passes (the first warms the
/// caches and page-faults the book). Returns (cns trades, time, stock and money positions).
fn net_in_memory(
    reference: &Reference,
    universe: &Universe,
    trades: &[SyntheticTrade],
) -> (usize, Duration, usize, usize) {
    let participant_dense: Vec<u32> = universe
        .participants
        .iter()
        .map(|id| reference.participant_dense(id).unwrap_or(0))
        .collect();
    let security_dense: Vec<u32> = universe
        .securities
        .iter()
        .map(|(isin, _, _)| reference.security_dense(isin).unwrap_or(0))
        .collect();
    let hkd = reference.currency_dense("HKD").unwrap_or(0);
    let minor_units = reference.minor_units(hkd);
    let nettable: Vec<NettableTrade> = trades
        .iter()
        .filter(|trade| !trade.isolated)
        .map(|trade| NettableTrade {
            buyer: participant_dense[trade.buyer as usize],
            seller: participant_dense[trade.seller as usize],
            security: security_dense[trade.security as usize],
            currency: hkd,
            quantity: trade.quantity,
            amount_minor: trade_amount_minor(trade.quantity, trade.price_micros, minor_units)
                .unwrap_or(0),
        })
        .collect();
    let mut book = reference.netting_book();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        book.clear();
        let started = Instant::now();
        book.add_all(std::hint::black_box(&nettable));
        best = best.min(started.elapsed());
    }
    assert_eq!(book.unbalanced_security(), None, "netting is unbalanced");
    (
        nettable.len(),
        best,
        book.stock_position_count(),
        book.money_position_count(),
    )
}

/// What [`end_to_end`] measured.
struct EndToEnd {
    batches: usize,
    publish: Duration,
    elapsed: Duration,
    phases: Vec<(&'static str, Duration)>,
}

/// Publishes the day, then captures it with `options.workers` workers.
async fn end_to_end(
    config: &Config,
    options: &BenchOptions,
    pool: &hostdb::Pool,
    universe: &Universe,
    trades: &[SyntheticTrade],
) -> Result<EndToEnd, BenchError> {
    let client = crate::bus::connect(&config.bus, "ccass-bench").await?;
    let jetstream = crate::bus::jetstream(&config.bus, client);
    let market = Market::parse(BENCH_MARKET)
        .ok_or_else(|| feed::FeedError::Market(BENCH_MARKET.to_owned()))?;
    let subject = trades::bench_trades_subject(&market);
    let stream = trades::recreate_bench_stream(&jetstream).await?;

    let date = format_date(trade_date(&config.cns));
    let run_id = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let per_batch = config.cns.feed_trades_per_batch_max;
    let batch_count = trades.len().div_ceil(per_batch);
    let batches = trades
        .chunks(per_batch)
        .enumerate()
        .map(|(number, chunk)| TradeBatch {
            market: BENCH_MARKET.to_owned(),
            batch_id: format!("bench-{run_id}-{number}"),
            trades: chunk
                .iter()
                .map(|trade| feed::to_record(universe, trade, &date))
                .collect(),
        });
    let started = Instant::now();
    feed::publish_batches_to(
        &jetstream,
        batches,
        config.bus.publish_in_flight_max,
        trades::bench_trades_subject,
    )
    .await?;
    let publish = started.elapsed();

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(BENCH_CONSUMER.to_owned()),
            filter_subject: subject.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await
        .map_err(|e| jetstream_error("create bench consumer")(e.to_string()))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let phases = std::sync::Arc::new(capture::CapturePhases::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..options.workers.max(1))
        .map(|_| {
            tokio::spawn(capture::run_worker_timed(
                config.cns.clone(),
                pool.clone(),
                consumer.clone(),
                stopped.clone(),
                phases.clone(),
            ))
        })
        .collect();
    let limit = Duration::from_secs(600);
    let outcome = loop {
        let captured = sql::captured_batch_count(pool, BENCH_MARKET).await?;
        if captured as usize >= batch_count {
            break Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            break Err(BenchError::Stalled {
                captured,
                expected: batch_count,
                waited_s: limit.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = stop.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    drop(consumer);
    trades::delete_bench_stream(&jetstream).await?;
    Ok(EndToEnd {
        batches: batch_count,
        publish,
        elapsed: outcome?,
        phases: phases.totals().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_reference_is_valid() {
        // Goal: generated ids pass the same checks as seeded ones. Method: validate each.
        let rows = synthetic_reference("HKSCC0", 20, 50);
        for security in &rows.securities {
            crate::ids::Isin::parse(&security.isin).unwrap();
        }
        for participant in &rows.participants {
            crate::ids::ParticipantId::parse(&participant.participant_id).unwrap();
        }
        assert_eq!(rows.participants.len(), 21);
    }
}
