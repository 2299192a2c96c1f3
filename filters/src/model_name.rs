//! What the gateway accepts as a model name.
//!
//! A model name ends up in routing, in metric labels, in the access log, in usage records and
//! in the `x-switchyard-model` response header, so it is bounded where it enters: at most
//! [`MAX_MODEL_NAME_BYTES`] bytes of printable ASCII without spaces (`!` to `~`). That covers
//! every real provider's ids — `gpt-4o-2024-08-06`, `ft:gpt-4o:org::abc`,
//! `anthropic.claude-3-5-sonnet-20240620-v1:0`, Bedrock ARNs, `models/gemini-2.5-pro`,
//! `meta-llama/Llama-3.1-8B@ft` — and is always a valid HTTP header value.

use crate::openai::InvalidRequest;

/// The longest model name accepted, in bytes.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Whether `name` is an acceptable model name (non-empty, bounded, printable ASCII).
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_graphic())
}

/// [`is_valid`] as a 400 naming the `model` parameter. The message never repeats the name
/// (it may be megabytes long).
pub fn check(name: &str) -> Result<(), InvalidRequest> {
    if name.len() > MAX_MODEL_NAME_BYTES {
        return Err(InvalidRequest::new(
            format!(
                "Invalid 'model': the name is {} bytes long; at most {MAX_MODEL_NAME_BYTES} are allowed.",
                name.len()
            ),
            Some("model"),
        ));
    }
    if !is_valid(name) {
        return Err(InvalidRequest::new(
            "Invalid 'model': a model name may only contain printable ASCII characters without spaces.",
            Some("model"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_provider_ids_are_accepted() {
        for name in [
            "gpt-4o-2024-08-06",
            "ft:gpt-4o-mini:my-org::9aBcDeF",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
            "models/gemini-2.5-pro",
            "meta-llama/Llama-3.1-8B@ft",
            "cohere.command-r-plus-08-2024",
            "ibm/granite-13b-chat-v2",
            "gemini-1.5-pro-002",
        ] {
            assert!(check(name).is_ok(), "{name}");
        }
        assert!(check(&"m".repeat(MAX_MODEL_NAME_BYTES)).is_ok());
    }

    #[test]
    fn long_spaced_control_and_non_ascii_names_are_refused_with_param_model() {
        for name in [
            "m".repeat(MAX_MODEL_NAME_BYTES + 1),
            format!("mock-1-{}", "C".repeat(1_000_000)),
            "gpt 4".to_owned(),
            "gpt-4\n".to_owned(),
            "gpt-4\u{0}".to_owned(),
            "gpt-4\u{7f}".to_owned(),
            "gpt-4\t".to_owned(),
            "modèle".to_owned(),
        ] {
            let e = check(&name).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("model"));
            assert!(e.message.len() < 200, "the message must not echo the name");
        }
    }
}
