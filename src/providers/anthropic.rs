//! The `anthropic` provider: Anthropic's Messages API with an API key sent as `x-api-key`.
//!
//! Passthrough adds `anthropic-version` when the caller sent none (the API requires it);
//! `anthropic-beta` and every other caller header pass through unchanged.

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::credentials::{Credential, StaticHeaders};
use super::{ConfigPath, Upstream};
use crate::config::raw::RawProvider;
use crate::config::Problem;

pub const DEFAULT_ENDPOINT: &str = "https://api.anthropic.com";
/// The `anthropic-version` sent when the caller sends none (`api_version` overrides it).
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// `auth.config` for `method: api_key`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyConfig {
    api_key: String,
}

pub fn build(p: &RawProvider, at: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Upstream> {
    at.reject_unused(p, &["api_version"], problems);
    let endpoint = at.endpoint(
        p.endpoint.as_deref(),
        Some(DEFAULT_ENDPOINT.into()),
        problems,
    );
    let version = match p.api_version.as_deref().map(str::trim) {
        None => Some(HeaderValue::from_static(DEFAULT_VERSION)),
        Some("") => {
            problems.push(Problem::new(
                at.join("api_version"),
                format!("is empty (omit it to send anthropic-version: {DEFAULT_VERSION})"),
            ));
            None
        }
        Some(v) => HeaderValue::from_str(v)
            .map_err(|_| {
                problems.push(Problem::new(
                    at.join("api_version"),
                    "contains characters not allowed in a header",
                ))
            })
            .ok(),
    };
    let auth = at.auth(p.auth.as_ref(), &["api_key"], problems)?;
    let config: ApiKeyConfig = at.auth_config(auth, problems)?;
    let headers = StaticHeaders::key("x-api-key", "", &config.api_key)
        .map_err(|why| problems.push(Problem::new(at.join("auth.config.api_key"), why)))
        .ok()?;
    let mut upstream = Upstream::new(endpoint?, Credential::Static(headers));
    upstream
        .default_headers
        .push((HeaderName::from_static("anthropic-version"), version?));
    Some(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::build_tests::build_yaml;

    fn problems_for(yaml: &str) -> (Option<Upstream>, Vec<String>) {
        build_yaml(build, "anthropic", yaml)
    }

    #[test]
    fn builds_with_defaults() {
        let (up, problems) =
            problems_for("auth: {method: api_key, config: {api_key: sk-ant-secret}}");
        assert!(problems.is_empty(), "{problems:?}");
        let up = up.unwrap();
        assert_eq!(up.endpoint.host, "api.anthropic.com");
        assert!(up.endpoint.tls);
        assert_eq!(
            up.default_headers,
            vec![(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static("2023-06-01")
            )]
        );
    }

    #[test]
    fn reports_every_bad_field_with_its_path_and_no_secret() {
        let cases = [
            (
                "endpoint: http://x",
                "providers.anthropic.auth: is required",
            ),
            (
                "auth: {method: bearer, config: {}}",
                "providers.anthropic.auth.method: `bearer` is not supported here (use api_key)",
            ),
            (
                "auth: {method: api_key, config: {}}",
                "providers.anthropic.auth.config: missing field `api_key`",
            ),
            (
                "auth: {method: api_key, config: {api_key: sk-ant-secret, org: x}}",
                "providers.anthropic.auth.config.org: unknown field `org`",
            ),
            (
                "auth: {method: api_key, config: {api_key: '  '}}",
                "providers.anthropic.auth.config.api_key: api_key is empty",
            ),
            (
                "{endpoint: 'ftp://x', auth: {method: api_key, config: {api_key: sk-ant-secret}}}",
                "providers.anthropic.endpoint: `ftp://x` must start with https:// or http://",
            ),
            (
                "{region: us-east-1, auth: {method: api_key, config: {api_key: sk-ant-secret}}}",
                "providers.anthropic.region: does not apply to this provider kind",
            ),
            (
                "{api_version: '', auth: {method: api_key, config: {api_key: sk-ant-secret}}}",
                "providers.anthropic.api_version: is empty",
            ),
        ];
        for (yaml, want) in cases {
            let (up, problems) = problems_for(yaml);
            assert!(up.is_none() || !problems.is_empty(), "{yaml}");
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{yaml}: wanted {want:?}, got {problems:?}"
            );
            assert!(
                problems.iter().all(|p| !p.contains("sk-ant-secret")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn api_version_overrides_the_default() {
        let (up, problems) = problems_for(
            "{api_version: '2024-01-01', auth: {method: api_key, config: {api_key: k}}}",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(up.unwrap().default_headers[0].1, "2024-01-01");
    }
}
