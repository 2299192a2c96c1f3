//! The credential the gateway presents to a provider, injected into every upstream request
//! after the caller's own key headers have been removed.
//!
//! Static keys are headers; bearer tokens (Azure AD, GCP, IBM IAM) come from a
//! [`token::TokenSource`] that caches them and refreshes them in the background; request
//! signatures (AWS SigV4, OCI) are computed over the exact bytes sent.

pub mod api_key;
pub mod azure_ad;
pub mod gcp;
pub mod ibm_iam;
pub mod oci;
pub mod sigv4;
pub mod token;
pub mod token_http;

use std::future::Future;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;

use crate::auth::KEY_HEADERS;
use crate::errors::GatewayError;

pub use api_key::StaticHeaders;
pub use token::TokenSource;

/// Whether a provider's credential can be used right now (for `/ready` and 503s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not usable; the reason is safe to show (never contains a secret).
    NotReady(String),
}

#[derive(Debug)]
pub enum Credential {
    /// Fixed headers: `Authorization: Bearer` (OpenAI), `x-api-key` (Anthropic), `api-key` (Azure).
    Static(StaticHeaders),
    /// `Authorization: Bearer <token>` from a cached, background-refreshed token.
    Token(TokenSource),
    /// A signature over the request (and its body): AWS SigV4, OCI HTTP signatures.
    Signed(Box<dyn RequestSigner>),
}

/// A credential that signs each request, e.g. AWS SigV4 or OCI's HTTP signature.
#[async_trait::async_trait]
pub trait RequestSigner: Send + Sync + std::fmt::Debug {
    /// Adds the signature headers to `req`, which already carries its final method, path
    /// (with query), `Host` and other headers; `body` is exactly what will be sent. The error
    /// must be safe to show callers (no secrets).
    async fn sign(&self, req: &mut RequestHeader, body: &[u8]) -> Result<(), String>;

    /// Whether signing can work now (e.g. credentials loaded).
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }

    /// Keeps underlying credentials fresh until shutdown (e.g. AWS role credentials).
    async fn maintain(&self, _shutdown: pingora::server::ShutdownWatch) {}
}

impl Credential {
    /// Whether the credential covers the body (a signature), so the body must be known before
    /// the request headers are sent.
    pub fn signs_body(&self) -> bool {
        matches!(self, Credential::Signed(_))
    }

    /// Replaces whatever credential headers the request carries with the provider's.
    /// `req` must already carry its final path, `Host` and other headers; `body` is the exact
    /// bytes to be sent (only read when [`Self::signs_body`]).
    pub async fn apply(
        &self,
        provider: &str,
        req: &mut RequestHeader,
        body: &[u8],
    ) -> Result<(), GatewayError> {
        strip_caller_credentials(req);
        match self {
            Credential::Static(h) => h.apply(req),
            Credential::Token(t) => t.apply(provider, req).await,
            Credential::Signed(s) => {
                s.sign(req, body)
                    .await
                    .map_err(|reason| GatewayError::ProviderUnavailable {
                        provider: provider.to_owned(),
                        reason: format!("could not sign the request: {reason}"),
                    })
            }
        }
    }

    pub fn readiness(&self) -> Readiness {
        match self {
            Credential::Static(_) => Readiness::Ready,
            Credential::Token(t) => t.readiness(),
            Credential::Signed(s) => s.readiness(),
        }
    }

    /// Keeps the credential fresh; runs until the process stops (no-op for static ones).
    pub async fn maintain(&self, shutdown: pingora::server::ShutdownWatch) {
        match self {
            Credential::Static(_) => {}
            Credential::Token(t) => t.maintain(shutdown).await,
            Credential::Signed(s) => s.maintain(shutdown).await,
        }
    }
}

/// Longest wait between two failed refreshes in [`refresh_until_shutdown`].
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Keeps a cached credential fresh until shutdown: waits `until_refresh()`, then runs
/// `refresh`. After a failure, logged as "`what` refresh failed", it retries with a backoff
/// doubling from 1 s to [`MAX_BACKOFF`]; the cached value stays in use while it lasts.
async fn refresh_until_shutdown<T, Fut>(
    mut shutdown: ShutdownWatch,
    what: &str,
    until_refresh: impl Fn() -> Duration,
    refresh: impl Fn() -> Fut,
) where
    Fut: Future<Output = Result<T, String>>,
{
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(until_refresh()) => {}
        }
        let started = std::time::Instant::now();
        let result = refresh().await;
        crate::telemetry::credential_span(what, started, result.as_ref().err().map(String::as_str));
        match result {
            Ok(_) => backoff = Duration::from_secs(1),
            Err(e) => {
                log::warn!("{what} refresh failed (retrying in {backoff:?}): {e}");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Removes every header that may carry the caller's gateway key, and the gateway's own
/// control headers, so none of them reaches a provider.
pub fn strip_caller_credentials(req: &mut RequestHeader) {
    // One pass over the request's own headers (a handful) rather than a lookup per name.
    let strip: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| KEY_HEADERS.contains(&k.as_str()) || k.as_str().starts_with("x-switchyard-"))
        .cloned()
        .collect();
    for name in strip {
        req.remove_header(&name);
    }
}
