//! A mock OCI Generative AI upstream that verifies OCI request signatures the way the
//! service does, with the API key's public key and code independent of the gateway's:
//! draft-cavage-http-signatures-08 as OCI documents it ("Request Signatures"). A request that
//! does not verify gets OCI's 401 `NotAuthenticated` error.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::{Digest, Sha256};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};

use super::{MockUpstream, Recorded, Reply};

pub const TENANCY: &str = "ocid1.tenancy.oc1..aaaaaaaatenancyswitchyardtest";
pub const USER: &str = "ocid1.user.oc1..aaaaaaaauserswitchyardtest";
pub const COMPARTMENT: &str = "ocid1.compartment.oc1..aaaaaaaacompartmenttest";

/// An API signing key made for this test run: PEM file, fingerprint, public key.
pub struct ApiKey {
    pub key_file: std::path::PathBuf,
    pub fingerprint: String,
    pub public: RsaPublicKey,
    pub private: RsaPrivateKey,
}

impl ApiKey {
    pub fn key_id(&self) -> String {
        format!("{TENANCY}/{USER}/{}", self.fingerprint)
    }

    /// A fresh RSA-2048 key (PKCS#8 PEM in a temp file); `tag` names the file.
    pub fn generate(tag: &str) -> ApiKey {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public = private.to_public_key();
        let dir = std::env::temp_dir().join(format!("switchyard-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join(format!("{tag}.pem"));
        std::fs::write(
            &key_file,
            private.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let spki = public.to_public_key_der().unwrap();
        let fingerprint = switchyard::providers::credentials::oci::md5_fingerprint(spki.as_bytes());
        ApiKey {
            key_file,
            fingerprint,
            public,
            private,
        }
    }
}

/// The key the gateway signs with in these tests (generated once per test binary).
pub fn api_key() -> &'static ApiKey {
    static KEY: OnceLock<ApiKey> = OnceLock::new();
    KEY.get_or_init(|| ApiKey::generate("gateway"))
}

/// A second key, for a gateway whose key the mock does not know (the checked-in test key:
/// generating RSA keys is slow in debug builds).
pub fn other_key() -> &'static ApiKey {
    static KEY: OnceLock<ApiKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::DecodePrivateKey;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oci");
        let pem = std::fs::read_to_string(dir.join("test_key_pkcs8.pem")).unwrap();
        let private = RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
        ApiKey {
            key_file: dir.join("test_key_pkcs8.pem"),
            fingerprint: std::fs::read_to_string(dir.join("test_key.fingerprint"))
                .unwrap()
                .trim()
                .to_owned(),
            public: private.to_public_key(),
            private,
        }
    })
}

/// The `oci` provider block for a gateway (under `providers:`).
pub fn provider_yaml(name: &str, endpoint: &str, key: &ApiKey, extra: &str) -> String {
    format!(
        r#"  {name}:
    type: oci
    endpoint: "{endpoint}"
    compartment_id: {COMPARTMENT}
{extra}    auth:
      method: oci_api_key
      config:
        tenancy: {TENANCY}
        user: {USER}
        fingerprint: "{}"
        key_file: "{}"
"#,
        key.fingerprint,
        key.key_file.display()
    )
}

/// OCI's answer to a request whose signature does not verify.
pub fn not_authenticated() -> Reply {
    Reply::Full(
        401,
        vec![("opc-request-id".into(), "mock-401".into())],
        br#"{"code":"NotAuthenticated","message":"The required information to complete authentication was not provided or was incorrect."}"#.to_vec(),
    )
}

/// Starts a mock that verifies every request against `public` and `key_id`, answering the
/// ones that verify with `reply`; `failures` collects why the others did not.
pub fn start_mock(
    public: RsaPublicKey,
    key_id: String,
    reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> (MockUpstream, Arc<Mutex<Vec<String>>>) {
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let f = failures.clone();
    let up = MockUpstream::start(move |rec| match verify(rec, &public, &key_id) {
        Ok(()) => reply(rec),
        Err(why) => {
            f.lock().unwrap().push(why);
            not_authenticated()
        }
    });
    (up, failures)
}

/// Verifies an OCI API-key signature: the `Authorization` parameters, the signed header
/// list OCI requires for the method, the date skew, the body hash and length, and the RSA
/// signature over the signing string rebuilt from the request as received.
pub fn verify(rec: &Recorded, public: &RsaPublicKey, key_id: &str) -> Result<(), String> {
    let auth = rec
        .header("authorization")
        .ok_or("no Authorization header")?;
    let params = auth
        .strip_prefix("Signature ")
        .ok_or("Authorization is not a Signature")?;
    let mut version = None;
    let (mut kid, mut algorithm, mut headers, mut signature) = (None, None, None, None);
    for part in params.split(',') {
        let (k, v) = part.split_once('=').ok_or("malformed parameter")?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or("unquoted parameter")?;
        match k.trim() {
            "version" => version = Some(v),
            "keyId" => kid = Some(v),
            "algorithm" => algorithm = Some(v),
            "headers" => headers = Some(v),
            "signature" => signature = Some(v),
            other => return Err(format!("unknown parameter {other}")),
        }
    }
    if version != Some("1") {
        return Err("version is not 1".into());
    }
    if kid != Some(key_id) {
        return Err(format!("unknown keyId {kid:?}"));
    }
    if algorithm != Some("rsa-sha256") {
        return Err("algorithm is not rsa-sha256".into());
    }
    let headers: Vec<&str> = headers.ok_or("no headers")?.split(' ').collect();
    let body_method = ["POST", "PUT", "PATCH"].contains(&rec.method.as_str());
    let mut required = vec!["date", "(request-target)", "host"];
    if body_method {
        required.extend(["content-length", "content-type", "x-content-sha256"]);
    }
    for r in &required {
        if !headers.contains(r) {
            return Err(format!("{r} is not signed"));
        }
    }
    if body_method {
        let digest = B64.encode(Sha256::digest(&rec.body));
        if rec.header("x-content-sha256") != Some(digest.as_str()) {
            return Err("x-content-sha256 does not match the body".into());
        }
        if rec.header("content-length") != Some(rec.body.len().to_string().as_str()) {
            return Err("content-length does not match the body".into());
        }
    }
    let date = rec.header("date").ok_or("no date")?;
    let when = parse_http_date(date).ok_or("date is not an RFC 7231 date")?;
    let now = SystemTime::now();
    let skew = now
        .duration_since(when)
        .or_else(|_| when.duration_since(now))
        .unwrap();
    if skew > Duration::from_secs(300) {
        return Err("date is more than 5 minutes off".into());
    }
    let mut lines = Vec::new();
    for h in &headers {
        if *h == "(request-target)" {
            lines.push(format!(
                "(request-target): {} {}",
                rec.method.to_lowercase(),
                rec.path
            ));
        } else {
            let v = rec
                .header(h)
                .ok_or_else(|| format!("signed header {h} is missing"))?;
            lines.push(format!("{h}: {v}"));
        }
    }
    let signing_string = lines.join("\n");
    let sig = B64
        .decode(signature.ok_or("no signature")?)
        .map_err(|_| "signature is not base64")?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|_| "malformed signature")?;
    VerifyingKey::<Sha256>::new(public.clone())
        .verify(signing_string.as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_string())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // Days from civil (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// An OCI GENERIC chat response (non-stream), deliberately formatted oddly.
pub fn chat_response(model: &str, text: &str, prompt: u64, completion: u64) -> Vec<u8> {
    format!(
        "{{\"modelId\" : \"{model}\",\"modelVersion\":\"1.0.0\",\n \"chatResponse\":{{\"apiFormat\":\"GENERIC\",\"timeCreated\":\"2025-01-01T00:00:00.000Z\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"ASSISTANT\",\"content\":[{{\"type\":\"TEXT\",\"text\":\"{text}\"}}]}},\"finishReason\":\"stop\",\"logprobs\":null}}],\"usage\":{{\"promptTokens\":{prompt},\"completionTokens\":{completion},\"totalTokens\":{}}}}}}}",
        prompt + completion
    )
    .into_bytes()
}

/// An OCI GENERIC chat stream: data-only SSE, text chunks, a final `finishReason` chunk, then
/// the usage chunk (`streamOptions.isIncludeUsage`).
pub fn chat_stream(pieces: &[&str], prompt: u64) -> Vec<u8> {
    let mut s = String::new();
    for p in pieces {
        s.push_str(&format!(
            "data: {{\"index\":0,\"message\":{{\"role\":\"ASSISTANT\",\"content\":[{{\"type\":\"TEXT\",\"text\":\"{p}\"}}]}}}}\n\n"
        ));
    }
    s.push_str("data: {\"index\":0,\"message\":{\"role\":\"ASSISTANT\",\"content\":[{\"type\":\"TEXT\",\"text\":\"\"}]},\"finishReason\":\"stop\"}\n\n");
    s.push_str(&format!(
        "data: {{\"usage\":{{\"promptTokens\":{prompt},\"completionTokens\":{},\"totalTokens\":{}}}}}\n\n",
        pieces.len(),
        prompt + pieces.len() as u64
    ));
    s.into_bytes()
}
