//! Monthly partitions of the date-partitioned tables, created ahead of time.
//!
//! Guarantees: creating is idempotent (existing partitions are left alone); rows dated
//! outside every monthly partition are never refused, they land in the table's DEFAULT
//! partition. Create months before rows for them arrive: PostgreSQL refuses to create a
//! month while the DEFAULT partition holds rows of that month.

use time::Date;

use super::{HostDbError, Pool};

/// A table partitioned by month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionedTable {
    /// By `settlement_date`: the partitions of its rows outside settlement runs
    /// (`holding_movements_outside_runs`; each run's rows are a partition of their own, V0021).
    HoldingMovements,
    /// As [`PartitionedTable::HoldingMovements`].
    CashMovements,
    /// By `trade_date`.
    ExchangeTrades,
}

impl PartitionedTable {
    pub const ALL: [PartitionedTable; 3] = [
        PartitionedTable::HoldingMovements,
        PartitionedTable::CashMovements,
        PartitionedTable::ExchangeTrades,
    ];

    pub fn table_name(self) -> &'static str {
        match self {
            PartitionedTable::HoldingMovements => "holding_movements",
            PartitionedTable::CashMovements => "cash_movements",
            PartitionedTable::ExchangeTrades => "exchange_trade_sets",
        }
    }
}

/// Upper bound on months created in one call (the SQL function enforces the same).
pub const MONTHS_AHEAD_MAX: u8 = 120;

/// Creates the monthly partitions of every partitioned table for `month_count` months from
/// the month of `first_month`. Returns how many partitions were created (0 when all existed).
pub async fn create_monthly(
    pool: &Pool,
    first_month: Date,
    month_count: u8,
) -> Result<u32, HostDbError> {
    let month_count = month_count.min(MONTHS_AHEAD_MAX);
    let client = super::client(pool).await?;
    let mut created_count: u32 = 0;
    for table in PartitionedTable::ALL {
        let row = client
            .query_one(
                "SELECT ccass_create_monthly_partitions($1::text::regclass, $2, $3)",
                &[&table.table_name(), &first_month, &i32::from(month_count)],
            )
            .await
            .map_err(|error| {
                HostDbError::from_postgres(
                    format!("create monthly partitions of {}", table.table_name()),
                    error,
                )
            })?;
        let created: i32 = row.get(0);
        // The function counts partitions it created: never negative.
        created_count += created.unsigned_abs();
    }
    Ok(created_count)
}
