//! Bearer tokens from an exchange (Azure AD, GCP, IBM IAM): fetched in the background,
//! cached, and refreshed well before they expire.
//!
//! A request takes the cached token without waiting; it waits on a fetch only when no valid
//! token exists yet (first use, or every refresh failed), and concurrent waiters share one
//! fetch. A token is never used within [`EXPIRY_SAFETY`] of its expiry, so an expired token
//! is never sent.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::RequestHeader;

use super::Readiness;
use crate::errors::GatewayError;

/// Tokens this close to expiry are treated as expired.
pub const EXPIRY_SAFETY: Duration = Duration::from_secs(5);
/// Refresh this long before expiry (or at half the lifetime for short-lived tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A token and how long it stays valid.
pub struct Token {
    /// The bearer token itself (a secret).
    pub value: String,
    pub expires_in: Duration,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Obtains fresh tokens from an identity service.
#[async_trait]
pub trait TokenFetcher: Send + Sync + fmt::Debug {
    /// Fetches a new token. The error must be safe to log and to show callers (no secrets).
    async fn fetch(&self) -> Result<Token, String>;
}

struct Cached {
    header: HeaderValue,
    obtained: Instant,
    expires_at: Instant,
}

pub struct TokenSource {
    fetcher: Box<dyn TokenFetcher>,
    current: ArcSwapOption<Cached>,
    last_error: ArcSwapOption<String>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(fetcher: Box<dyn TokenFetcher>) -> Self {
        TokenSource {
            fetcher,
            current: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The cached `Bearer …` header value, if still valid.
    fn valid(&self) -> Option<HeaderValue> {
        let c = self.current.load();
        let c = c.as_ref()?;
        (Instant::now() + EXPIRY_SAFETY < c.expires_at).then(|| c.header.clone())
    }

    /// Fetches and stores a token now.
    async fn refresh(&self) -> Result<HeaderValue, String> {
        let started = Instant::now();
        let token = self.fetcher.fetch().await.inspect_err(|e| {
            self.last_error.store(Some(Arc::new(e.clone())));
        })?;
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", token.value)).map_err(|_| {
                "the identity service returned a token that is not a valid header value".to_string()
            })?;
        header.set_sensitive(true);
        self.current.store(Some(Arc::new(Cached {
            header: header.clone(),
            obtained: started,
            expires_at: started + token.expires_in,
        })));
        self.last_error.store(None);
        Ok(header)
    }

    /// A valid token: the cached one, or (only when there is none) a fresh one.
    pub async fn header(&self) -> Result<HeaderValue, String> {
        if let Some(h) = self.valid() {
            return Ok(h);
        }
        let _guard = self.fetch_lock.lock().await;
        if let Some(h) = self.valid() {
            return Ok(h); // another request fetched it while we waited
        }
        // On a request's path: a span of that request's trace (background refreshes have
        // their own, from `maintain`).
        let started = Instant::now();
        let result = self.refresh().await;
        crate::telemetry::credential_fetch_span(
            "token",
            started,
            result.as_ref().err().map(String::as_str),
        );
        result
    }

    pub async fn apply(&self, provider: &str, req: &mut RequestHeader) -> Result<(), GatewayError> {
        let header = self
            .header()
            .await
            .map_err(|reason| GatewayError::ProviderUnavailable {
                provider: provider.to_owned(),
                reason: format!("could not obtain an access token: {reason}"),
            })?;
        req.insert_header(http::header::AUTHORIZATION, header)
            .map_err(|_| GatewayError::Internal)
    }

    pub fn readiness(&self) -> Readiness {
        if self.valid().is_some() {
            return Readiness::Ready;
        }
        match self.last_error.load().as_ref() {
            Some(e) => Readiness::NotReady(format!("no access token: {e}")),
            None => Readiness::NotReady("no access token yet".into()),
        }
    }

    /// When the current token should be replaced.
    fn next_refresh(&self) -> Option<Instant> {
        let c = self.current.load();
        let c = c.as_ref()?;
        let lifetime = c.expires_at.saturating_duration_since(c.obtained);
        // Refresh before the token stops being usable (EXPIRY_SAFETY before expiry), at half
        // its life for short-lived tokens, never later than REFRESH_MARGIN before expiry.
        let margin = REFRESH_MARGIN
            .min((lifetime / 2).max(EXPIRY_SAFETY + Duration::from_secs(1)))
            .min(lifetime.mul_f64(0.9));
        Some(c.expires_at - margin)
    }

    /// Keeps a fresh token cached until shutdown, retrying failures with capped backoff.
    pub async fn maintain(&self, shutdown: pingora::server::ShutdownWatch) {
        super::refresh_until_shutdown(
            shutdown,
            "token",
            || {
                self.next_refresh().map_or(Duration::ZERO, |at| {
                    at.saturating_duration_since(Instant::now())
                })
            },
            || async {
                let _guard = self.fetch_lock.lock().await;
                self.refresh().await
            },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl TokenFetcher for Counting {
        async fn fetch(&self) -> Result<Token, String> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Token {
                value: format!("tok-{n}"),
                expires_in: Duration::from_secs(3600),
            })
        }
    }

    #[tokio::test]
    async fn concurrent_first_uses_share_one_fetch_and_reuse_the_cache() {
        let src = Arc::new(TokenSource::new(Box::<Counting>::default()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = src.clone();
                tokio::spawn(async move { s.header().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "Bearer tok-0");
        }
        assert_eq!(src.header().await.unwrap(), "Bearer tok-0");
        assert_eq!(src.readiness(), Readiness::Ready);
    }

    #[derive(Debug)]
    struct Failing;

    #[async_trait]
    impl TokenFetcher for Failing {
        async fn fetch(&self) -> Result<Token, String> {
            Err("identity service answered 401".into())
        }
    }

    #[tokio::test]
    async fn failures_are_reported_not_hidden() {
        let src = TokenSource::new(Box::new(Failing));
        assert!(src.header().await.is_err());
        assert_eq!(
            src.readiness(),
            Readiness::NotReady("no access token: identity service answered 401".into())
        );
    }
}
