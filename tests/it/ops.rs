//! `ccass up` in-process against real servers: the ops port serves valid Prometheus text, and
//! `/readyz` turns unready when Postgres or NATS goes away and ready again when it returns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::nats::NatsServer;
use crate::harness::postgres;
use crate::harness::proxy::Proxy;

const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET path` over HTTP/1.0; returns (status, body).
pub async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `/readyz` until its status is `want`; returns the body.
async fn wait_for_readyz(address: SocketAddr, want: u16) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = get(address, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < STATE_CHANGE_TIMEOUT,
            "/readyz stayed {status} (wanted {want}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_follows_postgres_and_nats_and_metrics_are_valid_prometheus_text() {
    // Goal: readiness reflects each dependency now, and /metrics parses as Prometheus text.
    // Method: run `ccass up` in-process with Postgres behind a cuttable proxy and a private
    // nats-server; cut/restore the proxy, kill/restart the server, polling /readyz each time.
    let Some(database) = postgres::database("readyz").await else {
        return;
    };
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let upstream: SocketAddr = format!("{}:{}", database.config.host, database.config.port)
        .parse()
        .unwrap();
    let proxy = Proxy::start(upstream).await;

    let mut config = crate::harness::test_config();
    config.hostdb = database.config.clone();
    config.hostdb.host = proxy.address().ip().to_string();
    config.hostdb.port = proxy.address().port();
    config.bus = nats.bus_config();
    config.telemetry.readiness_check_timeout_ms = 1000;
    let client = ccass::bus::connect(&config.bus, "test").await.unwrap();
    let jetstream = ccass::bus::jetstream(&config.bus, client);
    let catalogue = ccass::bus::catalogue::Catalogue::embedded().unwrap();
    ccass::bus::init::run(&config.bus, &jetstream, &catalogue)
        .await
        .unwrap();

    let listeners = ccass::up::Listeners::bind(&config).await.unwrap();
    let ops = listeners.ops.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(ccass::up::run(config, listeners, async {
        let _ = stopped.await;
    }));

    let body = wait_for_readyz(ops, 200).await;
    assert!(
        body.contains("postgres ok") && body.contains("nats ok"),
        "{body}"
    );
    assert_eq!(get(ops, "/healthz").await.0, 200);

    proxy.cut();
    let body = wait_for_readyz(ops, 503).await;
    assert!(body.contains("postgres down"), "{body}");
    assert!(body.contains("nats ok"), "{body}");
    proxy.restore();
    wait_for_readyz(ops, 200).await;

    nats.kill();
    let body = wait_for_readyz(ops, 503).await;
    assert!(body.contains("nats down"), "{body}");
    assert_eq!(
        get(ops, "/healthz").await.0,
        200,
        "alive while a dependency is down"
    );
    nats.resume().await;
    wait_for_readyz(ops, 200).await;

    let (status, text) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|error| panic!("invalid prometheus text: {error}\n{text}"));
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    assert!(names.contains(&"ccass_build_info"), "{names:?}");
    assert!(
        names.contains(&"ccass_ops_readiness_checks_total"),
        "{names:?}"
    );
    let failed_postgres = scrape.samples.iter().any(|s| {
        s.metric == "ccass_ops_readiness_checks_total"
            && s.labels.get("dependency") == Some("postgres")
            && s.labels.get("outcome") != Some("ok")
    });
    assert!(failed_postgres, "the outage is counted");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("ccass_"), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
}
