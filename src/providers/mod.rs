//! The configured providers: what kind each is, where it lives and how the gateway
//! authenticates to it.
//!
//! Adding a provider kind means: one [`ProviderKind`] variant and one arm in [`build_upstream`]
//! (its own module here builds the endpoint and credential from its config block), a
//! credential in [`credentials`] if it needs a new scheme, and its translation module in
//! `switchyard-filters`.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod credentials;
pub mod endpoint;
pub mod oci;
pub mod openai;
pub mod trust;
pub mod vertex;
pub mod watsonx;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

use crate::config::raw::{RawProvider, RawProviderAuth};
use crate::config::Problem;

pub use credentials::{Credential, Readiness};
pub use endpoint::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Bedrock,
    Azure,
    Anthropic,
    Vertex,
    Watsonx,
    Oci,
    /// The built-in deterministic provider; answers inside the gateway.
    Mock,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 8] = [
        ProviderKind::OpenAi,
        ProviderKind::Bedrock,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Vertex,
        ProviderKind::Watsonx,
        ProviderKind::Oci,
        ProviderKind::Mock,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Vertex => "vertex",
            ProviderKind::Watsonx => "watsonx",
            ProviderKind::Oci => "oci",
            ProviderKind::Mock => "mock",
        }
    }
}

/// A provider reached over the network.
#[derive(Debug)]
pub struct Upstream {
    pub endpoint: Endpoint,
    pub credential: Credential,
    /// Headers added to passthrough requests that lack them (e.g. `anthropic-version`).
    pub default_headers: Vec<(HeaderName, HeaderValue)>,
    /// Query parameters added to passthrough requests that lack them (e.g. Azure `api-version`).
    pub default_query: Vec<(&'static str, String)>,
}

impl Upstream {
    pub fn new(endpoint: Endpoint, credential: Credential) -> Upstream {
        Upstream {
            endpoint,
            credential,
            default_headers: Vec::new(),
            default_query: Vec::new(),
        }
    }

    /// Whether the provider can take requests now (address resolved, credential ready).
    pub fn readiness(&self) -> Readiness {
        if !self.endpoint.is_resolved() {
            return Readiness::NotReady(format!("{} is not resolved", self.endpoint.host));
        }
        self.credential.readiness()
    }
}

#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// Active health check: path below the endpoint and interval.
    pub health_check: Option<(String, std::time::Duration)>,
    /// None for providers that answer inside the gateway (`mock`).
    pub upstream: Option<Upstream>,
    /// What translated (`/v1/*`) requests need to know about the provider's account.
    pub settings: ProviderSettings,
    /// Model names the provider declares it serves under their own names (`models:`).
    pub models: Vec<String>,
}

/// The models the mock provider declares when its `models:` is not set (the README's examples).
pub const MOCK_MODELS: [&str; 2] = ["mock-fast", "mock-embed"];

/// Provider-level values the unified API's translators put into paths and bodies.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    pub kind: Option<ProviderKind>,
    /// `api_version`: Azure `api-version`, watsonx `version`, Anthropic `anthropic-version`.
    pub api_version: Option<Arc<str>>,
    /// Vertex / watsonx `project_id`, OCI `compartment_id`.
    pub project: Option<Arc<str>>,
    /// Vertex `location`.
    pub location: Option<Arc<str>>,
}

impl ProviderSettings {
    /// Whether translated requests cannot be built without a project (watsonx, OCI).
    pub fn needs_project(&self) -> bool {
        matches!(self.kind, Some(ProviderKind::Watsonx | ProviderKind::Oci))
    }
}

impl Provider {
    pub fn readiness(&self) -> Readiness {
        self.upstream
            .as_ref()
            .map_or(Readiness::Ready, Upstream::readiness)
    }
}

/// All providers, by name.
#[derive(Debug, Default)]
pub struct ProviderRegistry {
    providers: Vec<Arc<Provider>>,
    by_name: HashMap<String, usize>,
}

impl ProviderRegistry {
    pub fn from_raw(raw: &BTreeMap<String, RawProvider>, problems: &mut Vec<Problem>) -> Self {
        let mut reg = ProviderRegistry::default();
        for (name, p) in raw {
            let at = ConfigPath(format!("providers.{name}"));
            let kind_name = p.kind.as_deref().unwrap_or(name);
            let Some(kind) = ProviderKind::parse(kind_name) else {
                let known: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                problems.push(Problem::new(
                    &at.0,
                    format!(
                        "unknown provider kind `{kind_name}` (known: {}; set `type:` to name a kind)",
                        known.join(", ")
                    ),
                ));
                continue;
            };
            let before = problems.len();
            let upstream = build_upstream(kind, p, &at, problems);
            let health_check = p.health_check.as_ref().map(|c| {
                if upstream.is_none() && problems.len() == before {
                    problems.push(Problem::new(
                        at.join("health_check"),
                        "needs a provider reached over the network",
                    ));
                } else if !c.path.starts_with('/') || c.path.starts_with("//") {
                    problems.push(Problem::new(
                        at.join("health_check.path"),
                        "must be a path starting with /",
                    ));
                } else if c.interval_seconds == 0 {
                    problems.push(Problem::new(
                        at.join("health_check.interval_seconds"),
                        "must be at least 1",
                    ));
                }
                (
                    c.path.clone(),
                    std::time::Duration::from_secs(c.interval_seconds.max(1)),
                )
            });
            if problems.len() == before {
                reg.by_name.insert(name.clone(), reg.providers.len());
                reg.providers.push(Arc::new(Provider {
                    name: Arc::from(name.as_str()),
                    kind,
                    health_check,
                    upstream,
                    settings: ProviderSettings {
                        kind: Some(kind),
                        api_version: p.api_version.as_deref().map(|v| Arc::from(v.trim())),
                        project: p
                            .project_id
                            .as_deref()
                            .or(p.compartment_id.as_deref())
                            .filter(|v| !v.trim().is_empty())
                            .map(|v| Arc::from(v.trim())),
                        location: p.location.as_deref().map(|v| Arc::from(v.trim())),
                    },
                    models: match (&p.models, kind) {
                        (Some(models), _) => models.clone(),
                        (None, ProviderKind::Mock) => MOCK_MODELS.map(String::from).to_vec(),
                        (None, _) => Vec::new(),
                    },
                }));
            }
        }
        reg
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name).map(|&i| &self.providers[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

/// Builds the network side of a provider; pushes problems instead of failing early.
fn build_upstream(
    kind: ProviderKind,
    p: &RawProvider,
    at: &ConfigPath,
    problems: &mut Vec<Problem>,
) -> Option<Upstream> {
    let mut upstream = match kind {
        ProviderKind::Mock => {
            if p.endpoint.is_some() || p.auth.is_some() {
                problems.push(Problem::new(
                    &at.0,
                    "the mock provider takes no endpoint or auth",
                ));
            }
            None
        }
        ProviderKind::OpenAi => {
            at.reject_unused(p, &[], problems);
            openai::build(p, at, problems)
        }
        ProviderKind::Anthropic => anthropic::build(p, at, problems),
        ProviderKind::Azure => azure::build(p, at, problems),
        ProviderKind::Bedrock => bedrock::build(p, at, problems),
        ProviderKind::Oci => oci::build(p, at, problems),
        ProviderKind::Vertex => vertex::build(p, at, problems),
        ProviderKind::Watsonx => watsonx::build(p, at, problems),
    }?;
    // Every kind: TLS to the endpoint trusts the system roots, SSL_CERT_FILE and `ca_file`.
    if !upstream.endpoint.has_trust() {
        let trust = at.trust(p, problems)?;
        upstream.endpoint.set_trust(trust);
    }
    Some(upstream)
}

/// A key path in the config, for problems.
pub struct ConfigPath(pub String);

impl ConfigPath {
    pub fn join(&self, key: &str) -> String {
        format!("{}.{key}", self.0)
    }

    /// The endpoint: the configured one, else `default`; problems name `<provider>.endpoint`.
    pub fn endpoint(
        &self,
        configured: Option<&str>,
        default: Option<String>,
        problems: &mut Vec<Problem>,
    ) -> Option<Endpoint> {
        let Some(url) = configured.map(str::to_owned).or(default) else {
            problems.push(Problem::new(self.join("endpoint"), "is required"));
            return None;
        };
        Endpoint::parse(&url)
            .map_err(|why| problems.push(Problem::new(self.join("endpoint"), why)))
            .ok()
    }

    /// Reports provider fields set in the config that this kind does not use (`allowed` lists
    /// the ones it does, beyond `type`, `endpoint`, `auth` and `ca_file`, which every kind
    /// with an endpoint takes).
    pub fn reject_unused(&self, p: &RawProvider, allowed: &[&str], problems: &mut Vec<Problem>) {
        let fields = [
            ("region", p.region.is_some()),
            ("api_version", p.api_version.is_some()),
            ("project_id", p.project_id.is_some()),
            ("location", p.location.is_some()),
            ("compartment_id", p.compartment_id.is_some()),
        ];
        for (name, set) in fields {
            if set && !allowed.contains(&name) {
                problems.push(Problem::new(
                    self.join(name),
                    "does not apply to this provider kind",
                ));
            }
        }
    }

    /// The roots trusted for TLS to this provider and its token endpoints: the system roots,
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` and the provider's `ca_file` (problems name
    /// `<provider>.ca_file`). [`build_upstream`] sets it on every endpoint a kind's `build`
    /// returns without one; call it from `build` only to use the trust for something else
    /// too, then `endpoint.set_trust(..)`.
    pub fn trust(&self, p: &RawProvider, problems: &mut Vec<Problem>) -> Option<trust::Trust> {
        let at = self.join("ca_file");
        if problems.iter().any(|pr| pr.path == at) {
            return None; // the kind's own build already reported it
        }
        trust::Trust::load(p.ca_file.as_deref())
            .map_err(|e| self.trust_problem(e, problems))
            .ok()
    }

    /// Reports why a [`trust::Trust`] or token client cannot be built: a bad `ca_file` names
    /// `<provider>.ca_file`, anything else the provider.
    pub fn trust_problem(&self, e: trust::TrustError, problems: &mut Vec<Problem>) {
        problems.push(match e {
            trust::TrustError::CaFile(why) => Problem::new(self.join("ca_file"), why),
            trust::TrustError::Ambient(why) | trust::TrustError::Client(why) => {
                Problem::new(&self.0, why)
            }
        });
    }

    /// The `auth` block, requiring its method to be one of `methods`.
    pub fn auth<'a>(
        &self,
        auth: Option<&'a RawProviderAuth>,
        methods: &[&str],
        problems: &mut Vec<Problem>,
    ) -> Option<&'a RawProviderAuth> {
        match auth {
            None => {
                problems.push(Problem::new(
                    self.join("auth"),
                    format!("is required (method: {})", methods.join(" | ")),
                ));
                None
            }
            Some(a) if methods.contains(&a.method.as_str()) => Some(a),
            Some(a) => {
                problems.push(Problem::new(
                    self.join("auth.method"),
                    format!(
                        "`{}` is not supported here (use {})",
                        a.method,
                        methods.join(" | ")
                    ),
                ));
                None
            }
        }
    }

    /// Deserializes an `auth.config` block into `T`, reporting the inner key path on error.
    pub fn auth_config<T: DeserializeOwned>(
        &self,
        auth: &RawProviderAuth,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        let base = self.join("auth.config");
        serde_path_to_error::deserialize::<_, T>(serde_yaml::Value::Mapping(auth.config.clone()))
            .map_err(|e| {
                let inner = e.path().to_string();
                let at = if inner == "." {
                    base.clone()
                } else {
                    format!("{base}.{inner}")
                };
                problems.push(Problem::new(
                    at,
                    crate::config::redact_serde_message(&e.into_inner().to_string()),
                ));
            })
            .ok()
    }
}

/// Helpers for the tests of each kind's `build`.
#[cfg(test)]
pub(crate) mod build_tests {
    use super::*;

    /// A kind's `build`.
    pub type Build = fn(&RawProvider, &ConfigPath, &mut Vec<Problem>) -> Option<Upstream>;

    /// Runs `build` on a provider block (`yaml`, its mapping) named `providers.<name>`: the
    /// upstream and the problems reported, as text.
    pub fn build_yaml(build: Build, name: &str, yaml: &str) -> (Option<Upstream>, Vec<String>) {
        let p: RawProvider = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let up = build(&p, &ConfigPath(format!("providers.{name}")), &mut problems);
        (up, problems.iter().map(ToString::to_string).collect())
    }

    /// Asserts that each provider block reports as many problems as listed, each starting
    /// with one of them; `problems` gives what a block reports.
    pub fn assert_problems(problems: impl Fn(&str) -> Vec<String>, cases: &[(&str, &[&str])]) {
        for (yaml, expected) in cases {
            let got = problems(yaml);
            assert_eq!(got.len(), expected.len(), "{yaml}: {got:?}");
            for e in *expected {
                assert!(
                    got.iter().any(|g| g.starts_with(e)),
                    "{yaml}: want {e:?} in {got:?}"
                );
            }
        }
    }
}
