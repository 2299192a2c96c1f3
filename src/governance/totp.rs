//! RFC 6238 time-based one-time passwords for the admin API (the design's two-factor
//! layer), with totp-rs: SHA-1, 6 digits, 30 s steps, one step of clock skew either way.
//!
//! A code is accepted once: the time step it matched is recorded in the store with an
//! `UPDATE ... WHERE last_step < step`, so a replayed code (or an older one) is refused by
//! every replica sharing the store.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};

pub const STEP_SECS: u64 = 30;
const ISSUER: &str = "Switchyard";

fn totp(secret_b32: &str, account: &str) -> Result<TOTP, String> {
    let bytes = Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .map_err(|_| "the stored TOTP secret is not valid base32".to_string())?;
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP_SECS,
        bytes,
        Some(ISSUER.into()),
        account.into(),
    )
    .map_err(|e| format!("TOTP: {e}"))
}

/// A new random secret (160 bits, base32) and its `otpauth://` URI for authenticator apps.
pub fn new_secret(account: &str) -> Result<(String, String), String> {
    let raw = super::keys::random::<20>().to_vec();
    let b32 = Secret::Raw(raw).to_encoded().to_string();
    let uri = totp(&b32, account)?.get_url();
    Ok((b32, uri))
}

/// The code for `time` (tests and tools).
pub fn code_at(secret_b32: &str, time: u64) -> Result<String, String> {
    Ok(totp(secret_b32, "admin")?.generate(time))
}

/// The time step `code` is valid for at `now` (current step, or one before or after for
/// clock skew), or None. Constant-time comparison.
pub fn matching_step(secret_b32: &str, code: &str, now: u64) -> Option<i64> {
    let t = totp(secret_b32, "admin").ok()?;
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now / STEP_SECS;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        let expected = t.generate(s * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(s as i64);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vector() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 s -> 94287082 (8
        // digits); the 6-digit code is its last six digits.
        let b32 = Secret::Raw(b"12345678901234567890".to_vec())
            .to_encoded()
            .to_string();
        assert_eq!(code_at(&b32, 59).unwrap(), "287082");
        assert_eq!(code_at(&b32, 1_111_111_109).unwrap(), "081804");
    }

    #[test]
    fn valid_skewed_and_expired_codes() {
        let (secret, uri) = new_secret("ops@example").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Switchyard:ops%40example?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={secret}")));
        let now = 1_800_000_015;
        let step = (now / STEP_SECS) as i64;
        let code = code_at(&secret, now).unwrap();
        assert_eq!(matching_step(&secret, &code, now), Some(step));
        // 30 s later it is still accepted (skew), 60 s later it has expired.
        assert_eq!(matching_step(&secret, &code, now + 30), Some(step));
        assert_eq!(matching_step(&secret, &code, now + 61), None);
        assert_eq!(matching_step(&secret, "12345", now), None);
        assert_eq!(matching_step(&secret, "abcdef", now), None);
    }
}
