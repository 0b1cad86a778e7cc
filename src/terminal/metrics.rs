//! Metric names of the terminal. Labels are bounded: `outcome` is `ok` or an error code of
//! [`super::error::ErrorCode`], `code` an error code.

pub const LOGINS_TOTAL: &str = "ccass_terminal_logins_total";
pub const SESSIONS_OPEN: &str = "ccass_terminal_sessions_open";
pub const REFUSALS_TOTAL: &str = "ccass_terminal_refusals_total";
pub const INSTRUCTIONS_PUBLISHED_TOTAL: &str = "ccass_terminal_instructions_published_total";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "ccass_terminal_connections_refused_total";

pub fn describe_all() {
    metrics::describe_counter!(LOGINS_TOTAL, "terminal logins, by outcome");
    metrics::describe_gauge!(SESSIONS_OPEN, "terminal sessions in memory");
    metrics::describe_counter!(
        REFUSALS_TOTAL,
        "requests the terminal refused, by error code"
    );
    metrics::describe_counter!(
        INSTRUCTIONS_PUBLISHED_TOTAL,
        "terminal SIs and cancellations stored by JetStream on INBOUND"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "TLS connections refused (handshake, certificate, revocation)"
    );
}
