//! `/v1/embeddings` in neutral form: the inputs as texts, and the vectors rendered back as
//! OpenAI's list (floats, or base64 of little-endian f32 as openai-python asks by default).

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::openai::{InvalidRequest, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The texts to embed, in order.
    pub inputs: Vec<String>,
    pub dimensions: Option<u64>,
    pub encoding_format: EncodingFormat,
    pub user: Option<String>,
    /// Fields sent that have no typed slot (e.g. `input_type` extensions), by name.
    pub other: Vec<(String, Value)>,
}

impl EmbeddingsRequest {
    pub fn from_body(body: &Map<String, Value>) -> Result<EmbeddingsRequest, InvalidRequest> {
        let bad_input = || {
            InvalidRequest::new(
                "Invalid 'input': this provider accepts a string or an array of strings (token-id inputs cannot be translated).",
                Some("input"),
            )
        };
        let inputs = match body.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad_input))
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => {
                return Err(InvalidRequest::new(
                    "Invalid 'input': empty array. Expected at least one input.",
                    Some("input"),
                ))
            }
            _ => return Err(bad_input()),
        };
        if inputs.iter().any(String::is_empty) {
            return Err(InvalidRequest::new(
                "Invalid 'input': inputs must not be empty strings.",
                Some("input"),
            ));
        }
        let dimensions = match body.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n),
                _ => {
                    return Err(InvalidRequest::new(
                        "Invalid 'dimensions': expected a positive integer.",
                        Some("dimensions"),
                    ))
                }
            },
        };
        let encoding_format = match body.get("encoding_format") {
            None | Some(Value::Null) => EncodingFormat::Float,
            Some(Value::String(s)) if s == "float" => EncodingFormat::Float,
            Some(Value::String(s)) if s == "base64" => EncodingFormat::Base64,
            Some(_) => return Err(InvalidRequest::new(
                "Invalid value for 'encoding_format': supported values are 'float' and 'base64'.",
                Some("encoding_format"),
            )),
        };
        const KNOWN: &[&str] = &["model", "input", "dimensions", "encoding_format", "user"];
        Ok(EmbeddingsRequest {
            inputs,
            dimensions,
            encoding_format,
            user: body.get("user").and_then(Value::as_str).map(str::to_owned),
            other: body
                .iter()
                .filter(|(k, v)| !KNOWN.contains(&k.as_str()) && !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// The provider's vectors, one per input in input order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

/// Renders `{"object":"list","data":[…],"model":…,"usage":…}`.
pub fn render(e: &Embeddings, client_model: &str, format: EncodingFormat) -> Vec<u8> {
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match format {
                EncodingFormat::Float => {
                    Value::from(v.iter().map(|f| f64::from(*f)).collect::<Vec<f64>>())
                }
                EncodingFormat::Base64 => {
                    let mut bytes = Vec::with_capacity(v.len() * 4);
                    for f in v {
                        bytes.extend_from_slice(&f.to_le_bytes());
                    }
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "model": client_model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// The usage an embeddings answer is metered with.
pub fn usage(e: &Embeddings) -> Usage {
    Usage::new(e.prompt_tokens, 0)
}

/// Reads a JSON array of numbers as f32s.
pub fn floats(v: &Value) -> Option<Vec<f32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let e = Embeddings {
            vectors: vec![vec![1.0, -2.5]],
            prompt_tokens: 3,
        };
        let v: Value = serde_json::from_slice(&render(&e, "emb", EncodingFormat::Base64)).unwrap();
        let b = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(b, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        let v: Value = serde_json::from_slice(&render(&e, "emb", EncodingFormat::Float)).unwrap();
        assert_eq!(v["data"][0]["embedding"], serde_json::json!([1.0, -2.5]));
    }

    #[test]
    fn inputs_and_options_are_checked() {
        let body = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        let r = EmbeddingsRequest::from_body(&body(
            r#"{"model":"e","input":["a","b"],"dimensions":256,"encoding_format":"base64"}"#,
        ))
        .unwrap();
        assert_eq!(r.inputs, vec!["a", "b"]);
        assert_eq!(r.dimensions, Some(256));
        assert_eq!(r.encoding_format, EncodingFormat::Base64);
        for (b, p) in [
            (r#"{"model":"e","input":[1,2]}"#, "input"),
            (r#"{"model":"e","input":[]}"#, "input"),
            (r#"{"model":"e","input":"x","dimensions":0}"#, "dimensions"),
            (
                r#"{"model":"e","input":"x","encoding_format":"int8"}"#,
                "encoding_format",
            ),
        ] {
            assert_eq!(
                EmbeddingsRequest::from_body(&body(b))
                    .unwrap_err()
                    .param
                    .as_deref(),
                Some(p)
            );
        }
    }
}
