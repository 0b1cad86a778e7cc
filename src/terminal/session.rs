//! Terminal sessions: in memory, keyed by a random 256-bit token in a `__Host-` cookie
//! (Secure, HttpOnly, SameSite=Strict, Path=/), each bound to the TLS client certificate it
//! was opened with, with its own CSRF token and an idle timeout. A restart logs everyone out
//! (nothing acknowledged lives in a session).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bus::auth::UserRef;

/// The session cookie's name (`__Host-`: Secure, no Domain, Path=/ enforced by browsers).
pub const SESSION_COOKIE: &str = "__Host-ccass_session";
/// The login form's double-submit CSRF cookie.
pub const LOGIN_CSRF_COOKIE: &str = "__Host-ccass_login";

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: UserRef,
    pub display_name: String,
    /// The subject of the client certificate the session was opened with.
    pub certificate_subject: String,
    /// The token every form of this session must carry.
    pub csrf: String,
}

struct Entry {
    session: Session,
    last_seen: Instant,
}

/// Why a session cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    Missing,
    Expired,
    CertificateMismatch,
}

/// All sessions of this process.
pub struct Sessions {
    idle_timeout: Duration,
    sessions_max: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

/// `bytes` random bytes from the process's crypto provider, hex.
pub fn random_token(bytes: usize) -> Option<String> {
    let mut buffer = vec![0u8; bytes];
    let provider = crate::gateway::crypto_provider();
    provider.secure_random.fill(&mut buffer).ok()?;
    Some(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(idle_timeout: Duration, sessions_max: usize) -> Sessions {
        Sessions {
            idle_timeout,
            sessions_max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session; its token, or `None` when the table is full of live sessions (or no
    /// randomness).
    pub fn open(&self, session: Session) -> Option<String> {
        let token = random_token(32)?;
        let mut entries = self.entries.lock().ok()?;
        if entries.len() >= self.sessions_max {
            let idle_timeout = self.idle_timeout;
            entries.retain(|_, entry| entry.last_seen.elapsed() < idle_timeout);
            if entries.len() >= self.sessions_max {
                return None;
            }
        }
        entries.insert(
            token.clone(),
            Entry {
                session,
                last_seen: Instant::now(),
            },
        );
        ::metrics::gauge!(super::metrics::SESSIONS_OPEN).set(entries.len() as f64);
        Some(token)
    }

    /// The session of `token` on a connection with `certificate_subject`; touches it.
    pub fn get(&self, token: &str, certificate_subject: &str) -> Result<Session, SessionRefusal> {
        let mut entries = self.entries.lock().map_err(|_| SessionRefusal::Missing)?;
        let Some(entry) = entries.get_mut(token) else {
            return Err(SessionRefusal::Missing);
        };
        if entry.last_seen.elapsed() >= self.idle_timeout {
            entries.remove(token);
            ::metrics::gauge!(super::metrics::SESSIONS_OPEN).set(entries.len() as f64);
            return Err(SessionRefusal::Expired);
        }
        if entry.session.certificate_subject != certificate_subject {
            return Err(SessionRefusal::CertificateMismatch);
        }
        entry.last_seen = Instant::now();
        Ok(entry.session.clone())
    }

    pub fn close(&self, token: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(token);
            ::metrics::gauge!(super::metrics::SESSIONS_OPEN).set(entries.len() as f64);
        }
    }
}

/// `name=value` from a Cookie header.
pub fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A Set-Cookie value for `name` (Secure, HttpOnly, SameSite=Strict, Path=/).
pub fn set_cookie(name: &str, value: &str, max_age_s: Option<u64>) -> String {
    let mut cookie = format!("{name}={value}; Secure; HttpOnly; SameSite=Strict; Path=/");
    if let Some(max_age) = max_age_s {
        cookie.push_str(&format!("; Max-Age={max_age}"));
    }
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(subject: &str) -> Session {
        Session {
            user: UserRef {
                participant: "B01234".into(),
                uid: "ops1".into(),
            },
            display_name: "Ops".into(),
            certificate_subject: subject.into(),
            csrf: "c".into(),
        }
    }

    #[test]
    fn a_session_is_bound_to_its_certificate_and_expires_when_idle() {
        let sessions = Sessions::new(Duration::from_millis(50), 2);
        let token = sessions.open(session("CN=ops1,OU=B01234,O=ccass")).unwrap();
        assert_eq!(token.len(), 64);
        assert!(sessions.get(&token, "CN=ops1,OU=B01234,O=ccass").is_ok());
        assert_eq!(
            sessions.get(&token, "CN=auth1,OU=B01234,O=ccass"),
            Err(SessionRefusal::CertificateMismatch)
        );
        assert_eq!(sessions.get("nope", "x"), Err(SessionRefusal::Missing));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            sessions.get(&token, "CN=ops1,OU=B01234,O=ccass"),
            Err(SessionRefusal::Expired)
        );
    }

    #[test]
    fn the_table_is_bounded_but_makes_room_from_idle_sessions() {
        let sessions = Sessions::new(Duration::from_millis(30), 1);
        assert!(sessions.open(session("a")).is_some());
        assert!(sessions.open(session("b")).is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(sessions.open(session("b")).is_some());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "x__Host-ccass_session=evil; __Host-ccass_session=good"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("good"));
    }
}
