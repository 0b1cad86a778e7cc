//! The Terminal against a real stack: private slapd (the LDAP fixture), private nats-server
//! with the catalogue's streams, a fresh seeded database, the auth service, SI intake with the
//! outbox relay, and the terminal itself over HTTPS with client certificates from a CA in a
//! temporary folder. The HTTPS client is hyper over tokio-rustls (no browser: that is
//! `terminal_e2e.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccass::auth::service::{AuthService, serve};
use ccass::pki::{self, PkiConfig};
use ccass::terminal::{Terminal, TerminalParts};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::watch;

use crate::harness::dates::settlement_date;
use crate::harness::ldap::Slapd;
use crate::harness::nats::{NatsServer, initialised_bus};
use crate::harness::postgres::{self, TestDatabase};
use crate::harness::{repo_root, test_config};

/// A running stack with the terminal on a loopback port.
pub struct World {
    _slapd: Slapd,
    pub nats: NatsServer,
    pub database: TestDatabase,
    pub pki_dir: tempfile::TempDir,
    pub pki: PkiConfig,
    pub address: SocketAddr,
    pub jetstream: async_nats::jetstream::Context,
    pub auth: ccass::auth::AuthClient,
    stop: watch::Sender<bool>,
}

impl World {
    pub async fn start(test: &str) -> Option<World> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let database = postgres::database(test).await?;
        ccass::hostdb::seed::apply_file(
            &database.pool,
            &repo_root().join("config/reference/demo.toml"),
        )
        .await
        .unwrap();
        let nats = NatsServer::start().await?;
        let slapd = Slapd::start().await?;
        let mut config = test_config();
        config.bus = nats.bus_config();
        config.intake.unmatched_report_delay_ms = 600_000;
        let (nats_client, jetstream) = initialised_bus(&config.bus, "terminal-test").await;
        let (stop, stopped) = watch::channel(false);

        let service = Arc::new(AuthService::new(
            slapd.directory_config(),
            config.auth.clone(),
            database.pool.clone(),
        ));
        tokio::spawn({
            let nats_client = nats_client.clone();
            let mut stopped = stopped.clone();
            async move {
                serve(service, nats_client, async move {
                    let _ = stopped.changed().await;
                })
                .await
                .unwrap();
            }
        });
        nats_client.flush().await.unwrap();
        ccass::settlement::intake::spawn_services(&config, &database.pool, &jetstream, &stopped)
            .await
            .unwrap();

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
        config.terminal.listen_addr = "127.0.0.1:0".to_owned();
        config.terminal.certificate_path = server.certificate_path;
        config.terminal.key_path = server.key_path;
        config.terminal.live_poll_ms = 200;
        let listener = Terminal::bind(&config.terminal).await.unwrap();
        let address = listener.local_addr().unwrap();
        let terminal = Terminal::new(TerminalParts {
            config: config.terminal.clone(),
            pki: pki.clone(),
            settlement: config.settlement.clone(),
            intake: config.intake.clone(),
            ccp_participant: config.auth.ccp_participant.clone(),
            auth: ccass::auth::AuthClient::new(nats_client.clone(), &config.auth),
            pool: database.pool.clone(),
            nats: nats_client.clone(),
            jetstream: jetstream.clone(),
        })
        .unwrap();
        let mut terminal_stopped = stopped.clone();
        tokio::spawn(terminal.serve(listener, async move {
            let _ = terminal_stopped.changed().await;
        }));
        Some(World {
            _slapd: slapd,
            nats,
            database,
            pki_dir,
            pki,
            address,
            jetstream,
            auth: ccass::auth::AuthClient::new(nats_client, &test_config().auth),
            stop,
        })
    }

    /// A fresh client certificate for `participant`.`uid`: (certificate, key) paths.
    pub fn certificate(&self, participant: &str, uid: &str) -> (PathBuf, PathBuf) {
        let issued = pki::issue_client(&self.pki, participant, uid, self.pki_dir.path()).unwrap();
        (issued.certificate_path, issued.key_path)
    }

    pub fn client(&self, participant: &str, uid: &str) -> Client {
        let (certificate, key) = self.certificate(participant, uid);
        Client::new(self, &certificate, &key)
    }

    /// A logged-in client (password of the LDAP fixture).
    pub async fn logged_in(&self, participant: &str, uid: &str) -> Client {
        let mut client = self.client(participant, uid);
        client
            .login(&format!("ccass-dev-{participant}-{uid}"))
            .await;
        client
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn error_code(&self) -> Option<&str> {
        self.headers
            .get("x-ccass-error")
            .and_then(|value| value.to_str().ok())
    }

    pub fn location(&self) -> Option<&str> {
        self.headers
            .get("location")
            .and_then(|value| value.to_str().ok())
    }

    /// The value of `name="csrf" value="..."` in the page.
    pub fn csrf(&self) -> Option<String> {
        let start = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let end = self.body[start..].find('"')?;
        Some(self.body[start..start + end].to_owned())
    }
}

/// An HTTPS client presenting one client certificate, keeping the session cookie.
pub struct Client {
    address: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    pub session: Option<String>,
    pub csrf: Option<String>,
}

impl Client {
    pub fn new(world: &World, certificate: &std::path::Path, key: &std::path::Path) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(world.pki.ca_certificate_path()).unwrap())
            .unwrap();
        let chain = CertificateDer::pem_file_iter(certificate)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(ccass::gateway::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        Client {
            address: world.address,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            session: None,
            csrf: None,
        }
    }

    /// One request on a fresh TLS connection. `cookie` overrides the session's cookie.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
        cookie: Option<&str>,
    ) -> Answer {
        let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        let cookie = cookie.map(str::to_owned).or_else(|| {
            self.session
                .as_ref()
                .map(|s| format!("__Host-ccass_session={s}"))
        });
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let body = match form {
            Some(fields) => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                fields
                    .iter()
                    .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
                    .collect::<Vec<_>>()
                    .join("&")
            }
            None => String::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, None).await
    }

    /// POST a form with this session's CSRF token added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf.clone().unwrap_or_default();
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        self.send("POST", path, Some(&all), None).await
    }

    pub async fn login(&mut self, password: &str) -> Answer {
        let page = self.get("/login").await;
        assert_eq!(page.status, 200, "{page:?}");
        let login_cookie = set_cookie(&page, "__Host-ccass_login").unwrap();
        let token = page.body.split("name=\"csrf\" value=\"").nth(1).unwrap();
        let token = &token[..token.find('"').unwrap()];
        let answer = self
            .send(
                "POST",
                "/login",
                Some(&[("password", password), ("csrf", token)]),
                Some(&format!("__Host-ccass_login={login_cookie}")),
            )
            .await;
        if answer.status == 303 {
            let session = set_cookie(&answer, "__Host-ccass_session").unwrap();
            let cookie = set_cookie_line(&answer, "__Host-ccass_session").unwrap();
            for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
                assert!(cookie.contains(attribute), "{cookie}");
            }
            self.session = Some(session);
            self.csrf = self.get("/").await.csrf();
        }
        answer
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

fn set_cookie_line(answer: &Answer, name: &str) -> Option<String> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn set_cookie(answer: &Answer, name: &str) -> Option<String> {
    let line = set_cookie_line(answer, name)?;
    let value = line.split(';').next()?.split_once('=')?.1.to_owned();
    Some(value)
}

/// The SI form of a DVP delivery of 4,000 GB0005405286 from B01234-01 to B05678.
pub fn delivery_form(reference: &str) -> Vec<(&'static str, String)> {
    vec![
        ("direction", "deliver".to_owned()),
        ("payment", "DVP".to_owned()),
        ("reference", reference.to_owned()),
        ("account", "B01234-01".to_owned()),
        ("counterparty", "B05678".to_owned()),
        ("counterparty_account", "B05678-02".to_owned()),
        ("isin", "GB0005405286".to_owned()),
        ("quantity", "4000".to_owned()),
        ("settlement_date", settlement_date().to_string()),
        ("trade_date", String::new()),
        ("currency", "HKD".to_owned()),
        ("amount", "100000.00".to_owned()),
    ]
}

pub fn fields<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect()
}

/// Polls the database until the SI of `participant`/`reference` has `status` (effective).
pub async fn wait_status(world: &World, participant: &str, reference: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = ccass::hostdb::terminal::instruction_by_reference(
            &world.database.pool,
            participant,
            reference,
        )
        .await
        .unwrap();
        if row.as_ref().is_some_and(|row| row.status == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{participant}/{reference} never reached {status}: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn login_needs_the_certificate_user_password_and_sessions_are_bound_to_it() {
    // Goal: the password must be the certificate's user's; the session cookie carries the
    // Secure/HttpOnly/SameSite attributes; the cookie replayed over another user's certificate
    // is refused; logout ends the session. Method: drive /login and / over HTTPS.
    let Some(world) = World::start("terminal_login").await else {
        return;
    };
    let mut ops = world.client("B01234", "ops1");
    let wrong = ops.login("ccass-dev-B01234-auth1").await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(wrong.error_code(), Some("bad_credentials"));
    assert!(!wrong.body.contains("ldap"), "{}", wrong.body);

    let ok = ops.login("ccass-dev-B01234-ops1").await;
    assert_eq!(ok.status, 303, "{ok:?}");
    let home = ops.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("B01234.ops1"), "{}", home.body);
    assert!(home.body.contains("nav-si-new"), "ops1 may input");
    assert!(!home.body.contains("nav-ops-runs"), "ops1 is no operator");
    assert!(
        home.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );

    // The same cookie over auth1's certificate: refused.
    let auth1 = world.client("B01234", "auth1");
    let stolen = auth1
        .send(
            "GET",
            "/si",
            None,
            Some(&format!(
                "__Host-ccass_session={}",
                ops.session.clone().unwrap()
            )),
        )
        .await;
    assert_eq!(stolen.status, 403, "{stolen:?}");
    assert_eq!(stolen.error_code(), Some("certificate_mismatch"));

    // Login form without its CSRF cookie: refused.
    let forged = auth1
        .send(
            "POST",
            "/login",
            Some(&[("password", "ccass-dev-B01234-auth1"), ("csrf", "abc")]),
            None,
        )
        .await;
    assert_eq!(forged.error_code(), Some("csrf_invalid"));

    let logout_without_token = ops.send("POST", "/logout", Some(&[]), None).await;
    assert_eq!(logout_without_token.error_code(), Some("csrf_invalid"));
    let logout = ops.post("/logout", &[]).await;
    assert_eq!((logout.status, logout.location()), (303, Some("/login")));
    let after = ops.get("/").await;
    assert_eq!(after.status, 401);
    assert_eq!(after.error_code(), Some("not_logged_in"));
}

#[tokio::test]
async fn every_page_and_endpoint_is_refused_without_a_session_group_or_csrf_token() {
    // Goal: the server enforces sessions, user groups, participants and CSRF whatever the
    // page shows. Method: call every route without a session; as users lacking the group;
    // as another participant's user; and every form without its token.
    let Some(world) = World::start("terminal_refusals").await else {
        return;
    };
    let anonymous = world.client("B01234", "ops1");
    let gets = [
        "/",
        "/si",
        "/si/new",
        "/si/1",
        "/si/1/events",
        "/pending",
        "/holdings",
        "/movements",
        "/money",
        "/cns",
        "/runs",
        "/ops/runs",
        "/ops/exceptions",
        "/ops/audit",
        "/ops/sessions",
        "/admin",
    ];
    for path in gets {
        let answer = anonymous.get(path).await;
        assert_eq!(answer.status, 401, "GET {path}: {answer:?}");
        assert_eq!(answer.error_code(), Some("not_logged_in"), "GET {path}");
    }
    let posts = [
        "/logout",
        "/si/new",
        "/si/validate",
        "/si/1/cancel",
        "/si/1/hold",
        "/si/1/release",
        "/pending/1/authorise",
        "/pending/1/reject",
        "/ops/runs",
        "/admin",
    ];
    for path in posts {
        let answer = anonymous
            .send(
                "POST",
                path,
                Some(&[("csrf", "x"), ("action", "show")]),
                None,
            )
            .await;
        assert_eq!(answer.status, 401, "POST {path}: {answer:?}");
    }

    // Without the right user group (B05678.auth1 holds si-authorise only).
    let checker = world.logged_in("B05678", "auth1").await;
    for path in [
        "/si/new",
        "/holdings",
        "/money",
        "/ops/runs",
        "/ops/audit",
        "/admin",
    ] {
        let answer = checker.get(path).await;
        assert_eq!(answer.status, 403, "GET {path}: {answer:?}");
        assert_eq!(answer.error_code(), Some("not_granted"), "GET {path}");
    }
    let form = delivery_form("NOGROUP1");
    let answer = checker.post("/si/new", &fields(&form)).await;
    assert_eq!(answer.error_code(), Some("not_granted"));
    let run = checker.post("/ops/runs", &[]).await;
    assert_eq!(run.error_code(), Some("not_granted"));

    // Another participant's data.
    let ops = world.logged_in("B01234", "ops1").await;
    let answer = ops.get("/si?participant=B05678").await;
    assert_eq!(answer.error_code(), Some("other_participant"));
    let answer = ops.get("/si?participant=ALL").await;
    assert_eq!(answer.error_code(), Some("not_granted"));

    // Every form without (or with a wrong) CSRF token.
    for path in posts {
        let answer = ops
            .send(
                "POST",
                path,
                Some(&[("csrf", "0000"), ("action", "show")]),
                None,
            )
            .await;
        assert_eq!(answer.status, 403, "POST {path}: {answer:?}");
        assert_eq!(answer.error_code(), Some("csrf_invalid"), "POST {path}");
    }
    // Another session's valid token is still the wrong token.
    let other = world.logged_in("B01234", "auth1").await;
    let answer = ops
        .send(
            "POST",
            "/si/validate",
            Some(&[("csrf", other.csrf.as_deref().unwrap())]),
            None,
        )
        .await;
    assert_eq!(answer.error_code(), Some("csrf_invalid"));

    // An operator may see every participant.
    let operator = world.logged_in("HKSCC0", "op1").await;
    assert_eq!(operator.get("/si?participant=ALL").await.status, 200);
    assert_eq!(operator.get("/ops/audit?outcome=refused").await.status, 200);
    let audit = operator
        .get("/ops/audit?actor=B05678.auth1&outcome=refused")
        .await;
    assert!(audit.body.contains("not_granted"), "{}", audit.body);
}

#[tokio::test]
async fn an_si_waits_for_a_different_authoriser_then_matches_and_settles() {
    // Goal: maker–checker: terminal input is not published until a different user with
    // si.authorise authorises it; self-authorisation is refused with its code; the authorised
    // message goes through the one intake, matches a PSS-style counter-instruction, and
    // settles in a run triggered by an operator; bad input gets field errors and the
    // terminal keeps serving. Method: HTTPS as four users; the counter-instruction is
    // published on INBOUND as the gateway would.
    let Some(world) = World::start("terminal_maker_checker").await else {
        return;
    };
    let maker = world.logged_in("B01234", "ops1").await;
    // Validation as you type, then a bad submit: field errors, nothing stored.
    let mut bad = delivery_form("TERM1");
    bad[6].1 = "GB0005405287".to_owned();
    let check = maker.post("/si/validate", &fields(&bad)).await;
    assert_eq!(check.status, 200);
    assert!(check.body.contains("\"isin\""), "{}", check.body);
    let refused = maker.post("/si/new", &fields(&bad)).await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.error_code(), Some("invalid_input"));
    assert!(
        refused.body.contains("valid check digit"),
        "{}",
        refused.body
    );

    let form = delivery_form("TERM1");
    let stored = maker.post("/si/new", &fields(&form)).await;
    assert_eq!(stored.status, 303, "{stored:?}");
    let again = maker.post("/si/new", &fields(&form)).await;
    assert_eq!(again.error_code(), Some("reference_used"));
    let pending = ccass::hostdb::terminal::open_pending(&world.database.pool, "B01234")
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let id = pending[0].pending_id;
    let inbound = world.jetstream.get_stream("INBOUND").await.unwrap();
    assert_eq!(
        inbound.cached_info().state.messages,
        0,
        "published before authorisation"
    );

    // The maker cannot authorise (and holds no si.authorise); a user with both groups who
    // input it would get self_authorisation: C00123.ops1 holds si-input and si-authorise.
    let own = maker.post(&format!("/pending/{id}/authorise"), &[]).await;
    assert_eq!(own.error_code(), Some("not_granted"), "{own:?}");
    let custodian = world.logged_in("C00123", "ops1").await;
    let mut custodian_form = delivery_form("SELF1");
    custodian_form[3].1 = "C00123-01".to_owned();
    custodian_form[5].1 = String::new();
    custodian_form[6].1 = "KYG875721634".to_owned();
    assert_eq!(
        custodian
            .post("/si/new", &fields(&custodian_form))
            .await
            .status,
        303
    );
    let self_id = ccass::hostdb::terminal::open_pending(&world.database.pool, "C00123")
        .await
        .unwrap()[0]
        .pending_id;
    let selfie = custodian
        .post(&format!("/pending/{self_id}/authorise"), &[])
        .await;
    assert_eq!(selfie.status, 403, "{selfie:?}");
    assert_eq!(selfie.error_code(), Some("self_authorisation"));
    assert!(
        selfie.body.contains("a different user must authorise"),
        "{}",
        selfie.body
    );
    // Another participant's checker cannot see B01234's pending input.
    let foreign = world.logged_in("B05678", "auth1").await;
    let answer = foreign.post(&format!("/pending/{id}/authorise"), &[]).await;
    assert_eq!(answer.error_code(), Some("not_found"));

    let checker = world.logged_in("B01234", "auth1").await;
    let authorised = checker.post(&format!("/pending/{id}/authorise"), &[]).await;
    assert_eq!(authorised.status, 303, "{authorised:?}");
    let twice = checker.post(&format!("/pending/{id}/authorise"), &[]).await;
    assert_eq!(twice.error_code(), Some("not_pending"));
    wait_status(&world, "B01234", "TERM1", "unmatched").await;

    // The counter-instruction as B05678's PSS would send it.
    publish_counter(&world, "PSS1").await;
    wait_status(&world, "B01234", "TERM1", "matched").await;
    let si =
        ccass::hostdb::terminal::instruction_by_reference(&world.database.pool, "B01234", "TERM1")
            .await
            .unwrap()
            .unwrap();
    let detail = maker.get(&format!("/si/{}", si.instruction_id)).await;
    assert!(detail.body.contains("matched"), "{}", detail.body);
    assert_eq!(
        foreign
            .get(&format!("/si/{}", si.instruction_id))
            .await
            .error_code(),
        Some("not_found")
    );
    let csv = maker.get("/si?format=csv&reference=TERM").await;
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert!(
        csv.body.lines().nth(1).unwrap().contains("TERM1"),
        "{}",
        csv.body
    );

    let operator = world.logged_in("HKSCC0", "op1").await;
    let date = settlement_date().to_string();
    let run = operator.post("/ops/runs", &[("date", &date)]).await;
    assert_eq!(run.status, 200, "{run:?}");
    assert!(run.body.contains("1 settled"), "{}", run.body);
    wait_status(&world, "B01234", "TERM1", "settled").await;
    let runs = operator.get("/runs").await;
    assert_eq!(runs.status, 200, "{runs:?}");
    assert!(runs.body.contains("<svg"), "{}", runs.body);
    let live = maker.get(&format!("/si/{}", si.instruction_id)).await;
    assert!(live.body.contains("settlement run"), "{}", live.body);
}

/// B05678's MT541 receiving 4,000 GB0005405286 from B01234 against HKD 100,000.00.
pub fn counter_instruction(reference: &str) -> String {
    use ccass::iso15022::MessageType;
    use ccass::iso15022::build::{self, Envelope, SettlementInstructionSpec};
    use ccass::iso15022::fields::{
        Amount, Function, FunctionCode, Isin, PartyId, Quantity, QuantityKind,
    };
    use ccass::iso15022::views::Party;
    let parties = [
        Party {
            role: "DEAG",
            id: PartyId::Proprietary {
                scheme: "CCASS",
                id: "B01234",
            },
            safekeeping_account: Some("B01234-01"),
        },
        Party {
            role: "PSET",
            id: PartyId::Bic("CCASHKHH"),
            safekeeping_account: None,
        },
    ];
    let spec = SettlementInstructionSpec {
        message_type: MessageType(541),
        function: Function {
            code: FunctionCode::Newm,
            subfunction: None,
        },
        reference,
        links: &[],
        prepared: None,
        trade_date: None,
        settlement_date: settlement_date(),
        isin: Isin::parse("GB0005405286").unwrap(),
        description: None,
        quantity: Quantity {
            kind: QuantityKind::Unit,
            value: rust_decimal::Decimal::new(4_000, 0),
        },
        account: "B05678-02",
        transaction_type: "TRAD",
        parties: &parties,
        settlement_amount: Some(Amount {
            currency: *b"HKD",
            value: rust_decimal::Decimal::new(10_000_000, 2),
        }),
    };
    build::settlement_instruction(
        Some(&Envelope {
            sender: "KWBLHKHHAXXX",
            receiver: "HKSCHKHHAXXX",
            session: 1,
            sequence: 1,
        }),
        &spec,
    )
    .unwrap()
}

/// Publishes [`counter_instruction`] on INBOUND as the gateway would (B05678:reference).
pub async fn publish_counter(world: &World, reference: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("B05678:{reference}").as_str());
    world
        .jetstream
        .publish_with_headers(
            ccass::bus::subjects::inbound(
                &ccass::ids::ParticipantId::parse("B05678").unwrap(),
                ccass::bus::subjects::MessageTypeNumber::new(541).unwrap(),
            ),
            headers,
            counter_instruction(reference).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Inputs `reference` as B01234.ops1 and has B01234.auth1 authorise it; waits for intake.
async fn input_and_authorise(world: &World, maker: &Client, checker: &Client, reference: &str) {
    let form = delivery_form(reference);
    assert_eq!(maker.post("/si/new", &fields(&form)).await.status, 303);
    let id = ccass::hostdb::terminal::open_pending(&world.database.pool, "B01234")
        .await
        .unwrap()
        .iter()
        .find(|row| row.sender_reference == reference)
        .unwrap()
        .pending_id;
    let answer = checker.post(&format!("/pending/{id}/authorise"), &[]).await;
    assert_eq!(answer.status, 303, "{answer:?}");
    wait_status(world, "B01234", reference, "unmatched").await;
}

async fn instruction_id(world: &World, reference: &str) -> i64 {
    ccass::hostdb::terminal::instruction_by_reference(&world.database.pool, "B01234", reference)
        .await
        .unwrap()
        .unwrap()
        .instruction_id
}

#[tokio::test]
async fn enquiries_hold_release_cancel_and_administration_work_for_their_users() {
    // Goal: each enquiry shows the user's own participant's data (and CSV), hold/release
    // changes a matched pair through the lifecycle, cancel sends a CANC through the one intake,
    // and the participant admin reaches delegated administration. Method: HTTPS as the
    // fixture's users on the seeded demo data.
    let Some(world) = World::start("terminal_enquiries").await else {
        return;
    };
    let ops = world.logged_in("B01234", "ops1").await;
    let holdings = ops.get("/holdings?isin=GB0005405286").await;
    assert_eq!(holdings.status, 200, "{holdings:?}");
    assert!(
        holdings.body.contains("B01234-01") && holdings.body.contains("400000"),
        "{}",
        holdings.body
    );
    assert!(
        !holdings.body.contains("B05678-02"),
        "another participant's holding shown"
    );
    let csv = ops.get("/holdings?format=csv").await;
    assert!(
        csv.body.starts_with("account,isin,security,quantity\r\n"),
        "{}",
        csv.body
    );
    assert_eq!(
        ops.get("/holdings?participant=B05678").await.error_code(),
        Some("other_participant")
    );
    let money = ops.get("/money").await;
    assert!(money.body.contains("250000000.00"), "{}", money.body);
    let movements = ops.get("/movements?from=2026-01-01&to=2030-12-31").await;
    assert!(movements.body.contains("opening"), "{}", movements.body);
    let bad_date = ops.get("/movements?from=yesterday").await;
    assert_eq!(bad_date.error_code(), Some("invalid_input"));
    assert_eq!(ops.get("/cns").await.status, 200);
    let bad_status = ops.get("/si?status=lost").await;
    assert_eq!(
        (bad_status.status, bad_status.error_code()),
        (422, Some("invalid_input"))
    );

    // Hold and release a matched SI.
    let checker = world.logged_in("B01234", "auth1").await;
    input_and_authorise(&world, &ops, &checker, "HOLD1").await;
    publish_counter(&world, "PSSHOLD").await;
    wait_status(&world, "B01234", "HOLD1", "matched").await;
    let id = instruction_id(&world, "HOLD1").await;
    assert_eq!(ops.post(&format!("/si/{id}/hold"), &[]).await.status, 303);
    let held = ops.get(&format!("/si/{id}")).await;
    assert!(
        held.body.contains("(on hold)") && held.body.contains("matched on hold"),
        "{}",
        held.body
    );
    assert_eq!(
        ops.post(&format!("/si/{id}/release"), &[]).await.status,
        303
    );
    let released = ops.get(&format!("/si/{id}")).await;
    assert!(
        released.body.contains("released from hold"),
        "{}",
        released.body
    );
    assert!(!released.body.contains("(on hold)"), "{}", released.body);

    // Cancel an unmatched SI: a CANC through INBOUND; intake applies it.
    input_and_authorise(&world, &ops, &checker, "CANC1").await;
    let id = instruction_id(&world, "CANC1").await;
    let cancel = ops.post(&format!("/si/{id}/cancel"), &[]).await;
    assert_eq!(cancel.status, 303, "{cancel:?}");
    wait_status(&world, "B01234", "CANC1", "cancelled").await;
    let again = ops.post(&format!("/si/{id}/cancel"), &[]).await;
    assert_eq!(again.error_code(), Some("invalid_state"));

    // Delegated administration by B01234's participant admin.
    let admin = world.logged_in("B01234", "admin1").await;
    let shown = admin
        .post("/admin", &[("action", "show"), ("uid", "ops1")])
        .await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert!(shown.body.contains("si-input"), "{}", shown.body);
    let bad = admin
        .post(
            "/admin",
            &[
                ("action", "grant"),
                ("uid", "ops1"),
                ("group", "operations"),
            ],
        )
        .await;
    assert_eq!(bad.error_code(), Some("invalid_input"), "{bad:?}");
}

#[tokio::test]
async fn an_authorisation_while_nats_is_down_stays_pending_and_succeeds_later() {
    // Goal: nothing acknowledged is lost: when the bus is down the checker gets `unavailable`
    // (no internal detail), the input stays pending and unpublished, the terminal keeps
    // serving, and authorising again after the bus is back publishes it once. Method: kill the
    // private nats-server between input and authorisation, then restart it.
    let Some(mut world) = World::start("terminal_bus_down").await else {
        return;
    };
    let ops = world.logged_in("B01234", "ops1").await;
    let checker = world.logged_in("B01234", "auth1").await;
    let form = delivery_form("DOWN1");
    assert_eq!(ops.post("/si/new", &fields(&form)).await.status, 303);
    let id = ccass::hostdb::terminal::open_pending(&world.database.pool, "B01234")
        .await
        .unwrap()[0]
        .pending_id;
    world.nats.kill();
    let refused = checker.post(&format!("/pending/{id}/authorise"), &[]).await;
    assert_eq!(
        (refused.status, refused.error_code()),
        (503, Some("unavailable")),
        "{refused:?}"
    );
    assert!(
        !refused.body.contains("nats") && !refused.body.contains("127.0.0.1"),
        "{}",
        refused.body
    );
    // Without the auth service nothing is allowed (fail closed), but every request is answered.
    let page = ops.get("/pending").await;
    assert_eq!(page.error_code(), Some("unavailable"), "{page:?}");
    assert_eq!(ops.get("/static/terminal.css").await.status, 200);
    let still = ccass::hostdb::terminal::pending(&world.database.pool, "B01234", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.status, "pending");

    world.nats.resume().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = checker.post(&format!("/pending/{id}/authorise"), &[]).await;
        if answer.status == 303 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never authorised after the bus came back: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_status(&world, "B01234", "DOWN1", "unmatched").await;
    assert_eq!(
        ops.get("/pending").await.status,
        200,
        "the same session works again"
    );
    let inbound = world.jetstream.get_stream("INBOUND").await.unwrap();
    assert_eq!(inbound.cached_info().state.messages, 1);
}
