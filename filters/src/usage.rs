//! Reading token usage out of any provider's response without changing it.
//!
//! Each provider reports usage in its own shape; [`UsageMeter`] recognises all of them in
//! JSON bodies and stream events, keeping the largest value seen per field (stream usage is
//! cumulative: Anthropic's `message_delta`, Gemini's `usageMetadata`, Bedrock's final
//! metrics), and remembers the model the response names.

use serde_json::Value;

use crate::openai::Usage;

#[derive(Debug, Default, Clone)]
pub struct UsageMeter {
    input: Option<u64>,
    output: Option<u64>,
    model: Option<String>,
    /// Bytes of generated text seen (see [`UsageMeter::text_bytes`]).
    text_bytes: u64,
}

/// Fields that carry generated text in the providers' responses and stream events: OpenAI
/// `content` / `text` / `refusal` / `reasoning_content` / tool-call `arguments`, Anthropic
/// `text` / `partial_json` / `thinking`, Gemini and Bedrock `text`, watsonx `generated_text`.
const TEXT_FIELDS: [&str; 8] = [
    "content",
    "text",
    "refusal",
    "reasoning_content",
    "arguments",
    "partial_json",
    "thinking",
    "generated_text",
];

/// (object key holding usage, input field, output field)
const SHAPES: [(&str, &str, &str); 6] = [
    ("usage", "prompt_tokens", "completion_tokens"), // OpenAI, Azure, watsonx
    ("usage", "input_tokens", "output_tokens"),      // Anthropic (also on Bedrock/Vertex)
    ("usage", "inputTokens", "outputTokens"),        // Bedrock Converse
    ("usage", "promptTokens", "completionTokens"),   // OCI GENERIC
    ("usageMetadata", "promptTokenCount", "candidatesTokenCount"), // Gemini
    (
        "amazon-bedrock-invocationMetrics",
        "inputTokenCount",
        "outputTokenCount",
    ), // Bedrock InvokeModel streams
];

impl UsageMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks for usage and a model name in one JSON document (a body or a stream event).
    pub fn observe_json(&mut self, bytes: &[u8]) {
        if self.observe_top_level(bytes) {
            return;
        }
        match serde_json::from_slice::<Value>(bytes) {
            // Gemini `streamGenerateContent` without `alt=sse`: one JSON array of responses.
            Ok(Value::Array(items)) => items.iter().for_each(|v| self.observe_value(v, 0)),
            Ok(v) => self.observe_value(&v, 0),
            Err(_) => {}
        }
    }

    /// The common case without building the document's tree: an object with its usage at the
    /// top level (every provider's complete answer but OCI's, and most final stream events).
    /// Only the top-level fields that can carry usage or the model are read into values; the
    /// rest (the generated text) is only scanned. False when the document has no usage at the
    /// top (the caller then reads it whole: nested usage, the text-size estimate).
    fn observe_top_level(&mut self, bytes: &[u8]) -> bool {
        // Borrowed keys: a key with escapes fails here and takes the full path.
        let Ok(TopFields(top)) = serde_json::from_slice::<TopFields<'_>>(bytes) else {
            return false;
        };
        // `"usage": null` (OpenAI's stream chunks before the last) is no usage.
        if !top
            .iter()
            .any(|(k, raw)| raw.get().starts_with('{') && SHAPES.iter().any(|(key, _, _)| key == k))
        {
            return false;
        }
        let mut obj = serde_json::Map::new();
        for (k, raw) in top {
            if WANTED.contains(&k) {
                if let Ok(v) = serde_json::from_str::<Value>(raw.get()) {
                    obj.insert(k.to_owned(), v);
                }
            }
        }
        let before = (self.input, self.output);
        self.observe_object(&obj);
        if (self.input, self.output) == before && !self.reports_usage(&obj) {
            return false;
        }
        true
    }

    /// Whether `obj` has a usage object of a known shape with a count in it.
    fn reports_usage(&self, obj: &serde_json::Map<String, Value>) -> bool {
        SHAPES.iter().any(|(key, input, output)| {
            obj.get(*key).and_then(Value::as_object).is_some_and(|u| {
                u.get(*input).is_some_and(Value::is_u64)
                    || u.get(*output).is_some_and(Value::is_u64)
            })
        })
    }

    /// Records token counts reported outside the body (e.g. Bedrock's
    /// `x-amzn-bedrock-input-token-count` / `-output-token-count` headers).
    pub fn observe_counts(&mut self, input: Option<u64>, output: Option<u64>) {
        if let Some(i) = input {
            self.input = Some(self.input.map_or(i, |x| x.max(i)));
        }
        if let Some(o) = output {
            self.output = Some(self.output.map_or(o, |x| x.max(o)));
        }
    }

    fn observe_value(&mut self, v: &Value, depth: usize) {
        if depth == 0 {
            self.text_bytes += text_bytes(v, 0);
        }
        let Value::Object(obj) = v else { return };
        self.observe_object(obj);
        // Usage can sit one or two levels down: Anthropic `message_start.message.usage`,
        // OCI `chatResponse.usage`, Gemini stream wrappers.
        if depth < 2 {
            for key in ["message", "chatResponse", "response", "metadata"] {
                if let Some(inner) = obj.get(key) {
                    self.observe_value(inner, depth + 1);
                }
            }
        }
    }

    /// The model name and the usage an object's own fields report.
    fn observe_object(&mut self, obj: &serde_json::Map<String, Value>) {
        if self.model.is_none() {
            // `modelId` (OCI) before `modelVersion`, which is OCI's version number but Gemini's name.
            if let Some(m) = obj
                .get("model")
                .or_else(|| obj.get("modelId"))
                .or_else(|| obj.get("modelVersion"))
                .or_else(|| obj.get("model_id")) // watsonx
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
            // Azure's first stream event has "model": ""
            {
                self.model = Some(m.to_owned());
            }
        }
        for (key, input, output) in SHAPES {
            if let Some(Value::Object(u)) = obj.get(key) {
                let i = u.get(input).and_then(Value::as_u64);
                let o = u.get(output).and_then(Value::as_u64);
                if i.is_some() || o.is_some() {
                    self.observe_counts(i, o);
                }
            }
        }
        self.observe_count_fields(obj);
    }

    /// Counts that are not a usage object: watsonx `/text/generation[_stream]`
    /// (`results[].input_token_count` / `generated_token_count`, cumulative in streams) and
    /// `/text/embeddings` (`input_token_count`); Vertex `:predict` embeddings
    /// (`predictions[].embeddings.statistics.token_count`, summed).
    fn observe_count_fields(&mut self, obj: &serde_json::Map<String, Value>) {
        let count = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
        if let Some(Value::Array(results)) = obj.get("results") {
            for r in results {
                let (i, o) = (
                    count(r, "input_token_count"),
                    count(r, "generated_token_count"),
                );
                if i.is_some() || o.is_some() {
                    self.observe_counts(i, o);
                }
            }
        }
        if let Some(i) = obj.get("input_token_count").and_then(Value::as_u64) {
            self.observe_counts(Some(i), None);
        }
        if let Some(Value::Array(predictions)) = obj.get("predictions") {
            let tokens: Vec<u64> = predictions
                .iter()
                .filter_map(|p| p.pointer("/embeddings/statistics/token_count")?.as_u64())
                .collect();
            if !tokens.is_empty() {
                self.observe_counts(Some(tokens.iter().sum()), None);
            }
        }
    }

    /// The usage seen so far, if any.
    pub fn usage(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        Some(Usage::new(
            self.input.unwrap_or(0),
            self.output.unwrap_or(0),
        ))
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Bytes of generated text in the documents seen (string values of the providers' text
    /// fields): the basis of a token estimate when a response reports no usage.
    pub fn text_bytes(&self) -> u64 {
        self.text_bytes
    }
}

/// The top-level fields [`UsageMeter::observe_top_level`] reads (every usage key of
/// [`SHAPES`] among them).
const WANTED: [&str; 10] = [
    "usage",
    "usageMetadata",
    "amazon-bedrock-invocationMetrics",
    "model",
    "modelId",
    "modelVersion",
    "model_id",
    "results",
    "input_token_count",
    "predictions",
];

/// A JSON object's top-level fields named in [`WANTED`], their values left as unparsed text
/// (the others are only checked and skipped).
struct TopFields<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for TopFields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = TopFields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(4);
                while let Some((k, v)) =
                    m.next_entry::<&'de str, &'de serde_json::value::RawValue>()?
                {
                    if WANTED.contains(&k) {
                        fields.push((k, v));
                    }
                }
                Ok(TopFields(fields))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Bytes of the strings under [`TEXT_FIELDS`] anywhere in `v` (depth-bounded).
fn text_bytes(v: &Value, depth: usize) -> u64 {
    if depth > 8 {
        return 0;
    }
    match v {
        Value::Object(obj) => obj
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if TEXT_FIELDS.contains(&k.as_str()) => s.len() as u64,
                _ => text_bytes(v, depth + 1),
            })
            .sum(),
        Value::Array(items) => items.iter().map(|v| text_bytes(v, depth + 1)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(docs: &[&str]) -> UsageMeter {
        let mut m = UsageMeter::new();
        for d in docs {
            m.observe_json(d.as_bytes());
        }
        m
    }

    #[test]
    fn top_level_usage_is_read_without_the_tree_and_the_rest_still_works() {
        // Top-level usage: the quick path; the model too.
        let mut m = UsageMeter::new();
        assert!(m.observe_top_level(br#"{"id":"x","model":"gpt-4o","choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#));
        assert_eq!(
            (
                m.usage().unwrap().prompt_tokens,
                m.usage().unwrap().completion_tokens
            ),
            (3, 5)
        );
        assert_eq!(m.model(), Some("gpt-4o"));
        // No usage, null usage, nested usage, escaped keys, not an object: the full path.
        for doc in [
            &br#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#[..],
            br#"{"type":"message_start","message":{"usage":{"input_tokens":4}}}"#,
            br#"{"us\u0061ge":{"prompt_tokens":1}}"#,
            br#"[{"usageMetadata":{"promptTokenCount":1}}]"#,
            br#"{"usage":{"prompt_tokens":"x"}}"#,
            b"not json",
        ] {
            assert!(
                !UsageMeter::new().observe_top_level(doc),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        let m = meter(&[r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#]);
        assert_eq!(m.text_bytes(), 2);
        let m = meter(&[r#"{"us\u0061ge":{"prompt_tokens":1,"completion_tokens":2}}"#]);
        assert_eq!(m.usage().unwrap().completion_tokens, 2);
    }

    #[test]
    fn recognises_every_providers_shape() {
        let cases: &[(&[&str], (u64, u64))] = &[
            (
                &[r#"{"model":"gpt-4o","usage":{"prompt_tokens":3,"completion_tokens":5}}"#],
                (3, 5),
            ),
            (
                &[
                    r#"{"type":"message_start","message":{"model":"claude-3","usage":{"input_tokens":25,"output_tokens":1}}}"#,
                    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
                ],
                (25, 15),
            ),
            (
                &[r#"{"output":{},"usage":{"inputTokens":7,"outputTokens":9,"totalTokens":16}}"#],
                (7, 9),
            ),
            (
                &[r#"{"metadata":{"usage":{"inputTokens":4,"outputTokens":2}}}"#],
                (4, 2),
            ),
            (
                &[r#"{"chatResponse":{"usage":{"promptTokens":11,"completionTokens":12}}}"#],
                (11, 12),
            ),
            (
                &[
                    r#"{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2},"modelVersion":"gemini-1.5"}"#,
                    r#"{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":6}}"#,
                ],
                (8, 6),
            ),
            (
                &[
                    r#"{"amazon-bedrock-invocationMetrics":{"inputTokenCount":30,"outputTokenCount":40}}"#,
                ],
                (30, 40),
            ),
        ];
        for (docs, (i, o)) in cases {
            assert_eq!(meter(docs).usage(), Some(Usage::new(*i, *o)), "{docs:?}");
        }
        assert_eq!(meter(&[r#"{"model":"m"}"#, "not json"]).usage(), None);
        assert_eq!(
            meter(&[r#"{"message":{"model":"claude-3"}}"#]).model(),
            Some("claude-3")
        );
        assert_eq!(
            meter(&[r#"{"model":"","choices":[]}"#, r#"{"model":"gpt-4o"}"#]).model(),
            Some("gpt-4o")
        );
        assert_eq!(
            meter(&[r#"{"modelId":"meta.llama-3.3-70b-instruct","modelVersion":"1.0.0"}"#]).model(),
            Some("meta.llama-3.3-70b-instruct"),
            "OCI names the model in modelId"
        );
    }

    #[test]
    fn counts_generated_text_in_every_shape() {
        let m = meter(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"abc"}}"#,
            r#"[{"candidates":[{"content":{"parts":[{"text":"xy"}]}}]}]"#,
            r#"{"model":"m","id":"chatcmpl-1","choices":[{"finish_reason":"stop"}]}"#,
        ]);
        assert_eq!(m.text_bytes(), 5 + 7 + 3 + 2);
        assert_eq!(m.usage(), None);
    }

    #[test]
    fn reads_gemini_json_array_streams_watsonx_generation_and_vertex_embeddings() {
        let m = meter(&[
            r#"[{"candidates":[],"usageMetadata":{"promptTokenCount":5},"modelVersion":"gemini-2.0-flash-001"},
            {"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":9}}]"#,
        ]);
        assert_eq!(m.usage(), Some(Usage::new(5, 9)));
        assert_eq!(m.model(), Some("gemini-2.0-flash-001"));

        let m = meter(&[
            r#"{"model_id":"ibm/granite-13b","results":[{"generated_text":"","generated_token_count":0,"input_token_count":68,"stop_reason":"not_finished"}]}"#,
            r#"{"model_id":"ibm/granite-13b","results":[{"generated_text":"40","generated_token_count":1,"input_token_count":0}]}"#,
            r#"{"model_id":"ibm/granite-13b","results":[{"generated_text":"km","generated_token_count":3,"input_token_count":0}]}"#,
        ]);
        assert_eq!(m.usage(), Some(Usage::new(68, 3)));
        assert_eq!(m.model(), Some("ibm/granite-13b"));
        let m = meter(&[
            r#"{"model_id":"ibm/slate-30m","results":[{"embedding":[0.1]}],"input_token_count":10}"#,
        ]);
        assert_eq!(m.usage(), Some(Usage::new(10, 0)));

        let m = meter(&[
            r#"{"predictions":[{"embeddings":{"values":[0.1],"statistics":{"token_count":6,"truncated":false}}},
            {"embeddings":{"values":[0.2],"statistics":{"token_count":4,"truncated":false}}}],"metadata":{"billableCharacterCount":40}}"#,
        ]);
        assert_eq!(m.usage(), Some(Usage::new(10, 0)));
    }
}
