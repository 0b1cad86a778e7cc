//! The terminal's one table of error codes: every refusal a browser can see has a stable code
//! (`X-Ccass-Error` header, `data-code` in the page, `code` in JSON) and a human message.
//! Internal detail (SQL, NATS, LDAP errors) is logged once here and never sent.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::bus::auth::{Denial, DenyCode};
use crate::hostdb::HostDbError;

/// Every error code of the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No valid session: log in first.
    NotLoggedIn,
    /// The session was idle too long.
    SessionExpired,
    /// The TLS client certificate is missing, revoked or unknown.
    CertificateRefused,
    /// The session belongs to another certificate than this connection's.
    CertificateMismatch,
    /// Password (or the certificate's user) did not authenticate.
    BadCredentials,
    /// Missing or wrong CSRF token on a form.
    CsrfInvalid,
    /// None of the user's groups grants the function.
    NotGranted,
    /// The data belongs to another participant.
    OtherParticipant,
    /// Maker–checker: the checker input the instruction.
    SelfAuthorisation,
    /// No such page, instruction or pending input.
    NotFound,
    /// A form field is invalid.
    InvalidInput,
    /// The sender's reference was used before.
    ReferenceUsed,
    /// The value is above the user's SI input limit.
    InputLimitExceeded,
    /// The pending input was decided already.
    NotPending,
    /// The instruction is not in a state that allows this.
    InvalidState,
    /// Too many sessions open.
    TooManySessions,
    /// A back-end service (database, bus, auth service) is unavailable: try again.
    Unavailable,
    /// Anything else (logged with detail).
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::NotLoggedIn,
        ErrorCode::SessionExpired,
        ErrorCode::CertificateRefused,
        ErrorCode::CertificateMismatch,
        ErrorCode::BadCredentials,
        ErrorCode::CsrfInvalid,
        ErrorCode::NotGranted,
        ErrorCode::OtherParticipant,
        ErrorCode::SelfAuthorisation,
        ErrorCode::NotFound,
        ErrorCode::InvalidInput,
        ErrorCode::ReferenceUsed,
        ErrorCode::InputLimitExceeded,
        ErrorCode::NotPending,
        ErrorCode::InvalidState,
        ErrorCode::TooManySessions,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::CertificateRefused => "certificate_refused",
            ErrorCode::CertificateMismatch => "certificate_mismatch",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::CsrfInvalid => "csrf_invalid",
            ErrorCode::NotGranted => "not_granted",
            ErrorCode::OtherParticipant => "other_participant",
            ErrorCode::SelfAuthorisation => "self_authorisation",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::ReferenceUsed => "reference_used",
            ErrorCode::InputLimitExceeded => "input_limit_exceeded",
            ErrorCode::NotPending => "not_pending",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The message shown when the caller adds nothing more specific.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::NotLoggedIn => "Please log in.",
            ErrorCode::SessionExpired => {
                "Your session expired after inactivity. Please log in again."
            }
            ErrorCode::CertificateRefused => "Your client certificate is not accepted.",
            ErrorCode::CertificateMismatch => {
                "This session belongs to another user's certificate. Please log in again."
            }
            ErrorCode::BadCredentials => "The password does not match your certificate's user.",
            ErrorCode::CsrfInvalid => {
                "The form was not sent from this session (missing or wrong form token). Reload the page and try again."
            }
            ErrorCode::NotGranted => "Your user groups do not allow this function.",
            ErrorCode::OtherParticipant => "This belongs to another participant.",
            ErrorCode::SelfAuthorisation => {
                "You input this instruction: a different user must authorise it."
            }
            ErrorCode::NotFound => "Not found.",
            ErrorCode::InvalidInput => "Some fields are invalid.",
            ErrorCode::ReferenceUsed => "This sender's reference was used before.",
            ErrorCode::InputLimitExceeded => "The value is above your input limit.",
            ErrorCode::NotPending => "This input was already authorised or rejected.",
            ErrorCode::InvalidState => "The instruction's status does not allow this.",
            ErrorCode::TooManySessions => "Too many open sessions. Try again later.",
            ErrorCode::Unavailable => "A back-end service is unavailable. Try again shortly.",
            ErrorCode::Internal => "Something went wrong on our side. It has been logged.",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NotLoggedIn | ErrorCode::SessionExpired | ErrorCode::BadCredentials => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::CertificateRefused
            | ErrorCode::CertificateMismatch
            | ErrorCode::CsrfInvalid
            | ErrorCode::NotGranted
            | ErrorCode::OtherParticipant
            | ErrorCode::SelfAuthorisation
            | ErrorCode::InputLimitExceeded => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ReferenceUsed | ErrorCode::NotPending | ErrorCode::InvalidState => {
                StatusCode::CONFLICT
            }
            ErrorCode::TooManySessions | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A refusal on its way to the browser: a code and a human message (never internal detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct TerminalError {
    pub code: ErrorCode,
    pub message: String,
}

impl TerminalError {
    pub fn new(code: ErrorCode) -> TerminalError {
        TerminalError {
            code,
            message: code.message().to_owned(),
        }
    }

    pub fn with(code: ErrorCode, message: impl Into<String>) -> TerminalError {
        TerminalError {
            code,
            message: message.into(),
        }
    }

    /// A back-end failure: logged here with its detail, shown as `unavailable`/`internal`.
    pub fn backend(
        context: &str,
        error: &dyn std::fmt::Display,
        unavailable: bool,
    ) -> TerminalError {
        tracing::error!(%error, context, "terminal: back-end failure");
        TerminalError::new(if unavailable {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Internal
        })
    }
}

impl From<HostDbError> for TerminalError {
    fn from(error: HostDbError) -> TerminalError {
        let unavailable = error.is_unavailable();
        TerminalError::backend("host database", &error, unavailable)
    }
}

impl From<Denial> for TerminalError {
    fn from(denial: Denial) -> TerminalError {
        match denial.code {
            DenyCode::NotGranted => TerminalError::new(ErrorCode::NotGranted),
            DenyCode::OtherParticipant => TerminalError::new(ErrorCode::OtherParticipant),
            DenyCode::SameUser => TerminalError::new(ErrorCode::SelfAuthorisation),
            DenyCode::BadCredentials | DenyCode::UnknownUser => {
                TerminalError::new(ErrorCode::BadCredentials)
            }
            DenyCode::GroupNotAvailable
            | DenyCode::NoSuchGrant
            | DenyCode::DirectoryRefused
            | DenyCode::MalformedRequest => {
                // These reasons name the user's own request (group, grant id), no internals.
                TerminalError::with(ErrorCode::InvalidInput, denial.reason)
            }
            DenyCode::DirectoryUnavailable
            | DenyCode::AuditUnavailable
            | DenyCode::ServiceUnavailable => {
                TerminalError::backend("auth service", &denial.reason, true)
            }
        }
    }
}

impl IntoResponse for TerminalError {
    fn into_response(self) -> Response {
        ::metrics::counter!(super::metrics::REFUSALS_TOTAL, "code" => self.code.as_str())
            .increment(1);
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ccass terminal: {code}</title>\
             <link rel=\"stylesheet\" href=\"/static/terminal.css\"></head><body><main>\
             <h1>Refused</h1><p class=\"error\" role=\"alert\" data-code=\"{code}\">{message} <small>(code {code})</small></p>\
             <p><a href=\"/\">Home</a> · <a href=\"/login\">Log in</a></p></main></body></html>",
            code = self.code.as_str(),
            message = super::html_escape(&self.message),
        );
        let mut response = (self.code.status(), axum::response::Html(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(self.code.as_str()) {
            response.headers_mut().insert("x-ccass-error", value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_with_messages() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} repeated");
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(!code.message().is_empty());
        }
    }

    #[test]
    fn backend_detail_never_reaches_the_message() {
        let error = TerminalError::backend("db", &"password=hunter2 at 10.0.0.1", true);
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert!(!error.message.contains("hunter2"));
        let denial = Denial::new(DenyCode::DirectoryUnavailable, "ldap://10.0.0.1 refused");
        let error = TerminalError::from(denial);
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert!(!error.message.contains("10.0.0.1"));
    }
}
