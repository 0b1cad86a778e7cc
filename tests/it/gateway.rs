//! The Participant Gateway against real servers: a private nats-server with the catalogue's
//! streams, a private slapd and the auth service (certificate → participant), a fresh
//! database for the auth service's audit trail, and a CA in a temporary folder. Every test
//! drives the gateway over TLS as a PSS would: through `ccass::pss`, raw frames, or
//! `openssl s_client`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ccass::auth::service::{AuthService, serve};
use ccass::gateway::protocol::{self, Outcome, Reply};
use ccass::gateway::{Gateway, GatewayConfig};
use ccass::pki::{self, PkiConfig};
use ccass::pss::{self, PssConfig, PssError, Session};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::oneshot;

use crate::harness::ldap::Slapd;
use crate::harness::nats::{NatsServer, initialised_bus};
use crate::harness::postgres::{self, TestDatabase};

/// A valid MT540 (public sample `mt540-pwintegr-1.fin`) with the sender and reference filled in.
fn mt540(sender: &str, reference: &str) -> String {
    let sample = std::fs::read_to_string(
        crate::harness::repo_root().join("tests/data/samples/mt540-pwintegr-1.fin"),
    )
    .unwrap();
    sample.replace("FOOLUS30AXXX", sender).replace(
        ":20C::SEME//00000000000007",
        &format!(":20C::SEME//{reference}"),
    )
}

/// A gateway on private servers.
struct World {
    slapd: Slapd,
    nats: NatsServer,
    database: TestDatabase,
    nats_client: async_nats::Client,
    auth_stop: Option<oneshot::Sender<()>>,
    pki_dir: tempfile::TempDir,
    pki: PkiConfig,
    address: SocketAddr,
    jetstream: async_nats::jetstream::Context,
    stops: Vec<oneshot::Sender<()>>,
}

impl World {
    async fn start(test: &str, configure: impl FnOnce(&mut GatewayConfig)) -> Option<World> {
        World::start_with_ack_window(test, configure, None).await
    }

    /// As `start`, with the gateway handed a JetStream context that admits at most
    /// `ack_window` unacknowledged publishes (async-nats' default is 5,000).
    async fn start_with_ack_window(
        test: &str,
        configure: impl FnOnce(&mut GatewayConfig),
        ack_window: Option<usize>,
    ) -> Option<World> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let database = postgres::database(test).await?;
        let nats = NatsServer::start().await?;
        let slapd = Slapd::start().await?;
        let config = crate::harness::test_config();
        let mut bus = nats.bus_config();
        // A dead server shows as NAK G03 within a second rather than five.
        bus.publish_ack_timeout_ms = 1000;
        let (nats_client, jetstream) = initialised_bus(&bus, "test").await;

        let auth_stop = start_auth(&slapd, &database, &nats_client).await;
        let mut stops = Vec::new();

        let pki_dir = tempfile::tempdir().unwrap();
        let pki = PkiConfig {
            dir: pki_dir.path().join("ca"),
            ca_validity_days: 30,
            certificate_validity_days: 30,
        };
        pki::init(&pki).unwrap();
        let server = pki::issue_server(
            &pki,
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
            &pki.dir,
        )
        .unwrap();
        let mut gateway_config = config.gateway.clone();
        gateway_config.listen_addr = "127.0.0.1:0".to_owned();
        gateway_config.certificate_path = server.certificate_path;
        gateway_config.key_path = server.key_path;
        gateway_config.store_timeout_ms = 1000;
        configure(&mut gateway_config);
        let listener = Gateway::bind(&gateway_config).await.unwrap();
        let address = listener.local_addr().unwrap();
        let gateway = Gateway::new(
            gateway_config,
            &pki,
            ccass::auth::AuthClient::new(nats_client.clone(), &config.auth),
            match ack_window {
                Some(window) => async_nats::jetstream::context::ContextBuilder::new()
                    .timeout(Duration::from_millis(bus.publish_ack_timeout_ms))
                    .max_ack_inflight(window)
                    .build(nats_client.clone()),
                None => jetstream.clone(),
            },
        )
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(gateway.serve(listener, async {
            let _ = stopped.await;
        }));
        Some(World {
            slapd,
            nats,
            database,
            nats_client,
            auth_stop: Some(auth_stop),
            pki_dir,
            pki,
            address,
            jetstream,
            stops,
        })
    }

    /// A PSS configuration with a fresh certificate for `participant`.`user`.
    fn pss(&self, participant: &str, user: &str) -> PssConfig {
        let issued = pki::issue_client(&self.pki, participant, user, self.pki_dir.path()).unwrap();
        PssConfig {
            address: self.address.to_string(),
            server_name: "localhost".to_owned(),
            ca_certificate_path: self.pki.ca_certificate_path(),
            certificate_path: issued.certificate_path,
            key_path: issued.key_path,
            frame_bytes_max: 65_536,
            in_flight_max: 64,
        }
    }

    async fn inbound_messages(&self) -> u64 {
        let mut stream = self.jetstream.get_stream("INBOUND").await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Stops the auth service (the gateway's authorisations then time out).
    fn stop_auth(&mut self) {
        if let Some(stop) = self.auth_stop.take() {
            let _ = stop.send(());
        }
    }

    async fn restart_auth(&mut self) {
        self.stop_auth();
        self.auth_stop = Some(start_auth(&self.slapd, &self.database, &self.nats_client).await);
    }

    fn stop(mut self) {
        self.stop_auth();
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Starts the auth service on `nats_client`; sending on the returned channel stops it.
async fn start_auth(
    slapd: &Slapd,
    database: &TestDatabase,
    nats_client: &async_nats::Client,
) -> oneshot::Sender<()> {
    let config = crate::harness::test_config();
    let service = Arc::new(AuthService::new(
        slapd.directory_config(),
        config.auth.clone(),
        database.pool.clone(),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn({
        let nats_client = nats_client.clone();
        async move {
            serve(service, nats_client, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        }
    });
    nats_client.flush().await.unwrap();
    stop
}

fn code(reply: &Reply) -> &str {
    match &reply.outcome {
        Outcome::Ack => "ACK",
        Outcome::Nak { code, .. } => code,
    }
}

#[tokio::test]
async fn sent_messages_are_acked_once_stored_and_duplicates_are_naked() {
    // Goal: ACK means JetStream stored the message on the participant's inbound subject under
    // participant:SEME; a repeated reference, a foreign sender and an invalid message are NAKed
    // with their codes while the session goes on. Method: one PSS session sends a pipelined
    // batch through ccass::pss, then the stream is read back.
    let Some(world) = World::start("gateway_send_ack", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    let mut session = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    let messages = vec![
        mt540("B01234XXXXXX", "REF0001"),
        mt540("B01234XXXXXX", "REF0002"),
        mt540("B01234XXXXXX", "REF0001"),
        mt540("B05678XXXXXX", "REF0003"),
        "{1:F01B01234XXXXXX0000000000}{2:I540".to_owned(),
        mt540("B01234XXXXXX", "REF0004"),
    ];
    let replies = session.send_all(&messages).await.unwrap();
    let codes: Vec<&str> = replies.iter().map(code).collect();
    assert_eq!(codes[..4], ["ACK", "ACK", "G01", "G02"], "{replies:?}");
    assert!(
        codes[4].starts_with('H') || codes[4].starts_with('T'),
        "{replies:?}"
    );
    assert_eq!(codes[5], "ACK");
    let sequences: Vec<u64> = replies.iter().map(|reply| reply.input_sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
    session.close().await.unwrap();

    assert_eq!(world.inbound_messages().await, 3);
    let stream = world.jetstream.get_stream("INBOUND").await.unwrap();
    let stored = stream
        .get_last_raw_message_by_subject(
            ccass::bus::subjects::inbound(
                &ccass::ids::ParticipantId::parse("B01234").unwrap(),
                ccass::bus::subjects::MessageTypeNumber::new(540).unwrap(),
            )
            .as_str(),
        )
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&stored.payload).unwrap(),
        messages[5].as_str()
    );
    let message_id = stored
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .unwrap();
    assert_eq!(message_id.as_str(), "B01234:REF0004");
    let header = |name: &str| {
        stored
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    };
    assert_eq!(
        header(ccass::bus::inbound::INPUT_SEQUENCE).as_deref(),
        Some("6")
    );
    assert_eq!(
        header(ccass::bus::inbound::USER).as_deref(),
        Some("B01234.ops1")
    );
    assert_eq!(
        header(ccass::bus::inbound::CHANNEL).as_deref(),
        Some("gateway")
    );
    world.stop();
}

#[tokio::test]
async fn foreign_and_revoked_certificates_are_refused() {
    // Goal: only certificates of our CA that are not revoked get a session, and a revocation
    // takes effect without restarting the gateway. Method: connect with a certificate of
    // another CA; connect with ours, revoke it with pki::revoke, connect again.
    let Some(world) = World::start("gateway_certificates", |_| {}).await else {
        return;
    };
    let other_dir = tempfile::tempdir().unwrap();
    let other = PkiConfig {
        dir: other_dir.path().to_owned(),
        ..world.pki.clone()
    };
    pki::init(&other).unwrap();
    let foreign = pki::issue_client(&other, "B01234", "ops1", other_dir.path()).unwrap();
    let mut config = world.pss("B01234", "ops1");
    let ours = (config.certificate_path.clone(), config.key_path.clone());
    config.certificate_path = foreign.certificate_path;
    config.key_path = foreign.key_path;
    let refused = Session::connect(&config, "B01234XXXXXX", 0).await;
    assert!(
        matches!(
            refused,
            Err(PssError::Tls { .. } | PssError::Frame(_) | PssError::Closed)
        ),
        "a foreign certificate must fail the handshake: {:?}",
        refused.err()
    );

    (config.certificate_path, config.key_path) = ours;
    let session = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    session.close().await.unwrap();
    pki::revoke(&world.pki, &config.certificate_path).unwrap();
    match Session::connect(&config, "B01234XXXXXX", 0).await {
        Err(PssError::Refused(reason)) => assert!(reason.contains("revoked"), "{reason}"),
        other => panic!("a revoked certificate must be refused: {:?}", other.err()),
    }
    world.stop();
}

#[tokio::test]
async fn a_login_for_another_participant_is_refused() {
    // Goal: a PSS can never act as another participant's terminal. Method: log in with
    // B01234's certificate naming B05678's logical terminal.
    let Some(world) = World::start("gateway_login_foreign", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    match Session::connect(&config, "B05678XXXXXX", 0).await {
        Err(PssError::Refused(reason)) => assert!(reason.contains("B01234"), "{reason}"),
        other => panic!("login must be refused: {:?}", other.err()),
    }
    world.stop();
}

/// A raw TLS session after login, for writing bytes the library would never write.
async fn raw_session(config: &PssConfig) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(pss::client_tls_config(config).unwrap()));
    let tcp = tokio::net::TcpStream::connect(&config.address)
        .await
        .unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    protocol::write_frame(&mut tls, protocol::login("B01234XXXXXX", 0).as_bytes())
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let answer = protocol::read_frame(&mut tls, 65_536)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with(protocol::LOGIN_OK.as_bytes()));
    tls
}

#[tokio::test]
async fn bad_frames_get_a_nak_and_a_close_without_harming_other_sessions() {
    // Goal: garbage where a length prefix belongs and an oversized frame each get NAK G04 and
    // a clean close, and another session of the same participant keeps working. Method: raw
    // TLS sessions write bad bytes while a library session sends before and after.
    let Some(world) = World::start("gateway_bad_frames", |config| {
        config.frame_bytes_max = 4096;
    })
    .await
    else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    let mut good = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    let before = good
        .send_all(&[mt540("B01234XXXXXX", "GOOD0001")])
        .await
        .unwrap();
    assert_eq!(code(&before[0]), "ACK");

    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &b"999999"[..],
        &b"004097"[..],
    ] {
        let mut raw = raw_session(&config).await;
        raw.write_all(bad).await.unwrap();
        raw.flush().await.unwrap();
        let answer = protocol::read_frame(&mut raw, 65_536)
            .await
            .unwrap()
            .unwrap();
        let reply = Reply::parse(std::str::from_utf8(&answer).unwrap()).unwrap();
        assert_eq!(code(&reply), "G04", "{reply:?}");
        let closed = tokio::time::timeout(
            Duration::from_secs(5),
            protocol::read_frame(&mut raw, 65_536),
        )
        .await
        .unwrap();
        assert!(matches!(closed, Ok(None) | Err(_)), "{closed:?}");
    }

    let after = good
        .send_all(&[mt540("B01234XXXXXX", "GOOD0002")])
        .await
        .unwrap();
    assert_eq!(code(&after[0]), "ACK");
    assert_eq!(after[0].input_sequence, 2);
    assert_eq!(world.inbound_messages().await, 2);
    world.stop();
}

#[tokio::test]
async fn openssl_s_client_can_act_as_a_pss() {
    // Goal: the protocol is plain enough for standard tools. Method: openssl s_client with
    // the participant's certificate writes a login frame and one framed MT540, and the ACK is
    // read back from its output; the message is in the stream.
    let Some(world) = World::start("gateway_openssl", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    let login = protocol::encode_frame(protocol::login("B01234XXXXXX", 0).as_bytes()).unwrap();
    let message = protocol::encode_frame(mt540("B01234XXXXXX", "OPENSSL1").as_bytes()).unwrap();
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-tls1_3", "-connect"])
        .arg(world.address.to_string())
        .arg("-servername")
        .arg("localhost")
        .arg("-CAfile")
        .arg(&config.ca_certificate_path)
        .arg("-cert")
        .arg(&config.certificate_path)
        .arg("-key")
        .arg(&config.key_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&login).await.unwrap();
    stdin.write_all(&message).await.unwrap();
    stdin.flush().await.unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut output = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt as _;
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&output).contains("{451:") {
            let count = stdout.read(&mut buffer).await.unwrap();
            if count == 0 {
                break;
            }
            output.extend_from_slice(&buffer[..count]);
        }
    })
    .await;
    drop(stdin);
    let _ = child.kill().await;
    read.unwrap();
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("LOGIN OK B01234XXXXXX"), "{text}");
    assert!(text.contains("{1:F21B01234XXXXXX0000000001}"), "{text}");
    assert!(text.contains("{451:0}"), "{text}");
    assert_eq!(world.inbound_messages().await, 1);
    world.stop();
}

#[tokio::test]
async fn every_acked_message_survives_a_nats_server_kill() {
    // Goal: nothing ACKed is lost when nats-server dies mid-stream, and the PSS hears a NAK
    // or a close for the rest, never silence. Method: send batches, kill the server halfway,
    // restart it, count the ACKed references and find each one in the stream.
    let Some(mut world) = World::start("gatewaynats_kill", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    let mut session = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    let mut acked = Vec::new();
    let mut unanswered_error = None;
    for batch in 0..6 {
        if batch == 3 {
            world.nats.kill();
        }
        let messages: Vec<String> = (0..50)
            .map(|index| mt540("B01234XXXXXX", &format!("K{batch:02}{index:04}")))
            .collect();
        let outcome = tokio::time::timeout(Duration::from_secs(30), session.send_all(&messages))
            .await
            .expect("the gateway answers or closes, never stays silent");
        match outcome {
            Ok(replies) => {
                for (reply, message) in replies.iter().zip(&messages) {
                    if reply.outcome == Outcome::Ack {
                        acked.push(message.clone());
                    } else {
                        assert_eq!(code(reply), "G03", "{reply:?}");
                    }
                }
            }
            Err(error) => {
                unanswered_error = Some(error.to_string());
                break;
            }
        }
    }
    assert!(
        acked.len() >= 150,
        "the first three batches were acked: {}",
        acked.len()
    );
    world.nats.resume().await;
    let bus = world.nats.bus_config();
    let client = ccass::bus::connect(&bus, "test-check").await.unwrap();
    let jetstream = ccass::bus::jetstream(&bus, client);
    let mut stream = jetstream.get_stream("INBOUND").await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    assert!(
        stored >= acked.len() as u64,
        "stored {stored} < acked {} ({unanswered_error:?})",
        acked.len()
    );
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut stored_ids = std::collections::HashSet::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .unwrap()
                .as_str()
                .to_owned();
            stored_ids.insert(id);
        }
    }
    for message in &acked {
        let reference = message
            .split(":20C::SEME//")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim();
        assert!(
            stored_ids.contains(&format!("B01234:{reference}")),
            "acked reference {reference} is not in the stream"
        );
    }
    world.stop();
}

#[tokio::test]
async fn a_session_never_stalls_on_the_jetstream_contexts_ack_window() {
    // Goal: a session whose unacknowledged publishes reach the JetStream context's window
    // (async-nats' 5,000 by default, shared by all sessions) still answers every message. The
    // one-task session loop used to wait for a publish permit without polling the acks that
    // would free its own permits: once every session waited so, the gateway stalled for good
    // (`ccass bench gateway` hung at half the maximum rate). Method: hand the gateway a
    // context with a window of 16, freeze nats-server while the PSS sends 200 messages (64
    // in flight), let it go on, and require an answer to each.
    let Some(world) = World::start_with_ack_window("gatewayackwindow", |_| {}, Some(16)).await
    else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    let mut session = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    let messages: Vec<String> = (0..200)
        .map(|index| mt540("B01234XXXXXX", &format!("W{index:06}")))
        .collect();
    world.nats.pause();
    let sending = tokio::spawn(async move {
        let replies = session.send_all(&messages).await;
        (session, replies)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.nats.unpause();
    let (_session, replies) = tokio::time::timeout(Duration::from_secs(20), sending)
        .await
        .expect("every message is answered: the session did not stall")
        .unwrap();
    let replies = replies.unwrap();
    assert_eq!(replies.len(), 200);
    let acked = replies
        .iter()
        .filter(|reply| reply.outcome == Outcome::Ack)
        .count();
    for reply in &replies {
        assert!(matches!(code(reply), "ACK" | "G03"), "{reply:?}");
    }
    assert!(acked > 0, "nothing acked after nats-server went on");
    assert!(world.inbound_messages().await >= acked as u64);
    world.stop();
}

#[tokio::test]
async fn pss_send_prints_each_reply_and_fails_on_a_nak() {
    // Goal: the CLI a back office scripts against prints one line per file and exits non-zero
    // when any message was NAKed. Method: run `ccass pss send` with two files carrying the
    // same reference: the first is ACKed, the second NAKed G01.
    let Some(world) = World::start("gateway_pss_send", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    let first = world.pki_dir.path().join("first.fin");
    let second = world.pki_dir.path().join("second.fin");
    std::fs::write(&first, mt540("B01234XXXXXX", "CLI0001")).unwrap();
    std::fs::write(&second, mt540("B01234XXXXXX", "CLI0001")).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccass"))
        .arg("--config-dir")
        .arg(crate::harness::repo_root().join("config"))
        .args(["--env", "test", "pss", "send", "--cert"])
        .arg(&config.certificate_path)
        .arg("--ca")
        .arg(&config.ca_certificate_path)
        .arg("--address")
        .arg(&config.address)
        .arg(&first)
        .arg(&second)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].ends_with("first.fin ACK 1"), "{stdout}");
    assert!(lines[1].contains("second.fin NAK 2 G01"), "{stdout}");
    world.stop();
}

#[test]
fn pss_default_logical_terminal_pads_with_x() {
    // Goal: the default logical terminal is the participant id padded to 12. Method: compute it.
    assert_eq!(pss::default_logical_terminal("B01234"), "B01234XXXXXX");
}

#[tokio::test]
async fn a_user_without_si_input_is_naked_and_an_auth_outage_fails_closed() {
    // Goal: every message is authorised for the certificate's user: a user without si.input
    // gets NAK G05 and nothing is stored; when the auth service does not answer, messages get
    // NAK G06 (never an ACK) and the session keeps serving, so they go through once it is back.
    // Method: B01234.auth1 (si-authorise group only) sends; then B01234.ops1 logs in, the auth
    // service is stopped, two messages are sent, the service restarted, the second resent.
    let Some(mut world) = World::start("gateway_authorise", |_| {}).await else {
        return;
    };
    let checker = world.pss("B01234", "auth1");
    let mut session = Session::connect(&checker, "B01234XXXXXX", 0).await.unwrap();
    let replies = session
        .send_all(&[mt540("B01234XXXXXX", "AUTH0001")])
        .await
        .unwrap();
    assert_eq!(code(&replies[0]), "G05", "{replies:?}");
    match &replies[0].outcome {
        Outcome::Nak { reason, .. } => assert!(reason.contains("B01234.auth1"), "{reason}"),
        Outcome::Ack => unreachable!(),
    }
    session.close().await.unwrap();
    assert_eq!(world.inbound_messages().await, 0);

    let maker = world.pss("B01234", "ops1");
    let mut session = Session::connect(&maker, "B01234XXXXXX", 0).await.unwrap();
    world.stop_auth();
    let outage = vec![
        mt540("B01234XXXXXX", "AUTH0002"),
        mt540("B01234XXXXXX", "AUTH0003"),
    ];
    let replies = tokio::time::timeout(Duration::from_secs(30), session.send_all(&outage))
        .await
        .expect("the gateway answers while auth is down")
        .unwrap();
    let codes: Vec<&str> = replies.iter().map(code).collect();
    assert_eq!(codes, ["G06", "G06"], "{replies:?}");
    assert_eq!(world.inbound_messages().await, 0);
    world.restart_auth().await;
    let replies = session.send_all(&outage[1..]).await.unwrap();
    assert_eq!(code(&replies[0]), "ACK", "{replies:?}");
    assert_eq!(replies[0].input_sequence, 3);
    assert_eq!(world.inbound_messages().await, 1);
    world.stop();
}

#[tokio::test]
async fn an_expired_certificate_is_refused_at_the_handshake_and_counted() {
    // Goal: a certificate of our CA whose validity has ended gets no session, and the refusal
    // is counted by cause in /metrics. Method: issue a certificate valid for one day that
    // ended yesterday, connect, render the metrics.
    let Some(world) = World::start("gateway_expired", |_| {}).await else {
        return;
    };
    let metrics = ccass::telemetry::metrics_handle();
    let mut config = world.pss("B01234", "ops1");
    let now = time::OffsetDateTime::now_utc();
    let expired = pki::issue_client_valid_between(
        &world.pki,
        "B01234",
        "ops1",
        &world.pki_dir.path().join("expired"),
        now - time::Duration::days(2),
        now - time::Duration::days(1),
    )
    .unwrap();
    config.certificate_path = expired.certificate_path;
    config.key_path = expired.key_path;
    let refused = Session::connect(&config, "B01234XXXXXX", 0).await;
    assert!(
        matches!(
            refused,
            Err(PssError::Tls { .. } | PssError::Frame(_) | PssError::Closed)
        ),
        "an expired certificate must fail the handshake: {:?}",
        refused.err()
    );
    // The gateway counts the refusal once its side of the handshake has failed.
    let counted = r#"ccass_gateway_connections_refused_total{cause="tls_certificate_expired"}"#;
    let mut text = String::new();
    for _ in 0..50 {
        text = metrics.render();
        if text.contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains(counted), "{text}");
    world.stop();
}

/// An MT548-like output message for `participant` with reference `reference`.
fn output(participant: &str, reference: &str) -> String {
    let terminal = pss::default_logical_terminal(participant);
    format!(
        "{{1:F01{terminal}0000000000}}{{2:I548{terminal}N}}{{4:\r\n:16R:GENL\r\n:20C::SEME//{reference}\r\n:16S:GENL\r\n-}}"
    )
}

fn reference_of(output: &protocol::OutputMessage) -> String {
    output
        .text
        .split(":20C::SEME//")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap()
        .to_owned()
}

impl World {
    /// Publishes an output message for `participant`; returns its stream sequence.
    async fn publish_output(&self, participant: &str, reference: &str) -> u64 {
        let subject =
            ccass::bus::subjects::outbound(&ccass::ids::ParticipantId::parse(participant).unwrap());
        self.jetstream
            .publish(subject, output(participant, reference).into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }
}

async fn receive(session: &mut Session) -> protocol::OutputMessage {
    tokio::time::timeout(Duration::from_secs(10), session.receive())
        .await
        .expect("an output message within 10 s")
        .unwrap()
}

#[tokio::test]
async fn outbound_resumes_after_reconnect_in_order_marked_possible_duplicate() {
    // Goal: a participant's output messages reach its PSS in order with their stream sequence
    // as output sequence number; what the PSS did not acknowledge comes again after it
    // reconnects, marked {PDE:}, and nothing is lost or skipped; what its login says it holds
    // is not sent again; other participants' messages never reach it. Method: publish
    // interleaved messages for B01234 and B05678, receive three and acknowledge two, reconnect,
    // receive the rest (and one published while connected), reconnect claiming to hold one more.
    let Some(world) = World::start("gateway_outbound_resume", |_| {}).await else {
        return;
    };
    let mut sequences = Vec::new();
    for index in 1..=5 {
        sequences.push(world.publish_output("B01234", &format!("OUT{index}")).await);
        world
            .publish_output("B05678", &format!("OTHER{index}"))
            .await;
    }
    let config = world.pss("B01234", "ops1");
    let mut session = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(receive(&mut session).await);
    }
    assert_eq!(
        first.iter().map(reference_of).collect::<Vec<_>>(),
        ["OUT1", "OUT2", "OUT3"]
    );
    assert_eq!(
        first.iter().map(|o| o.output_sequence).collect::<Vec<_>>(),
        sequences[..3]
    );
    assert!(first.iter().all(|o| !o.possible_duplicate), "{first:?}");
    assert!(
        first[0]
            .text
            .starts_with(&format!("{{1:F01B01234XXXXXX{:010}}}", sequences[0]))
    );
    session.acknowledge(sequences[1]).await.unwrap();
    // An inbound message on the same session still gets its ACK (and input number 1).
    let replies = session
        .send_all(&[mt540("B01234XXXXXX", "BOTHWAYS")])
        .await
        .unwrap();
    assert_eq!(code(&replies[0]), "ACK");
    assert_eq!(replies[0].input_sequence, 1);
    session.close().await.unwrap();

    let mut session = Session::connect(&config, "B01234XXXXXX", sequences[1])
        .await
        .unwrap();
    let again = receive(&mut session).await;
    assert_eq!(reference_of(&again), "OUT3");
    assert_eq!(again.output_sequence, sequences[2]);
    assert!(again.possible_duplicate, "{}", again.text);
    assert!(again.text.contains("{5:{PDE:}}"), "{}", again.text);
    let rest = [receive(&mut session).await, receive(&mut session).await];
    assert_eq!(
        rest.iter().map(reference_of).collect::<Vec<_>>(),
        ["OUT4", "OUT5"]
    );
    let late = world.publish_output("B01234", "OUT6").await;
    let sixth = receive(&mut session).await;
    assert_eq!(
        (reference_of(&sixth), sixth.output_sequence),
        ("OUT6".to_owned(), late)
    );
    assert!(!sixth.possible_duplicate);
    session.acknowledge(sequences[3]).await.unwrap();
    session.close().await.unwrap();

    // The PSS says it holds OUT5 although it never acknowledged it: OUT6 comes next.
    let mut session = Session::connect(&config, "B01234XXXXXX", sequences[4])
        .await
        .unwrap();
    let next = receive(&mut session).await;
    assert_eq!(reference_of(&next), "OUT6");
    assert!(next.possible_duplicate);
    session.acknowledge(next.output_sequence).await.unwrap();
    session.close().await.unwrap();
    // Everything was acknowledged: a new session gets nothing until a new message.
    let mut session = Session::connect(&config, "B01234XXXXXX", late)
        .await
        .unwrap();
    let newest = world.publish_output("B01234", "OUT7").await;
    let seventh = receive(&mut session).await;
    assert_eq!(
        (reference_of(&seventh), seventh.output_sequence),
        ("OUT7".to_owned(), newest)
    );
    assert!(!seventh.possible_duplicate);
    world.stop();
}

#[tokio::test]
async fn the_newest_login_of_a_participant_takes_over_outbound_delivery() {
    // Goal: with two sessions of one participant open, output messages go to one only: the
    // newest login, which also gets what the older one left unacknowledged (marked PDE); the
    // older keeps its inbound service. Method: session A receives OUT1 without acknowledging;
    // session B logs in, receives OUT1 again and OUT2; A receives nothing more but still gets
    // an ACK for an MT540.
    let Some(world) = World::start("gateway_outbound_takeover", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    world.publish_output("B01234", "OUT1").await;
    let mut older = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    assert_eq!(reference_of(&receive(&mut older).await), "OUT1");
    let mut newer = Session::connect(&config, "B01234XXXXXX", 0).await.unwrap();
    let taken = receive(&mut newer).await;
    assert_eq!(reference_of(&taken), "OUT1");
    assert!(taken.possible_duplicate);
    world.publish_output("B01234", "OUT2").await;
    let second = receive(&mut newer).await;
    assert_eq!(reference_of(&second), "OUT2");
    newer.acknowledge(second.output_sequence).await.unwrap();
    let replies = older
        .send_all(&[mt540("B01234XXXXXX", "OLDER1")])
        .await
        .unwrap();
    assert_eq!(code(&replies[0]), "ACK", "{replies:?}");
    let nothing = tokio::time::timeout(Duration::from_millis(1500), older.receive()).await;
    assert!(
        nothing.is_err(),
        "the older session got output: {nothing:?}"
    );
    world.stop();
}

#[tokio::test]
async fn pss_listen_keeps_its_place_across_restarts() {
    // Goal: the PSS library's listener records what it holds and a restart resumes after it:
    // each message handled once, in order, none skipped. Method: run pss::listen for two
    // messages, publish more, run it again with the same state file for three.
    let Some(world) = World::start("gateway_pss_listen", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    for index in 1..=3 {
        world.publish_output("B01234", &format!("L{index}")).await;
    }
    let state_path = world.pki_dir.path().join("pss.state");
    let mut handled = Vec::new();
    let mut state = pss::OutputState::load(&state_path).unwrap();
    let count = pss::listen(
        &config,
        "B01234XXXXXX",
        &mut state,
        Duration::from_millis(100),
        Some(2),
        |output| handled.push(reference_of(output)),
    )
    .await
    .unwrap();
    assert_eq!(count, 2);
    for index in 4..=5 {
        world.publish_output("B01234", &format!("L{index}")).await;
    }
    let mut state = pss::OutputState::load(&state_path).unwrap();
    assert!(state.last_output_sequence() > 0);
    tokio::time::timeout(
        Duration::from_secs(20),
        pss::listen(
            &config,
            "B01234XXXXXX",
            &mut state,
            Duration::from_millis(100),
            Some(3),
            |output| handled.push(reference_of(output)),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(handled, ["L1", "L2", "L3", "L4", "L5"]);
    world.stop();
}

#[tokio::test]
async fn pss_listen_prints_output_messages_and_acknowledges_them() {
    // Goal: `ccass pss listen` prints each output message with its number and acknowledges
    // it, and with --state a second run resumes after what the first printed. Method: run it
    // for one message, then again for one more, and check the gateway's consumer has nothing
    // left unacknowledged.
    let Some(world) = World::start("gateway_pss_listen_cli", |_| {}).await else {
        return;
    };
    let config = world.pss("B01234", "ops1");
    let first = world.publish_output("B01234", "CLIOUT1").await;
    let second = world.publish_output("B01234", "CLIOUT2").await;
    let state = world.pki_dir.path().join("listen.state");
    let run = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccass"));
        command
            .arg("--config-dir")
            .arg(crate::harness::repo_root().join("config"))
            .args(["--env", "test", "pss", "listen", "--count", "1", "--cert"])
            .arg(&config.certificate_path)
            .arg("--ca")
            .arg(&config.ca_certificate_path)
            .arg("--address")
            .arg(&config.address)
            .arg("--state")
            .arg(&state);
        command
    };
    let output = tokio::time::timeout(Duration::from_secs(30), run().output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!("OUTPUT {first} MT548\n")),
        "{stdout}"
    );
    assert!(stdout.contains(":20C::SEME//CLIOUT1"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap().trim(),
        first.to_string()
    );
    let output = tokio::time::timeout(Duration::from_secs(30), run().output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!("OUTPUT {second} MT548")),
        "{stdout}"
    );
    assert!(!stdout.contains("CLIOUT1"), "{stdout}");
    // The last acknowledgement reaches JetStream shortly after the session closes.
    let mut unacknowledged = usize::MAX;
    for _ in 0..50 {
        let stream = world.jetstream.get_stream("OUTBOUND").await.unwrap();
        let info = stream.consumer_info("outbound-B01234").await.unwrap();
        unacknowledged = info.num_ack_pending;
        if unacknowledged == 0 && info.ack_floor.stream_sequence >= second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unacknowledged, 0);
    world.stop();
}

#[tokio::test]
async fn ccass_up_names_a_missing_gateway_certificate() {
    // Goal: `ccass up` with the gateway enabled but no server certificate fails at once with
    // the file and the commands that make it (before touching any server). Method: run up::run
    // with a certificate path that does not exist.
    let mut config = crate::harness::test_config();
    config.gateway.enabled = true;
    config.gateway.listen_addr = "127.0.0.1:0".to_owned();
    config.gateway.certificate_path = "/nonexistent/ccass/server-gateway.crt".into();
    let listeners = ccass::up::Listeners::bind(&config).await.unwrap();
    let error = ccass::up::run(config, listeners, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("/nonexistent/ccass/server-gateway.crt"),
        "{error}"
    );
    assert!(error.contains("ccass pki issue-server"), "{error}");
}

#[tokio::test]
async fn bench_gateway_smoke_run_answers_every_scheduled_message() {
    // Goal: `ccass bench gateway`'s open loop sends exactly rate x seconds messages through
    // raw JetStream and through the gateway, every one stored and ACKed (the pacer skips
    // none, nothing is lost), and the report has the pacer's lag and the CPU use. Method: 3
    // sessions at 300 msg/s for 1 s against private servers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(database) = postgres::database("gateway_bench").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(slapd) = Slapd::start().await else {
        return;
    };
    let mut config = crate::harness::test_config();
    config.hostdb = database.config.clone();
    config.directory = slapd.directory_config();
    config.bus = nats.bus_config();
    let options = ccass::gateway::bench::BenchOptions {
        sessions: 3,
        rate_per_s: Some(300),
        seconds: 1,
        nats_url: None,
    };
    let report = ccass::gateway::bench::run(&config, &options).await.unwrap();
    assert!(report.maximum.is_none(), "{report}");
    let (raw, gateway) = &report.paced;
    for measured in [raw, gateway] {
        assert_eq!((measured.acked, measured.refused), (300, 0), "{report}");
        assert!(measured.pacer_lag_ms(0.99) >= 0.0, "{report}");
        assert!(
            measured.send_lag_ms(0.99) >= measured.pacer_lag_ms(0.0),
            "{report}"
        );
        assert!(measured.latency_ms(0.5) > 0.0, "{report}");
        #[cfg(target_os = "linux")]
        assert!(measured.cpu.is_some(), "{report}");
    }
    assert_eq!(report.stages.1.messages(), 300, "{report}");
}
