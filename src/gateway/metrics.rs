//! Metric names of the participant gateway. Labels are bounded: `message_type` is a FIN
//! message type number (three digits), `code` a NAK code, `cause` one of the handshake
//! failure causes in [`super`].

pub const SESSIONS_OPEN: &str = "ccass_gateway_sessions_open";
pub const MESSAGES_IN_TOTAL: &str = "ccass_gateway_messages_in_total";
pub const ACKS_TOTAL: &str = "ccass_gateway_acks_total";
pub const NAKS_TOTAL: &str = "ccass_gateway_naks_total";
pub const ACK_LATENCY_SECONDS: &str = "ccass_gateway_ack_latency_seconds";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "ccass_gateway_connections_refused_total";
pub const SESSIONS_CLOSED_TOTAL: &str = "ccass_gateway_sessions_closed_total";
pub const OUTBOUND_MESSAGES_OUT_TOTAL: &str = "ccass_gateway_outbound_messages_out_total";
pub const OUTBOUND_RESENDS_TOTAL: &str = "ccass_gateway_outbound_resends_total";
pub const OUTBOUND_ACKED_TOTAL: &str = "ccass_gateway_outbound_acked_total";
pub const OUTBOUND_TAKEOVERS_TOTAL: &str = "ccass_gateway_outbound_takeovers_total";

pub fn describe_all() {
    metrics::describe_gauge!(SESSIONS_OPEN, "logged-in PSS sessions");
    metrics::describe_counter!(
        MESSAGES_IN_TOTAL,
        "inbound FIN messages received, by message type"
    );
    metrics::describe_counter!(ACKS_TOTAL, "inbound messages acknowledged");
    metrics::describe_counter!(NAKS_TOTAL, "inbound messages refused, by NAK code");
    metrics::describe_histogram!(
        ACK_LATENCY_SECONDS,
        metrics::Unit::Seconds,
        "time from a message's last byte to its ACK (JetStream stored it)"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "connections refused before or during login, by cause (TLS handshake failures included)"
    );
    metrics::describe_counter!(
        SESSIONS_CLOSED_TOTAL,
        "sessions closed by the gateway for bad input or idleness, by cause"
    );
    metrics::describe_counter!(
        OUTBOUND_MESSAGES_OUT_TOTAL,
        "output messages written to PSS sessions, by message type (resends included)"
    );
    metrics::describe_counter!(
        OUTBOUND_RESENDS_TOTAL,
        "output messages written again, marked possible duplicate"
    );
    metrics::describe_counter!(
        OUTBOUND_ACKED_TOTAL,
        "output messages the PSS acknowledged (then acked in JetStream)"
    );
    metrics::describe_counter!(
        OUTBOUND_TAKEOVERS_TOTAL,
        "deliveries stopped because a newer login of the participant took over"
    );
}
