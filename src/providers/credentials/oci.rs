//! OCI API-key request signatures (signature version 1, draft-cavage-http-signatures-08), as
//! Oracle documents them in "Request Signatures" and the OCI SDKs implement them.
//!
//! Every request is signed over, in this order:
//! - all methods: `date (request-target) host`;
//! - POST, PUT and PATCH also: `content-length content-type x-content-sha256`, where
//!   `x-content-sha256` is the base64 SHA-256 of the exact body (and `content-type` defaults to
//!   `application/json`, as the SDKs set it).
//!
//! The signing string has one `name: value` line per signed header (lower-case name), joined
//! with `\n` and no trailing newline; `(request-target)` is the lower-case method, a space and
//! the path with its query exactly as sent. The signature is RSASSA-PKCS1-v1_5 with SHA-256,
//! base64, sent as
//! `Authorization: Signature version="1",keyId="<tenancy>/<user>/<fingerprint>",algorithm="rsa-sha256",headers="…",signature="…"`.
//!
//! The RSA operation is ring's (through rustls): constant-time, keys of 2048 to 8192 bits, as
//! OCI requires 2048 or more. The key's fingerprint (MD5 of its DER public key, as the console
//! shows it) is checked against the configured one when the config is loaded.

use std::fmt;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::HeaderValue;
use pingora::http::RequestHeader;
use rustls::crypto::ring::sign::RsaSigningKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use sha2::{Digest, Sha256};

use super::RequestSigner;

/// Headers signed on every request, in signing order.
pub const GENERIC_HEADERS: [&str; 3] = ["date", "(request-target)", "host"];
/// Headers signed on requests with a body (POST, PUT, PATCH), in signing order.
pub const BODY_HEADERS: [&str; 6] = [
    "date",
    "(request-target)",
    "host",
    "content-length",
    "content-type",
    "x-content-sha256",
];

/// The headers OCI requires in the signature of a `method` request, in order.
pub fn signed_headers(method: &str) -> &'static [&'static str] {
    if has_signed_body(method) {
        &BODY_HEADERS
    } else {
        &GENERIC_HEADERS
    }
}

fn has_signed_body(method: &str) -> bool {
    ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// The signing string for `headers`: `(request-target)` from `method` and `target` (path and
/// query as sent), every other header's value from `value_of` (a missing one is an error).
pub fn signing_string<'a>(
    headers: &[&str],
    method: &str,
    target: &str,
    value_of: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, String> {
    let mut lines = Vec::with_capacity(headers.len());
    for &name in headers {
        if name == "(request-target)" {
            lines.push(format!(
                "(request-target): {} {target}",
                method.to_ascii_lowercase()
            ));
        } else {
            let value =
                value_of(name).ok_or_else(|| format!("the `{name}` header to sign is missing"))?;
            lines.push(format!("{name}: {value}"));
        }
    }
    Ok(lines.join("\n"))
}

/// The `Authorization` header value.
pub fn authorization(key_id: &str, headers: &[&str], signature_b64: &str) -> String {
    format!(
        "Signature version=\"1\",keyId=\"{key_id}\",algorithm=\"rsa-sha256\",headers=\"{}\",signature=\"{signature_b64}\"",
        headers.join(" ")
    )
}

/// Base64 of the SHA-256 of `body` (the `x-content-sha256` header).
pub fn content_sha256(body: &[u8]) -> String {
    B64.encode(Sha256::digest(body))
}

/// An RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days.rem_euclid(7)) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Why an API key cannot be used, and which `auth.config` field is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub field: &'static str,
    pub why: String,
}

fn key_error(field: &'static str, why: impl Into<String>) -> KeyError {
    KeyError {
        field,
        why: why.into(),
    }
}

/// An OCI API signing key: the identity (`keyId`) and the RSA private key.
pub struct OciApiKey {
    key_id: String,
    key: RsaSigningKey,
}

impl fmt::Debug for OciApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl OciApiKey {
    /// Loads the key from `key_file` (PEM, PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`)
    /// and checks the identity: OCIDs, and `fingerprint` against the key's own.
    pub fn load(
        tenancy: &str,
        user: &str,
        fingerprint: &str,
        key_file: &str,
        passphrase: Option<&str>,
    ) -> Result<OciApiKey, KeyError> {
        let pem = std::fs::read(key_file)
            .map_err(|e| key_error("key_file", format!("cannot read `{key_file}`: {e}")))?;
        OciApiKey::from_pem(tenancy, user, fingerprint, &pem, passphrase)
    }

    /// As [`Self::load`], from the PEM text.
    pub fn from_pem(
        tenancy: &str,
        user: &str,
        fingerprint: &str,
        pem: &[u8],
        passphrase: Option<&str>,
    ) -> Result<OciApiKey, KeyError> {
        let tenancy = ocid("tenancy", tenancy)?;
        let user = ocid("user", user)?;
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        if !is_fingerprint(&fingerprint) {
            return Err(key_error(
                "fingerprint",
                "must be the key's fingerprint as the console shows it: 16 hex pairs joined by `:`",
            ));
        }
        let key = private_key(pem, passphrase.is_some_and(|p| !p.is_empty()))?;
        let spki = key
            .public_key()
            .ok_or_else(|| key_error("key_file", "the key has no public part"))?;
        let actual = md5_fingerprint(spki.as_ref());
        if actual != fingerprint {
            return Err(key_error(
                "fingerprint",
                format!("does not match key_file (whose fingerprint is {actual})"),
            ));
        }
        Ok(OciApiKey {
            key_id: format!("{tenancy}/{user}/{fingerprint}"),
            key,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `message` with RSASSA-PKCS1-v1_5 SHA-256; base64.
    pub fn sign_string(&self, message: &str) -> Result<String, String> {
        let signer = self
            .key
            .choose_scheme(&[SignatureScheme::RSA_PKCS1_SHA256])
            .ok_or("the key cannot sign with rsa-sha256")?;
        let sig = signer
            .sign(message.as_bytes())
            .map_err(|_| "RSA signing failed".to_string())?;
        Ok(B64.encode(sig))
    }

    /// Adds `date`, the body headers when the method has a body, and `authorization` to a
    /// request whose method, target, `host` and other headers are final; signed at `now`.
    pub fn sign_request(
        &self,
        req: &mut RequestHeader,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        let method = req.method.as_str().to_owned();
        let target = std::str::from_utf8(req.raw_path())
            .map_err(|_| "the request path is not valid UTF-8".to_string())?
            .to_owned();
        let set = |req: &mut RequestHeader, name: &'static str, value: String| {
            req.insert_header(name, value)
                .map(|_| ())
                .map_err(|_| format!("cannot set the `{name}` header"))
        };
        // The gateway's own clock, never the caller's: OCI refuses dates more than 5 minutes off.
        req.remove_header("x-date");
        set(req, "date", http_date(now))?;
        if has_signed_body(&method) {
            if !req.headers.contains_key(http::header::CONTENT_TYPE) {
                set(req, "content-type", "application/json".into())?;
            }
            set(req, "content-length", body.len().to_string())?;
            set(req, "x-content-sha256", content_sha256(body))?;
        }
        let headers = signed_headers(&method);
        let joined: Vec<(String, String)> = headers
            .iter()
            .filter(|h| !h.starts_with('('))
            .filter_map(|&h| header_value(req, h).map(|v| (h.to_owned(), v)))
            .collect();
        let string = signing_string(headers, &method, &target, |name| {
            joined
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        })?;
        let signature = self.sign_string(&string)?;
        let mut value = HeaderValue::from_str(&authorization(&self.key_id, headers, &signature))
            .map_err(|_| "the Authorization header is not a valid header value".to_string())?;
        value.set_sensitive(true);
        req.insert_header(http::header::AUTHORIZATION, value)
            .map_err(|_| "cannot set the Authorization header".to_string())?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl RequestSigner for OciApiKey {
    async fn sign(&self, req: &mut RequestHeader, body: &[u8]) -> Result<(), String> {
        self.sign_request(req, body, SystemTime::now())
    }
}

/// A header's value as signed: all its values joined by `, ` (draft-cavage 2.3).
fn header_value(req: &RequestHeader, name: &str) -> Option<String> {
    let values: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<_>>>()?;
    if values.is_empty() {
        return None;
    }
    Some(values.join(", "))
}

fn ocid(kind: &'static str, value: &str) -> Result<String, KeyError> {
    let v = value.trim();
    let prefix = format!("ocid1.{kind}.");
    let ok = v.starts_with(&prefix)
        && v.len() > prefix.len()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(key_error(
            kind,
            format!("must be the {kind}'s OCID (`{prefix}…`)"),
        ))
    }
}

fn is_fingerprint(f: &str) -> bool {
    let parts: Vec<&str> = f.split(':').collect();
    parts.len() == 16
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses the PEM private key; encrypted keys are refused with what to do instead.
fn private_key(pem: &[u8], has_passphrase: bool) -> Result<RsaSigningKey, KeyError> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(key_error(
            "key_file",
            "is encrypted with a passphrase, which is not supported: decrypt it once \
             (`openssl pkey -in key.pem -out key-decrypted.pem`) and protect the file instead",
        ));
    }
    let _ = has_passphrase; // an unencrypted key needs none (the OCI SDKs ignore it too)
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        key_error(
            "key_file",
            "is not a PEM private key (expected -----BEGIN RSA PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----)",
        )
    })?;
    if matches!(der, PrivateKeyDer::Sec1(_)) {
        return Err(key_error("key_file", "is an EC key: OCI API keys are RSA"));
    }
    RsaSigningKey::new(&der).map_err(|e| {
        let detail = e.to_string();
        let why = if detail.contains("TooSmall") {
            "is an RSA key shorter than 2048 bits: OCI API keys are RSA 2048 bits or more".into()
        } else if detail.contains("TooLarge") {
            "is an RSA key longer than 8192 bits".into()
        } else {
            "is not a usable RSA private key (PKCS#1 or PKCS#8)".to_string()
        };
        key_error("key_file", why)
    })
}

/// The OCI key fingerprint: MD5 of the DER public key, lower-case hex pairs joined by `:`.
pub fn md5_fingerprint(spki_der: &[u8]) -> String {
    md5(spki_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// MD5 (RFC 1321), only for the key fingerprint OCI identifies keys by (not for security).
fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) = (
        0x6745_2301u32,
        0xefcd_ab89u32,
        0x98ba_dcfeu32,
        0x1032_5476u32,
    );
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;

    // The published test values of OCI's "Request Signatures" page, as the OCI SDKs' own
    // tests use them (e.g. oci-go-sdk common/http_signer_test.go): a 1024-bit sample key, two
    // requests, their signing strings and signatures.
    const DOC_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIICXgIBAAKBgQDCFENGw33yGihy92pDjZQhl0C36rPJj+CvfSC8+q28hxA161QF
NUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6Z4UMR7EOcpfdUE9Hf3m/hs+F
UR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJwoYi+1hqp1fIekaxsyQIDAQAB
AoGBAJR8ZkCUvx5kzv+utdl7T5MnordT1TvoXXJGXK7ZZ+UuvMNUCdN2QPc4sBiA
QWvLw1cSKt5DsKZ8UETpYPy8pPYnnDEz2dDYiaew9+xEpubyeW2oH4Zx71wqBtOK
kqwrXa/pzdpiucRRjk6vE6YY7EBBs/g7uanVpGibOVAEsqH1AkEA7DkjVH28WDUg
f1nqvfn2Kj6CT7nIcE3jGJsZZ7zlZmBmHFDONMLUrXR/Zm3pR5m0tCmBqa5RK95u
412jt1dPIwJBANJT3v8pnkth48bQo/fKel6uEYyboRtA5/uHuHkZ6FQF7OUkGogc
mSJluOdc5t6hI1VsLn0QZEjQZMEOWr+wKSMCQQCC4kXJEsHAve77oP6HtG/IiEn7
kpyUXRNvFsDE0czpJJBvL/aRFUJxuRK91jhjC68sA7NsKMGg5OXb5I5Jj36xAkEA
gIT7aFOYBFwGgQAQkWNKLvySgKbAZRTeLBacpHMuQdl1DfdntvAyqpAZ0lY0RKmW
G6aFKaqQfOXKCyWoUiVknQJAXrlgySFci/2ueKlIE1QqIiLSZ8V8OlpFLRnb1pzI
7U1yQXnTAEFYM560yJlzUpOb1V4cScGd365tiSMvxLOvTA==
-----END RSA PRIVATE KEY-----";
    const DOC_DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";
    const DOC_HOST: &str = "iaas.us-phoenix-1.oraclecloud.com";
    const DOC_GET_TARGET: &str = "/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q";
    const DOC_GET_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\nhost: iaas.us-phoenix-1.oraclecloud.com";
    const DOC_GET_SIGNATURE: &str = "GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=";
    const DOC_POST_BODY: &str = "{\n    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n}";
    const DOC_POST_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): post /20160918/volumeAttachments\nhost: iaas.us-phoenix-1.oraclecloud.com\ncontent-length: 316\ncontent-type: application/json\nx-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=";
    const DOC_POST_SIGNATURE: &str = "Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=";

    /// 2014-01-05 21:31:40 UTC. (The published examples call that day a Thursday, as the
    /// draft-cavage example they copy does; it was a Sunday. Their date is just a signed value.)
    fn doc_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_388_957_500)
    }

    fn doc_verifies(signing_string: &str, signature_b64: &str) -> bool {
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(DOC_KEY).unwrap();
        let vk = VerifyingKey::<rsa::sha2::Sha256>::new(key.to_public_key());
        let sig = Signature::try_from(B64.decode(signature_b64).unwrap().as_slice()).unwrap();
        vk.verify(signing_string.as_bytes(), &sig).is_ok()
    }

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(http_date(doc_time()), "Sun, 05 Jan 2014 21:31:40 GMT");
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn signing_strings_match_the_published_examples() {
        let get = signing_string(signed_headers("GET"), "GET", DOC_GET_TARGET, |h| match h {
            "date" => Some(DOC_DATE),
            "host" => Some(DOC_HOST),
            _ => None,
        })
        .unwrap();
        assert_eq!(get, DOC_GET_STRING);

        assert_eq!(
            content_sha256(DOC_POST_BODY.as_bytes()),
            "V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0="
        );
        let len = DOC_POST_BODY.len().to_string();
        let sha = content_sha256(DOC_POST_BODY.as_bytes());
        let post = signing_string(
            signed_headers("POST"),
            "POST",
            "/20160918/volumeAttachments",
            |h| match h {
                "date" => Some(DOC_DATE),
                "host" => Some(DOC_HOST),
                "content-length" => Some(len.as_str()),
                "content-type" => Some("application/json"),
                "x-content-sha256" => Some(sha.as_str()),
                _ => None,
            },
        )
        .unwrap();
        assert_eq!(post, DOC_POST_STRING);
        // The published signatures are over exactly these strings.
        assert!(doc_verifies(&get, DOC_GET_SIGNATURE));
        assert!(doc_verifies(&post, DOC_POST_SIGNATURE));
        assert!(!doc_verifies(
            &get.replace("get ", "post "),
            DOC_GET_SIGNATURE
        ));
    }

    #[test]
    fn requests_get_the_published_signatures() {
        // ring refuses 1024-bit keys, so the sample key signs through the rsa crate here; the
        // strings and headers are the gateway's own (sign_request), checked end to end.
        let doc = rsa::RsaPrivateKey::from_pkcs1_pem(DOC_KEY).unwrap();
        let sk = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(doc);
        let sign = |s: &str| {
            use rsa::signature::{SignatureEncoding, Signer};
            B64.encode(sk.sign(s.as_bytes()).to_bytes())
        };
        assert_eq!(sign(DOC_GET_STRING), DOC_GET_SIGNATURE);
        assert_eq!(sign(DOC_POST_STRING), DOC_POST_SIGNATURE);
        let key_id = "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";
        assert_eq!(
            authorization(key_id, &BODY_HEADERS, DOC_POST_SIGNATURE),
            format!("Signature version=\"1\",keyId=\"{key_id}\",algorithm=\"rsa-sha256\",headers=\"date (request-target) host content-length content-type x-content-sha256\",signature=\"{DOC_POST_SIGNATURE}\"")
        );
    }

    /// A 2048-bit key and its fingerprint as `openssl rsa -pubout -outform DER | openssl md5 -c`
    /// prints it (generated once for this test).
    const KEY_2048: &str = include_str!("../../../tests/fixtures/oci/test_key_pkcs1.pem");
    const KEY_2048_PKCS8: &str = include_str!("../../../tests/fixtures/oci/test_key_pkcs8.pem");
    const KEY_2048_FINGERPRINT: &str =
        include_str!("../../../tests/fixtures/oci/test_key.fingerprint");
    const TENANCY: &str = "ocid1.tenancy.oc1..aaaaaaaatest";
    const USER: &str = "ocid1.user.oc1..aaaaaaaatest";

    fn test_key() -> OciApiKey {
        OciApiKey::from_pem(
            TENANCY,
            USER,
            KEY_2048_FINGERPRINT.trim(),
            KEY_2048.as_bytes(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn md5_and_fingerprints_are_right() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
        // Both encodings of one key load, with the fingerprint openssl computed.
        let a = test_key();
        let b = OciApiKey::from_pem(
            TENANCY,
            USER,
            &KEY_2048_FINGERPRINT.trim().to_ascii_uppercase(),
            KEY_2048_PKCS8.as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(
            a.key_id(),
            format!("{TENANCY}/{USER}/{}", KEY_2048_FINGERPRINT.trim())
        );
    }

    #[test]
    fn signed_requests_verify_with_the_public_key() {
        let key = test_key();
        let public = {
            use rsa::pkcs8::DecodePrivateKey;
            rsa::RsaPrivateKey::from_pkcs8_pem(KEY_2048_PKCS8)
                .unwrap()
                .to_public_key()
        };
        let vk = VerifyingKey::<rsa::sha2::Sha256>::new(public);
        let body = br#"{"compartmentId":"ocid1.compartment.oc1..x","chatRequest":{"apiFormat":"GENERIC"}}"#;
        let mut req = RequestHeader::build("POST", b"/20231130/actions/chat?x=%20y", None).unwrap();
        req.insert_header(
            "host",
            "inference.generativeai.us-chicago-1.oci.oraclecloud.com",
        )
        .unwrap();
        req.insert_header("date", "Mon, 01 Jan 2001 00:00:00 GMT")
            .unwrap();
        req.insert_header("x-date", "Mon, 01 Jan 2001 00:00:00 GMT")
            .unwrap();
        req.insert_header("x-content-sha256", "forged").unwrap();
        key.sign_request(&mut req, body, doc_time()).unwrap();
        let h = |n: &str| req.headers.get(n).unwrap().to_str().unwrap().to_owned();
        let date = http_date(doc_time());
        assert_eq!(h("date"), date, "the gateway's clock, not the caller's");
        assert!(req.headers.get("x-date").is_none());
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(h("content-length"), body.len().to_string());
        assert_eq!(h("x-content-sha256"), content_sha256(body));
        let auth = h("authorization");
        let expected_string = format!(
            "date: {date}\n(request-target): post /20231130/actions/chat?x=%20y\nhost: inference.generativeai.us-chicago-1.oci.oraclecloud.com\ncontent-length: {}\ncontent-type: application/json\nx-content-sha256: {}",
            body.len(),
            content_sha256(body)
        );
        let sig = auth
            .split("signature=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        assert_eq!(
            auth,
            authorization(key.key_id(), &BODY_HEADERS, sig),
            "header layout"
        );
        let sig = Signature::try_from(B64.decode(sig).unwrap().as_slice()).unwrap();
        vk.verify(expected_string.as_bytes(), &sig).unwrap();

        // GET: only date, (request-target) and host; no body headers are added.
        let mut get = RequestHeader::build("GET", b"/20231130/models", None).unwrap();
        get.insert_header("host", "h.example").unwrap();
        key.sign_request(&mut get, b"", doc_time()).unwrap();
        assert!(get.headers.get("x-content-sha256").is_none());
        let auth = get.headers.get("authorization").unwrap().to_str().unwrap();
        assert!(
            auth.contains("headers=\"date (request-target) host\""),
            "{auth}"
        );
        let sig = auth
            .split("signature=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        let sig = Signature::try_from(B64.decode(sig).unwrap().as_slice()).unwrap();
        let s = format!("date: {date}\n(request-target): get /20231130/models\nhost: h.example");
        vk.verify(s.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn bad_identities_and_keys_name_the_field() {
        let fp = KEY_2048_FINGERPRINT.trim();
        let err = |t: &str, u: &str, f: &str, pem: &str| {
            OciApiKey::from_pem(t, u, f, pem.as_bytes(), None).unwrap_err()
        };
        assert_eq!(err("tenancy", USER, fp, KEY_2048).field, "tenancy");
        assert_eq!(
            err(TENANCY, "ocid1.tenancy.oc1..x", fp, KEY_2048).field,
            "user"
        );
        assert_eq!(err(TENANCY, USER, "aa:bb", KEY_2048).field, "fingerprint");
        let wrong = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff";
        let e = err(TENANCY, USER, wrong, KEY_2048);
        assert_eq!(e.field, "fingerprint");
        assert!(e.why.contains(fp), "{}", e.why);
        let e = err(TENANCY, USER, fp, DOC_KEY);
        assert_eq!(e.field, "key_file");
        assert!(e.why.contains("2048"), "{}", e.why);
        let e = err(
            TENANCY,
            USER,
            fp,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert!(e.why.contains("encrypted"), "{}", e.why);
        let e = err(TENANCY, USER, fp, "not a key");
        assert_eq!(e.field, "key_file");
        let e = OciApiKey::load(TENANCY, USER, fp, "/nonexistent/key.pem", None).unwrap_err();
        assert!(e.why.contains("cannot read"), "{}", e.why);
        // No secret (the key material) in any message.
        for e in [
            err(TENANCY, USER, wrong, KEY_2048),
            err(TENANCY, USER, fp, DOC_KEY),
        ] {
            assert!(!e.why.contains("MII"), "{}", e.why);
        }
    }
}
