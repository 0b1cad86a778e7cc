//! Outbound delivery: a participant's messages on `ccass.v1.outbound.{participant}` (stream
//! OUTBOUND) to its PSS session, in order, with output sequence numbers, until the PSS
//! acknowledges them.
//!
//! * State lives in JetStream only (the gateway never writes Postgres): one durable pull
//!   consumer per participant, `outbound-{participant}`, explicit acks, at most
//!   `outbound_in_flight_max` messages unacknowledged. A message is acked in JetStream only when
//!   the PSS acknowledged its output sequence number (the stream sequence) or said at login
//!   that it already holds it.
//! * One session delivers at a time: **the newest login of a participant takes over delivery**;
//!   older sessions of the same participant keep sending and receiving ACK/NAKs but get no more
//!   output messages. The new holder waits until the old one has stopped.
//! * Resume: when a holder starts and the consumer has unacknowledged messages (a session
//!   ended, the gateway died, another session took over), the consumer is re-created to start
//!   just after its ack floor, so everything unacknowledged comes again, in order. Messages up
//!   to the highest one ever delivered (kept in the consumer's metadata across re-creations)
//!   or redelivered by JetStream (ack wait `outbound_ack_wait_ms` passed) are marked possible
//!   duplicates (`{5:{PDE:}}`). Messages up to the login's last output sequence number are
//!   acked without being sent.
//! * Known limit: a message JetStream delivered to the gateway but lost with a NATS connection
//!   drop comes again only after `outbound_ack_wait_ms`, so it can arrive after later ones
//!   (marked PDE). Several gateway replicas serving one participant at once would each take
//!   over; route a participant's sessions to one replica.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};

use super::metrics as names;
use super::{Gateway, protocol};
use crate::bus::subjects;
use crate::ids::ParticipantId;

/// The stream of outbound messages (`subjects/outbound.toml`).
pub const OUTBOUND_STREAM: &str = "OUTBOUND";
/// Consumer metadata: highest stream sequence ever delivered before a re-creation.
const SENT_HIGH: &str = "ccass_sent_high";
/// Consumer metadata: ack floor before a re-creation.
const ACKED_FLOOR: &str = "ccass_acked_floor";

/// The durable consumer of a participant's outbound messages.
pub fn consumer_name(participant: &ParticipantId) -> String {
    format!("outbound-{}", participant.as_str())
}

/// Who delivers a participant's outbound messages: the session holding the latest generation.
pub(super) struct DeliverySlot {
    generation: watch::Sender<u64>,
    running: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(super) struct DeliverySlots {
    slots: std::sync::Mutex<HashMap<String, Arc<DeliverySlot>>>,
}

impl DeliverySlots {
    fn slot(&self, participant: &ParticipantId) -> Arc<DeliverySlot> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .entry(participant.as_str().to_owned())
            .or_insert_with(|| {
                Arc::new(DeliverySlot {
                    generation: watch::Sender::new(0),
                    running: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }
}

/// What one session's delivery needs.
pub(super) struct Delivery {
    pub participant: ParticipantId,
    pub logical_terminal: String,
    /// From the login: the PSS holds every output message up to this number.
    pub last_output_sequence: u64,
    /// Frames to write to the session.
    pub frames: mpsc::Sender<Vec<u8>>,
    /// The highest output sequence number the PSS acknowledged in this session.
    pub acked: watch::Receiver<u64>,
}

/// Takes over the participant's delivery (the newest login wins) and delivers until the
/// session ends or a newer login takes over. Returns why it stopped.
pub(super) async fn deliver(gateway: Arc<Gateway>, mut delivery: Delivery) -> &'static str {
    let slot = gateway.deliveries.slot(&delivery.participant);
    let mut generation = 0;
    slot.generation.send_modify(|current| {
        *current += 1;
        generation = *current;
    });
    let mut holder = slot.generation.subscribe();
    let _running = slot.running.lock().await;
    if *holder.borrow_and_update() != generation {
        return "taken_over";
    }
    let participant = delivery.participant.as_str();
    let (consumer, sent_high) = match prepare_consumer(&gateway, &delivery.participant).await {
        Ok(prepared) => prepared,
        Err(error) => {
            tracing::warn!(participant, %error, "gateway outbound consumer unavailable");
            return "bus";
        }
    };
    let mut messages = match consumer.messages().await {
        Ok(messages) => messages,
        Err(error) => {
            tracing::warn!(participant, %error, "gateway outbound pull failed");
            return "bus";
        }
    };
    let mut in_flight: VecDeque<(u64, async_nats::jetstream::Message)> = VecDeque::new();
    loop {
        tokio::select! {
            changed = holder.changed() => {
                if changed.is_err() || *holder.borrow_and_update() != generation {
                    ::metrics::counter!(names::OUTBOUND_TAKEOVERS_TOTAL).increment(1);
                    return "taken_over";
                }
            }
            changed = delivery.acked.changed() => {
                // Also when the session has ended (sender dropped): its last acknowledgement
                // still reaches JetStream.
                let upto = *delivery.acked.borrow_and_update();
                while in_flight.front().is_some_and(|(sequence, _)| *sequence <= upto) {
                    if let Some((sequence, message)) = in_flight.pop_front() {
                        if let Err(error) = message.ack().await {
                            // JetStream sends it again after the ack wait, marked PDE.
                            tracing::warn!(participant, sequence, %error, "gateway outbound ack not sent");
                        }
                        ::metrics::counter!(names::OUTBOUND_ACKED_TOTAL).increment(1);
                    }
                }
                if changed.is_err() {
                    return "closed";
                }
            }
            next = messages.next() => {
                let message = match next {
                    None => return "bus",
                    Some(Err(error)) => {
                        tracing::warn!(participant, %error, "gateway outbound pull");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Some(Ok(message)) => message,
                };
                let (sequence, delivered) = match message.info() {
                    Ok(info) => (info.stream_sequence, info.delivered),
                    Err(error) => {
                        tracing::warn!(participant, %error, "gateway outbound message without info");
                        continue;
                    }
                };
                if sequence <= delivery.last_output_sequence {
                    // The PSS said at login that it holds this one.
                    if let Err(error) = message.ack().await {
                        tracing::warn!(participant, sequence, %error, "gateway outbound ack not sent");
                    }
                    continue;
                }
                let possible_duplicate = delivered > 1 || sequence <= sent_high;
                let text = protocol::output_message(
                    &String::from_utf8_lossy(&message.payload),
                    &delivery.logical_terminal,
                    sequence,
                    possible_duplicate,
                );
                let message_type = protocol::message_type_of(&text).unwrap_or("unknown").to_owned();
                // A newer login takes over even while this session's writer is stuck.
                tokio::select! {
                    sent = delivery.frames.send(text.into_bytes()) => {
                        if sent.is_err() {
                            return "closed";
                        }
                    }
                    _ = holder.changed() => {
                        ::metrics::counter!(names::OUTBOUND_TAKEOVERS_TOTAL).increment(1);
                        return "taken_over";
                    }
                }
                ::metrics::counter!(names::OUTBOUND_MESSAGES_OUT_TOTAL, "message_type" => message_type).increment(1);
                if possible_duplicate {
                    ::metrics::counter!(names::OUTBOUND_RESENDS_TOTAL).increment(1);
                }
                in_flight.push_back((sequence, message));
            }
        }
    }
}

/// The participant's consumer, re-created just after its ack floor when it has messages out
/// unacknowledged; also the highest stream sequence delivered before (for the PDE mark).
async fn prepare_consumer(
    gateway: &Gateway,
    participant: &ParticipantId,
) -> Result<(PullConsumer, u64), async_nats::Error> {
    let name = consumer_name(participant);
    let stream = gateway.jetstream.get_stream(OUTBOUND_STREAM).await?;
    let config = |deliver_policy, metadata| pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!(
            "gateway delivery to {}'s PSS",
            participant.as_str()
        )),
        filter_subject: subjects::outbound(participant).as_str().to_owned(),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_millis(gateway.config.outbound_ack_wait_ms),
        max_deliver: -1,
        max_ack_pending: i64::try_from(gateway.config.outbound_in_flight_max).unwrap_or(i64::MAX),
        metadata,
        ..Default::default()
    };
    let info = match stream.consumer_info(&name).await {
        Ok(info) => info,
        Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => {
            let created = stream
                .create_consumer(config(DeliverPolicy::All, HashMap::new()))
                .await?;
            return Ok((created, 0));
        }
        Err(error) => return Err(error.into()),
    };
    let remembered = |key: &str| {
        info.config
            .metadata
            .get(key)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let sent_high = remembered(SENT_HIGH).max(info.delivered.stream_sequence);
    let same_limits = info.config.max_ack_pending
        == i64::try_from(gateway.config.outbound_in_flight_max).unwrap_or(i64::MAX)
        && info.config.ack_wait == Duration::from_millis(gateway.config.outbound_ack_wait_ms);
    if info.num_ack_pending == 0 && same_limits {
        return Ok((stream.get_consumer(&name).await?, sent_high));
    }
    let acked_floor = remembered(ACKED_FLOOR).max(info.ack_floor.stream_sequence);
    tracing::info!(
        participant = participant.as_str(),
        acked_floor,
        sent_high,
        unacknowledged = info.num_ack_pending,
        "gateway outbound resumes after the ack floor"
    );
    stream.delete_consumer(&name).await?;
    let metadata = HashMap::from([
        (SENT_HIGH.to_owned(), sent_high.to_string()),
        (ACKED_FLOOR.to_owned(), acked_floor.to_string()),
    ]);
    let created = stream
        .create_consumer(config(
            DeliverPolicy::ByStartSequence {
                start_sequence: acked_floor + 1,
            },
            metadata,
        ))
        .await?;
    Ok((created, sent_high))
}
