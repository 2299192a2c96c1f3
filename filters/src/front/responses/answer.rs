//! A neutral answer ([`Completion`]) as the `response` object the Responses API returns.

use serde_json::Value;

use crate::chat::{Completion, ResponseCtx};

/// Renders the client's `response` body.
pub fn render(c: &Completion, ctx: &ResponseCtx<'_>) -> Vec<u8> {
    let _ = (c, ctx);
    b"{}".to_vec()
}

/// The output items of a rendered `response` object (for storage), ids as rendered.
pub fn output_items(response_json: &[u8]) -> Vec<Value> {
    let _ = response_json;
    Vec::new()
}
