//! Errors in Anthropic's envelope, `{"type":"error","error":{"type":…,"message":…}}`, with
//! Anthropic's error types, for every error on the Messages route (the gateway's own and the
//! providers', whose OpenAI-envelope translations are re-wrapped here).

use serde_json::Value;

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ if status < 500 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The envelope for `status` with `message`.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":\"");
    out.extend_from_slice(error_type(status).as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    serde_json::to_writer(&mut out, message).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"}}");
    out
}

/// An OpenAI error envelope (`{"error":{"message":…}}`) re-wrapped in Anthropic's, keeping the
/// message; a body that is not one keeps a generic message.
pub fn from_openai(status: u16, openai_body: &[u8]) -> Vec<u8> {
    let message = serde_json::from_slice::<Value>(openai_body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("The provider answered HTTP {status}."));
    error_body(status, &message)
}

/// Anthropic's error `type` for an OpenAI error `type` (mid-stream error events).
pub fn type_for_openai(kind: &str) -> &'static str {
    match kind {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        k if k.contains("rate_limit") => "rate_limit_error",
        k if k.contains("overloaded") => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_anthropic_types() {
        for (s, t) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(error_type(s), t, "{s}");
        }
        let v: Value = serde_json::from_slice(&from_openai(
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})
        );
    }
}
