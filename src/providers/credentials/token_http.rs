//! HTTP for token exchanges (GCP service accounts, IBM IAM): one `reqwest` client per
//! provider, the URL rules for identity endpoints, and the OAuth-style token response.
//!
//! TLS always verifies certificates, against the built-in Mozilla roots, the system CA bundle,
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` and the provider's own `ca_file` (see
//! [`trust::token_client`]), so exchanges work behind corporate TLS inspection. Plain `http://` is allowed only to loopback addresses
//! (local test doubles and sidecars): a credential never crosses a network unencrypted.
//! Redirects are not followed, so a form carrying a secret is never re-posted elsewhere.

use std::time::Duration;

use reqwest::{Client, Url};
use serde_json::Value;

use super::token::Token;
use crate::providers::trust::{self, SystemRoots, TrustError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole exchange; a hung identity service must not hold the token lock forever.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// Used when a token response has no `expires_in` (both GCP and IBM document one hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The client for one provider's token exchanges, trusting its optional `ca_file` (see
/// [`trust::token_client`]); the error is reported with [`crate::providers::ConfigPath::trust_problem`].
pub fn provider_client(ca_file: Option<&str>) -> Result<Client, TrustError> {
    let builder = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(EXCHANGE_TIMEOUT)
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
    trust::token_client(builder, ca_file, SystemRoots::BestEffort)
}

/// Checks an identity endpoint URL: `https://`, or `http://` to a loopback address only; no
/// credentials, query or fragment.
pub fn identity_url(url: &str) -> Result<Url, String> {
    let u = Url::parse(url).map_err(|_| format!("`{url}` is not a valid URL"))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL must not contain credentials".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    match u.scheme() {
        "https" => {}
        "http" if is_loopback(&u) => {}
        "http" => {
            return Err(format!(
                "`{url}` must use https:// (plain http is only allowed to loopback addresses)"
            ))
        }
        _ => return Err(format!("`{url}` must start with https://")),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(u)
}

fn is_loopback(u: &Url) -> bool {
    let host = u.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// POSTs a form to a token endpoint and reads an OAuth-style answer
/// (`access_token`, `expires_in`). `service` names the endpoint in errors. Errors never
/// contain the form (it carries the secret) nor the raw response body.
pub async fn exchange(
    http: &Client,
    url: &Url,
    form: &[(&str, &str)],
    service: &str,
) -> Result<Token, String> {
    let resp = http
        .post(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| format!("{service} at {} is unreachable: {}", origin(url), cause(&e)))?;
    let status = resp.status();
    let body = read_limited(resp)
        .await
        .map_err(|e| format!("reading the {service} answer failed: {e}"))?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let detail = json.as_ref().and_then(error_detail);
        return Err(match detail {
            Some(d) => format!("{service} answered {status}: {d}"),
            None => format!("{service} answered {status}"),
        });
    }
    let json = json.ok_or_else(|| format!("{service} answered {status} without a JSON body"))?;
    parse_token(&json).ok_or_else(|| format!("{service} answered without an access_token"))
}

/// `access_token` and its lifetime from a token response.
pub fn parse_token(v: &Value) -> Option<Token> {
    let value = v.get("access_token")?.as_str()?.trim();
    if value.is_empty() {
        return None;
    }
    let secs = v.get("expires_in").and_then(|e| {
        e.as_u64()
            .or_else(|| e.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .or_else(|| e.as_str().and_then(|s| s.trim().parse().ok()))
    });
    Some(Token {
        value: value.to_owned(),
        expires_in: secs.map_or(DEFAULT_LIFETIME, Duration::from_secs),
    })
}

/// A short, secret-free description of an identity service's error answer: OAuth
/// (`error`, `error_description`, Google) or IBM IAM (`errorCode`, `errorMessage`).
fn error_detail(v: &Value) -> Option<String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::trim);
    let parts: Vec<&str> = [
        s("error"),
        s("error_description"),
        s("errorCode"),
        s("errorMessage"),
    ]
    .into_iter()
    .flatten()
    .filter(|p| !p.is_empty())
    .collect();
    if parts.is_empty() {
        return None;
    }
    let mut d: String = parts.join(": ").chars().take(300).collect();
    d.retain(|c| !c.is_control());
    Some(d)
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| cause(&e))? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err("the answer is too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `scheme://host[:port]`, never the path or query.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The innermost cause of a reqwest error (reqwest's own text names the URL; ours already does).
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut src: &dyn std::error::Error = e;
    while let Some(next) = src.source() {
        src = next;
    }
    src.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_urls_must_be_https_or_loopback() {
        for ok in [
            "https://iam.cloud.ibm.com",
            "https://oauth2.googleapis.com/token",
            "http://127.0.0.1:8080/token",
            "http://[::1]:9/x",
            "http://localhost:1/identity/token",
        ] {
            assert!(identity_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://iam.cloud.ibm.com",
            "http://10.0.0.1/token",
            "ftp://x/y",
            "https://user:pw@x.com/token",
            "https://x.com/token?a=1",
            "not a url",
        ] {
            assert!(identity_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_answers_and_errors_are_read_without_secrets() {
        let t = parse_token(&serde_json::json!({"access_token": "ya29.x", "expires_in": 3599}))
            .unwrap();
        assert_eq!((t.value.as_str(), t.expires_in.as_secs()), ("ya29.x", 3599));
        let t = parse_token(&serde_json::json!({"access_token": "a", "expires_in": "60"})).unwrap();
        assert_eq!(t.expires_in.as_secs(), 60);
        let t = parse_token(&serde_json::json!({"access_token": "a"})).unwrap();
        assert_eq!(t.expires_in, DEFAULT_LIFETIME);
        assert!(parse_token(&serde_json::json!({"access_token": ""})).is_none());
        assert!(parse_token(&serde_json::json!({"token": "a"})).is_none());

        let google = serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."});
        assert_eq!(
            error_detail(&google).unwrap(),
            "invalid_grant: Invalid JWT Signature."
        );
        let ibm = serde_json::json!({"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.", "context": {"x": 1}});
        assert_eq!(
            error_detail(&ibm).unwrap(),
            "BXNIM0415E: Provided API key could not be found."
        );
        assert!(error_detail(&serde_json::json!({"echo": "secret"})).is_none());
    }
}
