//! The `azure` provider: Azure OpenAI, authenticated with an API key (`api-key` header) or a
//! Microsoft Entra ID (Azure AD) bearer token for scope
//! `https://cognitiveservices.azure.com/.default`.
//!
//! Passthrough adds `api-version=<api_version>` to the query when the caller sent none.

use serde::Deserialize;

use super::credentials::azure_ad::{AzureAdFetcher, AzureIdentity, OutboundHttp};
use super::credentials::{Credential, StaticHeaders, TokenSource};
use super::{ConfigPath, Upstream};
use crate::config::raw::RawProvider;
use crate::config::Problem;

/// `auth.config` for `method: api_key`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyConfig {
    api_key: String,
}

/// `auth.config` for `method: azure_ad_token`. Which fields are set picks the identity:
/// `client_secret` (with `tenant_id`, `client_id`) a service principal, `workload_identity:
/// true` AKS workload identity, neither a managed identity (`client_id` for a user-assigned one).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AzureAdConfig {
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    /// A full https URL replacing `https://login.microsoftonline.com` (sovereign clouds,
    /// private identity endpoints).
    #[serde(default)]
    authority_host: Option<String>,
    #[serde(default)]
    workload_identity: bool,
}

/// A config string: trimmed, and None when empty (so `${VAR:-}` means "not set").
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub fn build(p: &RawProvider, at: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Upstream> {
    at.reject_unused(p, &["api_version"], problems);
    let endpoint = at.endpoint(p.endpoint.as_deref(), None, problems);
    let api_version = match p.api_version.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Some(v.to_owned()),
        _ => {
            problems.push(Problem::new(
                at.join("api_version"),
                "is required: the Azure OpenAI `api-version` added to requests that lack one (e.g. \"2024-10-21\")",
            ));
            None
        }
    };
    let auth = at.auth(p.auth.as_ref(), &["api_key", "azure_ad_token"], problems)?;
    let credential = if auth.method == "api_key" {
        let config: ApiKeyConfig = at.auth_config(auth, problems)?;
        let headers = StaticHeaders::key("api-key", "", &config.api_key)
            .map_err(|why| problems.push(Problem::new(at.join("auth.config.api_key"), why)))
            .ok()?;
        Credential::Static(headers)
    } else {
        let config: AzureAdConfig = at.auth_config(auth, problems)?;
        let identity = identity(&config, at, problems)?;
        let authority = given(&config.authority_host);
        // The identity service is trusted like the endpoint (system roots, SSL_CERT_*, ca_file);
        // build_upstream sets the endpoint's own trust and skips a ca_file reported here.
        let http = OutboundHttp::new(p.ca_file.as_deref())
            .map_err(|e| at.trust_problem(e, problems))
            .ok()?;
        let fetcher = AzureAdFetcher::new(identity, authority.as_deref(), http)
            .map_err(|why| problems.push(Problem::new(at.join("auth.config"), why)))
            .ok()?;
        Credential::Token(TokenSource::new(Box::new(fetcher)))
    };
    let mut upstream = Upstream::new(endpoint?, credential);
    upstream.default_query.push(("api-version", api_version?));
    Some(upstream)
}

/// Picks the identity from the `azure_ad_token` config, reporting contradictions.
fn identity(
    c: &AzureAdConfig,
    at: &ConfigPath,
    problems: &mut Vec<Problem>,
) -> Option<AzureIdentity> {
    let before = problems.len();
    let path = |k: &str| at.join(&format!("auth.config.{k}"));
    let (tenant_id, client_id, client_secret) = (
        given(&c.tenant_id),
        given(&c.client_id),
        given(&c.client_secret),
    );
    if let Some(host) = given(&c.authority_host) {
        if let Err(why) = check_authority_host(&host) {
            problems.push(Problem::new(path("authority_host"), why));
        }
    }
    let identity = if c.workload_identity {
        if client_secret.is_some() {
            problems.push(Problem::new(
                path("client_secret"),
                "cannot be combined with workload_identity (which uses the federated token file)",
            ));
        }
        AzureIdentity::WorkloadIdentity {
            tenant_id,
            client_id,
        }
    } else if let Some(client_secret) = client_secret {
        for (name, value) in [("tenant_id", &tenant_id), ("client_id", &client_id)] {
            if value.is_none() {
                problems.push(Problem::new(
                    path(name),
                    "is required for a service principal (client_secret is set)",
                ));
            }
        }
        AzureIdentity::ServicePrincipal {
            tenant_id: tenant_id.unwrap_or_default(),
            client_id: client_id.unwrap_or_default(),
            client_secret,
        }
    } else {
        if tenant_id.is_some() {
            problems.push(Problem::new(
                path("client_secret"),
                "is required when tenant_id is set (service principal); for a managed identity \
                 give only client_id, for workload identity set workload_identity: true",
            ));
        }
        if c.authority_host.is_some() {
            problems.push(Problem::new(
                path("authority_host"),
                "does not apply to a managed identity",
            ));
        }
        AzureIdentity::ManagedIdentity { client_id }
    };
    (problems.len() == before).then_some(identity)
}

/// `authority_host` must be an https URL naming only a host (and port).
fn check_authority_host(host: &str) -> Result<(), String> {
    let url =
        azure_core::http::Url::parse(host).map_err(|_| format!("`{host}` is not a valid URL"))?;
    if url.scheme() != "https" {
        return Err(format!("`{host}` must be an https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{host}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the authority_host URL must not contain credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(format!(
            "`{host}` must be a bare host URL like https://login.microsoftonline.com"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::build_tests::build_yaml;

    fn problems_for(yaml: &str) -> (Option<Upstream>, Vec<String>) {
        build_yaml(build, "azure", yaml)
    }

    const OK_BASE: &str = "endpoint: https://res.openai.azure.com\napi_version: '2024-10-21'\n";

    #[test]
    fn builds_an_api_key_provider() {
        let (up, problems) = problems_for(&format!(
            "{OK_BASE}auth: {{method: api_key, config: {{api_key: az-secret}}}}"
        ));
        assert!(problems.is_empty(), "{problems:?}");
        let up = up.unwrap();
        assert_eq!(up.endpoint.host, "res.openai.azure.com");
        assert_eq!(
            up.default_query,
            vec![("api-version", "2024-10-21".to_string())]
        );
        assert!(matches!(up.credential, Credential::Static(_)));
    }

    #[test]
    fn builds_token_providers() {
        for auth in [
            "{method: azure_ad_token, config: {tenant_id: t1, client_id: c1, client_secret: s3cret}}",
            "{method: azure_ad_token, config: {tenant_id: t1, client_id: c1, client_secret: s3cret, authority_host: 'https://login.microsoftonline.us'}}",
            "{method: azure_ad_token, config: {}}",
            "{method: azure_ad_token, config: {client_id: c1}}",
            "{method: azure_ad_token, config: {client_id: '', tenant_id: ''}}",
        ] {
            let (up, problems) = problems_for(&format!("{OK_BASE}auth: {auth}"));
            assert!(problems.is_empty(), "{auth}: {problems:?}");
            assert!(
                matches!(up.unwrap().credential, Credential::Token(_)),
                "{auth}"
            );
        }
    }

    #[test]
    fn reports_every_bad_field_with_its_path_and_no_secret() {
        let auth_sp = "auth: {method: azure_ad_token, config: {tenant_id: t1, client_id: c1, client_secret: s3cret}}";
        let cases = [
            (
                format!("api_version: '1'\n{auth_sp}"),
                "providers.azure.endpoint: is required",
            ),
            (
                format!("endpoint: https://r.openai.azure.com\n{auth_sp}"),
                "providers.azure.api_version: is required",
            ),
            (
                format!("{OK_BASE}api_version: ' '\n{auth_sp}").replacen(
                    "api_version: '2024-10-21'\n",
                    "",
                    1,
                ),
                "providers.azure.api_version: is required",
            ),
            (OK_BASE.to_string(), "providers.azure.auth: is required"),
            (
                format!("{OK_BASE}auth: {{method: bearer}}"),
                "providers.azure.auth.method: `bearer` is not supported here (use api_key | azure_ad_token)",
            ),
            (
                format!("{OK_BASE}auth: {{method: api_key, config: {{key: s3cret}}}}"),
                "providers.azure.auth.config.key: unknown field `key`",
            ),
            (
                format!("{OK_BASE}auth: {{method: api_key, config: {{}}}}"),
                "providers.azure.auth.config: missing field `api_key`",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{client_secret: s3cret}}}}"),
                "providers.azure.auth.config.tenant_id: is required for a service principal",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{tenant_id: t, client_secret: s3cret}}}}"),
                "providers.azure.auth.config.client_id: is required for a service principal",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{tenant_id: t, client_id: c}}}}"),
                "providers.azure.auth.config.client_secret: is required when tenant_id is set",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{authority_host: 'https://login.example'}}}}"),
                "providers.azure.auth.config.authority_host: does not apply to a managed identity",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{tenant_id: t, client_id: c, client_secret: s3cret, authority_host: 'http://login.example'}}}}"),
                "providers.azure.auth.config.authority_host: `http://login.example` must be an https:// URL",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{tenant_id: t, client_id: c, client_secret: s3cret, authority_host: 'https://login.example/x?y=1'}}}}"),
                "providers.azure.auth.config.authority_host: `https://login.example/x?y=1` must be a bare host URL",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{workload_identity: true, client_secret: s3cret}}}}"),
                "providers.azure.auth.config.client_secret: cannot be combined with workload_identity",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{tenant_id: 'bad tenant!', client_id: c, client_secret: s3cret}}}}"),
                "providers.azure.auth.config: Azure AD service principal:",
            ),
            (
                format!("{OK_BASE}auth: {{method: azure_ad_token, config: {{password: s3cret}}}}"),
                "providers.azure.auth.config.password: unknown field `password`",
            ),
            (
                format!("{OK_BASE}ca_file: /nonexistent/ca.pem\n{auth_sp}"),
                "providers.azure.ca_file: cannot read `/nonexistent/ca.pem`",
            ),
            (
                format!("{OK_BASE}region: eastus\n{auth_sp}"),
                "providers.azure.region: does not apply to this provider kind",
            ),
        ];
        for (yaml, want) in cases {
            let (_, problems) = problems_for(&yaml);
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{yaml}\nwanted {want:?}, got {problems:?}"
            );
            assert!(
                problems.iter().all(|p| !p.contains("s3cret")),
                "{problems:?}"
            );
        }
    }
}
