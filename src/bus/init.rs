//! `ccass bus init`: create or update the JetStream streams and durable consumers declared in
//! the catalogue. Idempotent: a second run reports every stream and consumer `unchanged`.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use super::catalogue::{
    Catalogue, ConsumerSpec, DeliverPolicy, Discard, Retention, Storage, StreamSpec,
};
use super::{BusConfig, BusError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        })
    }
}

/// What `init` did, stream by stream and consumer by consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub streams: Vec<(String, Change)>,
    pub consumers: Vec<(String, Change)>,
}

pub async fn run(
    config: &BusConfig,
    jetstream: &jetstream::Context,
    catalogue: &Catalogue,
) -> Result<InitReport, BusError> {
    let mut report = InitReport {
        streams: Vec::new(),
        consumers: Vec::new(),
    };
    for spec in &catalogue.streams {
        let bytes_max = config.stream_bytes_max(&spec.name)?;
        let change = apply_stream(
            jetstream,
            stream_config(spec, config.stream_replicas, bytes_max),
        )
        .await?;
        report.streams.push((spec.name.clone(), change));
    }
    for spec in &catalogue.consumers {
        let change = apply_consumer(jetstream, spec).await?;
        report
            .consumers
            .push((format!("{}/{}", spec.stream, spec.name), change));
    }
    Ok(report)
}

fn jetstream_error(operation: String, error: impl fmt::Display) -> BusError {
    BusError::JetStream {
        operation,
        message: error.to_string(),
    }
}

pub fn stream_config(spec: &StreamSpec, replicas: usize, bytes_max: i64) -> stream::Config {
    stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: match spec.retention {
            Retention::Limits => stream::RetentionPolicy::Limits,
            Retention::Interest => stream::RetentionPolicy::Interest,
            Retention::Workqueue => stream::RetentionPolicy::WorkQueue,
        },
        storage: match spec.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        discard: match spec.discard {
            Discard::Old => stream::DiscardPolicy::Old,
            Discard::New => stream::DiscardPolicy::New,
        },
        max_age: Duration::from_secs(spec.max_age_s),
        max_bytes: bytes_max,
        max_message_size: spec.max_message_bytes,
        duplicate_window: Duration::from_secs(spec.duplicate_window_s),
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The fields ccass sets; the server fills in the rest, so compare only these.
fn stream_differs(have: &stream::Config, want: &stream::Config) -> bool {
    let mut have_subjects = have.subjects.clone();
    let mut want_subjects = want.subjects.clone();
    have_subjects.sort();
    want_subjects.sort();
    have_subjects != want_subjects
        || have.retention != want.retention
        || have.storage != want.storage
        || have.discard != want.discard
        || have.max_age != want.max_age
        || have.max_bytes != want.max_bytes
        || have.max_message_size != want.max_message_size
        || have.duplicate_window != want.duplicate_window
        || have.num_replicas != want.num_replicas
}

async fn apply_stream(
    jetstream: &jetstream::Context,
    want: stream::Config,
) -> Result<Change, BusError> {
    let name = want.name.clone();
    match jetstream.get_stream(&name).await {
        Ok(existing) => {
            if !stream_differs(&existing.cached_info().config, &want) {
                return Ok(Change::Unchanged);
            }
            jetstream
                .update_stream(want)
                .await
                .map_err(|error| jetstream_error(format!("update stream {name}"), error))?;
            Ok(Change::Updated)
        }
        Err(error) if is_stream_not_found(&error) => {
            jetstream
                .create_stream(want)
                .await
                .map_err(|error| jetstream_error(format!("create stream {name}"), error))?;
            Ok(Change::Created)
        }
        Err(error) => Err(jetstream_error(format!("look up stream {name}"), error)),
    }
}

fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

pub fn consumer_config(spec: &ConsumerSpec) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(spec.name.clone()),
        filter_subject: spec.filter_subject.clone(),
        deliver_policy: match spec.deliver_policy {
            DeliverPolicy::All => consumer::DeliverPolicy::All,
            DeliverPolicy::New => consumer::DeliverPolicy::New,
        },
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_millis(spec.ack_wait_ms),
        max_deliver: spec.max_deliver,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    }
}

fn consumer_differs(have: &consumer::Config, want: &consumer::pull::Config) -> bool {
    have.filter_subject != want.filter_subject
        || have.deliver_policy != want.deliver_policy
        || have.ack_policy != want.ack_policy
        || have.ack_wait != want.ack_wait
        || have.max_deliver != want.max_deliver
        || have.max_ack_pending != want.max_ack_pending
}

async fn apply_consumer(
    jetstream: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<Change, BusError> {
    let label = format!("{}/{}", spec.stream, spec.name);
    let stream = jetstream
        .get_stream(&spec.stream)
        .await
        .map_err(|error| jetstream_error(format!("look up stream {}", spec.stream), error))?;
    let want = consumer_config(spec);
    match stream.consumer_info(&spec.name).await {
        Ok(info) => {
            if !consumer_differs(&info.config, &want) {
                return Ok(Change::Unchanged);
            }
            stream
                .update_consumer(want)
                .await
                .map_err(|error| jetstream_error(format!("update consumer {label}"), error))?;
            Ok(Change::Updated)
        }
        Err(error) if error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
            stream
                .create_consumer(want)
                .await
                .map_err(|error| jetstream_error(format!("create consumer {label}"), error))?;
            Ok(Change::Created)
        }
        Err(error) => Err(jetstream_error(format!("look up consumer {label}"), error)),
    }
}
