//! Microsoft Entra ID (Azure AD) bearer tokens for Azure OpenAI, obtained with `azure_identity`:
//! a service principal (client secret), a managed identity, or AKS workload identity.
//!
//! The credential is wrapped in a [`super::TokenSource`], which caches the token and refreshes
//! it in the background before it expires. The identity service is reached over our own HTTP
//! client (see [`OutboundHttp`]) so that its TLS trusts the system roots plus `SSL_CERT_FILE`
//! plus an optional per-provider CA file (plus the Mozilla roots, as every token client), and
//! never skips verification.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::Headers;
use azure_core::http::{AsyncRawResponse, Body, ClientOptions, HttpClient, RetryOptions};
use azure_core::http::{Request, Transport};
use azure_core::time::OffsetDateTime;
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};

use super::token::{Token, TokenFetcher};
use crate::providers::trust::{self, SystemRoots, TrustError};

/// The scope of Azure OpenAI (Cognitive Services) tokens.
pub const SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// Longest wait for the identity service (connect + response).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest identity-service response read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Which identity the gateway authenticates as.
pub enum AzureIdentity {
    /// An app registration with a client secret.
    ServicePrincipal {
        tenant_id: String,
        client_id: String,
        client_secret: String,
    },
    /// The VM's / App Service's managed identity; `client_id` picks a user-assigned one.
    ManagedIdentity { client_id: Option<String> },
    /// AKS workload identity: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    /// `AZURE_FEDERATED_TOKEN_FILE` from the environment (tenant and client id may be given).
    WorkloadIdentity {
        tenant_id: Option<String>,
        client_id: Option<String>,
    },
}

impl AzureIdentity {
    fn kind(&self) -> &'static str {
        match self {
            AzureIdentity::ServicePrincipal { .. } => "service principal",
            AzureIdentity::ManagedIdentity { .. } => "managed identity",
            AzureIdentity::WorkloadIdentity { .. } => "workload identity",
        }
    }
}

/// Fetches Entra ID tokens for [`SCOPE`].
pub struct AzureAdFetcher {
    kind: &'static str,
    credential: Arc<dyn TokenCredential>,
}

impl fmt::Debug for AzureAdFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureAdFetcher")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl AzureAdFetcher {
    /// Builds the credential. `authority_host` (a full https URL) replaces the public cloud's
    /// `https://login.microsoftonline.com` (else `AZURE_AUTHORITY_HOST` applies, as in every
    /// Azure SDK); `http` reaches the identity service. The error is safe to show (no secrets).
    pub fn new(
        identity: AzureIdentity,
        authority_host: Option<&str>,
        http: OutboundHttp,
    ) -> Result<AzureAdFetcher, String> {
        let client_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            // The TokenSource retries with backoff; a request waiting on a first token should
            // get a prompt answer rather than a long retry chain.
            retry: RetryOptions::none(),
            cloud: authority_host.map(|host| {
                let mut custom = CustomConfiguration::default();
                custom.authority_host = host.trim_end_matches('/').to_owned();
                Arc::new(CloudConfiguration::Custom(custom))
            }),
            ..ClientOptions::default()
        };
        let kind = identity.kind();
        let credential: Arc<dyn TokenCredential> = match identity {
            AzureIdentity::ServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => ClientSecretCredential::new(
                &tenant_id,
                client_id,
                client_secret.into(),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| describe(kind, &e))?,
            AzureIdentity::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.map(UserAssignedId::ClientId),
                    client_options,
                }))
                .map_err(|e| describe(kind, &e))?
            }
            AzureIdentity::WorkloadIdentity {
                tenant_id,
                client_id,
            } => {
                let mut options = WorkloadIdentityCredentialOptions {
                    tenant_id,
                    client_id,
                    ..WorkloadIdentityCredentialOptions::default()
                };
                options.credential_options.client_options = client_options;
                WorkloadIdentityCredential::new(Some(options)).map_err(|e| describe(kind, &e))?
            }
        };
        Ok(AzureAdFetcher { kind, credential })
    }
}

/// One line describing an identity error; Entra's error descriptions carry no secrets.
fn describe(kind: &str, e: &azure_core::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("unknown error").trim();
    let mut msg = format!("Azure AD {kind}: {first}");
    if msg.len() > 400 {
        let mut cut = 400;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    msg
}

#[async_trait]
impl TokenFetcher for AzureAdFetcher {
    async fn fetch(&self) -> Result<Token, String> {
        let token = self
            .credential
            .get_token(&[SCOPE], None)
            .await
            .map_err(|e| describe(self.kind, &e))?;
        let left = token.expires_on - OffsetDateTime::now_utc();
        let expires_in = Duration::try_from(left).unwrap_or(Duration::ZERO);
        if expires_in.is_zero() {
            return Err(format!(
                "Azure AD {}: the identity service returned an expired token",
                self.kind
            ));
        }
        Ok(Token {
            value: token.token.secret().to_owned(),
            expires_in,
        })
    }
}

/// The HTTP client used to reach identity services: rustls with certificate and host-name
/// verification always on, trusting what every token client trusts (see
/// [`trust::token_client`]): the system store, plus `SSL_CERT_FILE` / `SSL_CERT_DIR`, plus the
/// provider's `ca_file`, plus the Mozilla roots.
pub struct OutboundHttp {
    client: reqwest::Client,
}

impl fmt::Debug for OutboundHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutboundHttp")
    }
}

impl OutboundHttp {
    /// The client for a provider with an optional `ca_file`. Unreadable system roots or
    /// `SSL_CERT_*` are an error too, not skipped; every error is safe to show.
    pub fn new(ca_file: Option<&str>) -> Result<OutboundHttp, TrustError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT);
        let client = trust::token_client(builder, ca_file, SystemRoots::Required)?;
        Ok(OutboundHttp { client })
    }
}

fn http_error(kind: azure_core::error::ErrorKind, what: String) -> azure_core::Error {
    azure_core::Error::with_message(kind, what)
}

#[async_trait]
impl HttpClient for OutboundHttp {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::ErrorKind;
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|_| http_error(ErrorKind::Other, "unsupported HTTP method".into()))?;
        let mut req = self.client.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        match request.body() {
            Body::Bytes(bytes) => req = req.body(bytes.clone()),
            Body::SeekableStream(_) => {
                return Err(http_error(
                    ErrorKind::Other,
                    "streamed request bodies are not supported".into(),
                ))
            }
        }
        let host = request.url().host_str().unwrap_or_default().to_owned();
        let mut resp = req.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            // reqwest's error chain names the cause (TLS, refused, timeout) without secrets.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            http_error(kind, format!("cannot reach {host}: {why}"))
        })?;
        let status = resp.status().as_u16();
        let mut headers = Headers::new();
        for (k, v) in resp.headers() {
            if let Ok(v) = v.to_str() {
                headers.insert(k.as_str().to_owned(), v.to_owned());
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| http_error(ErrorKind::Io, format!("reading from {host}: {e}")))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(http_error(
                    ErrorKind::Io,
                    format!("{host} sent a response over {MAX_RESPONSE_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(AsyncRawResponse::from_bytes(status.into(), headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_an_http_authority_and_names_no_secret() {
        let err = AzureAdFetcher::new(
            AzureIdentity::ServicePrincipal {
                tenant_id: "tenant-1".into(),
                client_id: "client-1".into(),
                client_secret: "very-secret-value".into(),
            },
            Some("http://login.example.com"),
            OutboundHttp::new(None).unwrap(),
        )
        .unwrap_err();
        assert!(err.contains("HTTPS"), "{err}");
        assert!(!err.contains("very-secret-value"), "{err}");
    }
}
