//! Builds each attempt's upstream request for one candidate: the same-dialect fast paths
//! (the caller's OpenAI body to OpenAI/Azure, the caller's Messages body to a Claude host)
//! or a translation through the neutral model ([`switchyard_filters::translate`]).

use super::attempts::*;
use super::front_door::Typed;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::http::RequestHeader;
use switchyard_filters::providers::messages_native;
use switchyard_filters::translate::{self, AnswerFormat, Dialect};
use switchyard_filters::{openai_responses, openai_upstream, Endpoint};

use crate::errors::GatewayError;
use crate::pipeline::forward::{Mode, UpstreamCall};
use crate::pipeline::translation::{self, speaks_messages, Shape, Translation};
use crate::providers::{ProviderKind, Upstream};
use crate::route::Candidate;
use percent_encoding::utf8_percent_encode;

/// An attempt's request, ready to send.
pub(super) struct Prepared {
    pub(super) request: RequestHeader,
    pub(super) body: Bytes,
    pub(super) how: How,
    /// Client parameters the provider cannot honour, for `x-switchyard-dropped-params`.
    pub(super) dropped: Option<String>,
}

/// How an attempt's answer is turned into the client's.
pub(super) enum How {
    /// OpenAI-shaped upstream (OpenAI, Azure OpenAI): model restored, usage chunk handled.
    OpenAi { azure: bool },
    /// A Responses request to OpenAI or Azure OpenAI, natively: model restored, the final
    /// `response` object kept for the store.
    OpenAiResponses,
    /// A provider with its own API.
    Translated(Box<Translation>),
}

impl Run<'_> {
    pub(super) fn prepare(
        &self,
        cand: &Candidate<'_>,
        upstream: &Upstream,
    ) -> Result<Prepared, GatewayError> {
        let started = Instant::now();
        let kind = cand.provider.kind;
        let openai_front = matches!(
            self.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings
        );
        let front_label = match self.endpoint {
            Endpoint::Messages | Endpoint::CountTokens => "messages",
            Endpoint::Responses => "responses",
            _ => "openai",
        };
        let prepared = match kind {
            // The Responses API natively (Azure: its OpenAI-compatible `/openai/v1` surface,
            // the deployment in `model`).
            ProviderKind::OpenAi | ProviderKind::Azure if self.endpoint == Endpoint::Responses => {
                let body = openai_responses::prepare_request(self.parsed, cand.upstream_model);
                let path = upstream.endpoint.path(if kind == ProviderKind::Azure {
                    "/openai/v1/responses"
                } else {
                    "/v1/responses"
                });
                Prepared {
                    request: self.json_request(&path, upstream, body.len(), &[])?,
                    body: Bytes::from(body),
                    how: How::OpenAiResponses,
                    dropped: None,
                }
            }
            // Same dialect on both sides: the caller's body with the model replaced.
            ProviderKind::OpenAi if openai_front => {
                let body = openai_upstream::prepare_request(self.parsed, cand.upstream_model);
                let path = upstream
                    .endpoint
                    .path(&format!("/v1{}", self.endpoint.path()));
                Prepared {
                    request: self.json_request(&path, upstream, body.len(), &[])?,
                    body: Bytes::from(body),
                    how: How::OpenAi { azure: false },
                    dropped: None,
                }
            }
            ProviderKind::Azure if openai_front => {
                let api_version = cand
                    .options
                    .api_version
                    .as_deref()
                    .or(cand.provider.settings.api_version.as_deref())
                    .unwrap_or_default();
                let path = upstream.endpoint.path(&format!(
                    "/openai/deployments/{}{}?api-version={}",
                    utf8_percent_encode(cand.upstream_model, SEGMENT),
                    self.endpoint.path(),
                    utf8_percent_encode(api_version, SEGMENT),
                ));
                let body = openai_upstream::prepare_request(self.parsed, cand.upstream_model);
                Prepared {
                    request: self.json_request(&path, upstream, body.len(), &[])?,
                    body: Bytes::from(body),
                    how: How::OpenAi { azure: true },
                    dropped: None,
                }
            }
            _ => self.prepare_translated(cand, upstream)?,
        };
        self.gw
            .metrics
            .translation
            .with_label_values(&[front_label, kind.as_str()])
            .observe(started.elapsed().as_secs_f64());
        Ok(prepared)
    }

    /// Builds the request for a provider with its own API through its translator.
    pub(super) fn prepare_translated(
        &self,
        cand: &Candidate<'_>,
        upstream: &Upstream,
    ) -> Result<Prepared, GatewayError> {
        let provider = cand.provider;
        let dialect = translation::dialect(
            provider.kind,
            self.endpoint,
            cand.upstream_model,
            cand.options,
        )
        .ok_or_else(|| GatewayError::InvalidRequest {
            message: format!(
                "Provider `{}` ({}) cannot serve /v1{}.",
                provider.name,
                provider.kind.as_str(),
                self.endpoint.path()
            ),
            param: Some("model".into()),
        })?;
        // Messages (and count_tokens, which only reaches hosts that count) to a Claude host:
        // the caller's body. Other hosts' token counts are estimated before this (attempts.rs).
        if speaks_messages(dialect)
            && matches!(self.endpoint, Endpoint::Messages | Endpoint::CountTokens)
        {
            return self.prepare_native(dialect, cand, upstream);
        }
        if self.endpoint == Endpoint::CountTokens {
            // Hosts that cannot count are answered with an estimate before any call
            // (attempts.rs): never send them a chat request instead.
            return Err(GatewayError::Internal);
        }
        match self.typed {
            Typed::Chat(typed) => {
                let req = typed.as_ref().map_err(|e| GatewayError::from(e.clone()))?;
                // A provider that takes image bytes only gets the request with its image URLs
                // fetched (attempts.rs fetched them before this attempt), or why they were not.
                let req = match self.images.get() {
                    Some(fetched) if self.needs_image_bytes(dialect) => {
                        fetched.as_ref().map_err(Clone::clone)?
                    }
                    _ => req,
                };
                let shape = Shape::Chat {
                    stream: req.stream,
                    front: req.front,
                    include_usage: req.include_usage,
                };
                let mut t =
                    Translation::new(dialect, provider, cand.upstream_model, cand.options, shape);
                let up = translate::prepare_chat(&t.target(), req)?;
                t.answer = up.answer;
                let path = upstream.endpoint.path(&up.path);
                let request =
                    self.json_request_for(&path, upstream, up.body.len(), &up.headers, up.answer)?;
                Ok(Prepared {
                    request,
                    body: Bytes::from(up.body),
                    how: How::Translated(Box::new(t)),
                    dropped: joined(&up.dropped),
                })
            }
            Typed::Embeddings(typed) => {
                let req = typed.as_ref().map_err(|e| GatewayError::from(e.clone()))?;
                let shape = Shape::Embeddings {
                    format: req.encoding_format,
                };
                let mut t =
                    Translation::new(dialect, provider, cand.upstream_model, cand.options, shape);
                let call = translate::prepare_embeddings(&t.target(), req)?;
                let mut bodies = call.bodies.into_iter().map(Bytes::from);
                let first = bodies.next().ok_or(GatewayError::Internal)?;
                t.more_bodies = bodies.collect();
                let path = upstream.endpoint.path(&call.path);
                let request = self.json_request_for(
                    &path,
                    upstream,
                    first.len(),
                    &call.headers,
                    AnswerFormat::Json,
                )?;
                Ok(Prepared {
                    request,
                    body: first,
                    how: How::Translated(Box::new(t)),
                    dropped: joined(&call.dropped),
                })
            }
            Typed::None => Err(GatewayError::Internal),
        }
    }

    /// A Messages request for a host that speaks Messages: the caller's body with only the
    /// model (and what the host needs: `anthropic_version`, the path) changed.
    pub(super) fn prepare_native(
        &self,
        dialect: Dialect,
        cand: &Candidate<'_>,
        upstream: &Upstream,
    ) -> Result<Prepared, GatewayError> {
        let count = self.endpoint == Endpoint::CountTokens;
        let stream = self.parsed.summary.stream;
        let shape = if count {
            Shape::CountTokens
        } else {
            Shape::Native { stream }
        };
        let mut t = Translation::new(
            dialect,
            cand.provider,
            cand.upstream_model,
            cand.options,
            shape,
        );
        if dialect == Dialect::Anthropic && t.api_version.is_none() {
            t.api_version = self.anthropic_version.map(Arc::from);
        }
        let raw = self.parsed.raw();
        let up = if count {
            messages_native::prepare_count_tokens(&t.target(), raw, self.beta)?
        } else {
            messages_native::prepare(&t.target(), raw, stream, self.beta)?
        };
        t.answer = up.answer;
        let path = upstream.endpoint.path(&up.path);
        let request =
            self.json_request_for(&path, upstream, up.body.len(), &up.headers, up.answer)?;
        Ok(Prepared {
            request,
            body: Bytes::from(up.body),
            how: How::Translated(Box::new(t)),
            dropped: joined(&up.dropped),
        })
    }

    pub(super) fn json_request(
        &self,
        path: &str,
        upstream: &Upstream,
        len: usize,
        headers: &[(&'static str, String)],
    ) -> Result<RequestHeader, GatewayError> {
        let answer = if self.parsed.summary.stream {
            AnswerFormat::Sse
        } else {
            AnswerFormat::Json
        };
        self.json_request_for(path, upstream, len, headers, answer)
    }

    pub(super) fn json_request_for(
        &self,
        path: &str,
        upstream: &Upstream,
        len: usize,
        headers: &[(&'static str, String)],
        answer: AnswerFormat,
    ) -> Result<RequestHeader, GatewayError> {
        let mut req = json_request(path, upstream, len, answer.accept())
            .map_err(|_| GatewayError::Internal)?;
        for (name, value) in headers {
            req.insert_header(*name, value.as_str())
                .map_err(|_| GatewayError::Internal)?;
        }
        Ok(req)
    }

    pub(super) fn call<'c>(
        &'c self,
        cand: &'c Candidate<'_>,
        upstream: &'c Upstream,
        prepared: Prepared,
    ) -> UpstreamCall<'c> {
        let Prepared {
            request,
            body,
            how,
            dropped,
        } = prepared;
        let client_model = &self.parsed.summary.model;
        let mode = match how {
            How::OpenAi { azure } => Mode::OpenAi {
                stream: self.parsed.summary.stream,
                client_model,
                upstream_model: cand.upstream_model,
                client_wants_usage: self.parsed.summary.client_wants_usage,
                azure,
            },
            How::OpenAiResponses => Mode::OpenAiResponses {
                stream: self.parsed.summary.stream,
                client_model,
            },
            How::Translated(translation) => Mode::Translated {
                client_model,
                translation,
                dropped,
            },
        };
        UpstreamCall {
            provider: cand.provider,
            upstream,
            request,
            body,
            mode,
        }
    }
}

/// Longest `x-switchyard-dropped-params` value: the names include any unknown field the
/// caller sent, and per-message names (`messages[7].name`) grow with the body.
pub(super) const MAX_DROPPED_HEADER_BYTES: usize = 1024;

/// The `x-switchyard-dropped-params` value: the names comma-separated, cut to
/// [`MAX_DROPPED_HEADER_BYTES`] (a cut list ends in `,...`); names that could not be part of
/// a header value are left out.
pub(super) fn joined(names: &[String]) -> Option<String> {
    let mut out = String::new();
    for name in names {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            continue;
        }
        if out.len() + name.len() + 1 > MAX_DROPPED_HEADER_BYTES - 4 {
            out.push_str(if out.is_empty() { "..." } else { ",..." });
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name);
    }
    (!out.is_empty()).then_some(out)
}

/// A path segment's percent-encoding (RFC 3986 unreserved characters stay).
pub(super) const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The request header for a JSON POST to an upstream (credentials are applied later).
pub(super) fn json_request(
    path: &str,
    upstream: &Upstream,
    len: usize,
    accept: &str,
) -> pingora::Result<RequestHeader> {
    let mut req = RequestHeader::build("POST", path.as_bytes(), Some(8))?;
    req.insert_header("host", upstream.endpoint.authority.clone())?;
    req.insert_header("content-type", "application/json")?;
    req.insert_header("content-length", len.to_string())?;
    req.insert_header("accept", accept)?;
    req.insert_header(
        "user-agent",
        concat!("switchyard/", env!("CARGO_PKG_VERSION")),
    )?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_params_header_is_bounded_and_valid() {
        assert_eq!(joined(&[]), None);
        assert_eq!(
            joined(&["seed".into(), "user".into()]).as_deref(),
            Some("seed,user")
        );
        let many: Vec<String> = (0..100_000)
            .map(|i| format!("messages[{i}].name"))
            .collect();
        let v = joined(&many).unwrap();
        assert!(
            v.len() <= MAX_DROPPED_HEADER_BYTES && v.ends_with(",..."),
            "{v}"
        );
        let huge = vec!["x".repeat(1_000_000), "seed".into(), "bad name\n".into()];
        let v = joined(&huge).unwrap();
        assert_eq!(v, "...");
        assert!(http::HeaderValue::from_str(&v).is_ok());
        assert_eq!(
            joined(&["b\u{e9}".into(), "seed".into()]).as_deref(),
            Some("seed")
        );
    }
}
