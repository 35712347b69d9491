//! API tokens: making a new one and hashing it. A token exists only in the return value of
//! [`new_token`], on its way to the person it is for; the directory stores and compares only
//! its SHA-256. Nothing here may log, print or keep a token.

use std::io::Read;

use thiserror::Error;

use crate::definition::load::hash_hex;

/// Every token starts with this, so a token pasted into a file or a log is recognisable (and
/// secret scanners can be taught to find it).
pub const TOKEN_PREFIX: &str = "sopflow_";

/// Why no token could be made.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The operating system's random source could not be read. There is deliberately no
    /// weaker fallback: a guessable token is worse than none.
    #[error("cannot read the system's random source /dev/urandom: {0}")]
    Randomness(#[from] std::io::Error),
}

/// A new API token: [`TOKEN_PREFIX`] and 256 random bits as 64 hex characters.
///
/// The bits come from the operating system's CSPRNG (`/dev/urandom`, read with std): the crate
/// has no `rand`, and `uuid` is built without `v4`. Fallible rather than `String` because that
/// read can fail (no `/dev/urandom`, as on Windows), and then there must be no token at all.
pub fn new_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

/// SHA-256 of the token's bytes, lower-case hex: what `token_sha256` lists.
pub fn token_hash(token: &str) -> String {
    hash_hex(token.as_bytes())
}

/// The line an administrator adds to the user's `[[users]]` table for a new token (or whose
/// list they extend): `token_sha256 = ["…"]`.
pub fn token_line(hash: &str) -> String {
    format!("token_sha256 = [\"{hash}\"]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_helpers() {
        let a = new_token().unwrap_or_default();
        let b = new_token().unwrap_or_default();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(a[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let h = token_hash(&a);
        assert!(h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(token_line("ab"), "token_sha256 = [\"ab\"]");
    }
}
