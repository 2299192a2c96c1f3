//! Model resolution: which provider serves a model name, and under what upstream name.
//!
//! `model_mappings` (exact names) come first, then `routing.patterns` (regular expressions,
//! first match wins; the model name passes through unchanged).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;

use crate::config::raw::{RawMapping, RawRouting};
use crate::config::Problem;
use crate::errors::GatewayError;
use crate::providers::{Provider, ProviderRegistry};

/// Where one model goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    /// The provider's name for the model (`model`, or `deployment` for Azure).
    pub upstream_model: Option<Arc<str>>,
}

#[derive(Debug)]
struct Mapping {
    /// The default provider first, then the others in config order.
    targets: Vec<Target>,
}

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    provider: Arc<Provider>,
}

#[derive(Debug, Default)]
pub struct Router {
    mappings: HashMap<String, Mapping>,
    /// Mapping names in config order, for `/v1/models`.
    names: Vec<String>,
    patterns: Vec<Pattern>,
}

/// A resolved model.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub provider: &'a Arc<Provider>,
    /// The name to send upstream.
    pub upstream_model: &'a str,
}

impl Router {
    pub fn from_raw(
        mappings: &BTreeMap<String, RawMapping>,
        routing: &RawRouting,
        providers: &ProviderRegistry,
        problems: &mut Vec<Problem>,
    ) -> Router {
        let mut router = Router::default();
        let lookup =
            |name: &str, path: String, problems: &mut Vec<Problem>| -> Option<Arc<Provider>> {
                match providers.get(name) {
                    Some(p) => Some(p.clone()),
                    None => {
                        problems.push(Problem::new(
                            path,
                            format!("provider `{name}` is not configured under `providers`"),
                        ));
                        None
                    }
                }
            };
        for (model, m) in mappings {
            let path = format!("model_mappings.{model}");
            if m.providers.is_empty() {
                problems.push(Problem::new(
                    format!("{path}.providers"),
                    "names no provider",
                ));
                continue;
            }
            let default = m
                .default_provider
                .clone()
                .unwrap_or_else(|| m.providers.keys().next().cloned().unwrap_or_default());
            if !m.providers.contains_key(&default) {
                problems.push(Problem::new(
                    format!("{path}.default_provider"),
                    format!("`{default}` is not one of this mapping's providers"),
                ));
            }
            let mut targets = Vec::new();
            let order =
                std::iter::once(&default).chain(m.providers.keys().filter(|k| **k != default));
            for name in order {
                let Some(t) = m.providers.get(name) else {
                    continue;
                };
                let Some(provider) = lookup(name, format!("{path}.providers.{name}"), problems)
                else {
                    continue;
                };
                let upstream_model = t
                    .model
                    .as_deref()
                    .or(t.deployment.as_deref())
                    .map(Arc::from);
                targets.push(Target {
                    provider,
                    upstream_model,
                });
            }
            router.names.push(model.clone());
            router.mappings.insert(model.clone(), Mapping { targets });
        }
        for (i, p) in routing.patterns.iter().enumerate() {
            let path = format!("routing.patterns[{i}]");
            let regex = Regex::new(&p.pattern)
                .map_err(|e| {
                    problems.push(Problem::new(
                        format!("{path}.pattern"),
                        format!("invalid regular expression: {e}"),
                    ))
                })
                .ok();
            let provider = lookup(
                &p.default_provider,
                format!("{path}.default_provider"),
                problems,
            );
            if let (Some(regex), Some(provider)) = (regex, provider) {
                router.patterns.push(Pattern { regex, provider });
            }
        }
        for (i, name) in routing.fallback.providers.iter().enumerate() {
            lookup(name, format!("routing.fallback.providers[{i}]"), problems);
        }
        const STRATEGIES: [&str; 5] = [
            "round_robin",
            "weighted",
            "random",
            "least_latency",
            "least_busy",
        ];
        if !STRATEGIES.contains(&routing.load_balancing.strategy.as_str()) {
            problems.push(Problem::new(
                "routing.load_balancing.strategy",
                format!("must be one of {}", STRATEGIES.join(", ")),
            ));
        }
        router
    }

    /// Resolves a client's model name.
    pub fn resolve<'a>(&'a self, model: &'a str) -> Result<Resolved<'a>, GatewayError> {
        if let Some(m) = self.mappings.get(model) {
            if let Some(t) = m.targets.first() {
                return Ok(Resolved {
                    provider: &t.provider,
                    upstream_model: t.upstream_model.as_deref().unwrap_or(model),
                });
            }
        }
        if let Some(p) = self.patterns.iter().find(|p| p.regex.is_match(model)) {
            return Ok(Resolved {
                provider: &p.provider,
                upstream_model: model,
            });
        }
        Err(GatewayError::ModelNotFound {
            model: model.to_owned(),
            suggestions: self.close_names(model),
        })
    }

    /// The mapped model names with the provider that serves each by default.
    pub fn listed_models(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names.iter().filter_map(|n| {
            let t = self.mappings.get(n)?.targets.first()?;
            Some((n.as_str(), &*t.provider.name))
        })
    }

    /// Up to three mapped names within a small edit distance of `model`.
    fn close_names(&self, model: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &String)> = self
            .names
            .iter()
            .map(|n| {
                (
                    edit_distance(&n.to_ascii_lowercase(), &model.to_ascii_lowercase()),
                    n,
                )
            })
            .filter(|(d, n)| *d <= (n.len().max(model.len()) / 3).max(2))
            .collect();
        scored.sort();
        scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        let yaml = r#"
providers:
  openai: {endpoint: "http://127.0.0.1:1", auth: {method: api_key, config: {api_key: sk-x}}}
  mock: {}
model_mappings:
  gpt-4: {default_provider: openai, providers: {openai: {model: gpt-4-0125-preview}}}
  gpt-4o-mini: {providers: {mock: {}}}
routing:
  patterns:
    - {pattern: "^gpt-", default_provider: openai}
    - {pattern: "^mock-", default_provider: mock}
"#;
        Config::parse(yaml, &|_| None).ok().unwrap()
    }

    #[test]
    fn mappings_then_patterns() {
        let c = config();
        let r = c.router.resolve("gpt-4").unwrap();
        assert_eq!(
            (&*r.provider.name, r.upstream_model),
            ("openai", "gpt-4-0125-preview")
        );
        let r = c.router.resolve("gpt-4o-mini").unwrap();
        assert_eq!(
            (&*r.provider.name, r.upstream_model),
            ("mock", "gpt-4o-mini")
        );
        let r = c.router.resolve("gpt-3.5-turbo").unwrap();
        assert_eq!(
            (&*r.provider.name, r.upstream_model),
            ("openai", "gpt-3.5-turbo")
        );
        assert_eq!(&*c.router.resolve("mock-x").unwrap().provider.name, "mock");
    }

    #[test]
    fn unknown_models_get_suggestions() {
        let c = config();
        match c.router.resolve("gtp-4").unwrap_err() {
            GatewayError::ModelNotFound { suggestions, .. } => assert_eq!(suggestions[0], "gpt-4"),
            e => panic!("{e:?}"),
        }
    }
}
