//! Google Cloud access tokens (scope `cloud-platform`) for Vertex AI.
//!
//! - [`ServiceAccount`]: a service-account JSON key file. The gateway signs an RS256 JWT
//!   assertion with the key (`iss` = the account, `aud` = the key file's `token_uri`) and
//!   exchanges it at that `token_uri` (RFC 7523 JWT bearer grant). Implemented here rather than
//!   with `gcp_auth::CustomServiceAccount` because that type keeps its own token cache (so a
//!   background refresh would get the same token back until 20 s before expiry), has no request
//!   timeout, cannot trust a provider's `ca_file`, and reports failures without the status.
//! - [`ApplicationDefault`]: no key file; `gcp_auth`'s application-default chain
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file, the GCE/GKE/Cloud Run metadata server
//!   — which is what GKE Workload Identity serves —, then the gcloud CLI).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Client, Url};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::RsaPrivateKey;
use serde::Deserialize;
use sha2::Sha256;

use super::token::{Token, TokenFetcher};
use super::token_http;

/// The OAuth scope that covers Vertex AI.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, for key files that do not name one.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime asked for in the assertion (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;
/// How long finding application-default credentials may take.
const ADC_TIMEOUT: Duration = Duration::from_secs(30);

/// The fields of a service-account key file the gateway uses.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// Tokens from a service-account key (JWT bearer grant at the key's `token_uri`).
pub struct ServiceAccount {
    email: String,
    key_id: Option<String>,
    token_uri: Url,
    key: SigningKey<Sha256>,
    http: Client,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri.as_str())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccount {
    /// Reads a key file. Errors name what is wrong, never the key's contents.
    pub fn from_file(path: &str, http: Client) -> Result<ServiceAccount, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        Self::from_json(&text, http).map_err(|why| format!("`{path}`: {why}"))
    }

    /// Parses the JSON of a key file.
    pub fn from_json(json: &str, http: Client) -> Result<ServiceAccount, String> {
        // serde_json's messages can quote values, so only its position is reported.
        let key: KeyFile = serde_json::from_str(json).map_err(|e| {
            format!(
                "is not a service-account JSON key (invalid JSON at line {} column {})",
                e.line(),
                e.column()
            )
        })?;
        match key.kind.as_deref() {
            Some("service_account") | None => {}
            Some(other) => {
                return Err(format!(
                    "is a credential of type `{other}`, not a service-account key (`type: service_account`); \
                     leave credentials_file out to use application-default credentials"
                ))
            }
        }
        let email = key
            .client_email
            .filter(|e| !e.trim().is_empty())
            .ok_or("has no client_email")?;
        let pem = key.private_key.ok_or("has no private_key")?;
        let rsa = RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .map_err(|_| "private_key is not an RSA private key in PEM (PKCS#8 or PKCS#1)")?;
        let token_uri = key.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into());
        let token_uri =
            token_http::identity_url(&token_uri).map_err(|why| format!("token_uri {why}"))?;
        Ok(ServiceAccount {
            email,
            key_id: key.private_key_id.filter(|k| !k.is_empty()),
            token_uri,
            key: SigningKey::<Sha256>::new(rsa),
            http,
        })
    }

    /// The signed JWT assertion for a token request made at `now` (Unix seconds).
    pub fn assertion(&self, now: u64) -> Result<String, String> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri.as_str(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        // Blinded signing (a fresh random blinding factor per signature).
        let sig = self
            .key
            .try_sign_with_rng(&mut rsa::rand_core::OsRng, jwt.as_bytes())
            .map_err(|_| "signing the token request with the service-account key failed")?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        Ok(jwt)
    }
}

#[async_trait]
impl TokenFetcher for ServiceAccount {
    async fn fetch(&self) -> Result<Token, String> {
        let assertion = self.assertion(unix_now()?)?;
        token_http::exchange(
            &self.http,
            &self.token_uri,
            &[("grant_type", JWT_BEARER), ("assertion", &assertion)],
            "the Google token endpoint",
        )
        .await
    }
}

/// Tokens from application-default credentials (metadata server / Workload Identity,
/// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud), found on first use through `gcp_auth`.
#[derive(Default)]
pub struct ApplicationDefault {
    provider: tokio::sync::OnceCell<Arc<dyn gcp_auth::TokenProvider>>,
}

impl fmt::Debug for ApplicationDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplicationDefault")
            .field("found", &self.provider.initialized())
            .finish()
    }
}

impl ApplicationDefault {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TokenFetcher for ApplicationDefault {
    async fn fetch(&self) -> Result<Token, String> {
        // A failed discovery is not cached: the next fetch looks again.
        let provider = self
            .provider
            .get_or_try_init(|| async {
                tokio::time::timeout(ADC_TIMEOUT, gcp_auth::provider())
                    .await
                    .map_err(|_| "finding application-default credentials timed out".to_string())?
                    .map_err(|e| {
                        format!(
                            "no Google credentials found (no credentials_file, \
                             GOOGLE_APPLICATION_CREDENTIALS, gcloud login or metadata server): {e}"
                        )
                    })
            })
            .await?;
        let token = tokio::time::timeout(ADC_TIMEOUT, provider.token(&[SCOPE]))
            .await
            .map_err(|_| "the Google token request timed out".to_string())?
            .map_err(|e| format!("the Google token request failed: {e}"))?;
        // `expires_at` is a chrono time; its inherent `timestamp()` avoids depending on chrono.
        let left = token.expires_at().timestamp() - unix_now()? as i64;
        Ok(Token {
            value: token.as_str().to_owned(),
            expires_in: Duration::from_secs(left.max(0) as u64),
        })
    }
}

fn unix_now() -> Result<u64, String> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970")?
        .as_secs())
}
