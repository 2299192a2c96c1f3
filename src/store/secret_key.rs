//! Secrets at rest in the store (the admin TOTP secret), sealed with ChaCha20-Poly1305
//! (ring's AEAD, already linked for TLS) under a 256-bit key that never enters the store.
//!
//! The key comes from `SWITCHYARD_SECRET_KEY`, else from the file `switchyard-secret-key` in
//! `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=switchyard-secret-key:/path`): 64
//! hexadecimal characters or base64 of 32 bytes, in either place. Generate one with
//! `openssl rand -hex 32`.
//!
//! A sealed value is stored as `enc:v1:<base64(nonce ‖ ciphertext ‖ tag)>`, with a fresh
//! random nonce each time. Without a key, secrets are stored in plain text (and the gateway
//! and `admin totp-setup` warn loudly); a plain secret read while a key is configured is
//! sealed in place, so stores from before keep working and are migrated on first use.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

pub const ENV: &str = "SWITCHYARD_SECRET_KEY";
pub const CREDENTIAL: &str = "switchyard-secret-key";
const PREFIX: &str = "enc:v1:";
/// Binds a sealed value to its use: a sealed TOTP secret cannot be passed off as another.
const AAD: &[u8] = b"switchyard:totp-secret:v1";

pub struct SecretKey(LessSafeKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// The configured key, None when there is none. Err (naming the source, never the
    /// value) when one is configured but malformed.
    pub fn load() -> Result<Option<SecretKey>, String> {
        if let Some(v) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
            let text = v.to_str().ok_or(format!("{ENV} is not valid text"))?;
            return SecretKey::parse(text.as_bytes())
                .map(Some)
                .map_err(|why| format!("{ENV}: {why}"));
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = std::path::Path::new(&dir).join(CREDENTIAL);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    return SecretKey::parse(&bytes)
                        .map(Some)
                        .map_err(|why| format!("{}: {why}", path.display()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(None)
    }

    /// 64 hex characters or base64 of 32 bytes (surrounding whitespace ignored).
    pub fn parse(raw: &[u8]) -> Result<SecretKey, String> {
        let text = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
        let mut key = [0u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .filter(|b| b.len() == 32);
        let ok = if text.len() == 64 && hex::decode_to_slice(text, &mut key).is_ok() {
            true
        } else if let Some(b) = b64 {
            key.copy_from_slice(&b);
            true
        } else {
            false
        };
        if !ok {
            return Err(
                "must be 32 bytes: 64 hexadecimal characters or base64 (openssl rand -hex 32)"
                    .into(),
            );
        }
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| "invalid key")?;
        Ok(SecretKey(LessSafeKey::new(unbound)))
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce = crate::governance::keys::random::<NONCE_LEN>();
        let mut buf = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .expect("a short secret always seals");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// The plain text of a sealed value. Err when it does not open under this key.
    pub fn open(&self, stored: &str) -> Result<String, String> {
        let body = stored.strip_prefix(PREFIX).ok_or("not a sealed value")?;
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "the sealed value is not valid base64")?;
        if raw.len() < NONCE_LEN {
            return Err("the sealed value is too short".into());
        }
        let mut data = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| "bad nonce")?;
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(AAD), &mut data)
            .map_err(|_| {
                format!("the stored secret does not open with this key ({ENV} or the credential {CREDENTIAL} changed?)")
            })?;
        String::from_utf8(plain.to_vec()).map_err(|_| "the sealed value is not text".into())
    }
}

/// A stored value is sealed (rather than plain text from before encryption).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_with_fresh_nonces() {
        let key = SecretKey::parse(hex::encode([7u8; 32]).as_bytes()).unwrap();
        let a = key.seal("JBSWY3DPEHPK3PXP");
        let b = key.seal("JBSWY3DPEHPK3PXP");
        assert!(is_sealed(&a) && a != b, "{a} {b}");
        assert!(!a.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(key.open(&a).unwrap(), "JBSWY3DPEHPK3PXP");
        // Another key, or a tampered value, does not open.
        let other = SecretKey::parse(hex::encode([8u8; 32]).as_bytes()).unwrap();
        assert!(other.open(&a).is_err());
        let mut tampered = a.clone();
        tampered.pop();
        tampered.push(if a.ends_with('A') { 'B' } else { 'A' });
        assert!(key.open(&tampered).is_err());
    }

    #[test]
    fn key_formats() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(SecretKey::parse(b64.as_bytes()).is_ok());
        assert!(SecretKey::parse(format!("{}\n", hex::encode([2u8; 32])).as_bytes()).is_ok());
        assert!(SecretKey::parse(b"too-short").is_err());
        assert!(SecretKey::parse(hex::encode([2u8; 16]).as_bytes()).is_err());
    }
}
