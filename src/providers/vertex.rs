//! The `vertex` provider: Google Vertex AI with a GCP OAuth bearer token.
//!
//! ```yaml
//! vertex:
//!   project_id: my-project
//!   location: us-central1          # or `global`
//!   # endpoint: https://us-central1-aiplatform.googleapis.com   (the default for the location)
//!   auth:
//!     method: gcp_service_account
//!     config: {credentials_file: /etc/switchyard/vertex-sa.json}   # omit for ADC / metadata
//! ```
//!
//! Passthrough covers the whole REST surface under the endpoint: Gemini `:generateContent`,
//! `:streamGenerateContent` (`?alt=sse` or the JSON array stream), `:predict`, `:embedContent`,
//! `:countTokens`, and partner models (`publishers/anthropic/models/...:rawPredict`,
//! `:streamRawPredict`). The token (scope `cloud-platform`) comes from a [`TokenSource`], cached
//! and refreshed in the background.

use serde::Deserialize;

use super::credentials::gcp::{ApplicationDefault, ServiceAccount};
use super::credentials::token::TokenFetcher;
use super::credentials::{token_http, Credential, TokenSource};
use super::{ConfigPath, Upstream};
use crate::config::raw::RawProvider;
use crate::config::Problem;

/// `auth.config` for `method: gcp_service_account`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpServiceAccountConfig {
    /// A service-account JSON key; without it, application-default credentials are used.
    #[serde(default)]
    pub credentials_file: Option<String>,
}

/// The regional endpoint for `location` (`global` has no regional prefix).
pub fn default_endpoint(location: &str) -> String {
    if location == "global" {
        "https://aiplatform.googleapis.com".into()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

pub fn build(p: &RawProvider, at: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Upstream> {
    at.reject_unused(p, &["project_id", "location", "ca_file"], problems);
    let project = required(p.project_id.as_deref(), "project_id", at, problems)
        .filter(|v| check_project(v, at, problems));
    let location = required(p.location.as_deref(), "location", at, problems)
        .filter(|v| check_location(v, at, problems));
    // Without a location there is no default endpoint; only report the endpoint when set.
    let endpoint = match (p.endpoint.as_deref(), location) {
        (None, None) => None,
        (configured, _) => at.endpoint(configured, location.map(default_endpoint), problems),
    };
    let http = token_http::provider_client(p.ca_file.as_deref())
        .map_err(|e| at.trust_problem(e, problems))
        .ok();
    let auth = at.auth(p.auth.as_ref(), &["gcp_service_account"], problems)?;
    let config: GcpServiceAccountConfig = at.auth_config(auth, problems)?;
    let fetcher: Box<dyn TokenFetcher> = match config.credentials_file.as_deref().map(str::trim) {
        Some("") => {
            problems.push(Problem::new(
                at.join("auth.config.credentials_file"),
                "is empty (omit it to use application-default credentials)",
            ));
            return None;
        }
        Some(path) => match ServiceAccount::from_file(path, http.clone()?) {
            Ok(sa) => Box::new(sa),
            Err(why) => {
                problems.push(Problem::new(at.join("auth.config.credentials_file"), why));
                return None;
            }
        },
        None => Box::new(ApplicationDefault::new()),
    };
    let (_project, _location, endpoint) = (project?, location?, endpoint?);
    http?;
    Some(Upstream::new(
        endpoint,
        Credential::Token(TokenSource::new(fetcher)),
    ))
}

fn required<'a>(
    v: Option<&'a str>,
    field: &str,
    at: &ConfigPath,
    problems: &mut Vec<Problem>,
) -> Option<&'a str> {
    match v.map(str::trim) {
        Some(v) if !v.is_empty() => Some(v),
        Some(_) => {
            problems.push(Problem::new(at.join(field), "must not be empty"));
            None
        }
        None => {
            problems.push(Problem::new(at.join(field), "is required"));
            None
        }
    }
}

/// Project ids (`my-project`), numbers, and legacy domain-scoped ids (`example.com:proj`).
fn check_project(v: &str, at: &ConfigPath, problems: &mut Vec<Problem>) -> bool {
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
    if !ok {
        problems.push(Problem::new(
            at.join("project_id"),
            format!("`{v}` is not a Google Cloud project id"),
        ));
    }
    ok
}

/// Locations are `us-central1`, `europe-west4`, `global`, ...
fn check_location(v: &str, at: &ConfigPath, problems: &mut Vec<Problem>) -> bool {
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if !ok {
        problems.push(Problem::new(
            at.join("location"),
            format!("`{v}` is not a Vertex AI location (e.g. us-central1, europe-west4, global)"),
        ));
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::build_tests::{assert_problems, build_yaml};

    fn problems(yaml: &str) -> Vec<String> {
        let (up, problems) = build_yaml(build, "vertex", yaml);
        assert!(up.is_some() || !problems.is_empty());
        problems
    }

    #[test]
    fn endpoints_default_from_the_location() {
        assert_eq!(
            default_endpoint("us-central1"),
            "https://us-central1-aiplatform.googleapis.com"
        );
        assert_eq!(
            default_endpoint("global"),
            "https://aiplatform.googleapis.com"
        );
        let p: RawProvider = serde_yaml::from_str(
            "{project_id: p-1, location: europe-west4, auth: {method: gcp_service_account}}",
        )
        .unwrap();
        let up = build(&p, &ConfigPath("providers.vertex".into()), &mut Vec::new()).unwrap();
        assert_eq!(up.endpoint.host, "europe-west4-aiplatform.googleapis.com");
        assert!(up.endpoint.tls);
        assert!(matches!(up.credential, Credential::Token(_)));
    }

    #[test]
    fn every_config_mistake_names_its_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "{auth: {method: gcp_service_account}}",
                &["providers.vertex.project_id: is required", "providers.vertex.location: is required"],
            ),
            (
                "{project_id: '', location: 'US Central', auth: {method: gcp_service_account}}",
                &[
                    "providers.vertex.project_id: must not be empty",
                    "providers.vertex.location: `US Central` is not a Vertex AI location",
                ],
            ),
            ("{project_id: p, location: us-central1}", &["providers.vertex.auth: is required"]),
            (
                "{project_id: p, location: us-central1, auth: {method: api_key}}",
                &["providers.vertex.auth.method: `api_key` is not supported here (use gcp_service_account)"],
            ),
            (
                "{project_id: p, location: us-central1, auth: {method: gcp_service_account, config: {credentials: x}}}",
                &["providers.vertex.auth.config.credentials: unknown field `credentials`"],
            ),
            (
                "{project_id: p, location: us-central1, auth: {method: gcp_service_account, config: {credentials_file: /nonexistent/sa.json}}}",
                &["providers.vertex.auth.config.credentials_file: cannot read `/nonexistent/sa.json`"],
            ),
            (
                "{project_id: p, location: us-central1, endpoint: 'ftp://x', auth: {method: gcp_service_account}}",
                &["providers.vertex.endpoint: `ftp://x` must start with https:// or http://"],
            ),
            (
                "{project_id: p, location: us-central1, region: us, ca_file: /nonexistent.pem, auth: {method: gcp_service_account}}",
                &[
                    "providers.vertex.region: does not apply to this provider kind",
                    "providers.vertex.ca_file: cannot read `/nonexistent.pem`",
                ],
            ),
        ];
        assert_problems(problems, cases);
    }

    #[test]
    fn key_file_problems_never_show_the_key() {
        let dir = std::env::temp_dir().join(format!("sy-vertex-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            (
                "bad-json.json",
                r#"{"private_key": "-----BEGIN PRIVATE KEY-----SECRETSECRET"#,
                "invalid JSON",
            ),
            (
                "bad-key.json",
                r#"{"type": "service_account", "client_email": "a@b", "private_key": "SECRETSECRET"}"#,
                "private_key is not an RSA private key",
            ),
            (
                "external.json",
                r#"{"type": "external_account", "audience": "SECRETSECRET"}"#,
                "is a credential of type `external_account`",
            ),
            (
                "no-email.json",
                r#"{"type": "service_account", "private_key": "SECRETSECRET"}"#,
                "has no client_email",
            ),
        ];
        for (name, text, why) in cases {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let yaml = format!(
                "{{project_id: p, location: global, auth: {{method: gcp_service_account, config: {{credentials_file: '{}'}}}}}}",
                path.display()
            );
            let got = problems(&yaml);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with("providers.vertex.auth.config.credentials_file: "),
                "{got:?}"
            );
            assert!(got[0].contains(why), "{got:?}");
            assert!(!got[0].contains("SECRET"), "{got:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
