//! AWS Signature Version 4 (Bedrock): every request signed over the exact bytes sent.
//!
//! The canonical request is computed by `aws-sigv4` from the request line that goes on the
//! wire (`RequestHeader::raw_path`, so a model id sent as `...v1%3A0` is signed as
//! `...v1%253A0`: non-S3 services double-encode the path, as botocore does), the `Host`
//! header, `content-type`, every `x-amz-*` header and the SHA-256 of the body. Like botocore's
//! `SigV4Auth` for Bedrock, no `x-amz-content-sha256` header is sent; temporary credentials
//! add a signed `x-amz-security-token`.
//!
//! Credentials are static (from the config) or come from aws-config's default chain
//! (environment, shared profile, web identity / IRSA, ECS, EC2 instance metadata). Chain
//! credentials are loaded and refreshed in [`RequestSigner::maintain`], in the background,
//! before they expire, and cached; a request loads them itself only when none are valid yet
//! (and concurrent requests share that one load).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use super::{Readiness, RequestSigner};

/// Credentials this close to their expiry are not used.
pub const EXPIRY_SAFETY: Duration = Duration::from_secs(10);
/// Refresh this long before expiry (or at half the remaining lifetime, if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Credentials without an expiry (environment, profile) are re-read this often.
const RELOAD_EVERY: Duration = Duration::from_secs(900);
/// After a failed load, requests reuse its error this long instead of loading again.
const FAIL_FAST: Duration = Duration::from_secs(2);

/// Headers a caller may send that would conflict with the gateway's signature.
const SIGNING_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Where the credentials come from.
enum Source {
    /// Fixed credentials from the config (already in `current`).
    Static,
    /// aws-config's default chain, built on first use (building it is async).
    DefaultChain {
        region: String,
        profile: Option<String>,
        chain: tokio::sync::OnceCell<SharedCredentialsProvider>,
    },
    /// Any credentials provider (tests).
    Provider(SharedCredentialsProvider),
}

struct Cached {
    credentials: Credentials,
    loaded: SystemTime,
}

pub struct SigV4Signer {
    service: &'static str,
    region: String,
    source: Source,
    current: ArcSwapOption<Cached>,
    /// The last load failure and when it happened.
    last_error: ArcSwapOption<(Instant, String)>,
    load_lock: tokio::sync::Mutex<()>,
    /// [`EXPIRY_SAFETY`], shorter in tests.
    expiry_safety: Duration,
}

impl fmt::Debug for SigV4Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Static => "static",
            Source::DefaultChain { .. } => "default_chain",
            Source::Provider(_) => "provider",
        };
        f.debug_struct("SigV4Signer")
            .field("service", &self.service)
            .field("region", &self.region)
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

impl SigV4Signer {
    fn new(service: &'static str, region: &str, source: Source) -> Self {
        SigV4Signer {
            service,
            region: region.to_owned(),
            source,
            current: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            load_lock: tokio::sync::Mutex::new(()),
            expiry_safety: EXPIRY_SAFETY,
        }
    }

    /// Fixed credentials (an access key pair, optionally with a session token).
    pub fn fixed(service: &'static str, region: &str, credentials: Credentials) -> Self {
        let s = Self::new(service, region, Source::Static);
        s.store(credentials);
        s
    }

    /// aws-config's default credential chain for `region` (optionally a named profile).
    pub fn default_chain(service: &'static str, region: &str, profile: Option<String>) -> Self {
        let source = Source::DefaultChain {
            region: region.to_owned(),
            profile,
            chain: tokio::sync::OnceCell::new(),
        };
        Self::new(service, region, source)
    }

    /// Credentials from any provider, refreshed like the default chain's.
    pub fn with_provider(
        service: &'static str,
        region: &str,
        provider: impl ProvideCredentials + 'static,
    ) -> Self {
        let source = Source::Provider(SharedCredentialsProvider::new(provider));
        Self::new(service, region, source)
    }

    fn store(&self, credentials: Credentials) {
        self.current.store(Some(Arc::new(Cached {
            credentials,
            loaded: SystemTime::now(),
        })));
    }

    /// The cached credentials, unless they are (about to be) expired.
    fn valid(&self) -> Option<Credentials> {
        let c = self.current.load();
        let c = c.as_ref()?;
        match c.credentials.expiry() {
            Some(exp) if SystemTime::now() + self.expiry_safety >= exp => None,
            _ => Some(c.credentials.clone()),
        }
    }

    async fn provider(&self) -> Option<SharedCredentialsProvider> {
        match &self.source {
            Source::Static => None,
            Source::Provider(p) => Some(p.clone()),
            Source::DefaultChain {
                region,
                profile,
                chain,
            } => Some(
                chain
                    .get_or_init(|| async {
                        let mut b = aws_config::default_provider::credentials::Builder::default()
                            .region(aws_config::Region::new(region.clone()));
                        if let Some(p) = profile {
                            b = b.profile_name(p);
                        }
                        SharedCredentialsProvider::new(b.build().await)
                    })
                    .await
                    .clone(),
            ),
        }
    }

    /// Loads credentials from the source now and caches them.
    async fn load(&self) -> Result<Credentials, String> {
        let Some(provider) = self.provider().await else {
            return self
                .valid()
                .ok_or_else(|| "the configured credentials are unusable".to_string());
        };
        match provider.provide_credentials().await {
            Ok(c) => {
                if c.expiry()
                    .is_some_and(|exp| SystemTime::now() + self.expiry_safety >= exp)
                {
                    let e = "the credential chain returned expired credentials".to_string();
                    self.last_error
                        .store(Some(Arc::new((Instant::now(), e.clone()))));
                    return Err(e);
                }
                self.store(c.clone());
                self.last_error.store(None);
                Ok(c)
            }
            Err(e) => {
                let e = describe(&e);
                self.last_error
                    .store(Some(Arc::new((Instant::now(), e.clone()))));
                Err(e)
            }
        }
    }

    /// Valid credentials: the cached ones, or (only when there are none) freshly loaded.
    pub async fn credentials(&self) -> Result<Credentials, String> {
        if let Some(c) = self.valid() {
            return Ok(c);
        }
        let _guard = self.load_lock.lock().await;
        if let Some(c) = self.valid() {
            return Ok(c); // loaded by another request meanwhile
        }
        // While the source keeps failing (the background task retries it), requests fail
        // fast instead of each waiting on another attempt.
        if let Some(failure) = self.last_error.load().as_ref() {
            if failure.0.elapsed() < FAIL_FAST {
                return Err(failure.1.clone());
            }
        }
        self.load().await
    }

    /// When the cached credentials should be replaced (None: now).
    fn next_refresh(&self) -> Option<SystemTime> {
        let c = self.current.load();
        let c = c.as_ref()?;
        match c.credentials.expiry() {
            None => Some(c.loaded + RELOAD_EVERY),
            Some(exp) => {
                // Never later than twice the safety margin before expiry, so the cached
                // credentials are replaced while still usable.
                let left = exp.duration_since(c.loaded).unwrap_or_default();
                Some(exp - REFRESH_MARGIN.min(left / 2).max(self.expiry_safety * 2))
            }
        }
    }

    /// Signs `req` (final path, Host and headers) over `body` with `credentials` at `time`.
    pub fn sign_with(
        &self,
        req: &mut RequestHeader,
        body: &[u8],
        credentials: Credentials,
        time: SystemTime,
    ) -> Result<(), String> {
        for name in SIGNING_HEADERS {
            req.remove_header(name);
        }
        let path = std::str::from_utf8(req.raw_path())
            .map_err(|_| "the request path is not valid UTF-8".to_string())?
            .to_owned();
        let mut signed: Vec<(&str, &str)> = Vec::new();
        for (name, value) in req.headers.iter() {
            let n = name.as_str();
            if n == "host" || n == "content-type" || n.starts_with("x-amz") {
                // A value that is not visible ASCII is sent unsigned rather than refused.
                if let Ok(v) = value.to_str() {
                    signed.push((n, v));
                }
            }
        }
        if !signed.iter().any(|(n, _)| *n == "host") {
            return Err("the request has no Host header".into());
        }
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("invalid signing parameters: {e}"))?
            .into();
        let signable = SignableRequest::new(
            req.method.as_str(),
            path.as_str(),
            signed.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("the request cannot be signed: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("the request cannot be signed: {e}"))?
            .into_parts();
        let (headers, _query) = instructions.into_parts();
        for h in headers {
            let name = HeaderName::from_static(h.name());
            let mut value = HeaderValue::from_str(h.value())
                .map_err(|_| "a signature header is not a valid header value".to_string())?;
            value.set_sensitive(h.sensitive() || name == http::header::AUTHORIZATION);
            req.insert_header(name, value)
                .map_err(|_| "could not set a signature header".to_string())?;
        }
        Ok(())
    }
}

#[async_trait]
impl RequestSigner for SigV4Signer {
    async fn sign(&self, req: &mut RequestHeader, body: &[u8]) -> Result<(), String> {
        let credentials = self
            .credentials()
            .await
            .map_err(|e| format!("no AWS credentials: {e}"))?;
        self.sign_with(req, body, credentials, SystemTime::now())
    }

    fn readiness(&self) -> Readiness {
        if self.valid().is_some() {
            return Readiness::Ready;
        }
        match self.last_error.load().as_ref() {
            Some(e) => Readiness::NotReady(format!("no AWS credentials: {}", e.1)),
            None => Readiness::NotReady("AWS credentials are not loaded yet".into()),
        }
    }

    async fn maintain(&self, shutdown: pingora::server::ShutdownWatch) {
        if matches!(self.source, Source::Static) {
            return;
        }
        super::refresh_until_shutdown(
            shutdown,
            "AWS credential",
            || {
                self.next_refresh().map_or(Duration::ZERO, |at| {
                    at.duration_since(SystemTime::now()).unwrap_or_default()
                })
            },
            || async {
                let _guard = self.load_lock.lock().await;
                self.load().await
            },
        )
        .await;
    }
}

/// An error and its causes on one line (credential errors carry no secrets), bounded.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    // One line (the chain lists each provider it tried on its own line).
    let mut s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 600 {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::provider::{error::CredentialsError, future};

    use super::*;

    fn request(path: &str) -> RequestHeader {
        let mut req = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        req.insert_header("host", "bedrock-runtime.us-east-1.amazonaws.com")
            .unwrap();
        req.insert_header("content-type", "application/json")
            .unwrap();
        req.insert_header("accept", "application/json").unwrap();
        req.insert_header("user-agent", "Boto3/1.0").unwrap();
        req.insert_header("x-amz-date", "19990101T000000Z").unwrap();
        req.insert_header("x-amz-security-token", "caller-token")
            .unwrap();
        req.insert_header("x-amzn-bedrock-trace", "ENABLED")
            .unwrap();
        req
    }

    fn creds(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Expected values computed independently with botocore 1.44 (`SigV4Auth("bedrock",
    /// "us-east-1")` at 2024-05-01T12:00:00Z, same headers, no `user-agent`/`accept` signed).
    #[test]
    fn signs_a_model_id_with_a_colon_like_botocore() {
        let signer = SigV4Signer::fixed("bedrock", "us-east-1", creds(None));
        let mut req = request("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
        signer
            .sign_with(&mut req, br#"{"x":1}"#, creds(None), at(1_714_564_800))
            .unwrap();
        assert_eq!(req.headers["x-amz-date"], "20240501T120000Z");
        assert!(req.headers.get("x-amz-security-token").is_none());
        assert!(req.headers.get("x-amz-content-sha256").is_none());
        let auth = req.headers["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amzn-bedrock-trace, Signature="
            ),
            "{auth}"
        );
        assert_eq!(
            &auth[auth.len() - 64..],
            "040b6b60febeafb2e85308752ae6712aa5386b60271131571f519ec13daa4e26",
            "botocore computes another signature"
        );
        // The caller's path is what goes on the wire, unchanged.
        assert_eq!(
            req.raw_path(),
            b"/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
        );
    }

    #[test]
    fn session_tokens_are_sent_and_signed() {
        let signer = SigV4Signer::fixed("bedrock", "us-east-1", creds(Some("session-tok")));
        let mut req = request("/model/m/converse");
        signer
            .sign_with(
                &mut req,
                b"{}",
                creds(Some("session-tok")),
                at(1_714_564_800),
            )
            .unwrap();
        assert_eq!(req.headers["x-amz-security-token"], "session-tok");
        let auth = req.headers["authorization"].to_str().unwrap();
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amzn-bedrock-trace,"),
            "{auth}"
        );
    }

    #[derive(Debug, Default)]
    struct Rotating {
        calls: Arc<AtomicUsize>,
        fail: bool,
        lifetime: Duration,
        /// How long each load takes.
        delay: Duration,
    }

    impl ProvideCredentials for Rotating {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::new(async move {
                tokio::time::sleep(self.delay).await;
                if self.fail {
                    return Err(CredentialsError::not_loaded(
                        "no credentials in the environment",
                    ));
                }
                Ok(Credentials::new(
                    format!("AKID{n}"),
                    "secret",
                    Some(format!("token-{n}")),
                    Some(SystemTime::now() + self.lifetime),
                    "rotating",
                ))
            })
        }
    }

    #[tokio::test]
    async fn chain_credentials_are_cached_and_refreshed_in_the_background() {
        let mut signer = SigV4Signer::with_provider(
            "bedrock",
            "us-east-1",
            Rotating {
                lifetime: Duration::from_secs(3),
                delay: Duration::from_millis(300),
                ..Default::default()
            },
        );
        signer.expiry_safety = Duration::from_millis(500);
        let signer = Arc::new(signer);
        assert_eq!(
            signer.readiness(),
            Readiness::NotReady("AWS credentials are not loaded yet".into())
        );
        // First use loads once, even when concurrent.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = signer.clone();
                tokio::spawn(async move { s.credentials().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().access_key_id(), "AKID0");
        }
        assert_eq!(signer.readiness(), Readiness::Ready);

        // From now on the background task keeps them fresh: requests never wait for a load
        // (each takes 300 ms) and never get credentials within the safety margin of expiry.
        let (tx, rx) = tokio::sync::watch::channel(false);
        let bg = signer.clone();
        let task = tokio::spawn(async move { bg.maintain(rx).await });
        let mut seen = std::collections::BTreeSet::new();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < end {
            let started = std::time::Instant::now();
            let c = signer.credentials().await.unwrap();
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "a request waited for a credential load"
            );
            assert!(c.expiry().unwrap() > SystemTime::now() + Duration::from_millis(500));
            seen.insert(c.access_key_id().to_owned());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen.len() >= 3, "credentials were not rotated: {seen:?}");
        let _ = tx.send(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn failures_are_reported_not_hidden() {
        let calls = Arc::new(AtomicUsize::new(0));
        let signer = SigV4Signer::with_provider(
            "bedrock",
            "us-east-1",
            Rotating {
                fail: true,
                calls: calls.clone(),
                ..Default::default()
            },
        );
        let mut req = request("/model/m/invoke");
        let err = signer.sign(&mut req, b"").await.unwrap_err();
        assert!(err.contains("no credentials in the environment"), "{err}");
        assert!(req.headers.get("authorization").is_none());
        // Requests right after a failure get its error without another attempt.
        let again = signer.sign(&mut req, b"").await.unwrap_err();
        assert_eq!(again, err);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        match signer.readiness() {
            Readiness::NotReady(why) => {
                assert!(why.contains("no credentials in the environment"), "{why}")
            }
            Readiness::Ready => panic!("ready without credentials"),
        }
        let dump = format!("{signer:?}");
        assert!(!dump.contains("secret"), "{dump}");
    }
}
