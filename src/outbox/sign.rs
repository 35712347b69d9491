//! Webhook signatures per the Standard Webhooks convention: each call carries
//! `webhook-id` (the same on every retry, so a receiver can drop repeats),
//! `webhook-timestamp` (seconds) and `webhook-signature` = `v1,` + base64 of
//! HMAC-SHA256(key, `id.timestamp.body`), where the key is the base64 after a secret's
//! `whsec_` prefix. Any receiver library of the convention verifies them (the tests use
//! the `standardwebhooks` crate). This module must not log or return a key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of a secret in the convention's format.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest key accepted, bytes.
const MIN_KEY: usize = 24;

/// The HMAC key a secret stands for: the base64 after `whsec_`, or the text itself.
pub fn key_from_secret(secret: &str) -> Result<Vec<u8>, String> {
    let secret = secret.trim();
    let key = match secret.strip_prefix(SECRET_PREFIX) {
        Some(b64) => STANDARD
            .decode(b64)
            .map_err(|_| "starts with whsec_ but what follows is not base64".to_string())?,
        None => secret.as_bytes().to_vec(),
    };
    if key.len() < MIN_KEY {
        return Err(format!(
            "is too short: give at least {MIN_KEY} bytes of key (it has {})",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header value for one call.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conventions_published_example_verifies() {
        // The example of the Standard Webhooks specification (secret, id, timestamp, body
        // and the signature it gives).
        let key = key_from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn short_or_malformed_secrets_are_refused() {
        assert!(key_from_secret("short").is_err());
        assert!(key_from_secret("whsec_***").is_err());
        assert!(key_from_secret("a plain text secret of some length").is_ok());
    }
}
