//! Decodes an OpenAI Responses request (`/v1/responses`) into the neutral [`ChatRequest`], for
//! providers that do not speak Responses themselves, and prepares what the gateway keeps of
//! it: the input as stored items ([`input_items`]), earlier turns spliced in
//! ([`prepend_history`]) and the members the `response` object echoes ([`echo`]).

use serde_json::{Map, Value};

use crate::chat::ChatRequest;
use crate::openai::{InvalidRequest, ParsedRequest};

/// Cheap checks of single fields before routing, refused in OpenAI's words.
pub fn validate(p: &ParsedRequest) -> Result<(), InvalidRequest> {
    let _ = p;
    Ok(())
}

/// The Responses body as a neutral chat request.
pub fn decode(body: &Map<String, Value>) -> Result<ChatRequest, InvalidRequest> {
    let _ = body;
    Err(InvalidRequest::new("not implemented yet", None))
}

/// The request's `input` as a list of items in Responses form (a string becomes one user
/// `message` item with an `input_text` part), each given an `id` if it has none — what the
/// gateway stores for `previous_response_id` and `GET /v1/responses/{id}/input_items`.
pub fn input_items(body: &Map<String, Value>, id_seed: &str) -> Result<Vec<Value>, InvalidRequest> {
    let _ = (body, id_seed);
    Ok(Vec::new())
}

/// Replaces `input` with `history` (earlier items: inputs and outputs of the previous
/// responses) followed by this request's own items; removes `previous_response_id`.
pub fn prepend_history(
    body: &mut Map<String, Value>,
    history: Vec<Value>,
) -> Result<(), InvalidRequest> {
    let _ = (body, history);
    Ok(())
}

/// The JSON members the `response` object echoes from the request, rendered once, without
/// braces (for [`crate::chat::ResponseCtx::echo`]).
pub fn echo(body: &Map<String, Value>, previous_response_id: Option<&str>) -> String {
    let _ = (body, previous_response_id);
    String::new()
}

/// The Responses name of a neutral parameter a provider dropped, where the two differ.
pub fn client_name(neutral: &str) -> Option<&'static str> {
    Some(match neutral {
        "max_tokens" => "max_output_tokens",
        "reasoning_effort" => "reasoning.effort",
        "response_format" => "text.format",
        _ => return None,
    })
}
