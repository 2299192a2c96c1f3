//! The SSRF-safe image URL fetcher: for providers that take image bytes only (Bedrock, Claude
//! on Vertex, watsonx, OCI), the gateway downloads a request's `http(s)` image URLs itself and
//! hands those providers' translators `data:` URLs instead (`pipeline/images.rs` fetches before
//! the first attempt at such a provider, [`FetchedOnce`] keeps the result for later ones).
//!
//! The rules (`media:` in the configuration, docs/RELIABILITY.md § Security):
//! - `https://` only unless `allow_http`; no credentials in the URL;
//! - the host must pass `deny_hosts` / `allow_hosts` (an entry matches the host and its
//!   subdomains);
//! - every address the host resolves to must be public: loopback, private, link-local, CGNAT,
//!   cloud metadata, unspecified, multicast, documentation/reserved, IPv6 unique local and the
//!   IPv4-mapped / NAT64 / 6to4 forms of those are refused (the first five and ULA only until
//!   `allow_private_addresses`; the rest always). The check is made by the HTTP client's own
//!   resolver ([`GuardedResolver`]), so the address checked is the address connected to (no
//!   DNS rebinding window); IP-literal hosts are checked before the request;
//! - redirects are followed by hand, at most `max_redirects`, each hop checked again;
//! - `max_image_bytes` (Content-Length first, then chunk by chunk), one total timeout per image
//!   (the wait for a slot included), at most `max_concurrent_fetches` at once, no proxy, no
//!   connection reuse;
//! - the bytes must be PNG, JPEG, GIF or WebP by their magic bytes, which also give the type.
//!
//! Each fetch counts in `ai_proxy_media_fetches_total{result, reason}`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use switchyard_filters::chat::request::Part;
use switchyard_filters::chat::ChatRequest;
use switchyard_filters::translate::Dialect;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::errors::GatewayError;
use crate::metrics::Metrics;

/// `media:`: whether and how image URLs are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    pub allow_http: bool,
    pub allow_private_addresses: bool,
    pub max_image_bytes: u64,
    pub timeout: Duration,
    pub max_redirects: u32,
    pub max_concurrent: u32,
    /// Distinct image URLs fetched for one request (more: refused).
    pub max_images_per_request: u32,
    /// Lower-case host names (no trailing dot); empty: every host.
    pub allow_hosts: Vec<String>,
    pub deny_hosts: Vec<String>,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            allow_http: false,
            allow_private_addresses: false,
            max_image_bytes: 20 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            max_redirects: 3,
            max_concurrent: 32,
            max_images_per_request: 20,
            allow_hosts: Vec::new(),
            deny_hosts: Vec::new(),
        }
    }
}

/// Why an address is not fetched: the kinds of non-public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    Loopback,
    Private,
    LinkLocal,
    Cgnat,
    Metadata,
    Unspecified,
    Multicast,
    Documentation,
    Reserved,
    UniqueLocal,
}

impl AddrClass {
    /// The metric `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link_local",
            AddrClass::Cgnat => "cgnat",
            AddrClass::Metadata => "metadata",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Multicast => "multicast",
            AddrClass::Documentation => "documentation",
            AddrClass::Reserved => "reserved",
            AddrClass::UniqueLocal => "unique_local",
        }
    }

    /// "a loopback address", for messages.
    fn described(self) -> &'static str {
        match self {
            AddrClass::Loopback => "a loopback address",
            AddrClass::Private => "a private address",
            AddrClass::LinkLocal => "a link-local address",
            AddrClass::Cgnat => "a carrier-grade NAT (CGNAT) address",
            AddrClass::Metadata => "a cloud metadata address",
            AddrClass::Unspecified => "an unspecified address",
            AddrClass::Multicast => "a multicast address",
            AddrClass::Documentation => "a documentation address",
            AddrClass::Reserved => "a reserved address",
            AddrClass::UniqueLocal => "an IPv6 unique local address",
        }
    }

    /// Whether `allow_private_addresses` lets the gateway fetch from it (local test servers,
    /// sidecars, intranet image stores). Metadata, multicast, unspecified and reserved
    /// addresses are never fetched.
    fn allowable(self) -> bool {
        matches!(
            self,
            AddrClass::Loopback
                | AddrClass::Private
                | AddrClass::LinkLocal
                | AddrClass::Cgnat
                | AddrClass::UniqueLocal
        )
    }
}

/// The class of a non-public address; None for a public one.
pub fn classify(ip: IpAddr) -> Option<AddrClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddrClass> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        // Cloud metadata services: AWS/GCP/Azure/OCI, Alibaba, Azure's wire server.
        (169, 254, 169, 254) | (100, 100, 100, 200) | (168, 63, 129, 16) => AddrClass::Metadata,
        (0, ..) => AddrClass::Unspecified,
        (127, ..) => AddrClass::Loopback,
        (10, ..) | (192, 168, ..) => AddrClass::Private,
        (172, 16..=31, ..) => AddrClass::Private,
        (100, 64..=127, ..) => AddrClass::Cgnat,
        (169, 254, ..) => AddrClass::LinkLocal,
        (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => AddrClass::Documentation,
        // IETF protocol assignments, 6to4 relay anycast, benchmarking.
        (192, 0, 0, _) | (192, 88, 99, _) | (198, 18..=19, ..) => AddrClass::Reserved,
        (224..=239, ..) => AddrClass::Multicast,
        // 240.0.0.0/4 and the broadcast address.
        (240..=255, ..) => AddrClass::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddrClass> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(AddrClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddrClass::Loopback);
    }
    let v4_tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d): the IPv4 address's class.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(v4_tail());
    }
    // 6to4 (2002:AABB:CCDD::/48) embeds the IPv4 address a.b.c.d.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return classify_v4(v4);
    }
    // AWS's IPv6 instance metadata endpoint (inside the ULA range).
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Some(AddrClass::Metadata);
    }
    Some(match s[0] {
        // IPv4-compatible (::a.b.c.d, deprecated), the rest of ::/8, discard-only 100::/64.
        0x0000 | 0x0100 => AddrClass::Reserved,
        // NAT64 local use 64:ff9b:1::/48.
        0x0064 if s[1] == 0xff9b && s[2] == 1 => AddrClass::Private,
        // 2001:db8::/32 and 3fff::/20.
        0x2001 if s[1] == 0x0db8 => AddrClass::Documentation,
        0x3fff if s[1] < 0x1000 => AddrClass::Documentation,
        // IETF protocol assignments 2001::/23 (Teredo, ORCHIDs, benchmarking).
        0x2001 if s[1] < 0x0200 => AddrClass::Reserved,
        x if x & 0xfe00 == 0xfc00 => AddrClass::UniqueLocal,
        x if x & 0xffc0 == 0xfe80 => AddrClass::LinkLocal,
        // Site-local (deprecated fec0::/10).
        x if x & 0xffc0 == 0xfec0 => AddrClass::Private,
        x if x & 0xff00 == 0xff00 => AddrClass::Multicast,
        _ => return None,
    })
}

/// Why an image was not fetched. Messages name what the client can fix and never the
/// gateway's internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Not a URL the gateway can parse, or one with credentials.
    BadUrl(&'static str),
    Scheme {
        http_allowed: bool,
    },
    HostDenied(String),
    HostNotAllowed(String),
    Address {
        class: AddrClass,
        ip: IpAddr,
        /// The URL gave the address itself (an IP literal): named in the message. An
        /// address a name resolved to is not (the gateway is no oracle for internal DNS).
        literal: bool,
    },
    TooManyRedirects(u32),
    /// More distinct image URLs in one request than `max_images_per_request`.
    TooManyImages(u32),
    TooLarge(u64),
    NotImage,
    /// The total timeout ran out (the wait for a fetch slot included).
    Timeout(Duration),
    /// Every fetch slot stayed busy for the whole timeout.
    Busy,
    Unresolvable,
    Connect,
    Status(u16),
}

impl FetchError {
    /// `ai_proxy_media_fetches_total{result}`: `refused` by a rule, or `failed`.
    pub fn result(&self) -> &'static str {
        match self {
            FetchError::BadUrl(_)
            | FetchError::Scheme { .. }
            | FetchError::HostDenied(_)
            | FetchError::HostNotAllowed(_)
            | FetchError::Address { .. }
            | FetchError::TooManyRedirects(_)
            | FetchError::TooManyImages(_)
            | FetchError::TooLarge(_)
            | FetchError::NotImage => "refused",
            FetchError::Timeout(_)
            | FetchError::Busy
            | FetchError::Unresolvable
            | FetchError::Connect
            | FetchError::Status(_) => "failed",
        }
    }

    /// `ai_proxy_media_fetches_total{reason}` (a bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::BadUrl(_) => "bad_url",
            FetchError::Scheme { .. } => "scheme",
            FetchError::HostDenied(_) => "host_denied",
            FetchError::HostNotAllowed(_) => "host_not_allowed",
            FetchError::Address { class, .. } => class.as_str(),
            FetchError::TooManyRedirects(_) => "redirects",
            FetchError::TooManyImages(_) => "too_many_images",
            FetchError::TooLarge(_) => "too_large",
            FetchError::NotImage => "not_image",
            FetchError::Timeout(_) => "timeout",
            FetchError::Busy => "busy",
            FetchError::Unresolvable => "dns",
            FetchError::Connect => "connect",
            FetchError::Status(_) => "status",
        }
    }

    /// The gateway's error for the client, naming the part (`param`).
    pub fn into_gateway_error(self, param: String) -> GatewayError {
        if self == FetchError::Busy {
            return GatewayError::MediaFetchBusy;
        }
        GatewayError::InvalidRequest {
            message: format!("Invalid '{param}': {self}"),
            param: Some(param),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadUrl(why) => write!(f, "the image URL {why}."),
            FetchError::Scheme { http_allowed: true } => f.write_str(
                "the gateway fetches only http:// and https:// image URLs (or send a data: URL).",
            ),
            FetchError::Scheme {
                http_allowed: false,
            } => f.write_str("the gateway fetches only https:// image URLs (or send a data: URL)."),
            FetchError::HostDenied(h) => {
                write!(
                    f,
                    "the gateway does not fetch images from `{h}` (denied host)."
                )
            }
            FetchError::HostNotAllowed(h) => write!(
                f,
                "the gateway does not fetch images from `{h}` (not an allowed host)."
            ),
            FetchError::Address {
                class,
                ip,
                literal: true,
            } => write!(
                f,
                "the image URL resolves to {} ({ip}), which the gateway does not fetch.",
                class.described()
            ),
            FetchError::Address { class, .. } => write!(
                f,
                "the image URL's host resolves to {}, which the gateway does not fetch.",
                class.described()
            ),
            FetchError::TooManyRedirects(n) => {
                write!(f, "the image URL redirects more than {n} times.")
            }
            FetchError::TooManyImages(n) => write!(
                f,
                "the request has more than {n} image URLs, the most the gateway fetches for one request; send the others as data: URLs."
            ),
            FetchError::TooLarge(limit) => {
                write!(
                    f,
                    "the image is larger than the gateway fetches ({limit} bytes)."
                )
            }
            FetchError::NotImage => {
                f.write_str("the URL did not return a PNG, JPEG, GIF or WebP image.")
            }
            FetchError::Timeout(t) => write!(
                f,
                "the image could not be fetched in time (the gateway allows {} s per image).",
                t.as_secs_f64()
            ),
            FetchError::Busy => f.write_str("the gateway is fetching too many images; retry."),
            FetchError::Unresolvable => f.write_str("the image URL's host could not be resolved."),
            FetchError::Connect => f.write_str("the image URL's host could not be reached."),
            FetchError::Status(s) => write!(f, "fetching the image URL returned HTTP {s}."),
        }
    }
}

impl std::error::Error for FetchError {}

/// An image fetched: its type (from its magic bytes) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub mime: &'static str,
    pub bytes: Vec<u8>,
}

impl Fetched {
    /// As a `data:<mime>;base64,…` URL.
    pub fn data_url(&self) -> String {
        let engine = &base64::engine::general_purpose::STANDARD;
        let prefix = "data:;base64,".len() + self.mime.len();
        let mut out = String::with_capacity(prefix + self.bytes.len().div_ceil(3) * 4);
        out.push_str("data:");
        out.push_str(self.mime);
        out.push_str(";base64,");
        engine.encode_string(&self.bytes, &mut out);
        out
    }
}

/// The image type from its first bytes: PNG, JPEG, GIF or WebP.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The HTTP client's resolver: resolves with tokio and refuses names with any non-public
/// address (unless `allow_private_addresses` and the class allows it).
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|_| Box::new(FetchError::Unresolvable))?
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(FetchError::Unresolvable).into());
            }
            // One bad address refuses the name: a host may not mix public and internal
            // addresses to get the second tried.
            for a in &addrs {
                check_ip(a.ip(), allow_private, false)?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

fn check_ip(ip: IpAddr, allow_private: bool, literal: bool) -> Result<(), FetchError> {
    match classify(ip) {
        Some(class) if !(allow_private && class.allowable()) => {
            Err(FetchError::Address { class, ip, literal })
        }
        _ => Ok(()),
    }
}

/// Downloads image URLs under the `media:` rules; one per configuration.
pub struct ImageFetcher {
    settings: MediaSettings,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl fmt::Debug for ImageFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageFetcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ImageFetcher {
    /// The fetcher for these settings (the error: the HTTP client could not be set up).
    pub fn new(settings: MediaSettings) -> Result<ImageFetcher, String> {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private_addresses,
            }))
            .connect_timeout(settings.timeout)
            // Every fetch resolves (and so checks) afresh.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
        let client = crate::providers::trust::token_client(
            builder,
            None,
            crate::providers::trust::SystemRoots::BestEffort,
        )
        .map_err(|e| format!("cannot set up the image fetcher: {e:?}"))?;
        let slots = Arc::new(Semaphore::new(settings.max_concurrent.max(1) as usize));
        Ok(ImageFetcher {
            settings,
            client,
            slots,
        })
    }

    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// Fetches one image URL, within the total timeout (the wait for a slot included).
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let deadline = Instant::now() + self.settings.timeout;
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(FetchError::Busy),
        };
        match tokio::time::timeout_at(deadline, self.fetch_hops(url)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.settings.timeout)),
        }
    }

    async fn fetch_hops(&self, url: &str) -> Result<Fetched, FetchError> {
        let mut url = Url::parse(url).map_err(|_| FetchError::BadUrl("is not a valid URL"))?;
        let mut hops = 0;
        loop {
            self.check_url(&url)?;
            let resp = self
                .client
                .get(url.clone())
                .header(http::header::ACCEPT, "image/*")
                .send()
                .await
                .map_err(|e| send_error(&e))?;
            let status = resp.status();
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                if hops >= self.settings.max_redirects {
                    return Err(FetchError::TooManyRedirects(self.settings.max_redirects));
                }
                hops += 1;
                let next = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| url.join(loc).ok())
                    .ok_or(FetchError::BadUrl("redirects to an invalid location"))?;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            return self.read_image(resp).await;
        }
    }

    /// Scheme, credentials, host lists and IP-literal hosts (names are checked by the
    /// resolver).
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        let s = &self.settings;
        match url.scheme() {
            "https" => {}
            "http" if s.allow_http => {}
            _ => {
                return Err(FetchError::Scheme {
                    http_allowed: s.allow_http,
                })
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::BadUrl("must not contain credentials"));
        }
        let Some(raw) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(FetchError::BadUrl("has no host"));
        };
        // IP literals (the URL parser has normalised every IPv4 spelling) are checked here:
        // the client connects to them without asking the resolver.
        let literal = raw.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host = match literal.unwrap_or(raw).parse::<IpAddr>() {
            Ok(ip) => {
                check_ip(ip, s.allow_private_addresses, true)?;
                ip.to_string()
            }
            Err(_) => raw.trim_end_matches('.').to_ascii_lowercase(),
        };
        if s.deny_hosts.iter().any(|h| host_matches(&host, h)) {
            return Err(FetchError::HostDenied(host));
        }
        if !s.allow_hosts.is_empty() && !s.allow_hosts.iter().any(|h| host_matches(&host, h)) {
            return Err(FetchError::HostNotAllowed(host));
        }
        Ok(())
    }

    async fn read_image(&self, mut resp: reqwest::Response) -> Result<Fetched, FetchError> {
        let limit = self.settings.max_image_bytes;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge(limit));
        }
        // A declared type that is plainly not an image ends the fetch before the body.
        if let Some(ct) = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            let ct = ct.trim_start().to_ascii_lowercase();
            if !(ct.starts_with("image/")
                || ct.starts_with("application/octet-stream")
                || ct.starts_with("binary/octet-stream"))
            {
                return Err(FetchError::NotImage);
            }
        }
        let mut bytes = Vec::with_capacity(
            resp.content_length()
                .unwrap_or(0)
                .min(limit)
                .min(1024 * 1024) as usize,
        );
        while let Some(chunk) = resp.chunk().await.map_err(|_| FetchError::Connect)? {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(FetchError::TooLarge(limit));
            }
            if bytes.len() < 12 && bytes.len() + chunk.len() >= 12 {
                let mut head = [0u8; 12];
                let have = bytes.len();
                head[..have].copy_from_slice(&bytes);
                head[have..].copy_from_slice(&chunk[..12 - have]);
                if sniff_image(&head).is_none() {
                    return Err(FetchError::NotImage);
                }
            }
            bytes.extend_from_slice(&chunk);
        }
        let mime = sniff_image(&bytes).ok_or(FetchError::NotImage)?;
        Ok(Fetched { mime, bytes })
    }
}

/// Whether `host` is `entry` or one of its subdomains.
fn host_matches(host: &str, entry: &str) -> bool {
    host == entry
        || (host.len() > entry.len()
            && host.ends_with(entry)
            && host.as_bytes()[host.len() - entry.len() - 1] == b'.')
}

/// Our own refusal when the resolver gave it, else a connection failure.
fn send_error(e: &reqwest::Error) -> FetchError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(f) = err.downcast_ref::<FetchError>() {
            return f.clone();
        }
        src = err.source();
    }
    FetchError::Connect
}

/// Whether a dialect takes images as bytes only, so the gateway must fetch URLs for it:
/// Bedrock (Converse and Claude on InvokeModel), Claude on Vertex AI, watsonx and OCI GENERIC.
/// The Anthropic API, OpenAI, Azure OpenAI and Gemini fetch URLs themselves; OCI COHERE takes
/// no images at all.
pub fn needs_image_bytes(dialect: Dialect) -> bool {
    matches!(
        dialect,
        Dialect::BedrockConverse
            | Dialect::BedrockAnthropic
            | Dialect::VertexAnthropic
            | Dialect::Watsonx
            | Dialect::OciGeneric
    )
}

fn is_fetchable(url: &str) -> bool {
    let head = url.get(..8).unwrap_or(url);
    head.eq_ignore_ascii_case("https://")
        || head
            .get(..7)
            .is_some_and(|h| h.eq_ignore_ascii_case("http://"))
}

/// Whether the request has an `http(s)` image URL (a scan, no allocation).
pub fn has_image_urls(req: &ChatRequest) -> bool {
    req.messages.iter().any(|m| {
        m.content
            .iter()
            .any(|p| matches!(p, Part::Image { url, .. } if is_fetchable(url)))
    })
}

/// The client's chat request with its image URLs fetched, made on the first attempt at a
/// provider that needs bytes and reused by every later attempt (retries, fallbacks, the
/// hedged race): one fetch per image per request, and none when no such provider is tried.
#[derive(Default)]
pub struct FetchedOnce(tokio::sync::OnceCell<Result<Box<ChatRequest>, GatewayError>>);

impl FetchedOnce {
    /// Fetches `req`'s image URLs unless done already (concurrent callers wait for the one
    /// fetch).
    pub async fn fetch(&self, fetcher: &ImageFetcher, metrics: &Metrics, req: &ChatRequest) {
        self.0
            .get_or_init(|| async {
                let mut fetched = Box::new(req.clone());
                inline_image_urls(fetcher, metrics, &mut fetched)
                    .await
                    .map(|()| fetched)
            })
            .await;
    }

    /// The fetched request (or why it could not be), once [`Self::fetch`] has run.
    pub fn get(&self) -> Option<&Result<Box<ChatRequest>, GatewayError>> {
        self.0.get()
    }
}

/// Replaces every `http(s)` image URL of `req` by the image's `data:` URL, fetching each
/// distinct URL once (concurrently, bounded by the fetcher). The first failure, in message
/// order, is the client's 400 naming its part.
pub async fn inline_image_urls(
    fetcher: &ImageFetcher,
    metrics: &Metrics,
    req: &mut ChatRequest,
) -> Result<(), GatewayError> {
    // (message, part) of each URL image, and the distinct URLs.
    let mut at: Vec<(usize, usize, usize)> = Vec::new();
    let mut urls: Vec<&str> = Vec::new();
    let cap = fetcher.settings.max_images_per_request as usize;
    for (i, m) in req.messages.iter().enumerate() {
        for (j, p) in m.content.iter().enumerate() {
            if let Part::Image { url, .. } = p {
                if is_fetchable(url) {
                    let k = match urls.iter().position(|u| u == url) {
                        Some(k) => k,
                        None if urls.len() >= cap => {
                            let e = FetchError::TooManyImages(cap as u32);
                            metrics
                                .media_fetches
                                .with_label_values(&[e.result(), e.reason()])
                                .inc();
                            return Err(e.into_gateway_error(format!(
                                "messages[{i}].content[{j}].image_url"
                            )));
                        }
                        None => {
                            urls.push(url);
                            urls.len() - 1
                        }
                    };
                    at.push((i, j, k));
                }
            }
        }
    }
    if urls.is_empty() {
        return Ok(());
    }
    let results = futures_util::future::join_all(urls.iter().map(|u| fetcher.fetch(u))).await;
    for r in &results {
        let (result, reason) = match r {
            Ok(_) => ("ok", "ok"),
            Err(e) => (e.result(), e.reason()),
        };
        metrics
            .media_fetches
            .with_label_values(&[result, reason])
            .inc();
    }
    let mut data: Vec<Option<String>> = Vec::with_capacity(results.len());
    let mut errors: Vec<Option<FetchError>> = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(f) => {
                data.push(Some(f.data_url()));
                errors.push(None);
            }
            Err(e) => {
                data.push(None);
                errors.push(Some(e));
            }
        }
    }
    for &(i, j, k) in &at {
        if let Some(e) = errors[k].take() {
            return Err(e.into_gateway_error(format!("messages[{i}].content[{j}].image_url")));
        }
    }
    for &(i, j, k) in &at {
        let Some(Part::Image { url, .. }) =
            req.messages.get_mut(i).and_then(|m| m.content.get_mut(j))
        else {
            continue;
        };
        if let Some(d) = &data[k] {
            d.clone_into(url);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<AddrClass> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges_are_classified() {
        use AddrClass::*;
        let cases = [
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("168.63.129.16", Some(Metadata)),
            ("192.0.2.10", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("192.0.0.8", Some(Reserved)),
            ("192.88.99.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.19.255.255", Some(Reserved)),
            ("198.20.0.1", None),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Reserved)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("192.169.0.1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_are_classified() {
        use AddrClass::*;
        let cases = [
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some(Private)),
            ("2002:7f00:1::1", Some(Loopback)),
            ("2002:a9fe:a9fe::", Some(Metadata)),
            ("2002:808:808::1", None),
            ("::127.0.0.1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001::1", Some(Reserved)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn allow_private_never_opens_metadata_or_reserved() {
        let ok = |s: &str| check_ip(s.parse().unwrap(), true, true).is_ok();
        assert!(ok("127.0.0.1") && ok("10.0.0.1") && ok("100.64.0.1") && ok("fd00::1"));
        assert!(ok("169.254.1.1"));
        assert!(!ok("169.254.169.254") && !ok("0.0.0.0") && !ok("224.0.0.1"));
        assert!(!ok("192.0.2.1") && !ok("fd00:ec2::254") && !ok("::"));
        assert!(check_ip("127.0.0.1".parse().unwrap(), false, true).is_err());
        assert!(check_ip("8.8.8.8".parse().unwrap(), false, true).is_ok());
    }

    #[test]
    fn refusal_names_the_class_and_address() {
        let e = FetchError::Address {
            class: AddrClass::Loopback,
            ip: "127.0.0.1".parse().unwrap(),
            literal: true,
        };
        let by_name = FetchError::Address {
            class: AddrClass::Private,
            ip: "10.1.2.3".parse().unwrap(),
            literal: false,
        };
        assert_eq!(
            by_name.to_string(),
            "the image URL's host resolves to a private address, which the gateway does not fetch."
        );
        let g = e.into_gateway_error("messages[0].content[1].image_url".into());
        assert_eq!(g.status(), 400);
        assert_eq!(g.param(), Some("messages[0].content[1].image_url"));
        assert_eq!(
            g.to_string(),
            "Invalid 'messages[0].content[1].image_url': the image URL resolves to a loopback address (127.0.0.1), which the gateway does not fetch."
        );
    }

    #[test]
    fn magic_bytes_give_the_type() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n\0\0"), Some("image/png"));
        assert_eq!(sniff_image(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff_image(b"GIF87a"), Some("image/gif"));
        assert_eq!(sniff_image(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(sniff_image(b"<html>"), None);
        assert_eq!(sniff_image(b""), None);
        assert_eq!(sniff_image(&[0xff, 0xd8]), None);
    }

    #[test]
    fn host_lists_match_subdomains_only_at_a_dot() {
        assert!(host_matches("example.com", "example.com"));
        assert!(host_matches("img.example.com", "example.com"));
        assert!(!host_matches("badexample.com", "example.com"));
        assert!(!host_matches("example.com.evil", "example.com"));
        assert!(!host_matches("com", "example.com"));
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let f = ImageFetcher::new(MediaSettings {
            deny_hosts: vec!["bad.test".into()],
            allow_hosts: vec!["good.test".into(), "bad.test".into()],
            ..MediaSettings::default()
        })
        .unwrap();
        let check = |u: &str| f.check_url(&Url::parse(u).unwrap());
        assert_eq!(check("https://img.good.test/a.png"), Ok(()));
        assert_eq!(
            check("http://good.test/a.png"),
            Err(FetchError::Scheme {
                http_allowed: false
            })
        );
        assert_eq!(
            check("ftp://good.test/a.png"),
            Err(FetchError::Scheme {
                http_allowed: false
            })
        );
        assert_eq!(
            check("https://u:p@good.test/a.png"),
            Err(FetchError::BadUrl("must not contain credentials"))
        );
        assert_eq!(
            check("https://x.bad.test/a.png"),
            Err(FetchError::HostDenied("x.bad.test".into()))
        );
        assert_eq!(
            check("https://other.test/a.png"),
            Err(FetchError::HostNotAllowed("other.test".into()))
        );
        // IP literals, in every spelling the URL parser accepts.
        for u in [
            "https://127.0.0.1/a.png",
            "https://2130706433/a.png",
            "https://0x7f.1/a.png",
            "https://[::ffff:127.0.0.1]/a.png",
            "https://[::1]/a.png",
        ] {
            assert!(
                matches!(
                    check(u),
                    Err(FetchError::Address {
                        class: AddrClass::Loopback,
                        ..
                    })
                ),
                "{u}: {:?}",
                check(u)
            );
        }
        assert!(matches!(
            check("https://169.254.169.254/latest/meta-data"),
            Err(FetchError::Address {
                class: AddrClass::Metadata,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_full_fetcher_answers_busy_within_the_timeout() {
        let f = ImageFetcher::new(MediaSettings {
            max_concurrent: 1,
            timeout: Duration::from_millis(100),
            ..MediaSettings::default()
        })
        .unwrap();
        let held = f.slots.acquire().await.unwrap();
        let started = std::time::Instant::now();
        let got = f.fetch("https://example.com/a.png").await;
        assert_eq!(got, Err(FetchError::Busy));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(held);
        let e = FetchError::Busy.into_gateway_error("messages[0].content[0].image_url".into());
        assert_eq!(e.status(), 503);
        assert_eq!(FetchError::Busy.result(), "failed");
    }

    #[test]
    fn data_url_is_base64_of_the_bytes() {
        let f = Fetched {
            mime: "image/png",
            bytes: b"\x89PNG\r\n\x1a\n".to_vec(),
        };
        assert_eq!(f.data_url(), "data:image/png;base64,iVBORw0KGgo=");
    }

    #[test]
    fn only_http_and_https_urls_are_fetched() {
        assert!(is_fetchable("https://x/y.png"));
        assert!(is_fetchable("HTTP://x/y.png"));
        assert!(!is_fetchable("data:image/png;base64,AA"));
        assert!(!is_fetchable("gs://b/o.png"));
        assert!(!is_fetchable("http"));
        assert!(!is_fetchable("é"));
    }
}
