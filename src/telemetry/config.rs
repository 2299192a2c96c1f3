//! The `telemetry:` section: its raw form (unknown keys are errors) and its validation into
//! [`TelemetrySettings`]. No endpoint: tracing is off.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::Problem;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The collector: `http://host:4318` for HTTP/protobuf (`/v1/traces` is added unless the
    /// path already names it), `http://host:4317` for gRPC. Absent or empty: tracing off.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Sent with every export (e.g. an API key for a hosted backend).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Share of new traces recorded, 0..=1 (default 1).
    #[serde(default, deserialize_with = "ratio")]
    pub sample_ratio: Option<f64>,
    /// Follow the caller's sampled flag when it sends a `traceparent` (default true).
    #[serde(default)]
    pub parent_based: Option<bool>,
    /// `service.name` of the exported resource (default `switchyard`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// A response header that carries the trace id (e.g. `x-trace-id`); none by default.
    #[serde(default)]
    pub response_header: Option<String>,
    /// Spans waiting for export at most; more are dropped and counted (default 8192).
    #[serde(default)]
    pub max_queue_spans: Option<u64>,
    /// One export call's time limit (default 10).
    #[serde(default)]
    pub export_timeout_seconds: Option<u64>,
}

fn ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(f64),
        Str(String),
    }
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::Num(n)) => Ok(Some(n)),
        Some(NumOrString::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("expected a number from 0 to 1")),
    }
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// A validated `telemetry:` section with an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    pub otlp_endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub sample_ratio: f64,
    pub parent_based: bool,
    pub service_name: String,
    pub response_header: Option<http::HeaderName>,
    pub max_queue_spans: usize,
    pub export_timeout: Duration,
}

impl TelemetrySettings {
    /// Where HTTP/protobuf exports go: the endpoint with `/v1/traces` unless it names a path
    /// ending so already.
    pub fn traces_url(&self) -> String {
        let e = self.otlp_endpoint.trim_end_matches('/');
        if e.ends_with("/v1/traces") {
            e.to_owned()
        } else {
            format!("{e}/v1/traces")
        }
    }
}

/// Validates `raw`; problems go to `problems` under `telemetry.*`. None: tracing off.
pub fn validate(raw: &RawTelemetry, problems: &mut Vec<Problem>) -> Option<TelemetrySettings> {
    let endpoint = raw.otlp_endpoint.as_deref().map(str::trim).unwrap_or("");
    let before = problems.len();
    let protocol = match raw.protocol.as_deref().unwrap_or("http/protobuf") {
        "http/protobuf" | "http" => Protocol::HttpProtobuf,
        "grpc" => Protocol::Grpc,
        other => {
            problems.push(Problem::new(
                "telemetry.protocol",
                format!("unknown protocol {other:?}: use http/protobuf or grpc"),
            ));
            Protocol::HttpProtobuf
        }
    };
    if !endpoint.is_empty() {
        match endpoint.parse::<http::Uri>() {
            Ok(u)
                if u.authority().is_some() && matches!(u.scheme_str(), Some("http" | "https")) =>
            {
                if protocol == Protocol::Grpc && u.scheme_str() == Some("https") {
                    problems.push(Problem::new(
                        "telemetry.otlp_endpoint",
                        "gRPC export is built without TLS: use http:// (a local collector) or \
                         protocol: http/protobuf for an https:// endpoint",
                    ));
                }
                if u.query().is_some() {
                    problems.push(Problem::new(
                        "telemetry.otlp_endpoint",
                        "must not carry a query string",
                    ));
                }
            }
            _ => problems.push(Problem::new(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL with a host, e.g. http://localhost:4318",
            )),
        }
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (k, v) in &raw.headers {
        let name_ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok();
        if !name_ok {
            problems.push(Problem::new(
                format!("telemetry.headers.{k}"),
                "is not a valid header name",
            ));
        } else if http::HeaderValue::from_str(v).is_err() {
            // The value may be a secret: not repeated.
            problems.push(Problem::new(
                format!("telemetry.headers.{k}"),
                "its value is not a valid header value",
            ));
        } else {
            headers.push((k.to_ascii_lowercase(), v.clone()));
        }
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        problems.push(Problem::new(
            "telemetry.sample_ratio",
            "must be a number from 0 to 1",
        ));
    }
    let response_header = match raw.response_header.as_deref() {
        None | Some("") => None,
        Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                problems.push(Problem::new(
                    "telemetry.response_header",
                    "is not a valid header name",
                ));
                None
            }
        },
    };
    let max_queue_spans = raw.max_queue_spans.unwrap_or(8192);
    if !(1..=1_000_000).contains(&max_queue_spans) {
        problems.push(Problem::new(
            "telemetry.max_queue_spans",
            "must be from 1 to 1000000",
        ));
    }
    let export_timeout = raw.export_timeout_seconds.unwrap_or(10);
    if !(1..=300).contains(&export_timeout) {
        problems.push(Problem::new(
            "telemetry.export_timeout_seconds",
            "must be from 1 to 300",
        ));
    }
    let service_name = raw
        .service_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "switchyard".to_owned());
    if endpoint.is_empty() || problems.len() > before {
        return None;
    }
    Some(TelemetrySettings {
        otlp_endpoint: endpoint.to_owned(),
        protocol,
        headers,
        sample_ratio,
        parent_based: raw.parent_based.unwrap_or(true),
        service_name,
        response_header,
        max_queue_spans: max_queue_spans as usize,
        export_timeout: Duration::from_secs(export_timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (Option<TelemetrySettings>, Vec<Problem>) {
        let raw: RawTelemetry = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        (validate(&raw, &mut problems), problems)
    }

    #[test]
    fn no_endpoint_is_off() {
        let (s, p) = check("sample_ratio: 0.5");
        assert!(s.is_none() && p.is_empty());
    }

    #[test]
    fn a_good_section() {
        let (s, p) = check(
            "otlp_endpoint: http://otel:4318\nheaders: {x-api-key: abc}\nsample_ratio: '0.25'\nresponse_header: x-trace-id",
        );
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        assert_eq!(s.traces_url(), "http://otel:4318/v1/traces");
        assert_eq!(s.sample_ratio, 0.25);
        assert!(s.parent_based);
        assert_eq!(s.headers, vec![("x-api-key".into(), "abc".into())]);
    }

    #[test]
    fn bad_values_are_named() {
        let (s, p) = check(
            "otlp_endpoint: otel:4318\nprotocol: http/json\nsample_ratio: 2\nheaders: {'bad name': x}\nmax_queue_spans: 0",
        );
        assert!(s.is_none());
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "telemetry.otlp_endpoint",
            "telemetry.protocol",
            "telemetry.sample_ratio",
            "telemetry.headers.bad name",
            "telemetry.max_queue_spans",
        ] {
            assert!(paths.contains(&want), "{want} in {paths:?}");
        }
        let (_, p) = check("otlp_endpoint: https://otel:4317\nprotocol: grpc");
        assert_eq!(p.len(), 1);
    }
}
