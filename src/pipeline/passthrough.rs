//! Native passthrough at `/providers/{name}/*` (and the older `/transparent/{name}/*`).
//!
//! The request goes to the provider's configured endpoint with its path and body unchanged:
//! only the caller's gateway key is swapped for the provider's credential. Paths that could
//! step outside the endpoint's base path are refused. The response passes through byte for
//! byte; usage is read from a side copy (JSON) or by framing the SSE stream, never by
//! changing what the client receives.

use switchyard_filters::eventstream;
use switchyard_filters::sse::{parse_event, SseFramer};
use switchyard_filters::usage::UsageMeter;
use switchyard_filters::Usage;

use pingora::http::{RequestHeader, ResponseHeader};

use crate::content_coding::{decodable_accept_encoding, SideDecoder};
use crate::errors::GatewayError;
use crate::providers::{ProviderKind, Upstream};

/// Characters escaped in a default query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'&')
    .add(b'=')
    .add(b'#')
    .add(b'+')
    .add(b'%');

/// Largest non-stream passthrough body copied aside to read its usage.
const USAGE_SNIFF_LIMIT: usize = 4 * 1024 * 1024;

/// Most bytes a compressed answer is decoded to for metering (a stream included); past it the
/// side copy stops, so a decompression bomb costs the gateway at most this much.
const DECODED_LIMIT: u64 = 64 * 1024 * 1024;

/// Bytes per token in an estimate (OpenAI's rule of thumb for English text).
const BYTES_PER_TOKEN: u64 = 4;

/// The provider name and the rest of the path, for `/providers/{name}/{rest}`.
pub fn split_route(path: &str) -> Option<(&str, &str)> {
    let tail = path
        .strip_prefix("/providers/")
        .or_else(|| path.strip_prefix("/transparent/"))?;
    match tail.find('/') {
        Some(i) => Some((&tail[..i], &tail[i..])),
        None => Some((tail, "")),
    }
}

/// Checks `rest` (the path after the provider name) and returns the path and query to send
/// upstream, relative to the endpoint's base path. `defaults` are query parameters added when
/// the caller did not send them (e.g. Azure's `api-version`).
pub fn upstream_path(
    rest: &str,
    query: Option<&str>,
    defaults: &[(&'static str, String)],
) -> Result<String, GatewayError> {
    upstream_path_with(rest, query, defaults, false)
}

/// [`upstream_path`], letting `%2F` through when `encoded_slashes` (for APIs whose path
/// labels may hold a `/`, sent encoded: Bedrock model ARNs). It stays inside its segment.
pub fn upstream_path_with(
    rest: &str,
    query: Option<&str>,
    defaults: &[(&'static str, String)],
    encoded_slashes: bool,
) -> Result<String, GatewayError> {
    if rest.is_empty() || rest == "/" {
        return Err(GatewayError::BadPath(
            "a path after the provider name is required",
        ));
    }
    if !rest.starts_with('/') || rest.starts_with("//") {
        return Err(GatewayError::BadPath(
            "the path must be relative to the provider's endpoint",
        ));
    }
    if rest.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
        return Err(GatewayError::BadPath(
            "backslashes and control characters are not allowed",
        ));
    }
    // `%2f` / `%5c` / `%00` in any case, found from the `%`s (most paths have none).
    let bytes = rest.as_bytes();
    let escaped = |i: usize| {
        let hex = |k: usize| bytes.get(i + k).map_or(0, u8::to_ascii_lowercase);
        match (hex(1), hex(2)) {
            (b'2', b'f') => !encoded_slashes,
            (b'5', b'c') | (b'0', b'0') => true,
            _ => false,
        }
    };
    if (0..bytes.len()).any(|i| bytes[i] == b'%' && escaped(i)) {
        return Err(GatewayError::BadPath("encoded slashes are not allowed"));
    }
    if rest.split('/').any(hides_dot_segment) {
        return Err(GatewayError::BadPath("dot segments are not allowed"));
    }
    let query = query.map(strip_key_params);
    let query = query.as_deref();
    let mut out = rest.to_owned();
    let mut sep = '?';
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push(sep);
        out.push_str(q);
        sep = '&';
    }
    for (name, value) in defaults {
        let present =
            query.is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some(name)));
        if !present {
            out.push(sep);
            out.push_str(name);
            out.push('=');
            out.extend(percent_encoding::utf8_percent_encode(value, QUERY_VALUE));
            sep = '&';
        }
    }
    Ok(out)
}

/// Whether a path segment is, or decodes to something holding, a `.` or `..` piece: the
/// segment is percent-decoded (twice, for double encoding) and split at `/` and `\`, so
/// `..%2F..%2Fadmin` (a Bedrock model label may carry `%2F`) and `%2e%2E` are caught whatever
/// an upstream decodes before it normalises.
fn hides_dot_segment(segment: &str) -> bool {
    let has_dots = |bytes: &[u8]| {
        bytes
            .split(|&b| b == b'/' || b == b'\\')
            .any(|piece| piece == b"." || piece == b"..")
    };
    if has_dots(segment.as_bytes()) {
        return true;
    }
    // Only a segment with escapes is decoded (and copied): most are plain.
    let mut bytes = std::borrow::Cow::Borrowed(segment.as_bytes());
    for _ in 0..3 {
        if !bytes.contains(&b'%') {
            return false;
        }
        bytes = std::borrow::Cow::Owned(percent_encoding::percent_decode(&bytes).collect());
        if has_dots(&bytes) {
            return true;
        }
    }
    false
}

/// Query parameters that carry API keys by convention (Google's `key`, and the names of the
/// key headers the gateway reads). The gateway authenticates callers by header only and
/// presents the provider's credential itself, so a key in the query is never meant for the
/// provider: it is most likely the caller's gateway key and must not travel upstream.
const KEY_PARAMS: [&str; 6] = [
    "key",
    "api_key",
    "api-key",
    "apikey",
    "x-api-key",
    "x-goog-api-key",
];

/// The query without parameters named like API keys (names compared percent-decoded,
/// ignoring case); other parameters keep their bytes and order.
pub fn strip_key_params(query: &str) -> std::borrow::Cow<'_, str> {
    let is_key = |kv: &str| {
        let name = kv.split('=').next().unwrap_or_default();
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        KEY_PARAMS.iter().any(|k| name.eq_ignore_ascii_case(k))
    };
    if !query.split('&').any(is_key) {
        return std::borrow::Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query.split('&').filter(|kv| !is_key(kv)).collect();
    std::borrow::Cow::Owned(kept.join("&"))
}

/// The methods each provider's native API uses (`Allow` of the 405 for any other). TRACE,
/// CONNECT, OPTIONS and extension methods never pass: a TRACE-reflecting upstream would echo
/// the credential the gateway injected.
pub fn allowed_methods(kind: ProviderKind) -> &'static str {
    match kind {
        // Chat, responses, embeddings, files, batches, fine-tuning: GET/POST/DELETE.
        ProviderKind::OpenAi | ProviderKind::Anthropic => "GET, HEAD, POST, DELETE",
        // Data plane incl. authoring (ingestion jobs are PUT, some updates PATCH).
        ProviderKind::Azure | ProviderKind::Watsonx => "GET, HEAD, POST, PUT, PATCH, DELETE",
        // Cached contents and tuning jobs are updated with PATCH.
        ProviderKind::Vertex => "GET, HEAD, POST, PATCH, DELETE",
        // Bedrock runtime (invoke, converse, async-invoke) and OCI inference.
        ProviderKind::Bedrock | ProviderKind::Oci | ProviderKind::Mock => "GET, HEAD, POST",
    }
}

/// Refuses a method the provider's API does not use (405 with `Allow`).
pub fn check_method(kind: ProviderKind, method: &http::Method) -> Result<(), GatewayError> {
    let allow = allowed_methods(kind);
    // Compared as bytes (`str::split` by a string builds a substring searcher each time).
    let method = method.as_str().as_bytes();
    if allow
        .as_bytes()
        .split(|&b| b == b',')
        .any(|m| m.trim_ascii_start() == method)
    {
        Ok(())
    } else {
        Err(GatewayError::MethodNotAllowed { allow })
    }
}

/// Most options a `Connection` header may name (Pingora refuses more when proxying).
const MAX_CONNECTION_OPTIONS: usize = 9;

/// Checks the `Connection` header the way Pingora does when it builds the upstream request,
/// but before any upstream connection, so a bad one is the client's 400 rather than a closed
/// connection blamed on the provider: at most 9 options, each an HTTP token, none of them a
/// header the proxy must keep (`Host`, `X-Forwarded-*`) or a pseudo-header.
pub fn check_connection_header(req: &RequestHeader) -> Result<(), GatewayError> {
    let bad = |why: &str| GatewayError::InvalidRequest {
        message: format!("The Connection header is not acceptable: {why}."),
        param: None,
    };
    let mut count = 0;
    for value in req.headers.get_all(http::header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_CONNECTION_OPTIONS {
                return Err(bad("it names more than 9 options"));
            }
            if !token.iter().all(|&b| is_tchar(b)) {
                return Err(bad("an option is not a plain token"));
            }
            let protected = [
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
            ];
            if protected
                .iter()
                .any(|p| token.eq_ignore_ascii_case(p.as_bytes()))
            {
                return Err(bad("it names a header the gateway must forward"));
            }
        }
    }
    Ok(())
}

/// An HTTP `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Collapses repeated identical `Content-Length` values (`5, 5`, or two fields `5` and `5`)
/// into one before the request is forwarded; differing or unreadable values are a 400.
pub fn normalize_content_length(req: &mut RequestHeader) -> Result<(), GatewayError> {
    let values = req.headers.get_all(http::header::CONTENT_LENGTH);
    // The usual case, one field of at most 19 digits (always a u64): nothing to collapse,
    // nothing to refuse.
    let mut fields = values.iter();
    if let (Some(v), None) = (fields.next(), fields.next()) {
        let digits = v.as_bytes();
        if (1..20).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
            return Ok(());
        }
    }
    let mut length: Option<u64> = None;
    let mut pieces = 0usize;
    for v in values.iter() {
        let text = v.to_str().map_err(|_| bad_length())?;
        for piece in text.split(',') {
            let n: u64 = piece.trim().parse().map_err(|_| bad_length())?;
            if length.is_some_and(|l| l != n) {
                return Err(bad_length());
            }
            length = Some(n);
            pieces += 1;
        }
    }
    if let (Some(n), true) = (length, pieces > 1) {
        req.insert_header(http::header::CONTENT_LENGTH, n.to_string())
            .map_err(|_| GatewayError::Internal)?;
    }
    Ok(())
}

fn bad_length() -> GatewayError {
    GatewayError::BadFraming("the Content-Length values differ or are not numbers")
}

/// [`crate::pipeline::forward::HOP_BY_HOP`] and `expect`, parsed once (a request's header names compare to these by
/// their parsed form, most of them standard names).
static HOP_BY_HOP_NAMES: [http::HeaderName; 10] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::EXPECT,
];

/// Whether [`decodable_accept_encoding`] would keep an `Accept-Encoding` value exactly as it
/// is, decided without allocating for the plain form `coding(, coding)*` where every coding
/// is one it keeps; false (the caller then asks it) for anything else.
fn decodable_as_is(value: &[u8]) -> bool {
    let mut rest = value;
    loop {
        let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        let coding = &rest[..end];
        if coding.is_empty()
            || !coding
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            || !crate::content_coding::DECODABLE
                .iter()
                .any(|c| coding.eq_ignore_ascii_case(c.as_bytes()))
        {
            return false;
        }
        match rest.get(end..) {
            Some([]) => return true,
            Some([b',', b' ', tail @ ..]) => rest = tail,
            _ => return false,
        }
    }
}

/// Points a caller's request at the provider: final path, `Host`, hop-by-hop headers dropped,
/// and the provider's default headers added where the caller sent none. Credentials are
/// applied after this (they may sign what is set here).
pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    upstream: &Upstream,
    path: &str,
) -> pingora::Result<()> {
    let uri: http::Uri = upstream.endpoint.path(path).parse().map_err(|_| {
        pingora::Error::explain(pingora::ErrorType::InternalError, "invalid upstream path")
    })?;
    req.set_uri(uri);
    req.insert_header("host", upstream.endpoint.authority.clone())?;
    // One pass over the request's own headers (usually none of these is there) rather than
    // a lookup per name; names compared as parsed names, not as strings.
    let hop: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| HOP_BY_HOP_NAMES.contains(k))
        .cloned()
        .collect();
    for name in hop {
        req.remove_header(&name);
    }
    // Only codings the usage meter can decode (the answer is relayed as it comes).
    if let Some(accept) = req.headers.get(http::header::ACCEPT_ENCODING) {
        if decodable_as_is(accept.as_bytes()) {
            // The common `identity`, `gzip`, `gzip, deflate`: kept as they are.
        } else {
            match decodable_accept_encoding(&String::from_utf8_lossy(accept.as_bytes())) {
                Some(kept) if kept.as_bytes() != accept.as_bytes() => {
                    req.insert_header(http::header::ACCEPT_ENCODING, kept)?
                }
                Some(_) => {}
                None => {
                    req.remove_header(&http::header::ACCEPT_ENCODING);
                }
            }
        }
    }
    for (name, value) in &upstream.default_headers {
        if !req.headers.contains_key(name) {
            req.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}

/// How the response body is observed for usage.
#[derive(Default)]
enum Observer {
    #[default]
    None,
    /// A JSON body, copied aside (up to a limit) and read at the end.
    Json(Vec<u8>),
    /// An SSE stream, framed event by event.
    Sse(SseFramer),
    /// An AWS event stream (Bedrock), decoded message by message (checksums verified).
    EventStream(eventstream::Decoder),
}

impl Observer {
    /// Sees plain (decoded) response bytes.
    fn feed(&mut self, meter: &mut UsageMeter, chunk: &[u8]) {
        match self {
            Observer::None => {}
            Observer::Json(buf) => {
                if buf.len() + chunk.len() > USAGE_SNIFF_LIMIT {
                    *self = Observer::None;
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            Observer::Sse(framer) => {
                framer.feed(chunk, |event| {
                    let ev = parse_event(event);
                    if ev.has_data && ev.data.first() == Some(&b'{') {
                        meter.observe_json(&ev.data);
                    }
                });
            }
            Observer::EventStream(decoder) => {
                let fed = decoder.feed(chunk, |m| eventstream::meter_bedrock_event(meter, m));
                if let Err(e) = fed {
                    log::warn!("passthrough: cannot read usage from the event stream: {e}");
                    *self = Observer::None;
                }
            }
        }
    }
}

/// Passthrough state kept in the request context.
pub struct Passthrough {
    /// Upstream path and query relative to the endpoint's base path.
    pub path: String,
    observer: Observer,
    /// Decodes a compressed answer for the observer (the client gets the compressed bytes).
    decoder: Option<SideDecoder>,
    meter: UsageMeter,
    /// The model named by the request path (Bedrock `/model/{id}/...`), reported instead of
    /// the response's when the response succeeded.
    path_model: Option<String>,
    succeeded: bool,
    /// The answer is a stream (SSE or AWS event stream).
    streamed: bool,
    /// Request body bytes sent upstream.
    request_bytes: u64,
    /// The usage reported by [`Self::finish`] is an estimate.
    estimated: bool,
}

impl Passthrough {
    pub fn new(path: String) -> Self {
        Passthrough {
            path,
            observer: Observer::None,
            decoder: None,
            meter: UsageMeter::new(),
            path_model: None,
            succeeded: false,
            streamed: false,
            request_bytes: 0,
            estimated: false,
        }
    }

    /// Counts request body bytes (the prompt side of an estimate).
    pub fn observe_request_bytes(&mut self, n: usize) {
        self.request_bytes += n as u64;
    }

    /// Whether the usage [`Self::finish`] reported was estimated (the provider reported none).
    pub fn usage_estimated(&self) -> bool {
        self.estimated
    }

    /// Reports `model` (from the request path) as the model of a successful response.
    pub fn with_path_model(mut self, model: Option<String>) -> Self {
        self.path_model = model;
        self
    }

    /// Chooses how to read usage once the response's status and headers are known.
    pub fn observe_response(&mut self, resp: &ResponseHeader) {
        if !resp.status.is_success() {
            return;
        }
        self.succeeded = true;
        // Parsed once (a lookup by `&str` parses the name every time).
        static BEDROCK_INPUT: http::HeaderName =
            http::HeaderName::from_static("x-amzn-bedrock-input-token-count");
        static BEDROCK_OUTPUT: http::HeaderName =
            http::HeaderName::from_static("x-amzn-bedrock-output-token-count");
        // The first value of each header read here, in one pass over the answer's headers
        // (a lookup by name hashes it; these are compared as parsed names).
        let (mut input, mut output, mut content_type, mut coding) = (None, None, None, None);
        for (name, value) in &resp.headers {
            let slot = if *name == http::header::CONTENT_TYPE {
                &mut content_type
            } else if *name == http::header::CONTENT_ENCODING {
                &mut coding
            } else if *name == BEDROCK_INPUT {
                &mut input
            } else if *name == BEDROCK_OUTPUT {
                &mut output
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        let header_count = |value: Option<&http::HeaderValue>| {
            value
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        // Bedrock InvokeModel reports usage in headers.
        self.meter
            .observe_counts(header_count(input), header_count(output));
        let ct = content_type.map_or(&b""[..], |v| v.as_bytes());
        self.observer = if ct.starts_with(b"text/event-stream") {
            self.streamed = true;
            Observer::Sse(SseFramer::new())
        } else if ct.starts_with(eventstream::CONTENT_TYPE.as_bytes()) {
            self.streamed = true;
            Observer::EventStream(eventstream::Decoder::new())
        } else if ct.starts_with(b"application/json") {
            Observer::Json(Vec::new())
        } else {
            Observer::None
        };
        if matches!(self.observer, Observer::None) {
            return;
        }
        let coding = coding.map_or(&b""[..], |v| v.as_bytes());
        match SideDecoder::for_encoding(coding, DECODED_LIMIT) {
            Ok(decoder) => self.decoder = decoder,
            Err(_unsupported) => {
                log::warn!(
                    "passthrough: cannot read usage from a body in Content-Encoding {}",
                    String::from_utf8_lossy(coding)
                );
                self.observer = Observer::None;
            }
        }
    }

    /// Sees one response chunk (which is forwarded unchanged by the caller); a compressed
    /// one is decoded on the side first.
    pub fn observe_chunk(&mut self, chunk: &[u8]) {
        if matches!(self.observer, Observer::None) {
            return;
        }
        let Some(decoder) = self.decoder.as_mut() else {
            self.observer.feed(&mut self.meter, chunk);
            return;
        };
        match decoder.decode(chunk) {
            Ok(plain) => self.observer.feed(&mut self.meter, plain),
            Err(e) => {
                log::warn!("passthrough: cannot decode the answer to read its usage: {e}");
                self.observer = Observer::None;
                self.decoder = None;
            }
        }
    }

    /// [`Self::observe_chunk`] for the answer's last chunk: a JSON answer that came whole in
    /// it (nothing copied aside yet, nothing to decode) is read in place, not copied first.
    pub fn observe_last_chunk(&mut self, chunk: &[u8]) {
        if let (None, Observer::Json(buf)) = (&self.decoder, &self.observer) {
            if buf.is_empty() && chunk.len() <= USAGE_SNIFF_LIMIT {
                self.meter.observe_json(chunk);
                self.observer = Observer::None;
                return;
            }
        }
        self.observe_chunk(chunk);
    }

    /// The usage and model the response reported, once it is complete. A successful stream
    /// that reported no usage (an OpenAI stream without `stream_options.include_usage`, or
    /// one the client left early) is estimated at 4 bytes a token of the request body and of
    /// the generated text seen, so budgets and token limits still count it; see
    /// [`Self::usage_estimated`]. Called once: the model is handed over.
    pub fn finish(&mut self) -> (Option<Usage>, Option<String>) {
        if let Observer::Json(buf) = std::mem::take(&mut self.observer) {
            self.meter.observe_json(&buf);
        }
        let model = match self.path_model.take() {
            Some(m) if self.succeeded => Some(m),
            _ => self.meter.take_model(),
        };
        let mut usage = self.meter.usage();
        if usage.is_none() && self.succeeded && self.streamed {
            self.estimated = true;
            usage = Some(Usage::new(
                self.request_bytes.div_ceil(BYTES_PER_TOKEN),
                self.meter.text_bytes().div_ceil(BYTES_PER_TOKEN),
            ));
        }
        (usage, model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_provider_and_rest() {
        assert_eq!(
            split_route("/providers/openai/v1/models"),
            Some(("openai", "/v1/models"))
        );
        assert_eq!(
            split_route("/transparent/openai/v1/x"),
            Some(("openai", "/v1/x"))
        );
        assert_eq!(split_route("/providers/openai"), Some(("openai", "")));
        assert_eq!(split_route("/v1/models"), None);
    }

    #[test]
    fn refuses_every_escape() {
        for bad in [
            "",
            "/",
            "//evil.com/x",
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E./x",
            "/v1%2fadmin",
            "/v1%2Fadmin",
            "/v1/a%5C",
            "/v1/a%00",
            "/v1/%5c..",
            "/v1\\..\\x",
            "/./v1",
            "/v1/.",
            "http://evil.com/x",
        ] {
            assert!(
                upstream_path(bad, None, &[]).is_err(),
                "{bad:?} was accepted"
            );
        }
        for fine in ["/v1/a%2", "/v1/%41%2e1", "/v1/100%25"] {
            assert_eq!(upstream_path(fine, None, &[]).unwrap(), fine);
        }
        let defaults = [("api-version", "2024-10-21".to_string())];
        assert_eq!(
            upstream_path("/x", None, &defaults).unwrap(),
            "/x?api-version=2024-10-21"
        );
        assert_eq!(
            upstream_path("/x", Some("api-version=1"), &defaults).unwrap(),
            "/x?api-version=1"
        );
        assert_eq!(
            upstream_path("/v1/chat/completions", Some("a=1"), &[]).unwrap(),
            "/v1/chat/completions?a=1"
        );
        assert_eq!(
            upstream_path("/v1/models/ft:gpt-4o:org..x", None, &[]).unwrap(),
            "/v1/models/ft:gpt-4o:org..x"
        );
    }

    #[test]
    fn encoded_slashes_only_where_allowed() {
        let arn = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse";
        assert!(upstream_path(arn, None, &[]).is_err());
        assert_eq!(upstream_path_with(arn, None, &[], true).unwrap(), arn);
        for bad in [
            "/v1/%2e%2e/admin",
            "/v1/%5c..",
            "//evil.com/x",
            "/a/../b",
            "/a%00",
        ] {
            assert!(
                upstream_path_with(bad, None, &[], true).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn content_length_is_collapsed_or_refused_as_before() {
        let run = |values: &[&str]| {
            let mut req = RequestHeader::build("POST", b"/v1/x", None).unwrap();
            for v in values {
                req.append_header("content-length", *v).unwrap();
            }
            let r = normalize_content_length(&mut req).map_err(|_| ());
            let after: Vec<String> = req
                .headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (r, after)
        };
        assert_eq!(run(&["5"]), (Ok(()), vec!["5".to_string()]));
        assert_eq!(run(&["0"]), (Ok(()), vec!["0".to_string()]));
        assert_eq!(run(&["007"]), (Ok(()), vec!["007".to_string()]));
        assert_eq!(run(&["+5"]), (Ok(()), vec!["+5".to_string()]));
        assert_eq!(run(&["5, 5"]), (Ok(()), vec!["5".to_string()]));
        assert_eq!(run(&["5", "5"]), (Ok(()), vec!["5".to_string()]));
        assert_eq!(run(&["9999999999999999999"]).0, Ok(()));
        for bad in [
            &["5, 6"][..],
            &["5", "6"],
            &["abc"],
            &[""],
            &["99999999999999999999"],
            &["-1"],
        ] {
            assert_eq!(run(bad).0, Err(()), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_names_are_the_list_and_expect() {
        let mut names: Vec<&str> = HOP_BY_HOP_NAMES.iter().map(|n| n.as_str()).collect();
        let mut want: Vec<&str> = crate::pipeline::forward::HOP_BY_HOP.to_vec();
        want.push("expect");
        names.sort_unstable();
        want.sort_unstable();
        assert_eq!(names, want);
    }

    #[test]
    fn accept_encoding_kept_as_is_only_when_the_slow_path_would_keep_it() {
        for value in [
            "identity",
            "gzip",
            "GZip",
            "gzip, deflate",
            "gzip, deflate, br, zstd",
            "gzip,deflate",
            "gzip,  deflate",
            " gzip",
            "gzip ",
            "gzip;q=1.0",
            "gzip, *",
            "compress",
            "gzip, compress",
            "",
            ",",
            "gzip,",
            "x-gzip, identity",
        ] {
            let slow = decodable_accept_encoding(value);
            if decodable_as_is(value.as_bytes()) {
                assert_eq!(slow.as_deref(), Some(value), "{value:?}");
            }
            assert_eq!(
                decodable_as_is(value.as_bytes()),
                [
                    "identity",
                    "gzip",
                    "GZip",
                    "gzip, deflate",
                    "gzip, deflate, br, zstd",
                    "x-gzip, identity"
                ]
                .contains(&value),
                "{value:?}"
            );
        }
    }

    #[test]
    fn methods_are_checked_against_the_allow_list() {
        for (method, ok) in [
            ("GET", true),
            ("HEAD", true),
            ("POST", true),
            ("DELETE", true),
            ("PUT", false),
            ("PATCH", false),
            ("TRACE", false),
            ("OPTIONS", false),
            ("POS", false),
            ("ET", false),
        ] {
            let m = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                check_method(ProviderKind::OpenAi, &m).is_ok(),
                ok,
                "{method}"
            );
        }
        let patch = http::Method::PATCH;
        assert!(check_method(ProviderKind::Azure, &patch).is_ok());
        assert!(check_method(ProviderKind::Bedrock, &patch).is_err());
    }

    #[test]
    fn bedrock_header_counts_read_the_first_value() {
        let mut r = response("application/json");
        r.append_header("x-amzn-bedrock-input-token-count", " 12 ")
            .unwrap();
        r.append_header("x-amzn-bedrock-input-token-count", "99")
            .unwrap();
        r.append_header("x-amzn-bedrock-output-token-count", "x")
            .unwrap();
        r.append_header("x-amzn-bedrock-output-token-count", "7")
            .unwrap();
        let mut p = Passthrough::new("/model/m/invoke".into());
        p.observe_response(&r);
        p.observe_chunk(b"{}");
        assert_eq!(p.finish(), (Some(Usage::new(12, 0)), None));
    }

    fn response(content_type: &str) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("content-type", content_type).unwrap();
        r
    }

    #[test]
    fn usage_is_read_from_json_and_sse_without_changing_bytes() {
        let mut p = Passthrough::new("/v1/chat/completions".into());
        p.observe_response(&response("application/json"));
        p.observe_chunk(br#"{"model":"gpt-4o","usage":{"prompt_tokens":1,"#);
        p.observe_last_chunk(br#""completion_tokens":2,"total_tokens":3}}"#);
        assert_eq!(p.finish(), (Some(Usage::new(1, 2)), Some("gpt-4o".into())));

        // Whole in its last chunk: read in place.
        let mut p = Passthrough::new("/v1/chat/completions".into());
        p.observe_response(&response("application/json"));
        p.observe_last_chunk(
            br#"{"model":"gpt-4o","usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        );
        assert!(matches!(p.observer, Observer::None));
        assert_eq!(p.finish(), (Some(Usage::new(1, 2)), Some("gpt-4o".into())));

        let mut p = Passthrough::new("/v1/chat/completions".into());
        p.observe_response(&response("text/event-stream; charset=utf-8"));
        p.observe_chunk(b"data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":5,\"total_tokens\":9}}\n\ndata: [DONE]\n\n");
        assert_eq!(p.finish(), (Some(Usage::new(4, 5)), Some("gpt-4o".into())));
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn usage_is_read_from_compressed_answers() {
        let mut json = response("application/json");
        json.insert_header("content-encoding", "gzip").unwrap();
        let mut p = Passthrough::new("/v1/chat/completions".into());
        p.observe_response(&json);
        let body = gzip(br#"{"model":"gpt-4o","usage":{"prompt_tokens":3,"completion_tokens":5}}"#);
        for piece in body.chunks(5) {
            p.observe_chunk(piece);
        }
        assert_eq!(p.finish(), (Some(Usage::new(3, 5)), Some("gpt-4o".into())));
        assert!(!p.usage_estimated());

        let mut sse = response("text/event-stream");
        sse.insert_header("content-encoding", "gzip").unwrap();
        let mut p = Passthrough::new("/v1/chat/completions".into());
        p.observe_response(&sse);
        let body = gzip(b"data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n");
        for piece in body.chunks(3) {
            p.observe_chunk(piece);
        }
        assert_eq!(p.finish(), (Some(Usage::new(4, 5)), Some("gpt-4o".into())));

        // A coding the meter cannot read: nothing is metered, nothing breaks.
        let mut odd = response("application/json");
        odd.insert_header("content-encoding", "compress").unwrap();
        let mut p = Passthrough::new("/v1/x".into());
        p.observe_response(&odd);
        p.observe_chunk(b"\x1f\x9d\x90");
        assert_eq!(p.finish(), (None, None));
    }

    #[test]
    fn a_stream_without_usage_is_estimated() {
        let mut p = Passthrough::new("/v1/chat/completions".into());
        p.observe_request_bytes(40);
        p.observe_request_bytes(2);
        p.observe_response(&response("text/event-stream"));
        p.observe_chunk(b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hello there\"}}]}\n\n");
        p.observe_chunk(b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!(p.finish(), (Some(Usage::new(11, 3)), Some("gpt-4o".into())));
        assert!(p.usage_estimated());

        // Not estimated: a JSON answer without usage (files, models), a failed stream.
        let mut p = Passthrough::new("/v1/files".into());
        p.observe_request_bytes(1000);
        p.observe_response(&response("application/json"));
        p.observe_chunk(br#"{"id":"file-1"}"#);
        assert_eq!(p.finish(), (None, None));
        assert!(!p.usage_estimated());
        let mut p = Passthrough::new("/v1/chat/completions".into());
        p.observe_request_bytes(1000);
        p.observe_response(&ResponseHeader::build(500, None).unwrap());
        assert_eq!(p.finish(), (None, None));
    }

    #[test]
    fn usage_is_read_from_bedrock_event_streams() {
        use switchyard_filters::eventstream::encode_event;
        let mut body = encode_event("messageStart", br#"{"role":"assistant"}"#);
        body.extend(encode_event(
            "metadata",
            br#"{"usage":{"inputTokens":5,"outputTokens":6,"totalTokens":11}}"#,
        ));
        let stream = || {
            let mut p = Passthrough::new("/model/m%3A0/converse-stream".into())
                .with_path_model(Some("m:0".into()));
            p.observe_response(&response("application/vnd.amazon.eventstream"));
            p
        };
        let mut p = stream();
        for piece in body.chunks(3) {
            p.observe_chunk(piece);
        }
        assert_eq!(p.finish(), (Some(Usage::new(5, 6)), Some("m:0".into())));

        // A corrupt frame stops reading usage; nothing else happens (the stream is estimated:
        // no request bytes, no text read here).
        let mut bad = body.clone();
        let n = bad.len();
        bad[n - 2] ^= 0xFF;
        let mut p = stream();
        p.observe_chunk(&bad);
        assert_eq!(p.finish(), (Some(Usage::new(0, 0)), Some("m:0".into())));
        assert!(p.usage_estimated());

        // The path's model is not reported for a failed request (callers choose paths).
        let mut p =
            Passthrough::new("/model/bogus/invoke".into()).with_path_model(Some("bogus".into()));
        p.observe_response(&ResponseHeader::build(404, None).unwrap());
        assert_eq!(p.finish(), (None, None));
    }
}
