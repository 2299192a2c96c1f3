//! The configuration file exactly as written: serde types that reject unknown keys.
//! Nothing outside `config/` sees these; [`super::Config::from_raw`] validates them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub model_mappings: BTreeMap<String, RawMapping>,
    #[serde(default)]
    pub routing: RawRouting,
    /// USD per 1M tokens by upstream model name; overrides the shipped price table.
    #[serde(default)]
    pub pricing: BTreeMap<String, RawPrice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub metrics_listen: Option<String>,
    #[serde(default = "default_threads", deserialize_with = "number")]
    pub threads: u64,
    #[serde(default = "default_max_body", deserialize_with = "number")]
    pub max_request_body_bytes: u64,
    #[serde(default = "default_grace", deserialize_with = "number")]
    pub grace_period_seconds: u64,
    /// Connecting to an upstream (TCP + TLS).
    #[serde(default = "default_connect_timeout", deserialize_with = "number")]
    pub upstream_connect_timeout_seconds: u64,
    /// Longest wait for the next byte from an upstream (first byte or between stream chunks).
    #[serde(default = "default_read_timeout", deserialize_with = "number")]
    pub upstream_read_timeout_seconds: u64,
    /// Largest non-stream upstream body the gateway buffers for translation.
    #[serde(default = "default_max_response", deserialize_with = "number")]
    pub max_upstream_response_bytes: u64,
    /// Emit one JSON access-log line per request on stdout.
    #[serde(default = "yes")]
    pub access_log: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            metrics_listen: None,
            threads: default_threads(),
            max_request_body_bytes: default_max_body(),
            grace_period_seconds: default_grace(),
            upstream_connect_timeout_seconds: default_connect_timeout(),
            upstream_read_timeout_seconds: default_read_timeout(),
            max_upstream_response_bytes: default_max_response(),
            access_log: true,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_threads() -> u64 {
    2
}
fn default_max_body() -> u64 {
    10 * 1024 * 1024
}
fn default_grace() -> u64 {
    30
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_read_timeout() -> u64 {
    300
}
fn default_max_response() -> u64 {
    64 * 1024 * 1024
}
fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub user: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// The provider kind; defaults to the provider's name (`openai`, `mock`, ...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub auth: Option<RawProviderAuth>,
    /// AWS region (bedrock) or OCI region (oci).
    #[serde(default)]
    pub region: Option<String>,
    /// Azure OpenAI `api-version` added when the caller omits it.
    #[serde(default)]
    pub api_version: Option<String>,
    /// GCP project (vertex) or watsonx project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// GCP location (vertex).
    #[serde(default)]
    pub location: Option<String>,
    /// OCI compartment.
    #[serde(default)]
    pub compartment_id: Option<String>,
    /// Extra CA bundle (PEM) trusted for this provider's endpoint.
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderAuth {
    pub method: String,
    #[serde(default)]
    pub config: serde_yaml::Mapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyConfig {
    pub api_key: String,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    #[serde(default)]
    pub default_provider: Option<String>,
    #[serde(default)]
    pub providers: BTreeMap<String, RawTarget>,
}

/// How one provider serves a mapped model.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    #[serde(default)]
    pub patterns: Vec<RawPattern>,
    #[serde(default)]
    pub fallback: RawFallback,
    #[serde(default)]
    pub load_balancing: RawLoadBalancing,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    pub pattern: String,
    pub default_provider: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub providers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoadBalancing {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "round_robin")]
    pub strategy: String,
}

impl Default for RawLoadBalancing {
    fn default() -> Self {
        Self {
            enabled: false,
            strategy: round_robin(),
        }
    }
}

fn round_robin() -> String {
    "round_robin".into()
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// USD per 1M input tokens.
    pub input: f64,
    /// USD per 1M output tokens.
    pub output: f64,
}

/// Accepts `8` and `"8"`, so numbers can come from `${VAR}` substitution.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(u64),
        Str(String),
    }
    match NumOrString::deserialize(d)? {
        NumOrString::Num(n) => Ok(n),
        NumOrString::Str(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("expected a non-negative integer, got `{s}`"))
        }),
    }
}
