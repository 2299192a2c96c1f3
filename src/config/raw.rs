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
    /// Shared rate-limit counters.
    #[serde(default)]
    pub limits: RawLimits,
    /// The admin HTTP API.
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    /// Where audit events are written as JSON lines (besides the store).
    #[serde(default)]
    pub audit: RawAudit,
    /// Stored answers of the Responses API.
    #[serde(default)]
    pub responses: RawResponses,
    /// Fetching image URLs for providers that take image bytes only.
    #[serde(default)]
    pub media: RawMedia,
    /// OpenTelemetry tracing (`crate::telemetry`).
    #[serde(default)]
    pub telemetry: crate::telemetry::RawTelemetry,
    /// The response cache's backend (`cache:`); what is cached is opted in per mapping or key.
    #[serde(default)]
    pub cache: RawCache,
}

/// `cache:`: where cached answers live.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// `memory` (default, per process) or `redis` (shared by replicas).
    #[serde(default = "default_cache_backend")]
    pub backend: String,
    /// Memory backend: the most bytes of entries held (compressed size plus overhead).
    #[serde(default = "default_cache_max_bytes", deserialize_with = "number")]
    pub max_bytes: u64,
    /// Redis backend: `redis://host:port/db`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Answers at least this long are stored zstd-compressed (when that makes them smaller).
    #[serde(default = "default_cache_compress_min", deserialize_with = "number")]
    pub compress_min_bytes: u64,
    /// The largest answer stored, in bytes (larger answers are served but not cached).
    #[serde(default = "default_cache_max_entry", deserialize_with = "number")]
    pub max_entry_bytes: u64,
}

fn default_cache_backend() -> String {
    "memory".into()
}

fn default_cache_max_bytes() -> u64 {
    256 << 20
}

fn default_cache_compress_min() -> u64 {
    1024
}

fn default_cache_max_entry() -> u64 {
    4 << 20
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            backend: default_cache_backend(),
            max_bytes: default_cache_max_bytes(),
            redis_url: None,
            compress_min_bytes: default_cache_compress_min(),
            max_entry_bytes: default_cache_max_entry(),
        }
    }
}

/// `cache:` of a model mapping or a config key: answers to its requests are cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCachePolicy {
    /// How long an answer is served from the cache.
    #[serde(deserialize_with = "number")]
    pub ttl_seconds: u64,
    /// Who shares entries: `key` (default), `user` or `shared`.
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponses {
    /// Days a stored response is kept (0: `store: true` keeps nothing).
    #[serde(
        default = "default_responses_retention_days",
        deserialize_with = "number"
    )]
    pub retention_days: u64,
    /// Without `auth.store`: the most bytes of stored responses held in memory.
    #[serde(default = "default_responses_memory", deserialize_with = "number")]
    pub memory_max_bytes: u64,
}

fn default_responses_retention_days() -> u64 {
    30
}

fn default_responses_memory() -> u64 {
    64 << 20
}

impl Default for RawResponses {
    fn default() -> Self {
        RawResponses {
            retention_days: default_responses_retention_days(),
            memory_max_bytes: default_responses_memory(),
        }
    }
}

/// `media:`: the image URL fetcher's rules (see `crate::media_fetch`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    /// Fetch `http(s)` image URLs for Bedrock, Claude on Vertex, watsonx and OCI (which take
    /// bytes only). Off: such URLs are refused with a 400, as those providers would.
    #[serde(default = "yes")]
    pub fetch_image_urls: bool,
    /// Also fetch plain `http://` URLs (default: `https://` only).
    #[serde(default)]
    pub allow_http: bool,
    /// Also fetch from loopback, private, link-local, CGNAT and IPv6 unique local addresses
    /// (never from metadata, multicast, unspecified or reserved ones).
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Largest image fetched.
    #[serde(default = "default_max_image_bytes", deserialize_with = "number")]
    pub max_image_bytes: u64,
    /// One image's whole fetch (the wait for a slot and every redirect included).
    #[serde(default = "default_fetch_timeout", deserialize_with = "number")]
    pub fetch_timeout_seconds: u64,
    /// Redirects followed per image, each checked like the first URL.
    #[serde(default = "default_max_redirects", deserialize_with = "number")]
    pub max_redirects: u64,
    /// Image fetches at once, all requests together.
    #[serde(
        default = "default_max_concurrent_fetches",
        deserialize_with = "number"
    )]
    pub max_concurrent_fetches: u64,
    /// Distinct image URLs fetched for one request (a request with more is refused).
    #[serde(
        default = "default_max_images_per_request",
        deserialize_with = "number"
    )]
    pub max_images_per_request: u64,
    /// Fetch only from these hosts (and their subdomains); empty: any host.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Never fetch from these hosts (and their subdomains); wins over `allow_hosts`.
    #[serde(default)]
    pub deny_hosts: Vec<String>,
}

fn default_max_image_bytes() -> u64 {
    20 * 1024 * 1024
}

fn default_fetch_timeout() -> u64 {
    10
}

fn default_max_redirects() -> u64 {
    3
}

fn default_max_concurrent_fetches() -> u64 {
    32
}

fn default_max_images_per_request() -> u64 {
    20
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            fetch_image_urls: true,
            allow_http: false,
            allow_private_addresses: false,
            max_image_bytes: default_max_image_bytes(),
            fetch_timeout_seconds: default_fetch_timeout(),
            max_redirects: default_max_redirects(),
            max_concurrent_fetches: default_max_concurrent_fetches(),
            max_images_per_request: default_max_images_per_request(),
            allow_hosts: Vec::new(),
            deny_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `redis://host:port/db`: rate-limit counters shared by every replica.
    #[serde(default)]
    pub redis: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The admin API's own listener (keep it private).
    pub listen: String,
    /// The admin key (usually `${SWITCHYARD_ADMIN_KEY}`), or its SHA-256.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Require a TOTP code (`x-switchyard-totp`) with the admin key. Default true.
    #[serde(default = "yes")]
    pub totp: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Append audit JSON lines to this file instead of stderr.
    #[serde(default)]
    pub file: Option<String>,
    /// Audit rows older than this many days are deleted from the store (0: never).
    #[serde(default = "default_audit_retention_days")]
    pub retention_days: u32,
}

fn default_audit_retention_days() -> u32 {
    90
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            file: None,
            retention_days: default_audit_retention_days(),
        }
    }
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
    /// Most bytes of request bodies the gateway holds at once, all requests together (503
    /// with Retry-After beyond).
    #[serde(default = "default_max_inflight_body", deserialize_with = "number")]
    pub max_inflight_body_bytes: u64,
    #[serde(default = "default_grace", deserialize_with = "number")]
    pub grace_period_seconds: u64,
    /// Connecting to an upstream (TCP + TLS).
    #[serde(default = "default_connect_timeout", deserialize_with = "number")]
    pub upstream_connect_timeout_seconds: u64,
    /// Longest wait for the next byte from an upstream (first byte or between stream chunks).
    #[serde(default = "default_read_timeout", deserialize_with = "number")]
    pub upstream_read_timeout_seconds: u64,
    /// Largest non-stream upstream body the gateway buffers for translation; on a unified-API
    /// stream, the most bytes accepted without a complete event.
    #[serde(default = "default_max_response", deserialize_with = "number")]
    pub max_upstream_response_bytes: u64,
    /// Emit one JSON access-log line per request on stdout.
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Most request header fields (431 beyond; Pingora itself stops at 256 with a bare 400).
    #[serde(default = "default_max_header_count", deserialize_with = "number")]
    pub max_header_count: u64,
    /// Most bytes in the request line and header fields together (431 beyond).
    #[serde(default = "default_max_header_bytes", deserialize_with = "number")]
    pub max_header_bytes: u64,
    /// Most client connections open at once; beyond it a new connection gets a 503 and is
    /// closed.
    #[serde(default = "default_max_connections", deserialize_with = "number")]
    pub max_connections: u64,
    /// Most streaming requests one gateway key may have open at once (429 with Retry-After
    /// beyond); unset: no cap. A key's own `max_streams` overrides it.
    #[serde(default, deserialize_with = "optional_number")]
    pub max_streams_per_key: Option<u64>,
    /// Most requests (streaming or not) one gateway key may have in flight at once (429 with
    /// Retry-After beyond); unset: no cap. A key's own `max_requests_in_flight` overrides it.
    #[serde(default, deserialize_with = "optional_number")]
    pub max_requests_in_flight_per_key: Option<u64>,
    /// Longest time a client may take to send a request's headers (slowloris); the
    /// connection is closed when it runs out.
    #[serde(default = "default_client_header_timeout", deserialize_with = "number")]
    pub client_header_timeout_seconds: u64,
    /// Longest pause while a client sends a request body (408 when it runs out).
    #[serde(default = "default_client_body_timeout", deserialize_with = "number")]
    pub client_body_timeout_seconds: u64,
    /// Longest time a client may take to send a whole request body, counted from the end of
    /// its header (408 when it runs out), so a trickle of bytes cannot hold a connection.
    #[serde(
        default = "default_client_body_total_timeout",
        deserialize_with = "number"
    )]
    pub client_body_total_timeout_seconds: u64,
    /// Longest a write to a client may wait (a client that stops reading its answer or
    /// stream); the connection is closed when it runs out.
    #[serde(default = "default_client_write_timeout", deserialize_with = "number")]
    pub client_write_timeout_seconds: u64,
    /// How long an idle keep-alive connection waits for its next request.
    #[serde(default = "default_keepalive_timeout", deserialize_with = "number")]
    pub keepalive_timeout_seconds: u64,
    /// An HTTPS listener (HTTP/1.1 and HTTP/2) in addition to `listen`.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Unix socket over which a new process takes the listeners in a graceful upgrade.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
    /// Cross-origin requests from browsers; absent: off (no CORS headers, preflights need a key).
    #[serde(default)]
    pub cors: Option<RawCors>,
}

/// `server.cors` (see `crate::cors`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Serialized origins (`https://app.example.com`), or `["*"]` for any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub allowed_methods: Vec<String>,
    /// `["*"]` (default): whatever the preflight asks for, `Authorization` included.
    #[serde(default = "star")]
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default = "default_cors_expose")]
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    #[serde(default = "default_cors_max_age", deserialize_with = "number")]
    pub max_age_seconds: u64,
    /// Let browsers send cookies / client certificates and read the answer
    /// (`Access-Control-Allow-Credentials: true`); not with `*` anywhere.
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_cors_methods() -> Vec<String> {
    vec!["GET".into(), "POST".into()]
}
fn star() -> Vec<String> {
    vec!["*".into()]
}
fn default_cors_expose() -> Vec<String> {
    [
        "x-request-id",
        "x-switchyard-request-id",
        "x-switchyard-provider",
        "x-switchyard-model",
        "x-switchyard-attempts",
        "x-switchyard-dropped-params",
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ]
    .map(String::from)
    .to_vec()
}
fn default_cors_max_age() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: String,
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// With a CA bundle here, callers must present a client certificate it issued (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<String>,
}

fn default_upgrade_sock() -> String {
    "/tmp/switchyard-upgrade.sock".into()
}
fn default_pid_file() -> String {
    "/tmp/switchyard.pid".into()
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            metrics_listen: None,
            threads: default_threads(),
            max_request_body_bytes: default_max_body(),
            max_inflight_body_bytes: default_max_inflight_body(),
            grace_period_seconds: default_grace(),
            upstream_connect_timeout_seconds: default_connect_timeout(),
            upstream_read_timeout_seconds: default_read_timeout(),
            max_upstream_response_bytes: default_max_response(),
            access_log: true,
            max_header_count: default_max_header_count(),
            max_header_bytes: default_max_header_bytes(),
            max_connections: default_max_connections(),
            max_streams_per_key: None,
            max_requests_in_flight_per_key: None,
            client_header_timeout_seconds: default_client_header_timeout(),
            client_body_timeout_seconds: default_client_body_timeout(),
            client_body_total_timeout_seconds: default_client_body_total_timeout(),
            client_write_timeout_seconds: default_client_write_timeout(),
            keepalive_timeout_seconds: default_keepalive_timeout(),
            upgrade_sock: default_upgrade_sock(),
            pid_file: default_pid_file(),
            tls: None,
            cors: None,
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
fn default_max_inflight_body() -> u64 {
    256 * 1024 * 1024
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
fn default_max_header_count() -> u64 {
    100
}
fn default_max_header_bytes() -> u64 {
    32 * 1024
}
fn default_max_connections() -> u64 {
    10_000
}
fn default_client_header_timeout() -> u64 {
    30
}
fn default_client_body_timeout() -> u64 {
    60
}
fn default_client_body_total_timeout() -> u64 {
    60
}
fn default_client_write_timeout() -> u64 {
    60
}
fn default_keepalive_timeout() -> u64 {
    60
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// The governance store: `sqlite:PATH` or `postgres://...`.
    #[serde(default)]
    pub store: Option<String>,
    /// How often store keys, budgets and spend are reloaded.
    #[serde(default = "default_refresh", deserialize_with = "number")]
    pub refresh_seconds: u64,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            store: None,
            refresh_seconds: default_refresh(),
        }
    }
}

fn default_refresh() -> u64 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub user: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// This key's own cap on open streams (overrides `server.max_streams_per_key`).
    #[serde(default, deserialize_with = "optional_number")]
    pub max_streams: Option<u64>,
    /// This key's own cap on requests in flight (overrides
    /// `server.max_requests_in_flight_per_key`).
    #[serde(default, deserialize_with = "optional_number")]
    pub max_requests_in_flight: Option<u64>,
    /// Cache this key's answers (overrides a mapping's `cache`).
    #[serde(default)]
    pub cache: Option<RawCachePolicy>,
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
    /// Active health check: a cheap authenticated GET at an interval.
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    /// Model names this provider serves under their own names: they route here (after
    /// `model_mappings`, before `routing.patterns`) and are listed by `/v1/models`. The mock
    /// declares `mock-fast` and `mock-embed` unless this is set.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Path (and query) below the endpoint, e.g. `/v1/models`.
    pub path: String,
    #[serde(default = "default_check_interval", deserialize_with = "number")]
    pub interval_seconds: u64,
}

fn default_check_interval() -> u64 {
    30
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
    /// Providers tried after this mapping's own, in order (on top of `routing.fallback`).
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Overrides `routing.load_balancing.strategy` for this model.
    #[serde(default)]
    pub load_balancing: Option<String>,
    /// Start the next provider too when the first has not answered within this many ms, and
    /// use whichever answers first.
    #[serde(default)]
    pub hedge_after_ms: Option<u64>,
    /// Cache answers for this model.
    #[serde(default)]
    pub cache: Option<RawCachePolicy>,
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
    /// Bedrock: `converse` (default) or `invoke` (Anthropic models via InvokeModel).
    #[serde(default)]
    pub api: Option<String>,
    /// Share of traffic for the `weighted` strategy (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    #[serde(default)]
    pub patterns: Vec<RawPattern>,
    #[serde(default)]
    pub fallback: RawFallback,
    #[serde(default)]
    pub load_balancing: RawLoadBalancing,
    #[serde(default)]
    pub retries: RawRetries,
    #[serde(default)]
    pub health: RawHealth,
    /// Total time for a request until its answer starts (all attempts and backoff included).
    #[serde(default = "default_routing_timeout", deserialize_with = "number")]
    pub timeout_seconds: u64,
    /// Longest wait for an upstream's response headers, per attempt (default:
    /// `server.upstream_read_timeout_seconds`).
    #[serde(default, deserialize_with = "optional_number")]
    pub first_byte_timeout_seconds: Option<u64>,
    /// Longest time a started stream may go without a complete event (SSE comments and
    /// partial events do not count) before it is ended with an error event (default:
    /// `server.upstream_read_timeout_seconds`).
    #[serde(default, deserialize_with = "optional_number")]
    pub stream_idle_timeout_seconds: Option<u64>,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            fallback: RawFallback::default(),
            load_balancing: RawLoadBalancing::default(),
            retries: RawRetries::default(),
            health: RawHealth::default(),
            timeout_seconds: default_routing_timeout(),
            first_byte_timeout_seconds: None,
            stream_idle_timeout_seconds: None,
        }
    }
}

fn default_routing_timeout() -> u64 {
    120
}

/// Retries on the same provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Attempts per provider, the first included (1 = no retry).
    #[serde(default = "one", deserialize_with = "number")]
    pub max_attempts: u64,
    #[serde(default = "default_backoff_initial", deserialize_with = "number")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max", deserialize_with = "number")]
    pub backoff_max_ms: u64,
}

impl Default for RawRetries {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
        }
    }
}

fn one() -> u64 {
    1
}
fn default_backoff_initial() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    2000
}

/// Passive health: consecutive failures open a provider's circuit for a cool-down.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default = "default_failure_threshold", deserialize_with = "number")]
    pub failure_threshold: u64,
    #[serde(default = "default_cooldown", deserialize_with = "number")]
    pub cooldown_seconds: u64,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            failure_threshold: default_failure_threshold(),
            cooldown_seconds: default_cooldown(),
        }
    }
}

fn default_failure_threshold() -> u64 {
    5
}
fn default_cooldown() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    pub pattern: String,
    pub default_provider: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    #[serde(default)]
    pub enabled: bool,
    /// Providers tried, in order, after a model's own providers (the model name passes
    /// through unchanged to them).
    #[serde(default)]
    pub providers: Vec<String>,
    /// What makes the next provider be tried: `connect`, `timeout`, `429`, `5xx`, or a status.
    #[serde(default = "default_fallback_on")]
    pub on: Vec<String>,
}

impl Default for RawFallback {
    fn default() -> Self {
        Self {
            enabled: false,
            providers: Vec::new(),
            on: default_fallback_on(),
        }
    }
}

fn default_fallback_on() -> Vec<String> {
    ["connect", "timeout", "429", "5xx"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoadBalancing {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "round_robin")]
    pub strategy: String,
    /// `cheapest`: the output tokens expected of a request that sets no `max_tokens`.
    #[serde(default = "default_output_tokens", deserialize_with = "number")]
    pub default_output_tokens: u64,
}

impl Default for RawLoadBalancing {
    fn default() -> Self {
        Self {
            enabled: false,
            strategy: round_robin(),
            default_output_tokens: default_output_tokens(),
        }
    }
}

fn default_output_tokens() -> u64 {
    256
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
    /// USD per 1M input tokens read from the provider's prompt cache (default: `input`).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// USD per 1M input tokens written to the provider's prompt cache (default: `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// USD per 1M input tokens written with a one-hour cache lifetime (Anthropic's `ttl: 1h`;
    /// default: `cache_write`).
    #[serde(default)]
    pub cache_write_1h: Option<f64>,
}

fn optional_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    number(d).map(Some)
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
        NumOrString::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("expected a non-negative integer")),
    }
}
