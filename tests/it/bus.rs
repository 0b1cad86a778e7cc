//! The bus against a real nats-server: `bus init` creates the catalogue's streams and consumers,
//! is idempotent, updates what changed, and the streams behave as declared.

use ccass::bus::catalogue::Catalogue;
use ccass::bus::init::{self, Change};
use ccass::bus::subjects::{self, MessageTypeNumber};
use ccass::ids::ParticipantId;

use crate::harness::nats::NatsServer;

#[tokio::test]
async fn bus_init_creates_then_leaves_unchanged_then_updates() {
    // Goal: `ccass bus init` is idempotent and converges on the catalogue.
    // Method: run it three times against a fresh server: created, unchanged, and after a
    // changed stream limit in the catalogue, updated for that stream only.
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let config = server.bus_config();
    let client = ccass::bus::connect(&config, "test").await.unwrap();
    let jetstream = ccass::bus::jetstream(&config, client);
    let catalogue = Catalogue::embedded().unwrap();

    let first = init::run(&config, &jetstream, &catalogue).await.unwrap();
    assert_eq!(first.streams.len(), catalogue.streams.len());
    assert!(
        first.streams.iter().all(|(_, c)| *c == Change::Created),
        "{first:?}"
    );
    assert!(
        first.consumers.iter().all(|(_, c)| *c == Change::Created),
        "{first:?}"
    );
    assert!(!first.consumers.is_empty());

    let second = init::run(&config, &jetstream, &catalogue).await.unwrap();
    assert!(
        second.streams.iter().all(|(_, c)| *c == Change::Unchanged),
        "{second:?}"
    );
    assert!(
        second
            .consumers
            .iter()
            .all(|(_, c)| *c == Change::Unchanged),
        "{second:?}"
    );

    let mut changed = catalogue.clone();
    let events = changed
        .streams
        .iter_mut()
        .find(|s| s.name == "EVENTS")
        .unwrap();
    events.max_age_s += 60;
    let events_max_age_s = events.max_age_s;
    let third = init::run(&config, &jetstream, &changed).await.unwrap();
    for (name, change) in &third.streams {
        let expected = if name == "EVENTS" {
            Change::Updated
        } else {
            Change::Unchanged
        };
        assert_eq!(*change, expected, "{name}");
    }
    let info = jetstream
        .get_stream("EVENTS")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.max_age.as_secs(), events_max_age_s);
}

#[tokio::test]
async fn inbound_stream_stores_a_message_once_per_sender_reference() {
    // Goal: the INBOUND stream deduplicates by Nats-Msg-Id (participant + sender's reference),
    // the basis of "exactly once in effect". Method: publish the same id twice and a new id
    // once; the second ack says duplicate and the stream holds two messages.
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let config = server.bus_config();
    let client = ccass::bus::connect(&config, "test").await.unwrap();
    let jetstream = ccass::bus::jetstream(&config, client);
    init::run(&config, &jetstream, &Catalogue::embedded().unwrap())
        .await
        .unwrap();

    let participant = ParticipantId::parse("B01234").unwrap();
    let subject = subjects::inbound(&participant, MessageTypeNumber::new(540).unwrap());
    let publish = |id: &'static str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let jetstream = jetstream.clone();
        let subject = subject.clone();
        async move {
            jetstream
                .publish_with_headers(subject, headers, "{4:\r\n:20C::SEME//REF1\r\n-}".into())
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    assert!(!publish("B01234:REF1").await.duplicate);
    assert!(publish("B01234:REF1").await.duplicate);
    assert!(!publish("B01234:REF2").await.duplicate);
    let mut stream = jetstream.get_stream("INBOUND").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}

#[tokio::test]
async fn connect_to_a_dead_address_fails_with_the_url() {
    // Goal: a process whose bus is unreachable fails fast with the address in the error.
    let mut config = crate::harness::test_config().bus;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.url = format!("nats://127.0.0.1:{port}");
    config.connect_timeout_ms = 500;
    let error = ccass::bus::connect(&config, "test").await.unwrap_err();
    assert!(matches!(error, ccass::bus::BusError::Unavailable { .. }));
    assert!(error.to_string().contains(&config.url), "{error}");
}

#[test]
fn jetstream_accepts_catalogue_names() {
    // Goal: stream and consumer names in the catalogue are names JetStream accepts
    // (no `.`, `*`, `>` or white space), checked without a server.
    let catalogue = Catalogue::embedded().unwrap();
    let names = catalogue
        .streams
        .iter()
        .map(|s| s.name.as_str())
        .chain(catalogue.consumers.iter().map(|c| c.name.as_str()));
    for name in names {
        assert!(
            !name.is_empty() && !name.contains(['.', '*', '>', ' ', '\t']),
            "{name}"
        );
    }
}
