//! Loading and validating the YAML configuration.
//!
//! `raw` mirrors the file (unknown keys are errors), `env` substitutes `${VAR}` references,
//! and [`Config::from_raw`] turns the raw tree into the validated [`Config`] the gateway runs
//! on, collecting every problem with its key path instead of stopping at the first.

mod env;
pub mod raw;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::auth::KeyTable;
use crate::pricing::PriceTable;
use crate::providers::ProviderRegistry;
use crate::route::Router;

/// One thing wrong with a configuration: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub why: String,
}

impl Problem {
    /// A problem at `path`; `why` is folded onto one line (one problem, one line).
    pub fn new(path: impl Into<String>, why: impl Into<String>) -> Self {
        let why: String = why.into();
        Self {
            path: path.into(),
            why: why.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.why)
        } else {
            write!(f, "{}: {}", self.path, self.why)
        }
    }
}

/// Removes the offending value from serde's messages (`invalid type: integer \`12345\`,
/// expected a string`): the value may be a secret written with the wrong type.
pub fn redact_serde_message(msg: &str) -> String {
    static VALUE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(invalid (?:type|value|length): [a-z ]+?)(?: `[^`]*`| "(?:[^"\\]|\\.)*"| [^,]*)?(, expected)"#)
            .expect("valid regex")
    });
    VALUE.replace_all(msg, "$1$2").into_owned()
}

/// Every problem found in a configuration.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Listener and limit settings (`server:`).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: String,
    pub metrics_listen: Option<String>,
    pub threads: usize,
    pub max_request_body_bytes: u64,
    /// Request body bytes held at once, all requests together ([`crate::body_budget`]).
    pub max_inflight_body_bytes: u64,
    pub grace_period: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_upstream_response_bytes: u64,
    pub access_log: bool,
    /// Client-side limits (headers, connections, streams, timeouts).
    pub limits: ClientLimits,
    pub upgrade_sock: String,
    pub pid_file: String,
    pub tls: Option<TlsListener>,
    /// `server.cors`: `None` when off.
    pub cors: Option<std::sync::Arc<crate::cors::CorsPolicy>>,
}

/// Limits on what clients may send and hold (`server.max_header_*`, `max_connections`,
/// `max_streams_per_key`, `max_requests_in_flight_per_key`, `client_*_timeout_seconds`,
/// `keepalive_timeout_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub max_connections: u64,
    /// Per-key caps on open streams and on requests in flight (None: no cap).
    pub per_key: crate::limits::Concurrency,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// The whole body's deadline, from the end of the request header.
    pub body_total_timeout: Duration,
    pub write_timeout: Duration,
    pub keepalive_timeout: Duration,
}

/// `server.tls`: an HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: String,
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
}

/// The validated configuration the gateway runs on.
pub struct Config {
    pub server: ServerSettings,
    pub keys: KeyTable,
    pub providers: ProviderRegistry,
    pub router: Router,
    pub prices: PriceTable,
    /// Store, refresh interval, Redis, audit file (take effect at start, not on reload).
    pub governance: crate::governance::GovernanceSettings,
    pub admin: Option<AdminSettings>,
    /// `responses:`: how long stored Responses-API answers are kept, and the memory bound
    /// when there is no store.
    pub responses: crate::response_store::ResponseSettings,
    /// `media:`: the image URL fetcher; None when `fetch_image_urls` is off.
    pub media: Option<std::sync::Arc<crate::media_fetch::ImageFetcher>>,
    /// `telemetry:` with an endpoint: OpenTelemetry tracing on (reloadable).
    pub telemetry: Option<crate::telemetry::TelemetrySettings>,
    /// `cache:`: the response cache's backend (takes effect at start, not on reload).
    pub cache: crate::cache::CacheSettings,
}

/// `admin:`: the admin API's listener and credentials.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: String,
    /// SHA-256 of the admin key.
    pub key_sha256: [u8; 32],
    pub totp: bool,
}

impl Config {
    /// Reads, substitutes and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Problem::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses YAML text; `lookup` reads environment variables.
    pub fn parse(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut tree: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| ConfigErrors(vec![Problem::new("", format!("invalid YAML: {e}"))]))?;
        if tree.is_null() {
            tree = serde_yaml::Value::Mapping(Default::default());
        }
        let mut problems = Vec::new();
        let from_env = env::substitute(&mut tree, lookup, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        // Problems name the variable a value came from, never the value (it may be a
        // secret put in the wrong field).
        let named = |mut problems: Vec<Problem>| {
            env::redact(&mut problems, &from_env);
            ConfigErrors(problems)
        };
        let raw: raw::RawConfig = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            named(vec![Problem::new(
                path,
                redact_serde_message(&e.into_inner().to_string()),
            )])
        })?;
        Self::from_raw(raw).map_err(|e| named(e.0))
    }

    /// Validates the raw tree, reporting every problem at once.
    pub fn from_raw(raw: raw::RawConfig) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        let server = validate_server(&raw.server, &mut problems);
        let keys = KeyTable::from_raw(&raw.auth.keys, &mut problems);
        let providers = ProviderRegistry::from_raw(&raw.providers, &mut problems);
        let prices = PriceTable::with_overrides(&raw.pricing, &mut problems);
        let router = Router::from_raw(
            &raw.model_mappings,
            &raw.routing,
            &providers,
            &prices,
            &mut problems,
        );
        let governance = validate_governance(&raw, &mut problems);
        let admin = validate_admin(&raw, &server, &governance, &mut problems);
        let media = validate_media(&raw.media, &mut problems);
        let telemetry = crate::telemetry::config::validate(&raw.telemetry, &mut problems);
        let cache = crate::cache::CacheSettings::from_raw(&raw.cache, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(Config {
            server,
            keys,
            providers,
            router,
            prices,
            governance,
            admin,
            responses: crate::response_store::ResponseSettings {
                retention_secs: raw.responses.retention_days.min(36_500) as i64 * 86_400,
                memory_max_bytes: usize::try_from(raw.responses.memory_max_bytes)
                    .unwrap_or(usize::MAX),
            },
            media,
            telemetry,
            cache,
        })
    }
}

/// `media:`: the image fetcher's limits and host lists.
fn validate_media(
    raw: &raw::RawMedia,
    problems: &mut Vec<Problem>,
) -> Option<std::sync::Arc<crate::media_fetch::ImageFetcher>> {
    let before = problems.len();
    let positive = |key: &str, v: u64, max: u64, problems: &mut Vec<Problem>| {
        if v == 0 || v > max {
            problems.push(Problem::new(
                format!("media.{key}"),
                format!("must be between 1 and {max}"),
            ));
        }
    };
    positive("max_image_bytes", raw.max_image_bytes, 1 << 30, problems);
    positive(
        "fetch_timeout_seconds",
        raw.fetch_timeout_seconds,
        600,
        problems,
    );
    positive(
        "max_concurrent_fetches",
        raw.max_concurrent_fetches,
        10_000,
        problems,
    );
    positive(
        "max_images_per_request",
        raw.max_images_per_request,
        1_000,
        problems,
    );
    if raw.max_redirects > 10 {
        problems.push(Problem::new(
            "media.max_redirects",
            "must be between 0 and 10",
        ));
    }
    let hosts = |key: &str, list: &[String], problems: &mut Vec<Problem>| -> Vec<String> {
        let mut out = Vec::with_capacity(list.len());
        for (i, h) in list.iter().enumerate() {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let h = h.strip_prefix("*.").unwrap_or(&h).to_owned();
            let h = h
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(&h)
                .to_owned();
            if h.is_empty()
                || (h.contains(['/', ':', '@', ' ', '*'])
                    && h.parse::<std::net::Ipv6Addr>().is_err())
            {
                problems.push(Problem::new(
                    format!("media.{key}[{i}]"),
                    "must be a host name or IP address (no scheme, port or path)",
                ));
            }
            out.push(h);
        }
        out
    };
    let allow_hosts = hosts("allow_hosts", &raw.allow_hosts, problems);
    let deny_hosts = hosts("deny_hosts", &raw.deny_hosts, problems);
    if problems.len() > before || !raw.fetch_image_urls {
        return None;
    }
    let settings = crate::media_fetch::MediaSettings {
        allow_http: raw.allow_http,
        allow_private_addresses: raw.allow_private_addresses,
        max_image_bytes: raw.max_image_bytes,
        timeout: Duration::from_secs(raw.fetch_timeout_seconds),
        max_redirects: raw.max_redirects as u32,
        max_concurrent: raw.max_concurrent_fetches as u32,
        max_images_per_request: raw.max_images_per_request as u32,
        allow_hosts,
        deny_hosts,
    };
    match crate::media_fetch::ImageFetcher::new(settings) {
        Ok(f) => Some(std::sync::Arc::new(f)),
        Err(why) => {
            problems.push(Problem::new("media", why));
            None
        }
    }
}

/// `auth.store` of the file at `path` (with `${VAR}` substituted), for the command-line
/// tools, without validating (or needing the secrets of) the rest of the file.
pub fn store_url_from_file(path: &Path) -> Result<crate::store::StoreUrl, String> {
    const HOW: &str = "give the store with --store sqlite:PATH or --store postgres://... \
                       (or SWITCHYARD_STORE), or set auth.store in the configuration file \
                       named by -c (default conf/gateway.yaml)";
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no store: cannot read {}: {e}; {HOW}", path.display()))?;
    let tree: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| format!("{}: invalid YAML: {e}", path.display()))?;
    let mut store = tree
        .get("auth")
        .and_then(|a| a.get("store"))
        .cloned()
        .ok_or_else(|| {
            format!(
                "no store: auth.store is not set in {}; {HOW}",
                path.display()
            )
        })?;
    let mut problems = Vec::new();
    env::substitute(&mut store, &|name| std::env::var(name).ok(), &mut problems);
    if let Some(p) = problems.first() {
        return Err(format!("auth.store: {}", p.why));
    }
    let s = store.as_str().ok_or("auth.store must be a string")?;
    crate::store::StoreUrl::parse(s).map_err(|e| format!("auth.store: {e}"))
}

fn validate_governance(
    raw: &raw::RawConfig,
    problems: &mut Vec<Problem>,
) -> crate::governance::GovernanceSettings {
    let store = raw
        .auth
        .store
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| {
            crate::store::StoreUrl::parse(s)
                .map_err(|why| problems.push(Problem::new("auth.store", why)))
                .ok()
        });
    if raw.auth.refresh_seconds == 0 || raw.auth.refresh_seconds > 3600 {
        problems.push(Problem::new(
            "auth.refresh_seconds",
            "must be between 1 and 3600",
        ));
    }
    let redis = raw.limits.redis.clone().filter(|s| !s.trim().is_empty());
    if let Some(r) = &redis {
        if !(r.starts_with("redis://")
            || r.starts_with("rediss://")
            || r.starts_with("redis+unix://"))
        {
            problems.push(Problem::new("limits.redis", "must be a redis:// URL"));
        } else if store.is_none() {
            problems.push(Problem::new(
                "limits.redis",
                "rate limits belong to store keys: set auth.store too",
            ));
        }
    }
    crate::governance::GovernanceSettings {
        store,
        refresh: Duration::from_secs(raw.auth.refresh_seconds.clamp(1, 3600)),
        redis,
        audit_file: raw.audit.file.clone().filter(|s| !s.trim().is_empty()),
        audit_retention_days: raw.audit.retention_days,
    }
}

fn validate_admin(
    raw: &raw::RawConfig,
    server: &ServerSettings,
    governance: &crate::governance::GovernanceSettings,
    problems: &mut Vec<Problem>,
) -> Option<AdminSettings> {
    let a = raw.admin.as_ref()?;
    if a.listen.parse::<std::net::SocketAddr>().is_err() {
        problems.push(Problem::new(
            "admin.listen",
            format!("`{}` is not an IP:port address", a.listen),
        ));
    }
    if a.listen == server.listen || Some(&a.listen) == server.metrics_listen.as_ref() {
        problems.push(Problem::new(
            "admin.listen",
            "must differ from server.listen and server.metrics_listen",
        ));
    }
    if governance.store.is_none() {
        problems.push(Problem::new("admin", "the admin API needs auth.store"));
    }
    let digest = match (&a.key, &a.key_sha256) {
        (Some(k), None) if k.len() >= 16 => {
            use sha2::Digest;
            sha2::Sha256::digest(k.as_bytes()).into()
        }
        (Some(_), None) => {
            problems.push(Problem::new(
                "admin.key",
                "is too short (at least 16 characters)",
            ));
            return None;
        }
        (None, Some(h)) => {
            let mut d = [0u8; 32];
            if hex::decode_to_slice(h.trim(), &mut d).is_err() {
                problems.push(Problem::new(
                    "admin.key_sha256",
                    "must be 64 hexadecimal characters (the SHA-256 of the key)",
                ));
                return None;
            }
            d
        }
        _ => {
            problems.push(Problem::new(
                "admin",
                "needs exactly one of `key` or `key_sha256`",
            ));
            return None;
        }
    };
    Some(AdminSettings {
        listen: a.listen.clone(),
        key_sha256: digest,
        totp: a.totp,
    })
}

fn validate_server(raw: &raw::RawServer, problems: &mut Vec<Problem>) -> ServerSettings {
    let check_addr = |path: &str, addr: &str, problems: &mut Vec<Problem>| {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            problems.push(Problem::new(
                path,
                format!("`{addr}` is not an IP:port address"),
            ));
        }
    };
    check_addr("server.listen", &raw.listen, problems);
    if let Some(m) = &raw.metrics_listen {
        check_addr("server.metrics_listen", m, problems);
        if *m == raw.listen {
            problems.push(Problem::new(
                "server.metrics_listen",
                "must differ from server.listen",
            ));
        }
    }
    if let Some(t) = &raw.tls {
        check_addr("server.tls.listen", &t.listen, problems);
        if t.listen == raw.listen {
            problems.push(Problem::new(
                "server.tls.listen",
                "must differ from server.listen",
            ));
        }
        let listener = TlsListener {
            listen: t.listen.clone(),
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
            client_ca_file: t.client_ca_file.clone(),
        };
        for (path, why) in crate::tls::check(&listener) {
            problems.push(Problem::new(path, why));
        }
    }
    if raw.threads == 0 || raw.threads > 1024 {
        problems.push(Problem::new("server.threads", "must be between 1 and 1024"));
    }
    if raw.max_request_body_bytes == 0 {
        problems.push(Problem::new(
            "server.max_request_body_bytes",
            "must be greater than 0",
        ));
    }
    if raw.max_inflight_body_bytes < raw.max_request_body_bytes {
        problems.push(Problem::new(
            "server.max_inflight_body_bytes",
            "must be at least server.max_request_body_bytes (or no body of the largest size is ever accepted)",
        ));
    }
    for (path, v, max) in [
        ("server.max_header_count", raw.max_header_count, 256),
        ("server.max_header_bytes", raw.max_header_bytes, 1_048_575),
        ("server.max_connections", raw.max_connections, 1_000_000),
        (
            "server.max_streams_per_key",
            raw.max_streams_per_key.unwrap_or(1),
            1_000_000,
        ),
        (
            "server.max_requests_in_flight_per_key",
            raw.max_requests_in_flight_per_key.unwrap_or(1),
            1_000_000,
        ),
        (
            "server.client_header_timeout_seconds",
            raw.client_header_timeout_seconds,
            3600,
        ),
        (
            "server.client_body_timeout_seconds",
            raw.client_body_timeout_seconds,
            3600,
        ),
        (
            "server.client_body_total_timeout_seconds",
            raw.client_body_total_timeout_seconds,
            3600,
        ),
        (
            "server.client_write_timeout_seconds",
            raw.client_write_timeout_seconds,
            3600,
        ),
        (
            "server.keepalive_timeout_seconds",
            raw.keepalive_timeout_seconds,
            3600,
        ),
    ] {
        if v == 0 || v > max {
            problems.push(Problem::new(path, format!("must be between 1 and {max}")));
        }
    }
    for (path, v) in [
        (
            "server.upstream_connect_timeout_seconds",
            raw.upstream_connect_timeout_seconds,
        ),
        (
            "server.upstream_read_timeout_seconds",
            raw.upstream_read_timeout_seconds,
        ),
    ] {
        if v == 0 {
            problems.push(Problem::new(path, "must be greater than 0"));
        }
    }
    ServerSettings {
        listen: raw.listen.clone(),
        metrics_listen: raw.metrics_listen.clone(),
        threads: raw.threads.clamp(1, 1024) as usize,
        max_request_body_bytes: raw.max_request_body_bytes,
        max_inflight_body_bytes: raw.max_inflight_body_bytes,
        grace_period: Duration::from_secs(raw.grace_period_seconds),
        connect_timeout: Duration::from_secs(raw.upstream_connect_timeout_seconds),
        read_timeout: Duration::from_secs(raw.upstream_read_timeout_seconds),
        max_upstream_response_bytes: raw.max_upstream_response_bytes,
        access_log: raw.access_log,
        limits: ClientLimits {
            max_header_count: raw.max_header_count.clamp(1, 256) as usize,
            max_header_bytes: raw.max_header_bytes.clamp(1, 1_048_575) as usize,
            max_connections: raw.max_connections.max(1),
            per_key: crate::limits::Concurrency {
                streams: raw.max_streams_per_key.map(crate::limits::cap),
                requests: raw.max_requests_in_flight_per_key.map(crate::limits::cap),
            },
            header_timeout: Duration::from_secs(raw.client_header_timeout_seconds.max(1)),
            body_timeout: Duration::from_secs(raw.client_body_timeout_seconds.max(1)),
            body_total_timeout: Duration::from_secs(raw.client_body_total_timeout_seconds.max(1)),
            write_timeout: Duration::from_secs(raw.client_write_timeout_seconds.max(1)),
            keepalive_timeout: Duration::from_secs(raw.keepalive_timeout_seconds.max(1)),
        },
        upgrade_sock: raw.upgrade_sock.clone(),
        pid_file: raw.pid_file.clone(),
        tls: raw.tls.as_ref().map(|t| TlsListener {
            listen: t.listen.clone(),
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
            client_ca_file: t.client_ca_file.clone(),
        }),
        cors: raw
            .cors
            .as_ref()
            .and_then(|c| crate::cors::CorsPolicy::from_raw(c, problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_shipped_configs_are_valid() {
        let root = env!("CARGO_MANIFEST_DIR");
        for file in ["conf/demo.yaml", "conf/gateway.yaml"] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            let lookup =
                |name: &str| (!name.ends_with("SHA256")).then(|| format!("test-value-for-{name}"));
            if let Err(e) = Config::parse(&text, &lookup) {
                panic!("{file}: {e}");
            }
        }
    }

    #[test]
    fn the_body_budget_holds_at_least_one_largest_body() {
        let yaml = "server: {max_request_body_bytes: 2048, max_inflight_body_bytes: 1024}\n";
        let e = Config::parse(yaml, &no_env).err().unwrap();
        assert_eq!(e.0[0].path, "server.max_inflight_body_bytes");
        let c = Config::parse("server: {}\n", &no_env).ok().unwrap();
        assert_eq!(c.server.max_inflight_body_bytes, 256 * 1024 * 1024);
    }

    #[test]
    fn unknown_keys_are_errors_with_a_path() {
        let e = Config::parse("server:\n  listn: 1\n", &no_env)
            .err()
            .unwrap();
        assert_eq!(e.0[0].path, "server.listn");
        assert!(e.0[0].why.contains("listn"), "{}", e.0[0].why);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let yaml = r#"
server: {listen: "nope", threads: 0}
auth: {keys: [{user: a}]}
providers:
  openai: {auth: {method: api_key, config: {}}}
  weird: {}
model_mappings:
  m: {default_provider: ghost, providers: {ghost: {model: x}}}
routing:
  patterns: [{pattern: "([", default_provider: openai}]
"#;
        let e = Config::parse(yaml, &no_env).err().unwrap();
        let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "server.listen",
            "server.threads",
            "auth.keys[0]",
            "providers.openai.auth.config",
            "providers.weird",
            "model_mappings.m.providers.ghost",
            "routing.patterns[0].pattern",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(expected)),
                "missing {expected} in {paths:?}"
            );
        }
    }

    #[test]
    fn secrets_never_appear_in_problems() {
        let yaml = "auth: {keys: [{user: a, key: hunter2-secret, key_sha256: abc}]}\n";
        let e = Config::parse(yaml, &no_env).err().unwrap();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn wrongly_typed_values_are_not_echoed() {
        for (yaml, secret) in [
            (
                "auth: {keys: [{user: a, key: 987654321987}]}\n",
                "987654321987",
            ),
            ("server: {threads: \"hunter2-secret\"}\n", "hunter2"),
            ("server: {access_log: [s3cr3t-token]}\n", "s3cr3t"),
        ] {
            let e = Config::parse(yaml, &no_env).err().unwrap().to_string();
            assert!(!e.contains(secret), "{e}");
            assert!(e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn numbers_can_come_from_the_environment() {
        let lookup = |n: &str| (n == "THREADS").then(|| "4".to_string());
        let c = Config::parse("server: {threads: \"${THREADS}\"}\n", &lookup)
            .ok()
            .unwrap();
        assert_eq!(c.server.threads, 4);
    }
}
