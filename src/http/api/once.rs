//! The `Idempotency-Key` header of command endpoints: read and checked here, turned into the
//! engine's `Idempotency` (caller, key, a fingerprint of what was asked) by the handler, and
//! answered with `Idempotent-Replayed: true` when the engine answered from an earlier run.
//! The rules themselves (one command per key, a different request refused) are the
//! engine's (`engine::once`); this module must not keep any state of its own.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::Json;
use crate::engine::once::{Done, Idempotency};
use crate::http::auth::Caller;
use crate::http::dto::InstanceView;
use crate::http::error::ApiError;
use crate::store::idempotency::MAX_KEY_LEN;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on an answer that repeats an earlier run's.
pub const REPLAYED: &str = "idempotent-replayed";

/// 1 to `MAX_KEY_LEN` visible ASCII characters (what the OpenAPI pattern says).
fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
}

/// A command request's idempotency key, if it sent one, and what it addressed.
#[derive(Debug, Clone, Default)]
pub struct OnceKey {
    key: Option<String>,
    /// Method and path: the same key on another endpoint or target is another request.
    target: String,
    /// SHA-256 of the body as sent (empty for commands without one).
    body: [u8; 32],
}

/// A JSON command body with the request's idempotency key, the body's bytes fingerprinted
/// as sent (a retry sends the same bytes).
pub struct Keyed<T>(pub OnceKey, pub T);

impl<T, S> axum::extract::FromRequest<S> for Keyed<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let mut once = OnceKey::from_request_parts(&mut parts, state).await?;
        let req = axum::extract::Request::from_parts(parts, body);
        let (bytes, value) = super::read_json(req, state).await?;
        if once.key.is_some() {
            once.body = Sha256::digest(&bytes).into();
        }
        Ok(Keyed(once, value))
    }
}

impl OnceKey {
    /// No key: the command runs every time it is sent (the web app's forms).
    pub fn none() -> Self {
        Self::default()
    }

    /// The key of a web form (a hidden field made when the form was shown), so a form sent
    /// twice — a double click, a reload after a lost answer — does its work once. `body`
    /// is what the form asks, fingerprinted as JSON.
    pub fn of_form(key: &str, target: &str, body: &impl serde::Serialize) -> Option<Self> {
        let bytes = serde_json::to_vec(body).ok()?;
        valid_key(key).then(|| OnceKey {
            key: Some(key.to_string()),
            target: format!("POST {target}"),
            body: Sha256::digest(&bytes).into(),
        })
    }

    /// The engine's view of the key for `caller`: the fingerprint covers the target and
    /// the body.
    pub fn for_caller(&self, caller: &Caller) -> Option<Idempotency> {
        let key = self.key.as_ref()?;
        let mut h = Sha256::new();
        h.update((self.target.len() as u64).to_be_bytes());
        h.update(self.target.as_bytes());
        h.update(self.body);
        Some(Idempotency {
            caller: caller.actor.id.clone(),
            key: key.clone(),
            fingerprint: h.finalize().into(),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for OnceKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let target = format!("{} {}", parts.method, parts.uri.path());
        let Some(v) = parts.headers.get(HEADER) else {
            return Ok(OnceKey {
                key: None,
                target,
                body: [0; 32],
            });
        };
        let key = v
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::Malformed(format!(
                    "`Idempotency-Key` must be 1 to {MAX_KEY_LEN} visible ASCII characters \
                     (a UUID is a good key)"
                ))
            })?;
        Ok(OnceKey {
            key: Some(key.to_string()),
            target,
            body: [0; 32],
        })
    }
}

/// A command's answer: the instance after it, marked when it repeats an earlier run's.
pub struct Answer {
    pub view: InstanceView,
    pub replayed: bool,
}

impl Answer {
    pub(super) fn new(state: &crate::http::AppState, done: &Done) -> Self {
        Answer {
            view: super::view(state, &done.instance).0,
            replayed: done.replayed,
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut res = Json(self.view).into_response();
        if self.replayed {
            res.headers_mut().insert(
                HeaderName::from_static(REPLAYED),
                HeaderValue::from_static("true"),
            );
        }
        res
    }
}
