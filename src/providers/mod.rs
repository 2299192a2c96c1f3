//! The configured providers: what kind each is, where it lives and how the gateway
//! authenticates to it.
//!
//! Adding a provider kind means one [`ProviderKind`] variant, its credential in
//! [`credentials`], and its translation module in `switchyard-filters`.

pub mod credentials;
pub mod endpoint;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::raw::{RawApiKeyConfig, RawProvider};
use crate::config::Problem;

pub use credentials::Credential;
pub use endpoint::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI's own API.
    OpenAi,
    /// The built-in deterministic provider; answers inside the gateway.
    Mock,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 2] = [ProviderKind::OpenAi, ProviderKind::Mock];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Mock => "mock",
        }
    }

    fn default_endpoint(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com"),
            ProviderKind::Mock => None,
        }
    }
}

/// A provider reached over the network.
#[derive(Debug)]
pub struct Upstream {
    pub endpoint: Endpoint,
    pub credential: Credential,
}

#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// None for providers that answer inside the gateway (`mock`).
    pub upstream: Option<Upstream>,
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
            let path = format!("providers.{name}");
            let kind_name = p.kind.as_deref().unwrap_or(name);
            let Some(kind) = ProviderKind::parse(kind_name) else {
                let known: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                problems.push(Problem::new(
                    &path,
                    format!(
                        "unknown provider kind `{kind_name}` (known: {}; set `type:` to name a kind)",
                        known.join(", ")
                    ),
                ));
                continue;
            };
            if let Some(provider) = build(name, kind, p, &path, problems) {
                reg.by_name.insert(name.clone(), reg.providers.len());
                reg.providers.push(Arc::new(provider));
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

fn build(
    name: &str,
    kind: ProviderKind,
    p: &RawProvider,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Provider> {
    let before = problems.len();
    let upstream = match kind {
        ProviderKind::Mock => {
            if p.endpoint.is_some() || p.auth.is_some() {
                problems.push(Problem::new(
                    path,
                    "the mock provider takes no endpoint or auth",
                ));
            }
            None
        }
        ProviderKind::OpenAi => {
            let url = p
                .endpoint
                .as_deref()
                .or(kind.default_endpoint())
                .unwrap_or_default();
            let endpoint = Endpoint::parse(url)
                .map_err(|why| problems.push(Problem::new(format!("{path}.endpoint"), why)))
                .ok();
            let credential = match &p.auth {
                None => {
                    problems.push(Problem::new(
                        format!("{path}.auth"),
                        "is required (method: api_key)",
                    ));
                    None
                }
                Some(auth) if auth.method == "api_key" => {
                    let cfg_path = format!("{path}.auth.config");
                    match serde_path_to_error::deserialize::<_, RawApiKeyConfig>(
                        serde_yaml::Value::Mapping(auth.config.clone()),
                    ) {
                        Ok(c) => Credential::bearer(&c)
                            .map_err(|why| problems.push(Problem::new(&cfg_path, why)))
                            .ok(),
                        Err(e) => {
                            let inner = e.path().to_string();
                            let at = if inner == "." {
                                cfg_path
                            } else {
                                format!("{cfg_path}.{inner}")
                            };
                            problems.push(Problem::new(at, e.into_inner().to_string()));
                            None
                        }
                    }
                }
                Some(auth) => {
                    problems.push(Problem::new(
                        format!("{path}.auth.method"),
                        format!(
                            "`{}` is not supported for {} (use api_key)",
                            auth.method,
                            kind.as_str()
                        ),
                    ));
                    None
                }
            };
            match (endpoint, credential) {
                (Some(endpoint), Some(credential)) => Some(Upstream {
                    endpoint,
                    credential,
                }),
                _ => None,
            }
        }
    };
    (problems.len() == before).then(|| Provider {
        name: Arc::from(name),
        kind,
        upstream,
    })
}
