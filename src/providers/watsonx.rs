//! The `watsonx` provider: IBM watsonx.ai with an IBM Cloud IAM bearer token.
//!
//! ```yaml
//! watsonx:
//!   endpoint: https://us-south.ml.cloud.ibm.com
//!   project_id: 00000000-0000-0000-0000-000000000000    # optional for passthrough
//!   auth:
//!     method: ibm_iam
//!     config: {api_key: "${WATSONX_API_KEY}"}          # iam_endpoint: https://iam.cloud.ibm.com
//! ```
//!
//! Passthrough covers the REST API under the endpoint (`/ml/v1/text/chat`,
//! `/ml/v1/text/chat_stream`, `/ml/v1/text/generation[_stream]`, `/ml/v1/text/embeddings`,
//! deployments, ...; the caller sends `?version=`). The API key is exchanged for an IAM token
//! by a [`TokenSource`] (cached, refreshed in the background).

use std::fmt;

use serde::Deserialize;

use super::credentials::ibm_iam::IbmIam;
use super::credentials::{token_http, Credential, TokenSource};
use super::{ConfigPath, Upstream};
use crate::config::raw::RawProvider;
use crate::config::Problem;

/// `auth.config` for `method: ibm_iam`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IbmIamConfig {
    pub api_key: String,
    /// IAM base URL (default `https://iam.cloud.ibm.com`; token path `/identity/token`).
    #[serde(default)]
    pub iam_endpoint: Option<String>,
}

impl fmt::Debug for IbmIamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IbmIamConfig")
            .field("api_key", &"<redacted>")
            .field("iam_endpoint", &self.iam_endpoint)
            .finish()
    }
}

pub fn build(p: &RawProvider, at: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Upstream> {
    at.reject_unused(p, &["project_id", "api_version", "ca_file"], problems);
    let endpoint = at.endpoint(p.endpoint.as_deref(), None, problems);
    // Kept for translation (watsonx bodies carry `project_id`); passthrough callers send their
    // own, so it may be empty (`${WATSONX_PROJECT_ID:-}`). A UUID in practice; only obvious
    // mistakes are refused here.
    if let Some(project) = p.project_id.as_deref().map(str::trim) {
        if project.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.push(Problem::new(
                at.join("project_id"),
                "must be a watsonx project id (a UUID) without spaces",
            ));
        }
    }
    let http = token_http::provider_client(p.ca_file.as_deref())
        .map_err(|e| at.trust_problem(e, problems))
        .ok();
    let auth = at.auth(p.auth.as_ref(), &["ibm_iam"], problems)?;
    let config: IbmIamConfig = at.auth_config(auth, problems)?;
    let iam = IbmIam::new(&config.api_key, config.iam_endpoint.as_deref(), http?)
        .map_err(|(field, why)| {
            problems.push(Problem::new(at.join(&format!("auth.config.{field}")), why))
        })
        .ok()?;
    Some(Upstream::new(
        endpoint?,
        Credential::Token(TokenSource::new(Box::new(iam))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::build_tests::{assert_problems, build_yaml};

    fn problems(yaml: &str) -> Vec<String> {
        let (up, problems) = build_yaml(build, "watsonx", yaml);
        assert!(up.is_some() || !problems.is_empty());
        problems
    }

    #[test]
    fn a_complete_config_builds() {
        let p: RawProvider = serde_yaml::from_str(
            "{endpoint: 'https://us-south.ml.cloud.ibm.com', project_id: 0f0e-11, auth: {method: ibm_iam, config: {api_key: k}}}",
        )
        .unwrap();
        let up = build(&p, &ConfigPath("providers.watsonx".into()), &mut Vec::new()).unwrap();
        assert_eq!(up.endpoint.host, "us-south.ml.cloud.ibm.com");
        assert!(problems("{endpoint: 'https://x.ml.cloud.ibm.com', project_id: '', auth: {method: ibm_iam, config: {api_key: k}}}").is_empty());
        assert!(matches!(up.credential, Credential::Token(_)));
        assert!(problems("{endpoint: 'https://eu-de.ml.cloud.ibm.com', auth: {method: ibm_iam, config: {api_key: k, iam_endpoint: 'https://private.iam.cloud.ibm.com'}}}").is_empty());
    }

    #[test]
    fn every_config_mistake_names_its_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "{auth: {method: ibm_iam, config: {api_key: k}}}",
                &["providers.watsonx.endpoint: is required"],
            ),
            ("{endpoint: 'https://x.ml.cloud.ibm.com'}", &["providers.watsonx.auth: is required"]),
            (
                "{endpoint: 'https://x.ml.cloud.ibm.com', auth: {method: api_key, config: {api_key: k}}}",
                &["providers.watsonx.auth.method: `api_key` is not supported here (use ibm_iam)"],
            ),
            (
                "{endpoint: 'https://x.ml.cloud.ibm.com', auth: {method: ibm_iam, config: {}}}",
                &["providers.watsonx.auth.config: missing field `api_key`"],
            ),
            (
                "{endpoint: 'https://x.ml.cloud.ibm.com', auth: {method: ibm_iam, config: {api_key: ' '}}}",
                &["providers.watsonx.auth.config.api_key: is empty"],
            ),
            (
                "{endpoint: 'https://x.ml.cloud.ibm.com', auth: {method: ibm_iam, config: {api_key: k, iam_endpoint: 'http://iam.example.com'}}}",
                &["providers.watsonx.auth.config.iam_endpoint: `http://iam.example.com/identity/token` must use https://"],
            ),
            (
                "{endpoint: 'https://x.ml.cloud.ibm.com', auth: {method: ibm_iam, config: {api_key: k, apikey: k}}}",
                &["providers.watsonx.auth.config.apikey: unknown field `apikey`"],
            ),
            (
                "{endpoint: 'https://x.ml.cloud.ibm.com', project_id: 'a b', location: x, auth: {method: ibm_iam, config: {api_key: k}}}",
                &[
                    "providers.watsonx.location: does not apply to this provider kind",
                    "providers.watsonx.project_id: must be a watsonx project id",
                ],
            ),
        ];
        assert_problems(problems, cases);
    }
}
