//! Web sessions: signing in with an API token gives a session cookie; the session names the
//! user, and each request becomes the same `Caller` the API's bearer token gives (the
//! directory's roles now, inactive users refused), so the pages apply the API's rules, not a
//! second set. Each session carries a CSRF token that every state-changing form must return.
//!
//! Sessions live in memory (a restart signs everybody out) and are bounded in number. Only a
//! hash of the session id is kept. This module must never log a token or a session id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::directory::{new_token, token_hash};

/// The session cookie's name.
pub const COOKIE: &str = "sopflow_session";
/// How long a session lasts from sign-in.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once; signing in beyond this ends the oldest session.
pub const MAX_SESSIONS: usize = 10_000;

/// One signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// The value every form of this session must send back as `_csrf`.
    pub csrf: String,
    pub expires: Instant,
    /// One-shot message shown on the next page (after a redirect).
    pub flash: Option<String>,
}

/// Why a session could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot make a session id: {0}")]
    Random(#[from] crate::directory::TokenError),
}

/// The server's sessions, keyed by the SHA-256 of the session id.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for `user`; returns the session id for the cookie.
    pub fn start(&self, user: &str) -> Result<String, SessionError> {
        let id = new_token()?;
        let csrf = new_token()?;
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            // The session closest to its end goes: its owner signs in again.
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token_hash(&id),
            Session {
                user: user.to_string(),
                csrf,
                expires: now + LIFETIME,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The live session with this id, if any (an expired one is dropped).
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = token_hash(id);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Takes the session's flash message, so it shows once.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.lock()
            .get_mut(&token_hash(id))
            .and_then(|s| s.flash.take())
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, message: impl Into<String>) {
        if let Some(s) = self.lock().get_mut(&token_hash(id)) {
            s.flash = Some(message.into());
        }
    }

    /// Ends the session.
    pub fn end(&self, id: &str) {
        self.lock().remove(&token_hash(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compares two secrets in time independent of where they first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session id from a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` value for a new session (`secure` when served over TLS).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_names_its_user_until_it_ends() {
        let s = Sessions::default();
        let id = s.start("xu.na").unwrap();
        assert_eq!(s.get(&id).unwrap().user, "xu.na");
        assert!(s.get("not-a-session").is_none());
        s.flash(&id, "Done");
        assert_eq!(s.take_flash(&id).as_deref(), Some("Done"));
        assert_eq!(s.take_flash(&id), None);
        s.end(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = set_cookie("abc", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; sopflow_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("xyz"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
