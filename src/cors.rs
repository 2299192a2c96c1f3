//! Cross-origin requests from browsers (`server.cors`, off by default), following the CORS
//! protocol of the Fetch standard.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//!   here, before authentication: browsers never send credentials on a preflight, so without
//!   this every browser app would get a 401 and never make its real request.
//! - Every other response to an allowed origin (answers, errors, streams, passthrough) carries
//!   `Access-Control-Allow-Origin` (and `-Allow-Credentials`, `-Expose-Headers`); every
//!   response carries `Vary: Origin` so a cache never hands one origin's answer to another.
//!   Responses to origins not allowed carry no CORS headers, so the browser blocks them.
//!
//! The policy is validated once at load ([`CorsPolicy::from_raw`]); each request then makes
//! one [`CorsDecision`] from its `Origin` header.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::raw::RawCors;
use crate::config::Problem;

const ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;
const ALLOW_CREDENTIALS: HeaderName = header::ACCESS_CONTROL_ALLOW_CREDENTIALS;
const EXPOSE_HEADERS: HeaderName = header::ACCESS_CONTROL_EXPOSE_HEADERS;
/// `Vary` of a preflight answer: it depends on all three request headers.
const PREFLIGHT_VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);
const ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const STAR: HeaderValue = HeaderValue::from_static("*");

/// Headers an upstream may set that would contradict the gateway's policy (passthrough).
const UPSTREAM_CORS_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// The validated `server.cors` section.
#[derive(Debug)]
pub struct CorsPolicy {
    /// `None`: any origin (`*`); otherwise exact serialized origins, lowercase.
    origins: Option<Vec<String>>,
    /// `None`: any method (`*`, only without credentials).
    methods: Option<Vec<String>>,
    methods_value: HeaderValue,
    /// `None`: any header: the preflight's `Access-Control-Request-Headers` is echoed (this
    /// covers `Authorization` too, which a literal `*` never does).
    headers: Option<Vec<String>>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// What one request's responses carry, decided once from its `Origin` header.
#[derive(Debug, Clone)]
pub struct CorsDecision {
    policy: Arc<CorsPolicy>,
    /// `Access-Control-Allow-Origin`, when the origin is allowed.
    allow_origin: Option<HeaderValue>,
}

/// Why a preflight is refused (the answer then carries no CORS headers).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Origin,
    Method,
    Header(String),
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Origin => "CORS preflight refused: this origin is not in server.cors.allowed_origins.".into(),
            Refusal::Method => "CORS preflight refused: the method is not in server.cors.allowed_methods.".into(),
            Refusal::Header(h) => format!(
                "CORS preflight refused: the request header `{h}` is not in server.cors.allowed_headers."
            ),
        }
    }
}

impl CorsPolicy {
    /// Validates `server.cors`, pushing every problem found.
    pub fn from_raw(raw: &RawCors, problems: &mut Vec<Problem>) -> Option<Arc<CorsPolicy>> {
        let before = problems.len();
        let creds = raw.allow_credentials;
        let star = |list: &[String]| list.iter().any(|s| s.trim() == "*");

        let origins = if raw.allowed_origins.is_empty() {
            problems.push(Problem::new(
                "server.cors.allowed_origins",
                "must list at least one origin (or `*`); remove server.cors to turn CORS off",
            ));
            None
        } else if star(&raw.allowed_origins) {
            if raw.allowed_origins.len() > 1 {
                problems.push(Problem::new(
                    "server.cors.allowed_origins",
                    "`*` allows every origin: give it alone",
                ));
            }
            if creds {
                problems.push(Problem::new(
                    "server.cors.allowed_origins",
                    "`*` cannot be used with allow_credentials: true (the Fetch standard forbids it; browsers reject such answers): list the origins",
                ));
            }
            None
        } else {
            let mut list = Vec::with_capacity(raw.allowed_origins.len());
            for (i, o) in raw.allowed_origins.iter().enumerate() {
                match origin(o) {
                    Ok(o) => list.push(o),
                    Err(why) => problems.push(Problem::new(
                        format!("server.cors.allowed_origins[{i}]"),
                        why,
                    )),
                }
            }
            Some(list)
        };

        let methods = if star(&raw.allowed_methods) {
            if creds {
                problems.push(Problem::new(
                    "server.cors.allowed_methods",
                    "`*` means the literal method `*` with allow_credentials: true: list the methods",
                ));
            }
            None
        } else {
            let mut list = Vec::with_capacity(raw.allowed_methods.len());
            for (i, m) in raw.allowed_methods.iter().enumerate() {
                let m = m.trim().to_ascii_uppercase();
                if http::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty() {
                    problems.push(Problem::new(
                        format!("server.cors.allowed_methods[{i}]"),
                        "is not an HTTP method",
                    ));
                } else {
                    list.push(m);
                }
            }
            if list.is_empty() && raw.allowed_methods.is_empty() {
                problems.push(Problem::new(
                    "server.cors.allowed_methods",
                    "must list at least one method",
                ));
            }
            Some(list)
        };

        let headers = if star(&raw.allowed_headers) {
            None
        } else {
            Some(header_names(
                "server.cors.allowed_headers",
                &raw.allowed_headers,
                problems,
            ))
        };
        let expose = if star(&raw.expose_headers) {
            if creds {
                problems.push(Problem::new(
                    "server.cors.expose_headers",
                    "`*` means the literal header `*` with allow_credentials: true: list the headers",
                ));
            }
            vec!["*".to_owned()]
        } else {
            header_names("server.cors.expose_headers", &raw.expose_headers, problems)
        };
        if raw.max_age_seconds > 86_400 {
            problems.push(Problem::new(
                "server.cors.max_age_seconds",
                "must be at most 86400 (browsers cap it lower anyway)",
            ));
        }
        if problems.len() > before {
            return None;
        }

        let joined = |list: &[String]| HeaderValue::from_str(&list.join(", ")).ok();
        Some(Arc::new(CorsPolicy {
            origins,
            methods_value: methods.as_deref().map_or(Some(STAR), joined)?,
            methods,
            headers_value: headers.as_deref().and_then(joined),
            headers,
            expose_value: (!expose.is_empty()).then(|| joined(&expose)).flatten(),
            max_age: HeaderValue::from(raw.max_age_seconds),
            credentials: creds,
        }))
    }

    /// The decision for a request with these headers.
    pub fn decide(self: &Arc<Self>, req: &HeaderMap) -> CorsDecision {
        let allow_origin = req
            .get(header::ORIGIN)
            .filter(|o| self.allows_origin(o.as_bytes()))
            .map(|o| match self.origins {
                None if !self.credentials => STAR,
                _ => o.clone(),
            });
        CorsDecision {
            policy: self.clone(),
            allow_origin,
        }
    }

    fn allows_origin(&self, origin: &[u8]) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin)),
        }
    }
}

/// A configured origin, checked and lowercased: `scheme://host[:port]`, exactly what browsers
/// send in `Origin` (no path, no trailing slash).
fn origin(s: &str) -> Result<String, &'static str> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("null") {
        return Err("`null` is the origin of sandboxed frames and local files: any page can send it, so it cannot be allowed");
    }
    let Some((scheme, host)) = s.split_once("://") else {
        return Err("must be an origin like `https://app.example.com` (scheme://host[:port])");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let host_ok = !host.is_empty()
        && !host.contains(['/', '?', '#', '@'])
        && !host.chars().any(|c| c.is_whitespace() || c.is_control());
    if !scheme_ok || !host_ok {
        return Err("must be an origin like `https://app.example.com`: scheme://host[:port], without a path or trailing slash");
    }
    Ok(s.to_ascii_lowercase())
}

fn header_names(path: &str, list: &[String], problems: &mut Vec<Problem>) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    for (i, h) in list.iter().enumerate() {
        match HeaderName::from_bytes(h.trim().as_bytes()) {
            Ok(n) => out.push(n.as_str().to_owned()),
            Err(_) => problems.push(Problem::new(format!("{path}[{i}]"), "is not a header name")),
        }
    }
    out
}

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: a CORS preflight.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(header::ORIGIN)
        && req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl CorsDecision {
    /// The CORS headers of a preflight answer (status 204), or why it is refused.
    pub fn preflight(&self, req: &HeaderMap) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
        let p = &*self.policy;
        let origin = self.allow_origin.clone().ok_or(Refusal::Origin)?;
        let method = req
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if let Some(list) = &p.methods {
            if !list.iter().any(|m| m.as_bytes() == method) {
                return Err(Refusal::Method);
            }
        }
        let requested = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let allow_headers = match (&p.headers, requested) {
            (_, None) => None,
            (None, Some(v)) => Some(v.clone()),
            (Some(list), Some(v)) => {
                let v = v.to_str().map_err(|_| Refusal::Header("?".into()))?;
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if !list.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                        return Err(Refusal::Header(name.chars().take(64).collect()));
                    }
                }
                p.headers_value.clone()
            }
        };
        let mut out = Vec::with_capacity(6);
        out.push((ALLOW_ORIGIN, origin));
        out.push((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            p.methods_value.clone(),
        ));
        if let Some(h) = allow_headers {
            out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h));
        }
        out.push((header::ACCESS_CONTROL_MAX_AGE, p.max_age.clone()));
        if p.credentials {
            out.push((ALLOW_CREDENTIALS, TRUE));
        }
        Ok(out)
    }

    /// A refused preflight's answer carries no CORS headers (only `Vary`).
    pub fn refuse(&mut self) {
        self.allow_origin = None;
    }

    /// `Vary` for a preflight answer.
    pub fn preflight_vary() -> HeaderValue {
        PREFLIGHT_VARY
    }

    /// Adds the CORS headers to a response the gateway built itself (no case map).
    pub fn apply_to_map(&self, map: &mut HeaderMap) {
        map.append(header::VARY, ORIGIN);
        if let Some(origin) = &self.allow_origin {
            map.insert(ALLOW_ORIGIN, origin.clone());
            if self.policy.credentials {
                map.insert(ALLOW_CREDENTIALS, TRUE);
            }
            if let Some(e) = &self.policy.expose_value {
                map.insert(EXPOSE_HEADERS, e.clone());
            }
        }
    }

    /// Replaces an upstream's CORS headers (passthrough) with the gateway's policy.
    pub fn apply_to_upstream(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        for name in UPSTREAM_CORS_HEADERS {
            resp.remove_header(&name);
        }
        resp.append_header(header::VARY, ORIGIN)?;
        if let Some(origin) = &self.allow_origin {
            resp.insert_header(ALLOW_ORIGIN, origin.clone())?;
            if self.policy.credentials {
                resp.insert_header(ALLOW_CREDENTIALS, TRUE)?;
            }
            if let Some(e) = &self.policy.expose_value {
                resp.insert_header(EXPOSE_HEADERS, e.clone())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawCors {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn policy(yaml: &str) -> Result<Arc<CorsPolicy>, Vec<Problem>> {
        let mut problems = Vec::new();
        CorsPolicy::from_raw(&raw(yaml), &mut problems).ok_or(problems)
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn star_with_credentials_is_refused() {
        let p = policy("{allowed_origins: ['*'], allow_credentials: true}").unwrap_err();
        assert_eq!(p[0].path, "server.cors.allowed_origins");
        assert!(p[0].why.contains("allow_credentials"), "{}", p[0].why);
        let p = policy(
            "{allowed_origins: ['https://a.example'], allow_credentials: true, expose_headers: ['*']}",
        )
        .unwrap_err();
        assert_eq!(p[0].path, "server.cors.expose_headers");
    }

    #[test]
    fn origins_must_be_serialized_origins() {
        for bad in [
            "null",
            "https://a.example/",
            "a.example",
            "https://a.example/path",
            "https://",
        ] {
            let p = policy(&format!("{{allowed_origins: ['{bad}']}}")).unwrap_err();
            assert_eq!(p[0].path, "server.cors.allowed_origins[0]", "{bad}");
        }
        assert!(policy("{allowed_origins: []}").is_err());
        assert!(policy("{allowed_origins: ['*', 'https://a.example']}").is_err());
        assert!(
            policy("{allowed_origins: ['HTTPS://App.Example:8443', 'tauri://localhost']}").is_ok()
        );
    }

    #[test]
    fn allowed_origin_is_echoed_others_get_nothing() {
        let p = policy("{allowed_origins: ['https://App.example']}").unwrap();
        let d = p.decide(&req(&[("origin", "https://app.example")]));
        assert_eq!(d.allow_origin.as_ref().unwrap(), "https://app.example");
        let d = p.decide(&req(&[("origin", "https://evil.example")]));
        assert!(d.allow_origin.is_none());
        let mut map = HeaderMap::new();
        d.apply_to_map(&mut map);
        assert_eq!(map.get("vary").unwrap(), "Origin");
        assert!(!map.contains_key(ALLOW_ORIGIN));
    }

    #[test]
    fn star_answers_star_without_credentials() {
        let p = policy("{allowed_origins: ['*']}").unwrap();
        let d = p.decide(&req(&[("origin", "https://any.example")]));
        assert_eq!(d.allow_origin.unwrap(), "*");
    }

    #[test]
    fn preflight_checks_method_and_headers() {
        let p = policy(
            "{allowed_origins: ['https://a.example'], allowed_methods: [post], allowed_headers: [Authorization, content-type]}",
        )
        .unwrap();
        let ok = req(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ]);
        let headers = p.decide(&ok).preflight(&ok).unwrap();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("access-control-allow-methods").unwrap(), "POST");
        assert_eq!(
            get("access-control-allow-headers").unwrap(),
            "authorization, content-type"
        );
        let put = req(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(p.decide(&put).preflight(&put).unwrap_err(), Refusal::Method);
        let extra = req(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization, x-secret"),
        ]);
        assert_eq!(
            p.decide(&extra).preflight(&extra).unwrap_err(),
            Refusal::Header("x-secret".into())
        );
    }

    #[test]
    fn any_header_echoes_the_request_headers() {
        let p =
            policy("{allowed_origins: ['https://a.example'], allow_credentials: true}").unwrap();
        let r = req(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, x-stainless-os",
            ),
        ]);
        let headers = p.decide(&r).preflight(&r).unwrap();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get("access-control-allow-headers").unwrap(),
            "authorization, x-stainless-os"
        );
        assert_eq!(
            get("access-control-allow-origin").unwrap(),
            "https://a.example"
        );
        assert_eq!(get("access-control-allow-credentials").unwrap(), "true");
    }
}
