//! Who is calling: the bearer token is hashed and looked up among the directory's token
//! hashes and the demo tokens generated for this data directory, and the caller becomes the
//! engine's `Actor` with the roles the directory gives them now. It also holds the API's
//! own authorization rules — the coarse role × endpoint matrix in the README — which run
//! before the engine's finer ones (start and cancel roles, separation of duties,
//! delegation). It must never log, store or echo a token.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::AppState;
use crate::directory::{new_token, token_hash, Directory};
use crate::engine::instance::Actor;

/// Role names the API itself gives meaning to.
pub const ADMIN: &str = "admin";
pub const AUDITOR: &str = "auditor";
pub const PROCESS_OWNER: &str = "process_owner";

/// The demo tokens' hashes (hash → user id). The directory's own hashes are looked up in
/// the directory's index; these cover the users it gives none.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    demo: HashMap<String, String>,
}

impl Tokens {
    /// From user → demo token hash.
    pub fn new(demo: &HashMap<String, String>) -> Tokens {
        Tokens {
            demo: demo
                .iter()
                .map(|(user, h)| (h.to_ascii_lowercase(), user.clone()))
                .collect(),
        }
    }

    /// The user a presented token belongs to: by the directory's hashes, else the demo ones.
    pub fn user_of<'a>(&'a self, people: &'a Directory, token: &str) -> Option<&'a str> {
        let hash = token_hash(token);
        people
            .by_token_hash(&hash)
            .map(|u| u.id.as_str())
            .or_else(|| self.demo.get(&hash).map(String::as_str))
    }
}

/// Why the demo tokens could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoTokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged ({source}); delete it and the demo tokens are made again")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Random(#[from] crate::directory::TokenError),
}

/// The hashes of generated demo tokens, kept in the data directory (not secret).
#[derive(Debug, Default, Serialize, Deserialize)]
struct DemoHashes {
    /// user id → SHA-256 of their token.
    users: std::collections::BTreeMap<String, String>,
}

/// What `ensure_demo_tokens` did.
pub struct DemoTokens {
    /// user id → token hash, for every user without a hash in the directory.
    pub hashes: HashMap<String, String>,
    /// Users given a token on this start (their tokens are in `file`).
    pub issued: Vec<(String, String)>,
    /// Where this start's new tokens were written (mode 0600).
    pub file: PathBuf,
}

/// Gives every active user the directory lists without a token hash a demo token, once per
/// data directory: the hashes go to `demo-token-hashes.json`, the tokens themselves only to
/// `demo-tokens.txt` (mode 0600) and the caller's output. Later starts reuse the hashes, so
/// the tokens keep working; a user added to the directory later gets one on the next start.
pub fn ensure_demo_tokens(
    data_dir: &Path,
    people: &Directory,
) -> Result<DemoTokens, DemoTokenError> {
    let hashes_path = data_dir.join("demo-token-hashes.json");
    let tokens_path = data_dir.join("demo-tokens.txt");
    let mut stored: DemoHashes = match std::fs::read(&hashes_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| DemoTokenError::Parse {
            path: hashes_path.clone(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DemoHashes::default(),
        Err(source) => {
            return Err(DemoTokenError::Read {
                path: hashes_path,
                source,
            })
        }
    };
    // With the store in PostgreSQL nothing else made the data directory.
    std::fs::create_dir_all(data_dir).map_err(|source| DemoTokenError::Write {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut issued = Vec::new();
    for u in people.users() {
        if !u.active || !u.token_sha256.is_empty() || stored.users.contains_key(&u.id) {
            continue;
        }
        let token = new_token()?;
        stored.users.insert(u.id.clone(), token_hash(&token));
        issued.push((u.id.clone(), token));
    }
    if !issued.is_empty() {
        let write = |path: &Path, bytes: &[u8], append: bool| -> Result<(), DemoTokenError> {
            let mut opts = std::fs::OpenOptions::new();
            opts.create(true);
            if append {
                opts.append(true);
            } else {
                opts.write(true).truncate(true);
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(|source| DemoTokenError::Write {
                path: path.to_path_buf(),
                source,
            })?;
            f.write_all(bytes)
                .and_then(|_| f.sync_all())
                .map_err(|source| DemoTokenError::Write {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let mut text = String::new();
        for (user, token) in &issued {
            text.push_str(&format!("{user} {token}\n"));
        }
        // Tokens first: if writing the hashes fails, the next start issues new ones.
        write(&tokens_path, text.as_bytes(), true)?;
        let json = serde_json::to_vec_pretty(&stored).map_err(|source| DemoTokenError::Parse {
            path: hashes_path.clone(),
            source,
        })?;
        write(&hashes_path, &json, false)?;
    }
    Ok(DemoTokens {
        hashes: stored.users.into_iter().collect(),
        issued,
        file: tokens_path,
    })
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
}

impl Caller {
    pub fn holds(&self, role: &str) -> bool {
        self.actor.holds(role)
    }

    pub fn is_admin(&self) -> bool {
        self.holds(ADMIN)
    }

    /// Auditors and admins read every instance.
    pub fn reads_everything(&self) -> bool {
        self.holds(AUDITOR) || self.holds(ADMIN)
    }

    /// The caller as the engine sees them when they change something: the `auditor` role
    /// carries no right to act (auditors change nothing), so it is left out. Refused when
    /// nothing is left.
    pub fn acting(&self) -> Result<Actor, ApiError> {
        let mut a = self.actor.clone();
        a.roles.retain(|r| r != AUDITOR);
        if a.roles.is_empty() {
            return Err(ApiError::Forbidden(format!(
                "{} holds only the auditor role, which reads and changes nothing",
                self.actor.id
            )));
        }
        Ok(a)
    }

    pub fn require_any(&self, roles: &[&str], what: &str) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.holds(r)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{what} needs one of the roles {}; {} holds {}",
                roles.join(", "),
                self.actor.id,
                if self.actor.roles.is_empty() {
                    "none".to_string()
                } else {
                    self.actor.roles.join(", ")
                }
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "send your API token as `Authorization: Bearer <token>`".into(),
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        let people = state.people();
        let user = state
            .tokens
            .user_of(&people, token)
            .ok_or_else(|| ApiError::Unauthorized("the token is not valid".into()))?;
        Caller::of_user(state, user)
            .ok_or_else(|| ApiError::Unauthorized("the token is not valid".into()))
    }
}

impl Caller {
    /// The caller a token or a web session names, as the directory has them now: the one
    /// way both the API and the web app turn a person into an `Actor`. Inactive users (still
    /// listed, with their hashes) are refused here.
    pub fn of_user(state: &AppState, user: &str) -> Option<Caller> {
        Actor::from_directory(&state.people(), user).map(|actor| Caller { actor })
    }
}
