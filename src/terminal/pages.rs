//! The terminal's routes and pages. Every handler starts with [`Ctx::of`] (a session bound to
//! this connection's certificate) and [`Ctx::require`] (the auth service's decision for the
//! function and the participant); forms check the session's CSRF token first.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use minijinja::context;
use serde::Deserialize;
use time::Date;

use super::error::{ErrorCode, TerminalError};
use super::session::{self, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session};
use super::si::{self, SiForm, SiLimits};
use super::{AppState, Peer, chart};
use crate::auth::client::Target;
use crate::auth::policy::Function;
use crate::bus::auth::{AdminAction, AdminResult, UserRef, UserRights};
use crate::bus::subjects::{self, EventKind, MessageTypeNumber};
use crate::hostdb::terminal::{self as sql, Decided};
use crate::ids::ParticipantId;
use crate::settlement::lifecycle;

type App = State<Arc<AppState>>;
type Page = Result<Response, TerminalError>;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("home.html", include_str!("templates/home.html")),
    ("si_list.html", include_str!("templates/si_list.html")),
    ("si_detail.html", include_str!("templates/si_detail.html")),
    ("si_new.html", include_str!("templates/si_new.html")),
    ("pending.html", include_str!("templates/pending.html")),
    ("table.html", include_str!("templates/table.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("admin.html", include_str!("templates/admin.html")),
];

/// The page templates (auto-escaped: `.html`).
pub fn templates() -> Result<minijinja::Environment<'static>, minijinja::Error> {
    let mut environment = minijinja::Environment::new();
    // Amounts are stored in minor units; every currency here has two.
    environment.add_filter("money", |amount: i64| minor(amount));
    for (name, source) in TEMPLATES {
        environment.add_template(name, source)?;
    }
    Ok(environment)
}

/// Every route.
pub fn router(state: Arc<AppState>) -> Router {
    let body_max = state.config.request_body_bytes_max;
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/si", get(si_list))
        .route("/si/new", get(si_new).post(si_submit))
        .route("/si/validate", post(si_validate))
        .route("/si/{id}", get(si_detail))
        .route("/si/{id}/events", get(si_events))
        .route("/si/{id}/cancel", post(si_cancel))
        .route("/si/{id}/hold", post(si_hold))
        .route("/si/{id}/release", post(si_release))
        .route("/pending", get(pending_list))
        .route("/pending/{id}/authorise", post(pending_authorise))
        .route("/pending/{id}/reject", post(pending_reject))
        .route("/holdings", get(holdings))
        .route("/movements", get(movements))
        .route("/money", get(money))
        .route("/cns", get(cns_positions))
        .route("/runs", get(runs))
        .route("/ops/runs", get(ops_runs).post(ops_trigger_run))
        .route("/ops/exceptions", get(ops_exceptions))
        .route("/ops/audit", get(ops_audit))
        .route("/ops/sessions", get(ops_sessions))
        .route("/admin", get(admin_page).post(admin_action))
        .route("/static/terminal.css", get(css))
        .route("/static/terminal.js", get(js))
        .fallback(|| async { TerminalError::new(ErrorCode::NotFound) })
        .layer(axum::extract::DefaultBodyLimit::max(body_max))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("templates/terminal.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("templates/terminal.js"),
    )
        .into_response()
}

/// A request's logged-in user.
struct Ctx {
    session: Session,
    token: String,
    rights: UserRights,
}

impl Ctx {
    async fn of(app: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<Ctx, TerminalError> {
        let token = session::cookie(headers, SESSION_COOKIE)
            .ok_or_else(|| TerminalError::new(ErrorCode::NotLoggedIn))?;
        let session = app
            .sessions
            .get(token, &peer.certificate_subject)
            .map_err(|refusal| {
                TerminalError::new(match refusal {
                    session::SessionRefusal::Missing => ErrorCode::NotLoggedIn,
                    session::SessionRefusal::Expired => ErrorCode::SessionExpired,
                    session::SessionRefusal::CertificateMismatch => ErrorCode::CertificateMismatch,
                })
            })?;
        let rights = app.auth.functions(&session.user).await?;
        Ok(Ctx {
            session,
            token: token.to_owned(),
            rights,
        })
    }

    fn participant(&self) -> &str {
        &self.session.user.participant
    }

    fn may(&self, function: Function) -> bool {
        self.rights
            .functions
            .iter()
            .any(|name| name == function.name())
    }

    async fn require(
        &self,
        app: &AppState,
        function: Function,
        target: &Target,
    ) -> Result<(), TerminalError> {
        app.auth
            .authorise(&self.session.user, function, target)
            .await?;
        Ok(())
    }

    /// The participant whose data an enquiry shows: the user's own unless `requested` names
    /// another (`ALL` for every participant), which the auth service must allow.
    async fn scope(
        &self,
        app: &AppState,
        function: Function,
        requested: Option<&str>,
    ) -> Result<Option<String>, TerminalError> {
        match requested.map(str::trim).filter(|text| !text.is_empty()) {
            None => {
                self.require(app, function, &Target::Own).await?;
                Ok(Some(self.participant().to_owned()))
            }
            Some("ALL") => {
                self.require(app, Function::OperationsEnquiry, &Target::Own)
                    .await?;
                self.require(app, function, &Target::Own).await?;
                Ok(None)
            }
            Some(text) => {
                let participant = ParticipantId::parse(text).map_err(|_| {
                    TerminalError::with(
                        ErrorCode::InvalidInput,
                        "participant: an id such as B01234, or ALL",
                    )
                })?;
                self.require(app, function, &Target::Participant(participant.clone()))
                    .await?;
                Ok(Some(participant.to_string()))
            }
        }
    }

    fn check_csrf(&self, token: Option<&str>) -> Result<(), TerminalError> {
        match token {
            Some(token) if session::same_token(token, &self.session.csrf) => Ok(()),
            _ => Err(TerminalError::new(ErrorCode::CsrfInvalid)),
        }
    }

    /// What every page shows: the user and the menu of granted functions.
    fn base(&self) -> minijinja::Value {
        context! {
            user => self.session.user.to_string(),
            display_name => self.session.display_name,
            participant => self.participant(),
            csrf => self.session.csrf,
            functions => self.rights.functions,
        }
    }
}

fn render(app: &AppState, name: &str, ctx: Option<&Ctx>, page: minijinja::Value) -> Page {
    let template = app
        .templates
        .get_template(name)
        .map_err(|error| TerminalError::backend("template", &error, false))?;
    let base = ctx.map(Ctx::base).unwrap_or_default();
    let html = template
        .render(context! { ..base, ..page })
        .map_err(|error| TerminalError::backend("template", &error, false))?;
    Ok(Html(html).into_response())
}

fn page_offset(page: Option<i64>, rows: i64) -> (i64, i64) {
    let page = page.unwrap_or(1).max(1);
    (page, (page - 1).saturating_mul(rows))
}

fn parse_optional_date(field: &str, text: Option<&str>) -> Result<Option<Date>, TerminalError> {
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => Date::parse(
            text,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map(Some)
        .map_err(|_| {
            TerminalError::with(
                ErrorCode::InvalidInput,
                format!("{field}: a date such as 2026-11-26"),
            )
        }),
    }
}

fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

/// CSV text (RFC 4180; formula-looking cells get a leading apostrophe so a spreadsheet does
/// not run them).
fn csv_text(header_row: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |text: &str| {
        let text = if text.starts_with(['=', '+', '-', '@']) && text.parse::<f64>().is_err() {
            format!("'{text}")
        } else {
            text.to_owned()
        };
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    };
    let mut out = header_row.join(",");
    out.push_str("\r\n");
    for row in rows {
        out.push_str(
            &row.iter()
                .map(|text| cell(text))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    out
}

/// A CSV download.
fn csv(name: &str, header_row: &[&str], rows: Vec<Vec<String>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        csv_text(header_row, &rows),
    )
        .into_response()
}

/// A table page: title, column names, rows of text, optional filters form fields.
struct Table<'a> {
    title: &'a str,
    path: &'a str,
    columns: &'a [&'a str],
    rows: Vec<Vec<String>>,
    filters: Vec<(&'a str, &'a str, String)>,
    page: i64,
    rows_max: i64,
    csv: bool,
}

fn table_page(
    app: &AppState,
    ctx: &Ctx,
    table: Table<'_>,
    query: &BTreeMap<String, String>,
) -> Page {
    if table.csv {
        return Ok(csv(
            table
                .path
                .trim_start_matches('/')
                .replace('/', "-")
                .as_str(),
            table.columns,
            table.rows,
        ));
    }
    let more = i64::try_from(table.rows.len()).unwrap_or(i64::MAX) >= table.rows_max;
    let mut link_query: Vec<(String, String)> = query
        .iter()
        .filter(|(key, _)| key.as_str() != "page" && key.as_str() != "format")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    link_query.sort();
    let encoded: String = link_query
        .iter()
        .map(|(key, value)| format!("{}={}&", url_encode(key), url_encode(value)))
        .collect();
    render(
        app,
        "table.html",
        Some(ctx),
        context! {
            title => table.title,
            path => table.path,
            columns => table.columns,
            rows => table.rows,
            filters => table.filters,
            page => table.page,
            more => more,
            query => encoded,
        },
    )
}

fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

// --- Login ---------------------------------------------------------------------------------

async fn home(State(app): App, headers: HeaderMap, Extension(peer): Extension<Peer>) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    render(&app, "home.html", Some(&ctx), context! {})
}

async fn login_page(State(app): App, Extension(peer): Extension<Peer>) -> Page {
    let principal = app
        .auth
        .authenticate_certificate(&peer.certificate_subject)
        .await
        .map_err(|denial| match denial.code {
            crate::bus::auth::DenyCode::UnknownUser
            | crate::bus::auth::DenyCode::BadCredentials => {
                TerminalError::new(ErrorCode::CertificateRefused)
            }
            _ => TerminalError::from(denial),
        })?;
    let token = session::random_token(16)
        .ok_or_else(|| TerminalError::backend("login", &"no randomness", false))?;
    let mut response = render(
        &app,
        "login.html",
        None,
        context! {
            certificate_user => principal.user.to_string(),
            certificate_name => principal.display_name,
            login_csrf => token,
        },
    )?;
    if let Ok(value) =
        HeaderValue::from_str(&session::set_cookie(LOGIN_CSRF_COOKIE, &token, Some(600)))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Form(form): Form<LoginForm>,
) -> Page {
    let outcome = login_inner(&app, &headers, &peer, &form).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(error) => error.code.as_str(),
    };
    ::metrics::counter!(super::metrics::LOGINS_TOTAL, "outcome" => label).increment(1);
    outcome
}

async fn login_inner(app: &AppState, headers: &HeaderMap, peer: &Peer, form: &LoginForm) -> Page {
    match session::cookie(headers, LOGIN_CSRF_COOKIE) {
        Some(cookie) if session::same_token(cookie, &form.csrf) => {}
        _ => return Err(TerminalError::new(ErrorCode::CsrfInvalid)),
    }
    let by_certificate = app
        .auth
        .authenticate_certificate(&peer.certificate_subject)
        .await
        .map_err(|denial| match denial.code {
            crate::bus::auth::DenyCode::UnknownUser
            | crate::bus::auth::DenyCode::BadCredentials => {
                TerminalError::new(ErrorCode::CertificateRefused)
            }
            _ => TerminalError::from(denial),
        })?;
    let by_password = app
        .auth
        .authenticate_password(
            &by_certificate.user.participant,
            &by_certificate.user.uid,
            &form.password,
        )
        .await?;
    if by_password.user != by_certificate.user {
        return Err(TerminalError::new(ErrorCode::BadCredentials));
    }
    let csrf = session::random_token(32)
        .ok_or_else(|| TerminalError::backend("login", &"no randomness", false))?;
    let token = app
        .sessions
        .open(Session {
            user: by_certificate.user.clone(),
            display_name: by_certificate.display_name.clone(),
            certificate_subject: peer.certificate_subject.clone(),
            csrf,
        })
        .ok_or_else(|| TerminalError::new(ErrorCode::TooManySessions))?;
    tracing::info!(user = %by_certificate.user, "terminal: logged in");
    let mut response = see_other("/");
    for cookie in [
        session::set_cookie(SESSION_COOKIE, &token, None),
        session::set_cookie(LOGIN_CSRF_COOKIE, "", Some(0)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Form(form): Form<CsrfForm>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.check_csrf(form.csrf.as_deref())?;
    app.sessions.close(&ctx.token);
    let mut response = see_other("/login");
    if let Ok(value) = HeaderValue::from_str(&session::set_cookie(SESSION_COOKIE, "", Some(0))) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

// --- Settlement instructions -----------------------------------------------------------------

const STATUSES: &[&str] = &[
    "received",
    "rejected",
    "unmatched",
    "matched",
    "pending",
    "partially_settled",
    "settled",
    "cancelled",
];

async fn si_list(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    let participant = ctx
        .scope(
            &app,
            Function::SiEnquiry,
            query.get("participant").map(String::as_str),
        )
        .await?;
    let text = |key: &str| {
        query
            .get(key)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let status = text("status");
    if let Some(status) = &status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(TerminalError::with(
            ErrorCode::InvalidInput,
            format!("status: one of {}", STATUSES.join(", ")),
        ));
    }
    let rows_max = app.config.page_rows_max;
    let (page, offset) = page_offset(text("page").and_then(|page| page.parse().ok()), rows_max);
    let filter = sql::InstructionFilter {
        participant,
        status,
        reference_prefix: text("reference"),
        isin: text("isin").map(|isin| isin.to_ascii_uppercase()),
        settlement_date_from: parse_optional_date("from", query.get("from").map(String::as_str))?,
        settlement_date_to: parse_optional_date("to", query.get("to").map(String::as_str))?,
        limit: rows_max,
        offset,
    };
    let rows = sql::instructions(&app.pool, &filter).await?;
    if query.get("format").map(String::as_str) == Some("csv") {
        return Ok(csv(
            "instructions",
            &[
                "id",
                "participant",
                "reference",
                "type",
                "function",
                "direction",
                "payment",
                "account",
                "counterparty",
                "isin",
                "quantity",
                "settlement_date",
                "currency",
                "amount_minor",
                "status",
                "on_hold",
            ],
            rows.iter()
                .map(|row| {
                    vec![
                        row.instruction_id.to_string(),
                        row.participant_id.clone(),
                        row.sender_reference.clone(),
                        row.message_type.clone(),
                        row.function.clone(),
                        row.direction.clone(),
                        row.payment.clone(),
                        row.account_id.clone(),
                        row.counterparty_participant_id.clone(),
                        row.isin.clone(),
                        row.quantity.to_string(),
                        row.settlement_date.clone(),
                        row.currency_code.clone().unwrap_or_default(),
                        row.amount_minor
                            .map(|amount| amount.to_string())
                            .unwrap_or_default(),
                        row.status.clone(),
                        row.on_hold.to_string(),
                    ]
                })
                .collect(),
        ));
    }
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= rows_max;
    render(
        &app,
        "si_list.html",
        Some(&ctx),
        context! {
            rows => rows,
            query => query,
            statuses => STATUSES,
            page => page,
            more => more,
        },
    )
}

/// The SI `id`, if the user may see it (another participant's SI is "not found").
async fn visible_instruction(
    app: &AppState,
    ctx: &Ctx,
    id: i64,
    function: Function,
) -> Result<sql::InstructionView, TerminalError> {
    let instruction = sql::instruction(&app.pool, id)
        .await?
        .ok_or_else(|| TerminalError::new(ErrorCode::NotFound))?;
    let owner = ParticipantId::parse(&instruction.participant_id)
        .map_err(|error| TerminalError::backend("instruction", &error, false))?;
    if instruction.participant_id != ctx.participant() {
        // Only staff with scope over any participant may look; to others it does not exist.
        return match ctx
            .require(app, function, &Target::Participant(owner))
            .await
        {
            Ok(()) => Ok(instruction),
            Err(error)
                if error.code == ErrorCode::OtherParticipant
                    || error.code == ErrorCode::NotGranted =>
            {
                Err(TerminalError::new(ErrorCode::NotFound))
            }
            Err(error) => Err(error),
        };
    }
    ctx.require(app, function, &Target::Own).await?;
    Ok(instruction)
}

async fn si_detail(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    let instruction = visible_instruction(&app, &ctx, id, Function::SiEnquiry).await?;
    let history = sql::history(&app.pool, id).await?;
    let own = instruction.participant_id == ctx.participant();
    render(
        &app,
        "si_detail.html",
        Some(&ctx),
        context! {
            si => instruction,
            history => history,
            may_cancel => own && ctx.may(Function::SiCancel),
            may_hold => own && ctx.may(Function::SiInput),
        },
    )
}

/// Server-sent events: `status` with the SI's effective status and hold flag, at once and on
/// every change.
async fn si_events(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
) -> Result<Response, TerminalError> {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    let instruction = visible_instruction(&app, &ctx, id, Function::SiEnquiry).await?;
    let participant = ParticipantId::parse(&instruction.participant_id)
        .map_err(|error| TerminalError::backend("instruction", &error, false))?;
    let events = app
        .nats
        .subscribe(subjects::events(&participant, EventKind::Instruction))
        .await
        .map_err(|error| TerminalError::backend("subscribe to events", &error, true))?;
    let poll = Duration::from_millis(app.config.live_poll_ms);
    struct Live {
        app: Arc<AppState>,
        events: async_nats::Subscriber,
        last: Option<(String, bool)>,
        first: bool,
    }
    let live = Live {
        app: app.clone(),
        events,
        last: None,
        first: true,
    };
    let stream = futures::stream::unfold(live, move |mut live| async move {
        loop {
            if !live.first {
                tokio::select! {
                    _ = live.events.next() => {}
                    () = tokio::time::sleep(poll) => {}
                }
            }
            live.first = false;
            let current = match sql::instruction(&live.app.pool, id).await {
                Ok(Some(row)) => (row.status, row.on_hold),
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "terminal: live update read failed");
                    continue;
                }
            };
            if live.last.as_ref() != Some(&current) {
                live.last = Some(current.clone());
                let data =
                    serde_json::json!({ "status": current.0, "on_hold": current.1 }).to_string();
                return Some((
                    Ok::<Event, Infallible>(Event::default().event("status").data(data)),
                    live,
                ));
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn limits(app: &AppState, ctx: &Ctx) -> SiLimits {
    SiLimits {
        quantity_max: app.intake.quantity_max,
        input_limits: ctx.rights.input_limits.clone(),
    }
}

fn suggested_reference() -> String {
    let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    format!("T{millis:X}")
}

async fn si_new(State(app): App, headers: HeaderMap, Extension(peer): Extension<Peer>) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.require(&app, Function::SiInput, &Target::Own).await?;
    let form = SiForm {
        direction: "deliver".to_owned(),
        payment: "DVP".to_owned(),
        reference: suggested_reference(),
        account: format!("{}-01", ctx.participant()),
        currency: "HKD".to_owned(),
        ..SiForm::default()
    };
    render(
        &app,
        "si_new.html",
        Some(&ctx),
        context! { form => form, errors => BTreeMap::<String, String>::new() },
    )
}

#[derive(Deserialize)]
struct SiPost {
    csrf: Option<String>,
    #[serde(flatten)]
    form: SiForm,
}

async fn si_validate(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Form(post): Form<SiPost>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.check_csrf(post.csrf.as_deref())?;
    ctx.require(&app, Function::SiInput, &Target::Own).await?;
    let errors = match si::validate(&post.form, ctx.participant(), &limits(&app, &ctx)) {
        Ok(_) => BTreeMap::new(),
        Err(errors) => errors,
    };
    let body = serde_json::json!({ "ok": errors.is_empty(), "errors": errors }).to_string();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn si_submit(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Form(post): Form<SiPost>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.check_csrf(post.csrf.as_deref())?;
    ctx.require(&app, Function::SiInput, &Target::Own).await?;
    let participant = ctx.participant().to_owned();
    let mut errors = match si::validate(&post.form, &participant, &limits(&app, &ctx)) {
        Ok(input) => {
            if sql::reference_used(&app.pool, &participant, &input.reference).await? {
                BTreeMap::from([("reference", ErrorCode::ReferenceUsed.message().to_owned())])
            } else {
                return store_input(&app, &ctx, &input, &post.form).await;
            }
        }
        Err(errors) => errors,
    };
    let code = if errors.contains_key("reference") && errors.len() == 1 {
        ErrorCode::ReferenceUsed
    } else {
        ErrorCode::InvalidInput
    };
    if code == ErrorCode::InvalidInput && errors.is_empty() {
        errors.insert("form", ErrorCode::InvalidInput.message().to_owned());
    }
    let mut response = render(
        &app,
        "si_new.html",
        Some(&ctx),
        context! { form => post.form, errors => errors, error_code => code.as_str() },
    )?;
    *response.status_mut() = code.status();
    if let Ok(value) = HeaderValue::from_str(code.as_str()) {
        response.headers_mut().insert("x-ccass-error", value);
    }
    Ok(response)
}

async fn addresses(app: &AppState, participant: &str) -> Result<(String, String), TerminalError> {
    let sender = sql::logical_terminal(&app.pool, participant)
        .await?
        .ok_or_else(|| {
            TerminalError::backend(
                "reference data",
                &format!("{participant} has no logical terminal"),
                false,
            )
        })?;
    let receiver = sql::logical_terminal(&app.pool, &app.ccp_participant)
        .await?
        .ok_or_else(|| {
            TerminalError::backend("reference data", &"the ccp has no logical terminal", false)
        })?;
    Ok((sender, receiver))
}

async fn store_input(app: &AppState, ctx: &Ctx, input: &si::SiInput, form: &SiForm) -> Page {
    let participant = ctx.participant();
    let (sender, receiver) = addresses(app, participant).await?;
    let text = si::build_message(
        input,
        &si::Addresses {
            sender: &sender,
            receiver: &receiver,
            place_of_settlement: &app.settlement.place_of_settlement_bic,
        },
        None,
    )
    .map_err(|error| {
        TerminalError::with(
            ErrorCode::InvalidInput,
            format!("the instruction does not validate: {error}"),
        )
    })?;
    let message_type = input.message_type().to_string();
    let inserted = sql::insert_pending(
        &app.pool,
        &sql::NewPending {
            participant_id: participant,
            sender_reference: &input.reference,
            message_type: &message_type,
            fin_text: &text,
            summary: serde_json::to_value(form).unwrap_or_default(),
            maker_uid: &ctx.session.user.uid,
        },
    )
    .await?;
    if inserted.is_none() {
        return Err(TerminalError::new(ErrorCode::ReferenceUsed));
    }
    tracing::info!(user = %ctx.session.user, reference = %input.reference, "terminal: SI input, waiting for authorisation");
    Ok(see_other(&format!(
        "/pending?created={}",
        url_encode(&input.reference)
    )))
}

/// Publishes FIN text to INBOUND as the gateway does: `Nats-Msg-Id` = participant:SEME, done
/// when JetStream stored it.
async fn publish_inbound(
    app: &AppState,
    participant: &str,
    user_uid: &str,
    message_type: u16,
    reference: &str,
    text: String,
) -> Result<(), TerminalError> {
    let participant_id = ParticipantId::parse(participant)
        .map_err(|error| TerminalError::backend("publish", &error, false))?;
    let number = MessageTypeNumber::new(message_type)
        .ok_or_else(|| TerminalError::backend("publish", &"bad message type", false))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{participant}:{reference}").as_str(),
    );
    headers.insert(
        crate::bus::inbound::USER,
        format!("{participant}.{user_uid}").as_str(),
    );
    headers.insert(
        crate::bus::inbound::CHANNEL,
        crate::bus::inbound::CHANNEL_TERMINAL,
    );
    let timeout = Duration::from_millis(app.config.publish_timeout_ms);
    let publish = async {
        app.jetstream
            .publish_with_headers(
                subjects::inbound(&participant_id, number),
                headers,
                text.into(),
            )
            .await
            .map_err(|error| error.to_string())?
            .await
            .map_err(|error| error.to_string())
    };
    match tokio::time::timeout(timeout, publish).await {
        Ok(Ok(_ack)) => {
            ::metrics::counter!(super::metrics::INSTRUCTIONS_PUBLISHED_TOTAL).increment(1);
            Ok(())
        }
        Ok(Err(error)) => Err(TerminalError::backend("publish to inbound", &error, true)),
        Err(_) => Err(TerminalError::backend(
            "publish to inbound",
            &"no acknowledgement in time",
            true,
        )),
    }
}

async fn pending_list(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    if ctx
        .require(&app, Function::SiAuthorise, &Target::Own)
        .await
        .is_err()
    {
        ctx.require(&app, Function::SiInput, &Target::Own).await?;
    }
    let rows = sql::open_pending(&app.pool, ctx.participant()).await?;
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            context! {
                pending_id => row.pending_id,
                reference => row.sender_reference,
                message_type => row.message_type,
                maker => row.maker_uid,
                created_at => sql::timestamp(row.created_at),
                summary => row.summary,
                own => row.maker_uid == ctx.session.user.uid,
            }
        })
        .collect();
    render(
        &app,
        "pending.html",
        Some(&ctx),
        context! {
            rows => rows,
            created => query.get("created"),
            may_authorise => ctx.may(Function::SiAuthorise),
        },
    )
}

async fn decide(
    app: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
    id: i64,
    csrf: Option<&str>,
    authorise: bool,
) -> Page {
    let ctx = Ctx::of(app, headers, peer).await?;
    ctx.check_csrf(csrf)?;
    ctx.require(app, Function::SiAuthorise, &Target::Own)
        .await?;
    let participant = ctx.participant().to_owned();
    let row = sql::pending(&app.pool, &participant, id)
        .await?
        .ok_or_else(|| TerminalError::new(ErrorCode::NotFound))?;
    let maker = UserRef {
        participant: participant.clone(),
        uid: row.maker_uid.clone(),
    };
    app.auth.check_authoriser(&maker, &ctx.session.user).await?;
    let status = if authorise { "authorised" } else { "rejected" };
    let decided = sql::decide_pending(
        &app.pool,
        &participant,
        id,
        &ctx.session.user.uid,
        status,
        |row| async move {
            if !authorise {
                return Ok(());
            }
            let message_type: u16 = row
                .message_type
                .parse()
                .map_err(|_| TerminalError::backend("pending", &"bad message type", false))?;
            publish_inbound(
                app,
                &row.participant_id,
                &row.maker_uid,
                message_type,
                &row.sender_reference,
                row.fin_text,
            )
            .await
        },
    )
    .await?;
    match decided {
        Decided::Done(row) => {
            tracing::info!(
                checker = %ctx.session.user, maker = %row.maker_uid, reference = %row.sender_reference, status,
                "terminal: SI input decided"
            );
            Ok(see_other(&format!(
                "/si?reference={}",
                url_encode(&row.sender_reference)
            )))
        }
        Decided::NotPending => Err(TerminalError::new(ErrorCode::NotPending)),
        Decided::Refused(error) => Err(error),
    }
}

async fn pending_authorise(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Page {
    decide(&app, &headers, &peer, id, form.csrf.as_deref(), true).await
}

async fn pending_reject(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Page {
    decide(&app, &headers, &peer, id, form.csrf.as_deref(), false).await
}

async fn si_cancel(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.check_csrf(form.csrf.as_deref())?;
    let si = visible_instruction(&app, &ctx, id, Function::SiCancel).await?;
    if si.participant_id != ctx.participant() {
        return Err(TerminalError::new(ErrorCode::OtherParticipant));
    }
    if si.function != "NEWM" || !["unmatched", "matched"].contains(&si.status.as_str()) {
        return Err(TerminalError::new(ErrorCode::InvalidState));
    }
    let input = si::SiInput {
        deliver: si.direction == "deliver",
        reference: format!(
            "X{:X}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
        ),
        account: si.account_id.clone(),
        counterparty: si.counterparty_participant_id.clone(),
        counterparty_account: None,
        isin: si.isin.clone(),
        quantity: si.quantity,
        settlement_date: Date::parse(
            &si.settlement_date,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|error| TerminalError::backend("cancel", &error, false))?,
        trade_date: None,
        payment: match (&si.currency_code, si.amount_minor) {
            (Some(currency), Some(amount)) => {
                Some((currency.clone(), rust_decimal::Decimal::new(amount, 2)))
            }
            _ => None,
        },
    };
    let (sender, receiver) = addresses(&app, &si.participant_id).await?;
    let text = si::build_message(
        &input,
        &si::Addresses {
            sender: &sender,
            receiver: &receiver,
            place_of_settlement: &app.settlement.place_of_settlement_bic,
        },
        Some(&si.sender_reference),
    )
    .map_err(|error| TerminalError::backend("build cancellation", &error, false))?;
    publish_inbound(
        &app,
        &si.participant_id,
        &ctx.session.user.uid,
        input.message_type(),
        &input.reference,
        text,
    )
    .await?;
    tracing::info!(user = %ctx.session.user, reference = %si.sender_reference, "terminal: cancellation sent");
    Ok(see_other(&format!("/si/{id}")))
}

async fn hold_or_release(
    app: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
    id: i64,
    csrf: Option<&str>,
    change: lifecycle::Change,
) -> Page {
    let ctx = Ctx::of(app, headers, peer).await?;
    ctx.check_csrf(csrf)?;
    let si = visible_instruction(app, &ctx, id, Function::SiInput).await?;
    if si.participant_id != ctx.participant() {
        return Err(TerminalError::new(ErrorCode::OtherParticipant));
    }
    let reference =
        crate::settlement::intake::Reference::load(&app.pool, &app.ccp_participant).await?;
    match lifecycle::apply(
        &app.pool,
        &reference,
        &si.participant_id,
        &si.sender_reference,
        change,
    )
    .await
    {
        Ok(()) => Ok(see_other(&format!("/si/{id}"))),
        Err(lifecycle::LifecycleError::Db(error)) => Err(error.into()),
        Err(_) => Err(TerminalError::new(ErrorCode::InvalidState)),
    }
}

async fn si_hold(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Page {
    hold_or_release(
        &app,
        &headers,
        &peer,
        id,
        form.csrf.as_deref(),
        lifecycle::Change::Hold,
    )
    .await
}

async fn si_release(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Page {
    hold_or_release(
        &app,
        &headers,
        &peer,
        id,
        form.csrf.as_deref(),
        lifecycle::Change::Release,
    )
    .await
}

// --- Enquiries -------------------------------------------------------------------------------

type Q = Query<BTreeMap<String, String>>;

fn q<'q>(query: &'q BTreeMap<String, String>, key: &str) -> Option<&'q str> {
    query
        .get(key)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

async fn holdings(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Q,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    let participant = ctx
        .scope(&app, Function::EnquiryHoldings, q(&query, "participant"))
        .await?;
    let rows_max = app.config.page_rows_max;
    let (page, offset) = page_offset(
        q(&query, "page").and_then(|page| page.parse().ok()),
        rows_max,
    );
    let account = q(&query, "account").map(str::to_ascii_uppercase);
    let isin = q(&query, "isin").map(str::to_ascii_uppercase);
    let rows = sql::holdings(
        &app.pool,
        participant.as_deref(),
        account.as_deref(),
        isin.as_deref(),
        rows_max,
        offset,
    )
    .await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            vec![
                row.account_id,
                row.isin,
                row.security_name,
                row.quantity.to_string(),
            ]
        })
        .collect();
    table_page(
        &app,
        &ctx,
        Table {
            title: "Holdings",
            path: "/holdings",
            columns: &["account", "isin", "security", "quantity"],
            rows,
            filters: vec![
                ("account", "Account", account.unwrap_or_default()),
                ("isin", "ISIN", isin.unwrap_or_default()),
                (
                    "participant",
                    "Participant (operations)",
                    q(&query, "participant").unwrap_or_default().to_owned(),
                ),
            ],
            page,
            rows_max,
            csv: q(&query, "format") == Some("csv"),
        },
        &query,
    )
}

async fn movements(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Q,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    let participant = ctx
        .scope(&app, Function::EnquiryHoldings, q(&query, "participant"))
        .await?;
    let rows_max = app.config.page_rows_max;
    let (page, offset) = page_offset(
        q(&query, "page").and_then(|page| page.parse().ok()),
        rows_max,
    );
    let to = parse_optional_date("to", q(&query, "to"))?.unwrap_or_else(today);
    let from =
        parse_optional_date("from", q(&query, "from"))?.unwrap_or(to - time::Duration::days(30));
    let rows = sql::movements(
        &app.pool,
        participant.as_deref(),
        from,
        to,
        rows_max,
        offset,
    )
    .await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            vec![
                row.settlement_date,
                row.movement_kind,
                row.from_account_id.unwrap_or_default(),
                row.to_account_id.unwrap_or_default(),
                row.isin,
                row.quantity.to_string(),
                row.reference,
                row.settlement_run_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table_page(
        &app,
        &ctx,
        Table {
            title: "Stock movements",
            path: "/movements",
            columns: &[
                "settlement_date",
                "kind",
                "from",
                "to",
                "isin",
                "quantity",
                "reference",
                "run",
            ],
            rows,
            filters: vec![
                ("from", "From (date)", from.to_string()),
                ("to", "To (date)", to.to_string()),
                (
                    "participant",
                    "Participant (operations)",
                    q(&query, "participant").unwrap_or_default().to_owned(),
                ),
            ],
            page,
            rows_max,
            csv: q(&query, "format") == Some("csv"),
        },
        &query,
    )
}

fn minor(amount: i64) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", (amount / 100).abs(), (amount % 100).abs())
}

async fn money(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Q,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    let participant = ctx
        .scope(&app, Function::EnquirySettlement, q(&query, "participant"))
        .await?;
    let rows = sql::money(&app.pool, participant.as_deref()).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            vec![
                row.participant_id,
                row.currency_code,
                minor(row.amount_minor),
            ]
        })
        .collect();
    table_page(
        &app,
        &ctx,
        Table {
            title: "Money positions",
            path: "/money",
            columns: &["participant", "currency", "balance"],
            rows,
            filters: vec![(
                "participant",
                "Participant (operations)",
                q(&query, "participant").unwrap_or_default().to_owned(),
            )],
            page: 1,
            rows_max: i64::MAX,
            csv: q(&query, "format") == Some("csv"),
        },
        &query,
    )
}

async fn cns_positions(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Q,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    let participant = ctx
        .scope(&app, Function::EnquirySettlement, q(&query, "participant"))
        .await?;
    let date = parse_optional_date("date", q(&query, "date"))?.unwrap_or_else(today);
    let participant_id = participant
        .as_deref()
        .map(ParticipantId::parse)
        .transpose()
        .map_err(|error| TerminalError::backend("cns", &error, false))?;
    let rows = crate::cns::positions::positions(&app.pool, participant_id.as_ref(), date).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            vec![
                row.participant_id,
                row.isin.or(row.currency_code).unwrap_or_default(),
                row.net.to_string(),
                row.settled.to_string(),
                row.obligation_count.to_string(),
                row.status,
            ]
        })
        .collect();
    table_page(
        &app,
        &ctx,
        Table {
            title: "CNS positions",
            path: "/cns",
            columns: &[
                "participant",
                "isin/currency",
                "net",
                "settled",
                "obligations",
                "status",
            ],
            rows,
            filters: vec![
                ("date", "Settlement date", date.to_string()),
                (
                    "participant",
                    "Participant (operations)",
                    q(&query, "participant").unwrap_or_default().to_owned(),
                ),
            ],
            page: 1,
            rows_max: i64::MAX,
            csv: q(&query, "format") == Some("csv"),
        },
        &query,
    )
}

async fn runs(State(app): App, headers: HeaderMap, Extension(peer): Extension<Peer>) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.require(&app, Function::EnquirySettlement, &Target::Own)
        .await?;
    runs_page(&app, &ctx, false, None).await
}

async fn runs_page(app: &AppState, ctx: &Ctx, operations: bool, report: Option<String>) -> Page {
    let runs = sql::runs(&app.pool, app.config.page_rows_max.min(50)).await?;
    let svg = chart::progress_svg(&runs);
    render(
        app,
        "runs.html",
        Some(ctx),
        context! {
            runs => runs,
            chart => minijinja::Value::from_safe_string(svg),
            operations => operations,
            run_times => app.settlement.run_times,
            utc_offset_minutes => app.settlement.utc_offset_minutes,
            report => report,
            today => today().to_string(),
        },
    )
}

// --- Operations ----------------------------------------------------------------------------

async fn ops_runs(State(app): App, headers: HeaderMap, Extension(peer): Extension<Peer>) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.require(&app, Function::OperationsBatch, &Target::Own)
        .await?;
    runs_page(&app, &ctx, true, None).await
}

#[derive(Deserialize)]
struct RunForm {
    csrf: Option<String>,
    date: Option<String>,
}

async fn ops_trigger_run(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Form(form): Form<RunForm>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.check_csrf(form.csrf.as_deref())?;
    ctx.require(&app, Function::OperationsBatch, &Target::Own)
        .await?;
    let date = parse_optional_date("date", form.date.as_deref())?.unwrap_or_else(today);
    let options =
        crate::settlement::run::RunOptions::leader(format!("terminal:{}", ctx.session.user));
    let report =
        match crate::settlement::run::run_now(&app.pool, &app.settlement, date, &options).await {
            Ok(report) => report.to_string(),
            Err(crate::settlement::run::RunError::LeaderBusy) => {
                return Err(TerminalError::with(
                    ErrorCode::InvalidState,
                    "another settlement run is in progress",
                ));
            }
            Err(error) => return Err(TerminalError::backend("settlement run", &error, true)),
        };
    tracing::info!(user = %ctx.session.user, %date, "terminal: settlement run triggered");
    runs_page(&app, &ctx, true, Some(report)).await
}

async fn ops_exceptions(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Q,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.require(&app, Function::OperationsExceptions, &Target::Own)
        .await?;
    let rows = sql::exceptions(&app.pool, app.config.page_rows_max).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            vec![
                row.at,
                row.kind,
                row.participant_id,
                row.reference,
                row.detail,
            ]
        })
        .collect();
    table_page(
        &app,
        &ctx,
        Table {
            title: "Exceptions: rejected messages and refused trades",
            path: "/ops/exceptions",
            columns: &["at", "kind", "participant", "reference", "detail"],
            rows,
            filters: vec![],
            page: 1,
            rows_max: app.config.page_rows_max,
            csv: q(&query, "format") == Some("csv"),
        },
        &query,
    )
}

async fn ops_audit(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Q,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.require(&app, Function::OperationsEnquiry, &Target::Own)
        .await?;
    let rows_max = app.config.page_rows_max;
    let (page, offset) = page_offset(
        q(&query, "page").and_then(|page| page.parse().ok()),
        rows_max,
    );
    let filter = sql::AuditFilter {
        actor: q(&query, "actor").map(str::to_owned),
        participant: q(&query, "participant").map(str::to_owned),
        action_prefix: q(&query, "action").map(str::to_owned),
        outcome: q(&query, "outcome").map(str::to_owned),
        limit: rows_max,
        offset,
    };
    let rows = sql::audit(&app.pool, &filter).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            vec![
                row.audit_id.to_string(),
                row.at,
                row.actor,
                row.participant_id.unwrap_or_default(),
                row.action,
                row.target.unwrap_or_default(),
                row.outcome,
                row.detail,
            ]
        })
        .collect();
    table_page(
        &app,
        &ctx,
        Table {
            title: "Audit trail",
            path: "/ops/audit",
            columns: &[
                "id",
                "at",
                "actor",
                "participant",
                "action",
                "target",
                "outcome",
                "detail",
            ],
            rows,
            filters: vec![
                (
                    "actor",
                    "Actor (e.g. B01234.ops1)",
                    filter.actor.clone().unwrap_or_default(),
                ),
                (
                    "participant",
                    "Participant",
                    filter.participant.clone().unwrap_or_default(),
                ),
                (
                    "action",
                    "Action prefix (e.g. auth.authorise)",
                    filter.action_prefix.clone().unwrap_or_default(),
                ),
                (
                    "outcome",
                    "Outcome (allowed, refused, error)",
                    filter.outcome.clone().unwrap_or_default(),
                ),
            ],
            page,
            rows_max,
            csv: q(&query, "format") == Some("csv"),
        },
        &query,
    )
}

async fn ops_sessions(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Query(query): Q,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.require(&app, Function::OperationsEnquiry, &Target::Own)
        .await?;
    // The gateway exposes its open sessions only as a metric; it is readable here when the
    // gateway runs in this process (`ccass up`), otherwise on the gateway's own /metrics.
    let text = crate::telemetry::metrics_handle().render();
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .filter(|line| line.starts_with(crate::gateway::metrics::SESSIONS_OPEN))
        .map(|line| vec![line.to_owned()])
        .collect();
    if rows.is_empty() {
        rows.push(vec![format!(
            "no gateway in this process: read {} on the gateway's ops port /metrics",
            crate::gateway::metrics::SESSIONS_OPEN
        )]);
    }
    table_page(
        &app,
        &ctx,
        Table {
            title: "Gateway sessions",
            path: "/ops/sessions",
            columns: &["metric"],
            rows,
            filters: vec![],
            page: 1,
            rows_max: i64::MAX,
            csv: false,
        },
        &query,
    )
}

// --- Participant administration --------------------------------------------------------------

async fn admin_page(State(app): App, headers: HeaderMap, Extension(peer): Extension<Peer>) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.require(&app, Function::ParticipantAdmin, &Target::Own)
        .await?;
    admin_render(&app, &ctx, None).await
}

async fn admin_render(app: &AppState, ctx: &Ctx, result: Option<String>) -> Page {
    let grants = match app
        .auth
        .administer(&ctx.session.user, AdminAction::Pending)
        .await?
    {
        AdminResult::PendingGrants { grants } => grants
            .into_iter()
            .map(|grant| {
                context! {
                    grant_id => grant.grant_id,
                    user => grant.user.to_string(),
                    group => grant.group,
                    requested_by => grant.requested_by,
                    requested_at => grant.requested_at,
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    render(
        app,
        "admin.html",
        Some(ctx),
        context! { grants => grants, result => result },
    )
}

#[derive(Deserialize)]
struct AdminForm {
    csrf: Option<String>,
    action: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    grant_id: String,
}

async fn admin_action(
    State(app): App,
    headers: HeaderMap,
    Extension(peer): Extension<Peer>,
    Form(form): Form<AdminForm>,
) -> Page {
    let ctx = Ctx::of(&app, &headers, &peer).await?;
    ctx.check_csrf(form.csrf.as_deref())?;
    ctx.require(&app, Function::ParticipantAdmin, &Target::Own)
        .await?;
    let user = || UserRef {
        participant: ctx.participant().to_owned(),
        uid: form.uid.trim().to_owned(),
    };
    let grant_id = || {
        form.grant_id
            .trim()
            .parse::<i64>()
            .map_err(|_| TerminalError::with(ErrorCode::InvalidInput, "grant: a number"))
    };
    let action = match form.action.as_str() {
        "grant" => AdminAction::Grant {
            user: user(),
            group: form.group.trim().to_owned(),
        },
        "revoke" => AdminAction::Revoke {
            user: user(),
            group: form.group.trim().to_owned(),
        },
        "show" => AdminAction::Show { user: user() },
        "approve" => AdminAction::Approve {
            grant_id: grant_id()?,
        },
        "reject" => AdminAction::Reject {
            grant_id: grant_id()?,
        },
        _ => {
            return Err(TerminalError::with(
                ErrorCode::InvalidInput,
                "action: grant, revoke, show, approve or reject",
            ));
        }
    };
    let result = app.auth.administer(&ctx.session.user, action).await?;
    let text = match result {
        AdminResult::Applied => "applied".to_owned(),
        AdminResult::PendingApproval { grant_id } => {
            format!("grant {grant_id} waits for a second administrator's approval")
        }
        AdminResult::Rejected => "rejected".to_owned(),
        AdminResult::Shown { rights } => format!(
            "{}: groups {}; functions {}",
            rights.user,
            rights.groups.join(", "),
            rights.functions.join(", ")
        ),
        AdminResult::PendingGrants { grants } => format!("{} pending grants", grants.len()),
    };
    admin_render(&app, &ctx, Some(text)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile() {
        let environment = templates().unwrap();
        for (name, _) in TEMPLATES {
            environment.get_template(name).unwrap();
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let text = csv_text(
            &["a", "b"],
            &[
                vec!["=cmd()".into(), "a,\"b\"".into()],
                vec!["-5".into(), "ok".into()],
            ],
        );
        assert_eq!(text, "a,b\r\n'=cmd(),\"a,\"\"b\"\"\"\r\n-5,ok\r\n");
    }

    #[test]
    fn minor_units_print_with_two_decimals() {
        assert_eq!(minor(41_250_000), "412500.00");
        assert_eq!(minor(-5), "-0.05");
    }
}
