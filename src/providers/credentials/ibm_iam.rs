//! IBM Cloud IAM access tokens for watsonx.ai: an API key exchanged at
//! `{iam_endpoint}/identity/token` (`grant_type=urn:ibm:params:oauth:grant-type:apikey`).
//! IAM answers `{"access_token", "refresh_token", "token_type": "Bearer", "expires_in": 3600,
//! "expiration": <unix seconds>, ...}`; a new token is fetched from the API key each time (the
//! refresh token is not used, as IBM's own SDKs do).

use std::fmt;

use async_trait::async_trait;
use reqwest::{Client, Url};

use super::token::{Token, TokenFetcher};
use super::token_http;

pub const DEFAULT_IAM_ENDPOINT: &str = "https://iam.cloud.ibm.com";
const TOKEN_PATH: &str = "/identity/token";
const GRANT_TYPE: &str = "urn:ibm:params:oauth:grant-type:apikey";

pub struct IbmIam {
    api_key: String,
    token_url: Url,
    http: Client,
}

impl fmt::Debug for IbmIam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IbmIam")
            .field("token_url", &self.token_url.as_str())
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl IbmIam {
    /// `iam_endpoint` is the IAM base URL (default [`DEFAULT_IAM_ENDPOINT`]); the token path
    /// `/identity/token` is appended unless the URL already ends with it. Errors say which
    /// part is wrong (`api_key` or `iam_endpoint`) and never contain the key.
    pub fn new(
        api_key: &str,
        iam_endpoint: Option<&str>,
        http: Client,
    ) -> Result<IbmIam, (&'static str, String)> {
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(("api_key", "is empty".into()));
        }
        let base = iam_endpoint
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_IAM_ENDPOINT);
        let token_url = token_url(base).map_err(|why| ("iam_endpoint", why))?;
        Ok(IbmIam {
            api_key: api_key.to_owned(),
            token_url,
            http,
        })
    }

    pub fn token_url(&self) -> &Url {
        &self.token_url
    }
}

fn token_url(base: &str) -> Result<Url, String> {
    let base = base.trim_end_matches('/');
    let full = if base.ends_with(TOKEN_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TOKEN_PATH}")
    };
    token_http::identity_url(&full)
}

#[async_trait]
impl TokenFetcher for IbmIam {
    async fn fetch(&self) -> Result<Token, String> {
        token_http::exchange(
            &self.http,
            &self.token_url,
            &[("grant_type", GRANT_TYPE), ("apikey", &self.api_key)],
            "IBM Cloud IAM",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_path_is_appended_to_the_iam_base_url() {
        let http = Client::new();
        let iam = |e: Option<&str>| IbmIam::new("k", e, http.clone());
        assert_eq!(
            iam(None).unwrap().token_url().as_str(),
            "https://iam.cloud.ibm.com/identity/token"
        );
        assert_eq!(
            iam(Some("https://private.iam.cloud.ibm.com/"))
                .unwrap()
                .token_url()
                .as_str(),
            "https://private.iam.cloud.ibm.com/identity/token"
        );
        assert_eq!(
            iam(Some("http://127.0.0.1:9000/identity/token"))
                .unwrap()
                .token_url()
                .as_str(),
            "http://127.0.0.1:9000/identity/token"
        );
        assert_eq!(
            iam(Some("http://iam.example.com")).unwrap_err().0,
            "iam_endpoint"
        );
        assert_eq!(
            IbmIam::new(" ", None, http.clone()).unwrap_err().0,
            "api_key"
        );
        let dbg = format!("{:?}", IbmIam::new("secret-key", None, http).unwrap());
        assert!(!dbg.contains("secret-key"), "{dbg}");
    }
}
