//! The Responses front door's gateway side: conversation state. Before routing, a
//! `previous_response_id` is looked up in the response store (scoped to the caller's key) and
//! that conversation's items are spliced in front of the new input, so every provider sees the
//! whole conversation; after the answer, the `response` object is stored with the input it
//! answered ([`ResponsesTurn::save`]). Also serves `GET`/`DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items`.

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::{json, Map, Value};
use switchyard_filters::front::responses::request as responses_request;
use switchyard_filters::openai::{parse_request_bytes, ParsedRequest};
use switchyard_filters::Endpoint;

use super::forward::{copy_headers, Forwarder};
use super::gateway::Next;
use super::Gateway;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::governance::Governance;
use crate::respond;
use crate::response_store::{now, ResponseSettings, ResponseStore};
use crate::store::responses::ResponseRow;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use switchyard_filters::openai_responses;

/// One Responses request's identity and what is stored of it.
pub struct ResponsesTurn {
    /// `resp_…`: the id of the answer (the gateway's own; a native OpenAI answer keeps
    /// OpenAI's).
    pub id: String,
    /// The members the `response` object repeats from the request.
    pub echo: String,
    /// The `previous_response_id` the gateway resolved (providers never see it).
    pub previous: Option<String>,
    /// Set when the answer is to be stored (`store` not false, retention not 0).
    saving: Option<Saving>,
}

struct Saving {
    store: Arc<ResponseStore>,
    governance: Arc<Governance>,
    settings: ResponseSettings,
    owner: Arc<str>,
    /// The whole conversation's input items as JSON text.
    input_items: String,
}

/// The longest `previous_response_id` / stored id accepted.
const MAX_ID_LEN: usize = 128;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ResponsesTurn {
    /// Stores the answer (the `response` object's JSON); a store failure is logged, never
    /// turned into a failure of an answer the provider has already given.
    pub async fn save(&self, response: &[u8]) {
        let Some(s) = &self.saving else { return };
        let created = now();
        let row = ResponseRow {
            id: response_id_of(response).unwrap_or_else(|| self.id.clone()),
            owner: s.owner.to_string(),
            created_at: created,
            expires_at: created.saturating_add(s.settings.retention_secs),
            input_items: s.input_items.clone(),
            response: String::from_utf8_lossy(response).into_owned(),
        };
        if let Err(e) = s.store.put(&s.governance, s.settings, row).await {
            log::warn!("responses: storing {} failed: {}", self.id, e.0);
        }
    }

    /// Whether answers are stored (streams then look for the final `response` object).
    pub fn saves(&self) -> bool {
        self.saving.is_some()
    }
}

/// The `id` of a `response` object (a native OpenAI answer's own).
fn response_id_of(response: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_slice::<Id>(response)
        .ok()
        .map(|r| r.id)
        .filter(|id| valid_id(id))
}

/// The id fallback and echo for rendering an answer: the Responses turn's own, else the
/// request id (other front doors).
pub fn answer_ids<'a>(request_id: &'a str, turn: Option<&'a ResponsesTurn>) -> (&'a str, &'a str) {
    match turn {
        Some(t) => (&t.id, &t.echo),
        None => (request_id, ""),
    }
}

/// Stores a stream's final `response` object once the stream translator has it; true when
/// it was stored (or there is nothing to store it for).
pub async fn save_final_response(ctx: &RequestCtx, response: Option<&[u8]>) -> bool {
    match (ctx.responses.as_deref(), response) {
        (Some(turn), Some(response)) => {
            turn.save(response).await;
            true
        }
        (None, _) => true,
        (Some(_), None) => false,
    }
}

impl Forwarder<'_> {
    /// Relays a native Responses answer from OpenAI or Azure OpenAI (status below 400): the
    /// client's model name restored, the final `response` object stored.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn responses_native(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &str,
        client_model: &str,
        stream: bool,
        mut up: HttpSession,
        resp: &ResponseHeader,
        peer: &HttpPeer,
    ) -> Result<(), GatewayError> {
        let io = |_| GatewayError::Internal;
        let previous = ctx.responses.as_ref().and_then(|t| t.previous.clone());
        let restore = openai_responses::Restore {
            client_model,
            previous_response_id: previous.as_deref(),
        };
        if !stream {
            let body = self.read_answer(&mut up, provider).await?;
            self.done(up, peer).await;
            let Some((out, response)) = openai_responses::translate_response(&body, restore) else {
                ctx.log_detail = Some("unreadable answer: not a JSON object".into());
                return Err(GatewayError::UpstreamUnreachable {
                    provider: provider.to_owned(),
                    detail: "the provider's answer could not be read",
                });
            };
            ctx.usage = openai_responses::usage_of(&response);
            if let Some(turn) = ctx.responses.as_deref() {
                turn.save(&out).await;
            }
            let mut h = respond::header(200, "application/json", ctx).map_err(io)?;
            copy_headers(resp, &mut h);
            return respond::full(session, ctx, h, Bytes::from(out))
                .await
                .map_err(io);
        }
        let relay = Box::new(openai_responses::ResponsesRelay::new(restore));
        self.relay_stream(session, ctx, provider, up, resp, peer, relay)
            .await
    }
}

impl Gateway {
    /// Prepares a Responses request: the conversation of `previous_response_id` spliced in
    /// front of the input, the response id, the echo and what will be stored. Returns the
    /// request the attempts run on (the caller's own when there was no previous response).
    pub(super) async fn responses_turn(
        &self,
        config: &crate::config::Config,
        ctx: &mut RequestCtx,
        parsed: ParsedRequest,
    ) -> Result<ParsedRequest, GatewayError> {
        let body = parsed.body()?;
        let previous = match body.get("previous_response_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if valid_id(id) => Some(id.clone()),
            Some(_) => {
                return Err(GatewayError::InvalidRequest {
                    message: "Invalid 'previous_response_id': expected an ID that contains letters, numbers, underscores, or dashes.".into(),
                    param: Some("previous_response_id".into()),
                })
            }
        };
        let owner: Arc<str> = ctx
            .caller
            .as_ref()
            .map(|c| c.key_id.clone())
            .unwrap_or_else(|| Arc::from("anonymous"));
        let id = format!("resp_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let settings = config.responses;
        let saves = body.get("store").and_then(Value::as_bool) != Some(false)
            && settings.retention_secs > 0;
        let echo = responses_request::echo(body, previous.as_deref());
        // The conversation's input items as stored (none when the answer is not kept).
        let items_of = |body: &Map<String, Value>| -> Result<Option<String>, GatewayError> {
            if !saves {
                return Ok(None);
            }
            let items = responses_request::input_items(body, &id)?;
            serde_json::to_string(&items)
                .map(Some)
                .map_err(|_| GatewayError::Internal)
        };
        let (parsed, input_items) = match &previous {
            None => {
                let items = items_of(body)?;
                (parsed, items)
            }
            Some(prev) => {
                let row = self
                    .responses
                    .get(&self.governance, prev, &owner)
                    .await
                    .map_err(|e| {
                        ctx.log_detail = Some(format!("response store: {}", e.0));
                        GatewayError::StoreUnavailable
                    })?
                    .ok_or_else(|| GatewayError::PreviousResponseNotFound(prev.clone()))?;
                let mut history: Vec<Value> =
                    serde_json::from_str(&row.input_items).map_err(|_| GatewayError::Internal)?;
                let mut stored: Map<String, Value> =
                    serde_json::from_str(&row.response).map_err(|_| GatewayError::Internal)?;
                if let Some(Value::Array(output)) = stored.remove("output") {
                    history.extend(output);
                }
                // Ids and unreferencable reasoning out: the conversation may continue on
                // another provider, or on OpenAI, which resolves ids among its own responses.
                openai_responses::history_for_openai(&mut history);
                let mut body = body.clone();
                responses_request::prepend_history(&mut body, history)?;
                let items = items_of(&body)?;
                let raw = serde_json::to_vec(&body).map_err(|_| GatewayError::Internal)?;
                (
                    parse_request_bytes(Endpoint::Responses, Bytes::from(raw))?,
                    items,
                )
            }
        };
        let saving = input_items.map(|input_items| Saving {
            store: self.responses.clone(),
            governance: self.governance.clone(),
            settings,
            owner,
            input_items,
        });
        ctx.responses = Some(Box::new(ResponsesTurn {
            id,
            echo,
            previous,
            saving,
        }));
        Ok(parsed)
    }

    /// `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
    /// `GET /v1/responses/{id}/input_items`: the caller's own stored responses only.
    pub(super) async fn stored_response(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rest: &str,
    ) -> Result<Next, GatewayError> {
        let method = session.req_header().method.clone();
        let (id, items) = match rest.strip_suffix("/input_items") {
            Some(id) => (id, true),
            None => (rest.trim_end_matches('/'), false),
        };
        let not_found = || GatewayError::NotFound(format!("Response with id '{id}' not found."));
        if !valid_id(id) {
            return Err(GatewayError::NotFound(
                "Response with this id not found.".to_owned(),
            ));
        }
        let owner: Arc<str> = ctx
            .caller
            .as_ref()
            .map(|c| c.key_id.clone())
            .unwrap_or_else(|| Arc::from("anonymous"));
        let store_failed = |ctx: &mut RequestCtx, e: crate::response_store::StoreFailed| {
            ctx.log_detail = Some(format!("response store: {}", e.0));
            GatewayError::StoreUnavailable
        };
        if method == http::Method::DELETE && !items {
            let deleted = match self.responses.delete(&self.governance, id, &owner).await {
                Ok(d) => d,
                Err(e) => return Err(store_failed(ctx, e)),
            };
            if !deleted {
                return Err(not_found());
            }
            let body = json!({"id": id, "object": "response", "deleted": true});
            return self.send_json(session, ctx, &body).await;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return Err(GatewayError::MethodNotAllowed {
                allow: if items { "GET" } else { "GET, DELETE" },
            });
        }
        let row = match self.responses.get(&self.governance, id, &owner).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(not_found()),
            Err(e) => return Err(store_failed(ctx, e)),
        };
        if !items {
            let h = respond::header(200, "application/json", ctx)
                .map_err(|_| GatewayError::Internal)?;
            respond::full(session, ctx, h, Bytes::from(row.response.clone()))
                .await
                .map_err(|_| GatewayError::Internal)?;
            return Ok(Next::Responded);
        }
        let all: Vec<Value> =
            serde_json::from_str(&row.input_items).map_err(|_| GatewayError::Internal)?;
        let query = session.req_header().uri.query().unwrap_or("").to_owned();
        let page = input_items_page(all, &query)?;
        self.send_json(session, ctx, &page).await
    }

    async fn send_json(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        body: &Value,
    ) -> Result<Next, GatewayError> {
        let bytes = serde_json::to_vec(body).map_err(|_| GatewayError::Internal)?;
        respond::json(session, ctx, 200, bytes)
            .await
            .map_err(|_| GatewayError::Internal)?;
        Ok(Next::Responded)
    }
}

/// One page of input items as OpenAI lists them: `order` (`desc` by default), `limit`
/// (1–100, default 20), `after` (an item id).
fn input_items_page(mut items: Vec<Value>, query: &str) -> Result<Value, GatewayError> {
    let mut limit = 20usize;
    let mut desc = true;
    let mut after: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned();
        let bad = |param: &str| GatewayError::InvalidRequest {
            message: format!("Invalid value for '{param}'."),
            param: Some(param.to_owned()),
        };
        match k {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad("limit"))?
            }
            "order" => {
                desc = match v.as_str() {
                    "desc" => true,
                    "asc" => false,
                    _ => return Err(bad("order")),
                }
            }
            "after" => after = Some(v),
            _ => {}
        }
    }
    if desc {
        items.reverse();
    }
    let start = match &after {
        Some(a) => items
            .iter()
            .position(|i| i.get("id").and_then(Value::as_str) == Some(a.as_str()))
            .map_or(items.len(), |p| p + 1),
        None => 0,
    };
    let rest = items.len().saturating_sub(start);
    let data: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let id_of = |v: Option<&Value>| v.and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": id_of(data.first()),
        "last_id": id_of(data.last()),
        "has_more": rest > data.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("resp_0123abcd"));
        assert!(valid_id("resp-x_Y9"));
        for bad in ["", "resp 1", "resp/../x", "résumé", &"a".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn input_items_are_paged_like_openai() {
        let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("msg_{i}")})).collect();
        let page = input_items_page(items.clone(), "").unwrap();
        assert_eq!(page["first_id"], "msg_4");
        assert_eq!(page["has_more"], false);
        let page = input_items_page(items.clone(), "order=asc&limit=2").unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), 2);
        assert_eq!(
            (page["first_id"].clone(), page["has_more"].clone()),
            (json!("msg_0"), json!(true))
        );
        let page = input_items_page(items.clone(), "order=asc&limit=2&after=msg_3").unwrap();
        assert_eq!(page["first_id"], "msg_4");
        assert_eq!(page["has_more"], false);
        assert!(input_items_page(items, "limit=0").is_err());
    }
}
