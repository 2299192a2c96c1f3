//! Routing: which providers serve a model, in what order, and how hard to try.
//!
//! A model resolves through `model_mappings` (exact names) first, then the model lists
//! providers declare (`providers.<name>.models`), then `routing.patterns` (regular
//! expressions, first match wins); declared and pattern-routed names pass through unchanged.
//! The result is a [`Plan`]: the candidates in the order they are tried — the balancing choice
//! among the model's providers first, then (with fallback) the model's other providers, its
//! own `fallback` list and those of `routing.fallback.providers` that can serve the model —
//! plus the retry and timeout policy. Providers whose circuit is open ([`health`]) are skipped.

pub mod health;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use crate::config::raw::{RawMapping, RawRouting, RawTarget};
use crate::config::Problem;
use crate::errors::GatewayError;
use crate::pricing::{Price, PriceTable};
use crate::providers::{Provider, ProviderKind, ProviderRegistry};
use health::{BreakerSettings, HealthRegistry};

/// How to pick the first provider among a model's providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Weighted,
    Random,
    LeastLatency,
    LeastBusy,
    /// The lowest expected cost for the request from the price table; ties by latency.
    Cheapest,
}

impl Strategy {
    const NAMES: [&'static str; 6] = [
        "round_robin",
        "weighted",
        "random",
        "least_latency",
        "least_busy",
        "cheapest",
    ];

    fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "round_robin" => Strategy::RoundRobin,
            "weighted" => Strategy::Weighted,
            "random" => Strategy::Random,
            "least_latency" => Strategy::LeastLatency,
            "least_busy" => Strategy::LeastBusy,
            "cheapest" => Strategy::Cheapest,
            _ => return None,
        })
    }
}

/// What makes the gateway try again (the same provider after a backoff, or the next one).
#[derive(Debug, Clone, Default)]
pub struct RetryOn {
    pub connect: bool,
    pub timeout: bool,
    pub any_5xx: bool,
    pub statuses: Vec<u16>,
}

impl RetryOn {
    pub fn status(&self, status: u16) -> bool {
        (self.any_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
    }

    pub fn error(&self, e: &GatewayError) -> bool {
        match e {
            GatewayError::UpstreamUnreachable { .. } => self.connect,
            GatewayError::UpstreamTimeout { .. } => self.timeout,
            GatewayError::ProviderUnavailable { .. } => true,
            _ => false,
        }
    }
}

/// Retry, backoff and timeout policy (`routing.*`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub retry_on: RetryOn,
    pub attempts_per_provider: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub total_timeout: Duration,
    /// None: `server.upstream_read_timeout_seconds`.
    pub first_byte_timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
    pub breaker: BreakerSettings,
}

impl Policy {
    /// Capped exponential backoff with full jitter for the `retry`-th retry (0-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .backoff_initial
            .saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX))
            .min(self.backoff_max);
        cap.mul_f64(fastrand::f64())
    }
}

/// Where one model goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    /// The provider's name for the model (`model`, or `deployment` for Azure).
    pub upstream_model: Option<Arc<str>>,
    pub weight: u32,
    pub options: TargetOptions,
    /// Its price (upstream model name first, then the client's), for `cheapest`.
    pub price: Option<Price>,
}

/// What a request is expected to consume, for the `cheapest` strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub input_tokens: u64,
    /// The request's `max_tokens`; None: `routing.load_balancing.default_output_tokens`.
    pub output_tokens: Option<u64>,
}

impl Demand {
    /// An estimate from the request body's size (about four bytes a token, the usual rule of
    /// thumb for English text and JSON; no tokenizer on the hot path) and its `max_tokens`.
    pub fn estimate(body_bytes: usize, max_tokens: Option<u64>) -> Demand {
        Demand {
            input_tokens: (body_bytes as u64).div_ceil(4),
            output_tokens: max_tokens,
        }
    }
}

/// Per-mapping settings that change how a request is translated for one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetOptions {
    /// Overrides the provider's `api_version` (Azure `api-version`, watsonx `version`,
    /// Anthropic `anthropic-version`).
    pub api_version: Option<Arc<str>>,
    /// Overrides the provider's project (Vertex `project_id`, watsonx `project_id`).
    pub project: Option<Arc<str>>,
    /// Overrides the provider's location (Vertex).
    pub location: Option<Arc<str>>,
    /// Bedrock: call Anthropic models through InvokeModel instead of Converse (`api: invoke`).
    pub bedrock_invoke: bool,
}

impl TargetOptions {
    const NONE: &'static TargetOptions = &TargetOptions {
        api_version: None,
        project: None,
        location: None,
        bedrock_invoke: false,
    };

    fn from_raw(
        t: &RawTarget,
        provider: &Provider,
        model: &str,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> TargetOptions {
        let bedrock_invoke = match t.api.as_deref() {
            None | Some("converse") => false,
            Some("invoke") if provider.kind == ProviderKind::Bedrock => {
                if !model.contains("anthropic.") {
                    problems.push(Problem::new(
                        format!("{path}.api"),
                        "`invoke` is only available for Anthropic models (ids containing `anthropic.`)",
                    ));
                }
                true
            }
            Some(other) => {
                problems.push(Problem::new(
                    format!("{path}.api"),
                    format!(
                        "`{other}` is not available here (bedrock accepts `converse` or `invoke`)"
                    ),
                ));
                false
            }
        };
        TargetOptions {
            api_version: t.api_version.as_deref().map(Arc::from),
            project: t.project.as_deref().map(Arc::from),
            location: t.location.as_deref().map(Arc::from),
            bedrock_invoke,
        }
    }
}

#[derive(Debug)]
struct Mapping {
    /// The mapping's name, as the metric label of its traffic.
    label: Arc<str>,
    /// The default provider first, then the others in config order.
    targets: Vec<Target>,
    fallback: Vec<Target>,
    strategy: Option<Strategy>,
    hedge_after: Option<Duration>,
    cache: Option<crate::cache::CachePolicy>,
    cursor: AtomicUsize,
}

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    provider: Arc<Provider>,
    /// The pattern as written, the metric label of the traffic it routes (the names it lets
    /// through are the callers' choice: unbounded as labels).
    label: Arc<str>,
}

pub struct Router {
    mappings: HashMap<String, Mapping>,
    /// Mapping names in config order, for `/v1/models`.
    names: Vec<String>,
    /// Model names providers declare (`providers.<name>.models`), with every provider that
    /// declares each, in registry order (the first serves it; the others may be fallbacks).
    declared: HashMap<Arc<str>, Vec<Arc<Provider>>>,
    /// Declared names in registry order, for `/v1/models`.
    declared_names: Vec<String>,
    patterns: Vec<Pattern>,
    /// `routing.fallback.providers` when fallback is enabled.
    global_fallback: Vec<Arc<Provider>>,
    fallback_enabled: bool,
    /// `routing.load_balancing.default_output_tokens`.
    default_output_tokens: u64,
    pub policy: Policy,
    /// When this routing table was built (Unix seconds): `created` in `/v1/models`.
    pub created: u64,
}

/// One provider to try for a request.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub provider: &'a Arc<Provider>,
    /// The name to send upstream.
    pub upstream_model: &'a str,
    /// The mapping's settings for this provider.
    pub options: &'a TargetOptions,
}

/// The ordered candidates for one request.
#[derive(Debug)]
pub struct Plan<'a> {
    pub candidates: Vec<Candidate<'a>>,
    /// Start the second candidate too when the first is silent this long.
    pub hedge_after: Option<Duration>,
    /// What resolved the model: its mapping, or the pattern that let it through.
    pub matched: Matched<'a>,
    /// The mapping's `cache:` (answers for this model are cached).
    pub cache: Option<crate::cache::CachePolicy>,
}

/// The configuration entry a model name resolved through.
#[derive(Debug, Clone, Copy)]
pub enum Matched<'a> {
    /// An exact `model_mappings` entry or a model a provider declares (its name).
    Mapping(&'a Arc<str>),
    /// A `routing.patterns` entry (the pattern as written).
    Pattern(&'a Arc<str>),
}

impl Matched<'_> {
    /// The `model` label of the request's metrics: the mapping's name; for a name a pattern
    /// let through, the name itself when the price table knows it (a configured name), else
    /// the pattern. Either way a name from configuration, so callers cannot add series.
    pub fn metric_label(self, model: &str, prices: &PriceTable) -> Arc<str> {
        match self {
            Matched::Mapping(name) => name.clone(),
            Matched::Pattern(pattern) => prices.known_name(model).unwrap_or(pattern).clone(),
        }
    }
}

/// A resolved model (first candidate only), for `/v1/models/{id}`.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub provider: &'a Arc<Provider>,
    pub upstream_model: &'a str,
}

impl Router {
    pub fn from_raw(
        mappings: &BTreeMap<String, RawMapping>,
        routing: &RawRouting,
        providers: &ProviderRegistry,
        prices: &PriceTable,
        problems: &mut Vec<Problem>,
    ) -> Router {
        let lookup = |name: &str,
                      path: String,
                      problems: &mut Vec<Problem>|
         -> Option<Arc<Provider>> {
            match providers.get(name) {
                Some(p) if p.settings.needs_project() && p.settings.project.is_none() => {
                    problems.push(Problem::new(
                        path,
                        format!(
                            "provider `{name}` ({}) needs `{}` in its config to serve the OpenAI-compatible API",
                            p.kind.as_str(),
                            if p.kind == ProviderKind::Oci { "compartment_id" } else { "project_id" }
                        ),
                    ));
                    None
                }
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
        let strategy_of = |name: &str, path: &str, problems: &mut Vec<Problem>| {
            let s = Strategy::parse(name);
            if s.is_none() {
                problems.push(Problem::new(
                    path,
                    format!("must be one of {}", Strategy::NAMES.join(", ")),
                ));
            }
            s
        };
        let global_strategy = strategy_of(
            &routing.load_balancing.strategy,
            "routing.load_balancing.strategy",
            problems,
        )
        .filter(|_| routing.load_balancing.enabled);

        let mut mapping_table = HashMap::new();
        let mut names = Vec::new();
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
                if t.weight == Some(0) {
                    problems.push(Problem::new(
                        format!("{path}.providers.{name}.weight"),
                        "must be at least 1",
                    ));
                }
                let upstream_model = t
                    .model
                    .as_deref()
                    .or(t.deployment.as_deref())
                    .map(Arc::from);
                let options = TargetOptions::from_raw(
                    t,
                    &provider,
                    upstream_model.as_deref().unwrap_or(model),
                    &format!("{path}.providers.{name}"),
                    problems,
                );
                let price = prices.price(&[upstream_model.as_deref().unwrap_or(model), model]);
                targets.push(Target {
                    provider,
                    upstream_model,
                    weight: t.weight.unwrap_or(1).max(1),
                    options,
                    price,
                });
            }
            let fallback = m
                .fallback
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let provider = lookup(name, format!("{path}.fallback[{i}]"), problems)?;
                    // A fallback that also serves the mapping uses that mapping's model name.
                    let own = m.providers.get(name);
                    let upstream_model = own
                        .and_then(|t| t.model.as_deref().or(t.deployment.as_deref()))
                        .map(Arc::from);
                    let options = own
                        .map(|t| {
                            TargetOptions::from_raw(
                                t,
                                &provider,
                                upstream_model.as_deref().unwrap_or(model),
                                &format!("{path}.providers.{name}"),
                                &mut Vec::new(), // reported once, for the mapping's own entry
                            )
                        })
                        .unwrap_or_default();
                    Some(Target {
                        provider,
                        upstream_model,
                        weight: 1,
                        options,
                        price: None, // only balancing among a mapping's own providers prices them
                    })
                })
                .collect();
            let strategy = match &m.load_balancing {
                Some(s) => strategy_of(s, &format!("{path}.load_balancing"), problems),
                None => global_strategy,
            };
            if m.hedge_after_ms == Some(0) {
                problems.push(Problem::new(
                    format!("{path}.hedge_after_ms"),
                    "must be at least 1",
                ));
            }
            names.push(model.clone());
            mapping_table.insert(
                model.clone(),
                Mapping {
                    label: Arc::from(model.as_str()),
                    targets,
                    fallback,
                    strategy,
                    hedge_after: m.hedge_after_ms.map(Duration::from_millis),
                    cache: m.cache.as_ref().and_then(|c| {
                        crate::cache::CachePolicy::from_raw(c, &format!("{path}.cache"), problems)
                    }),
                    cursor: AtomicUsize::new(0),
                },
            );
        }
        let mut declared: HashMap<Arc<str>, Vec<Arc<Provider>>> = HashMap::new();
        let mut declared_names = Vec::new();
        for provider in providers.iter() {
            for (i, model) in provider.models.iter().enumerate() {
                if model.trim().is_empty() {
                    problems.push(Problem::new(
                        format!("providers.{}.models[{i}]", provider.name),
                        "must be a model name",
                    ));
                    continue;
                }
                let by = declared.entry(Arc::from(model.as_str())).or_default();
                if by.is_empty() {
                    declared_names.push(model.clone());
                }
                if !by.iter().any(|p| p.name == provider.name) {
                    by.push(provider.clone());
                }
            }
        }
        let mut patterns = Vec::new();
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
                patterns.push(Pattern {
                    regex,
                    provider,
                    label: Arc::from(p.pattern.as_str()),
                });
            }
        }
        let global_fallback = routing
            .fallback
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                lookup(name, format!("routing.fallback.providers[{i}]"), problems)
            })
            .collect();
        let mut retry_on = RetryOn::default();
        for (i, cond) in routing.fallback.on.iter().enumerate() {
            match cond.as_str() {
                "connect" => retry_on.connect = true,
                "timeout" => retry_on.timeout = true,
                "5xx" => retry_on.any_5xx = true,
                s => match s.parse::<u16>() {
                    Ok(code) if (400..600).contains(&code) => retry_on.statuses.push(code),
                    _ => problems.push(Problem::new(
                        format!("routing.fallback.on[{i}]"),
                        "must be connect, timeout, 5xx or an HTTP status from 400 to 599",
                    )),
                },
            }
        }
        let r = &routing.retries;
        if r.max_attempts == 0 || r.max_attempts > 10 {
            problems.push(Problem::new(
                "routing.retries.max_attempts",
                "must be from 1 to 10",
            ));
        }
        if r.backoff_initial_ms > r.backoff_max_ms {
            problems.push(Problem::new(
                "routing.retries.backoff_initial_ms",
                "must not exceed backoff_max_ms",
            ));
        }
        if routing.timeout_seconds == 0 {
            problems.push(Problem::new(
                "routing.timeout_seconds",
                "must be greater than 0",
            ));
        }
        if routing.health.failure_threshold == 0 {
            problems.push(Problem::new(
                "routing.health.failure_threshold",
                "must be at least 1",
            ));
        }
        let policy = Policy {
            retry_on,
            attempts_per_provider: r.max_attempts.clamp(1, 10) as u32,
            backoff_initial: Duration::from_millis(r.backoff_initial_ms),
            backoff_max: Duration::from_millis(r.backoff_max_ms),
            total_timeout: Duration::from_secs(routing.timeout_seconds.max(1)),
            first_byte_timeout: routing.first_byte_timeout_seconds.map(Duration::from_secs),
            stream_idle_timeout: routing.stream_idle_timeout_seconds.map(Duration::from_secs),
            breaker: BreakerSettings {
                failure_threshold: routing.health.failure_threshold.clamp(1, u32::MAX as u64)
                    as u32,
                cooldown: Duration::from_secs(routing.health.cooldown_seconds),
            },
        };
        Router {
            mappings: mapping_table,
            names,
            declared,
            declared_names,
            patterns,
            global_fallback,
            fallback_enabled: routing.fallback.enabled,
            default_output_tokens: routing.load_balancing.default_output_tokens,
            policy,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs().max(1)),
        }
    }

    /// Resolves a client's model name to its first candidate.
    pub fn resolve<'a>(&'a self, model: &'a str) -> Result<Resolved<'a>, GatewayError> {
        if let Some(t) = self.mappings.get(model).and_then(|m| m.targets.first()) {
            return Ok(Resolved {
                provider: &t.provider,
                upstream_model: t.upstream_model.as_deref().unwrap_or(model),
            });
        }
        if let Some(provider) = self.declared.get(model).and_then(|by| by.first()) {
            return Ok(Resolved {
                provider,
                upstream_model: model,
            });
        }
        if let Some(p) = self.patterns.iter().find(|p| p.regex.is_match(model)) {
            return Ok(Resolved {
                provider: &p.provider,
                upstream_model: model,
            });
        }
        Err(self.not_found(model))
    }

    fn not_found(&self, model: &str) -> GatewayError {
        GatewayError::ModelNotFound {
            model: model.to_owned(),
            suggestions: self.close_names(model),
        }
    }

    /// The ordered candidates for a request. `pinned` is the caller's
    /// `x-switchyard-provider`, which must be one of the model's providers; `demand` is what
    /// the request is expected to consume (for `cheapest`).
    pub fn plan<'a>(
        &'a self,
        model: &'a str,
        pinned: Option<&str>,
        health: &HealthRegistry,
        demand: Demand,
    ) -> Result<Plan<'a>, GatewayError> {
        let candidate = |t: &'a Target| Candidate {
            provider: &t.provider,
            upstream_model: t.upstream_model.as_deref().unwrap_or(model),
            options: &t.options,
        };
        let mut candidates: Vec<Candidate<'a>> = Vec::new();
        let mut hedge_after = None;
        let mut cache = None;
        let matched;
        if let Some(m) = self.mappings.get(model) {
            matched = Matched::Mapping(&m.label);
            let first = self.choose(m, health, demand);
            candidates.push(candidate(&m.targets[first]));
            if self.fallback_enabled || m.strategy.is_some() || m.hedge_after.is_some() {
                candidates.extend(
                    m.targets
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != first)
                        .map(|(_, t)| candidate(t)),
                );
            }
            candidates.extend(m.fallback.iter().map(candidate));
            hedge_after = m.hedge_after;
            cache = m.cache;
        } else if let Some((name, provider)) = self
            .declared
            .get_key_value(model)
            .and_then(|(name, by)| Some((name, by.first()?)))
        {
            matched = Matched::Mapping(name);
            candidates.push(Candidate {
                provider,
                upstream_model: model,
                options: TargetOptions::NONE,
            });
        } else if let Some(p) = self.patterns.iter().find(|p| p.regex.is_match(model)) {
            matched = Matched::Pattern(&p.label);
            candidates.push(Candidate {
                provider: &p.provider,
                upstream_model: model,
                options: TargetOptions::NONE,
            });
        } else {
            return Err(self.not_found(model));
        }
        if self.fallback_enabled {
            // Only providers that know this model (a mapping's own providers are in already):
            // its name sent anywhere else earns a 400 that would hide the real failure.
            candidates.extend(
                self.global_fallback
                    .iter()
                    .filter(|p| self.knows(p, model))
                    .map(|provider| Candidate {
                        provider,
                        upstream_model: model,
                        options: TargetOptions::NONE,
                    }),
            );
        }
        let mut seen = Vec::with_capacity(candidates.len());
        candidates.retain(|c| {
            let fresh = !seen.contains(&c.provider.name);
            seen.push(c.provider.name.clone());
            fresh
        });
        if let Some(name) = pinned {
            let Some(c) = candidates.iter().find(|c| &*c.provider.name == name) else {
                return Err(GatewayError::InvalidRequest {
                    message: format!(
                        "Provider `{name}` does not serve model `{model}` (x-switchyard-provider)."
                    ),
                    param: None,
                });
            };
            candidates = vec![c.clone()];
        }
        Ok(Plan {
            candidates,
            hedge_after,
            matched,
            cache,
        })
    }

    /// Whether `provider` serves `model` under that name through a declared model list or a
    /// pattern (mapped models name their providers and fallbacks themselves).
    fn knows(&self, provider: &Provider, model: &str) -> bool {
        self.declared
            .get(model)
            .is_some_and(|by| by.iter().any(|p| p.name == provider.name))
            || self
                .patterns
                .iter()
                .any(|p| p.provider.name == provider.name && p.regex.is_match(model))
    }

    /// The index of the target that takes the first attempt.
    fn choose(&self, m: &Mapping, health: &HealthRegistry, demand: Demand) -> usize {
        let n = m.targets.len();
        let Some(strategy) = m.strategy.filter(|_| n > 1) else {
            return 0;
        };
        // Balance among providers whose circuit is not open; all open: fall back to all.
        let open: Vec<bool> = m
            .targets
            .iter()
            .map(|t| health.get(&t.provider.name).is_open())
            .collect();
        let usable: Vec<usize> = (0..n).filter(|&i| !open[i]).collect();
        let pool = if usable.is_empty() {
            (0..n).collect()
        } else {
            usable
        };
        match strategy {
            Strategy::RoundRobin => pool[m.cursor.fetch_add(1, Ordering::Relaxed) % pool.len()],
            Strategy::Random => pool[fastrand::usize(..pool.len())],
            Strategy::Weighted => {
                let total: u64 = pool.iter().map(|&i| u64::from(m.targets[i].weight)).sum();
                let mut ticket = m.cursor.fetch_add(1, Ordering::Relaxed) as u64 % total.max(1);
                for &i in &pool {
                    let w = u64::from(m.targets[i].weight);
                    if ticket < w {
                        return i;
                    }
                    ticket -= w;
                }
                pool[0]
            }
            Strategy::LeastLatency => *pool
                .iter()
                .min_by(|&&a, &&b| {
                    let la = health.get(&m.targets[a].provider.name).latency_us();
                    let lb = health.get(&m.targets[b].provider.name).latency_us();
                    la.total_cmp(&lb)
                })
                .unwrap_or(&0),
            Strategy::LeastBusy => *pool
                .iter()
                .min_by_key(|&&i| health.get(&m.targets[i].provider.name).in_flight())
                .unwrap_or(&0),
            Strategy::Cheapest => {
                let output = demand.output_tokens.unwrap_or(self.default_output_tokens);
                // Unpriced providers come after every priced one.
                let cost = |i: usize| {
                    m.targets[i].price.map_or(f64::INFINITY, |p| {
                        demand.input_tokens as f64 * p.input_per_million
                            + output as f64 * p.output_per_million
                    })
                };
                let latency = |i: usize| health.get(&m.targets[i].provider.name).latency_us();
                // The first of equals wins: config order after cost and latency.
                *pool
                    .iter()
                    .min_by(|&&a, &&b| {
                        cost(a)
                            .total_cmp(&cost(b))
                            .then_with(|| latency(a).total_cmp(&latency(b)))
                    })
                    .unwrap_or(&0)
            }
        }
    }

    /// Every model name a caller can use by name — the mappings, then the names providers
    /// declare — with the provider that serves each by default (pattern-routed names cannot
    /// be listed).
    pub fn listed_models(&self) -> impl Iterator<Item = (&str, &str)> {
        let mapped = self.names.iter().filter_map(|n| {
            let t = self.mappings.get(n)?.targets.first()?;
            Some((n.as_str(), &*t.provider.name))
        });
        let declared = self
            .declared_names
            .iter()
            .filter(|n| !self.mappings.contains_key(*n))
            .filter_map(|n| Some((n.as_str(), &*self.declared.get(n.as_str())?.first()?.name)));
        mapped.chain(declared)
    }

    /// Up to three mapped or declared names within a small edit distance of `model`.
    fn close_names(&self, model: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &String)> = self
            .names
            .iter()
            .chain(&self.declared_names)
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

    /// Issue 20.6: the demo answers the model names OpenAI clients (the SDK's examples,
    /// LangChain's `ChatOpenAI` and `OpenAIEmbeddings`) use by default, and lists the mock's.
    #[test]
    fn the_demo_serves_the_names_clients_default_to() {
        let text = include_str!("../../conf/demo.yaml");
        let c = Config::parse(text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let defaults = [
            "text-embedding-ada-002",
            "text-embedding-3-small",
            "gpt-4o",
            "gpt-4.1-mini",
            "gpt-4o-mini",
            "gpt-3.5-turbo",
        ];
        let listed: Vec<&str> = c.router.listed_models().map(|(id, _)| id).collect();
        for model in defaults.iter().chain(&["mock-fast", "mock-embed"]) {
            assert_eq!(&*c.router.resolve(model).unwrap().provider.name, "mock");
            assert!(listed.contains(model), "{model} missing from {listed:?}");
        }
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

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::config::Config;

    fn router(routing: &str) -> Config {
        let yaml = format!(
            r#"
providers:
  a: {{type: openai, endpoint: "http://127.0.0.1:1", auth: {{method: api_key, config: {{api_key: sk-x}}}}}}
  b: {{type: openai, endpoint: "http://127.0.0.1:2", auth: {{method: api_key, config: {{api_key: sk-x}}}}}}
  c: {{type: openai, endpoint: "http://127.0.0.1:3", auth: {{method: api_key, config: {{api_key: sk-x}}}}}}
  mock: {{}}
model_mappings:
  m: {{default_provider: a, fallback: [c, a], providers: {{a: {{model: m-a}}, b: {{model: m-b}}}}}}
{routing}
"#
        );
        Config::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(plan: &Plan<'_>) -> Vec<(String, String)> {
        plan.candidates
            .iter()
            .map(|c| (c.provider.name.to_string(), c.upstream_model.to_owned()))
            .collect()
    }

    #[test]
    fn fallback_order_is_mapping_then_its_list_then_global_without_duplicates() {
        let h = HealthRegistry::default();
        let c = router("routing:\n  fallback: {enabled: true, providers: [mock, b]}\n");
        let plan = c.router.plan("m", None, &h, Demand::default()).unwrap();
        // `mock` has no way of knowing `m`: never a candidate for it.
        let expected = [("a", "m-a"), ("b", "m-b"), ("c", "m")];
        assert_eq!(
            names(&plan),
            expected
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .to_vec()
        );
        // Without global fallback only the mapping's own list follows the default.
        let c = router("");
        assert_eq!(
            names(&c.router.plan("m", None, &h, Demand::default()).unwrap()).len(),
            2
        );
    }

    /// Issue 20.1: `routing.fallback.providers` only serve a model they know — by a mapping
    /// entry, a declared model list or a pattern — never a name sent to them blindly.
    #[test]
    fn global_fallback_only_offers_providers_that_know_the_model() {
        let yaml = r#"
providers:
  openai: {endpoint: "http://127.0.0.1:1", auth: {method: api_key, config: {api_key: sk-x}}}
  bedrock: {region: us-east-1, endpoint: "http://127.0.0.1:4", auth: {method: static, config: {access_key_id: AKIDEXAMPLE, secret_access_key: x}}}
  anthropic: {endpoint: "http://127.0.0.1:2", models: [claude-x], auth: {method: api_key, config: {api_key: sk-x}}}
  backup: {type: openai, endpoint: "http://127.0.0.1:3", auth: {method: api_key, config: {api_key: sk-x}}}
model_mappings:
  gpt-4o: {providers: {openai: {}}}
  both: {default_provider: openai, providers: {openai: {}, bedrock: {model: amazon.nova-lite-v1:0}}}
routing:
  patterns:
    - {pattern: "^gpt-", default_provider: openai}
    - {pattern: "^gpt-4o$", default_provider: backup}
    - {pattern: "^claude-", default_provider: bedrock}
  fallback: {enabled: true, providers: [bedrock, anthropic, backup]}
"#;
        let c = Config::parse(yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let h = HealthRegistry::default();
        let plan = |model| names(&c.router.plan(model, None, &h, Demand::default()).unwrap());
        let pair = |p: &str, m: &str| (p.to_string(), m.to_string());
        // Mapped to openai only; `backup` has a pattern for it, bedrock/anthropic nothing.
        assert_eq!(
            plan("gpt-4o"),
            vec![pair("openai", "gpt-4o"), pair("backup", "gpt-4o")]
        );
        // Pattern-routed: no other provider knows it.
        assert_eq!(plan("gpt-3.5-turbo"), vec![pair("openai", "gpt-3.5-turbo")]);
        // Declared by anthropic, matched by bedrock's pattern: both may serve it.
        assert_eq!(
            plan("claude-x"),
            vec![pair("anthropic", "claude-x"), pair("bedrock", "claude-x")]
        );
        // A mapping entry makes a global fallback provider a candidate under its own name.
        assert_eq!(
            plan("both"),
            vec![
                pair("openai", "both"),
                pair("bedrock", "amazon.nova-lite-v1:0")
            ]
        );
    }

    #[test]
    fn declared_models_route_and_are_listed_after_mappings() {
        let c = router("");
        let r = c.router.resolve("mock-fast").unwrap();
        assert_eq!((&*r.provider.name, r.upstream_model), ("mock", "mock-fast"));
        let listed: Vec<_> = c.router.listed_models().collect();
        assert_eq!(
            listed,
            vec![("m", "a"), ("mock-fast", "mock"), ("mock-embed", "mock")]
        );
        assert!(c.router.created > 1_700_000_000);
    }

    #[test]
    fn pinning_picks_one_of_the_models_providers_only() {
        let h = HealthRegistry::default();
        let c = router("routing:\n  fallback: {enabled: true}\n");
        let plan = c
            .router
            .plan("m", Some("b"), &h, Demand::default())
            .unwrap();
        assert_eq!(names(&plan), vec![("b".to_string(), "m-b".to_string())]);
        assert!(matches!(
            c.router.plan("m", Some("mock"), &h, Demand::default()),
            Err(GatewayError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn balancing_skips_open_circuits() {
        let h = HealthRegistry::default();
        let c = router("routing:\n  load_balancing: {enabled: true, strategy: round_robin}\n");
        let settings = BreakerSettings {
            failure_threshold: 1,
            cooldown: Duration::from_secs(60),
        };
        h.get("a").record_failure(&settings);
        for _ in 0..4 {
            assert_eq!(
                &*c.router
                    .plan("m", None, &h, Demand::default())
                    .unwrap()
                    .candidates[0]
                    .provider
                    .name,
                "b"
            );
        }
    }

    fn cheapest_router(prices: &str) -> Config {
        let yaml = format!(
            r#"
providers:
  a: {{type: openai, endpoint: "http://127.0.0.1:1", auth: {{method: api_key, config: {{api_key: sk-x}}}}}}
  b: {{type: openai, endpoint: "http://127.0.0.1:2", auth: {{method: api_key, config: {{api_key: sk-x}}}}}}
  c: {{type: openai, endpoint: "http://127.0.0.1:3", auth: {{method: api_key, config: {{api_key: sk-x}}}}}}
model_mappings:
  cm: {{default_provider: c, load_balancing: cheapest, providers: {{a: {{model: p-a}}, b: {{model: p-b}}, c: {{model: p-unpriced}}}}}}
pricing:
{prices}
"#
        );
        Config::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn first(c: &Config, h: &HealthRegistry, demand: Demand) -> String {
        c.router.plan("cm", None, h, demand).unwrap().candidates[0]
            .provider
            .name
            .to_string()
    }

    /// Issue 20.8: `cheapest` picks the lowest expected cost for this request's input and
    /// output estimate; unpriced providers come last; open circuits are skipped.
    #[test]
    fn cheapest_picks_the_lowest_expected_cost_among_healthy_providers() {
        let c = cheapest_router("  p-a: {input: 1, output: 10}\n  p-b: {input: 5, output: 2}");
        let h = HealthRegistry::default();
        let input_heavy = Demand::estimate(4000, Some(10)); // a: 1,100  b: 5,020
        let output_heavy = Demand::estimate(40, Some(1000)); // a: 10,010  b: 2,050
        assert_eq!(input_heavy.input_tokens, 1000);
        assert_eq!(first(&c, &h, input_heavy), "a");
        assert_eq!(first(&c, &h, output_heavy), "b");
        // No max_tokens: routing.load_balancing.default_output_tokens (256) is expected.
        assert_eq!(first(&c, &h, Demand::estimate(40, None)), "b");
        assert_eq!(first(&c, &h, Demand::estimate(4000, None)), "a");
        // The cheap one's circuit is open: the next cheapest, then the unpriced one.
        let settings = BreakerSettings {
            failure_threshold: 1,
            cooldown: Duration::from_secs(60),
        };
        h.get("a").record_failure(&settings);
        assert_eq!(first(&c, &h, input_heavy), "b");
        h.get("b").record_failure(&settings);
        assert_eq!(first(&c, &h, input_heavy), "c");
    }

    #[test]
    fn cheapest_breaks_ties_by_latency() {
        let c = cheapest_router("  p-a: {input: 1, output: 1}\n  p-b: {input: 1, output: 1}");
        let h = HealthRegistry::default();
        let d = Demand::estimate(400, Some(10));
        // Nothing measured: config order (the default provider c is unpriced, so a).
        assert_eq!(first(&c, &h, d), "a");
        h.get("a").record_success(Duration::from_millis(80));
        h.get("b").record_success(Duration::from_millis(20));
        assert_eq!(first(&c, &h, d), "b");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let c = router("routing:\n  retries: {max_attempts: 3, backoff_initial_ms: 100, backoff_max_ms: 400}\n");
        for retry in 0..10 {
            assert!(c.router.policy.backoff(retry) <= Duration::from_millis(400));
        }
        let samples: Vec<Duration> = (0..20).map(|_| c.router.policy.backoff(2)).collect();
        assert!(samples.windows(2).any(|w| w[0] != w[1]), "no jitter");
    }

    #[test]
    fn bad_routing_settings_are_problems() {
        let yaml = "providers: {mock: {}}\nrouting:\n  fallback: {on: [teapot]}\n  retries: {max_attempts: 0}\n  load_balancing: {strategy: fastest}\n";
        let e = Config::parse(yaml, &|_| None).err().unwrap();
        let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
        for p in [
            "routing.fallback.on[0]",
            "routing.retries.max_attempts",
            "routing.load_balancing.strategy",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }
}
