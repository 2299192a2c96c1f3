//! The translator interface: one [`Dialect`] per provider API, and the functions the gateway
//! calls for each — build the upstream request, read a complete answer, translate a stream
//! incrementally, map an error — all pure.
//!
//! Each dialect is one value implementing [`Translator`], defined in its provider module and
//! found through [`Dialect::translator`], the only match from dialect to provider module. The
//! free functions below are what the gateway calls; they go through that registry.
//!
//! Flow for a chat request: [`crate::chat::ChatRequest`] (typed client request) →
//! [`prepare_chat`] → the provider's [`UpstreamRequest`]; then either [`parse_chat`] →
//! [`crate::chat::Completion`] → [`crate::chat::response::render`], or [`chat_stream`] → a
//! [`StreamTranslator`] that turns provider bytes into OpenAI SSE bytes; error statuses go
//! through [`translate_error`]. Embeddings go through [`prepare_embeddings`] /
//! [`parse_embeddings`] the same way.

use crate::chat::embeddings::{Embeddings, EmbeddingsRequest};
use crate::chat::{ChatRequest, Completion, ResponseCtx};
use crate::openai::{error_body, error_type_for_status, InvalidRequest, Usage};
use crate::providers;

/// A provider API the gateway can translate the OpenAI dialect into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI itself. When the client also speaks OpenAI the gateway chooses the fast path
    /// ([`crate::openai_upstream`]: the body is forwarded nearly as is); from any other front
    /// door the request goes through the translator ([`providers::openai`]) like every other
    /// provider.
    OpenAi,
    /// Azure OpenAI: OpenAI bodies, deployment in the path, `api-version` query.
    Azure,
    /// Anthropic Messages API (`/v1/messages`).
    Anthropic,
    /// Bedrock Converse / ConverseStream (every model family).
    BedrockConverse,
    /// Bedrock InvokeModel with an Anthropic Messages body (`anthropic_version: bedrock-2023-05-31`).
    BedrockAnthropic,
    /// Bedrock InvokeModel for embedding models (Titan text embeddings, Cohere embed).
    BedrockEmbed,
    /// Vertex AI Gemini (`generateContent`, `streamGenerateContent?alt=sse`, `:predict` embeddings).
    VertexGemini,
    /// Claude on Vertex AI (`rawPredict` / `streamRawPredict`, `anthropic_version: vertex-2023-10-16`).
    VertexAnthropic,
    /// IBM watsonx.ai (`/ml/v1/text/chat`, `chat_stream`, `embeddings`).
    Watsonx,
    /// OCI Generative AI chat, GENERIC API format (Meta, xAI, OpenAI-style models).
    OciGeneric,
    /// OCI Generative AI chat, COHERE API format (`cohere.command-*`).
    OciCohere,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Azure => "azure",
            Dialect::Anthropic => "anthropic",
            Dialect::BedrockConverse => "bedrock_converse",
            Dialect::BedrockAnthropic => "bedrock_anthropic",
            Dialect::BedrockEmbed => "bedrock_embed",
            Dialect::VertexGemini => "vertex_gemini",
            Dialect::VertexAnthropic => "vertex_anthropic",
            Dialect::Watsonx => "watsonx",
            Dialect::OciGeneric => "oci_generic",
            Dialect::OciCohere => "oci_cohere",
        }
    }
}

/// Where a translated request goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub dialect: Dialect,
    /// The provider's model id (Azure: the deployment name).
    pub upstream_model: &'a str,
    /// Vertex project, watsonx `project_id`, OCI `compartmentId`.
    pub project: Option<&'a str>,
    /// Vertex location (`us-central1`, `global`).
    pub location: Option<&'a str>,
    /// Azure `api-version`, watsonx `version` date, Anthropic `anthropic-version`.
    pub api_version: Option<&'a str>,
}

/// How the provider's answer body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    Json,
    Sse,
    /// `application/vnd.amazon.eventstream`.
    EventStream,
}

impl AnswerFormat {
    /// The `accept` header to send.
    pub fn accept(self) -> &'static str {
        match self {
            AnswerFormat::Json => "application/json",
            AnswerFormat::Sse => "text/event-stream",
            AnswerFormat::EventStream => "application/vnd.amazon.eventstream",
        }
    }
}

/// A request ready for the provider (credentials are applied by the gateway afterwards).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    /// Path and query below the provider's endpoint, e.g. `/v1/messages` or
    /// `/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream`.
    pub path: String,
    /// The JSON body (always POST, `content-type: application/json`).
    pub body: Vec<u8>,
    /// Extra headers the API needs (e.g. `anthropic-version`).
    pub headers: Vec<(&'static str, String)>,
    pub answer: AnswerFormat,
    /// Client parameters the provider cannot honour and that were left out; the gateway lists
    /// them in `x-switchyard-dropped-params`.
    pub dropped: Vec<String>,
}

/// An embeddings call: usually one body; several when the provider embeds one text per call
/// (Bedrock Titan), sent in order and combined by [`parse_embeddings`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsCall {
    pub path: String,
    pub bodies: Vec<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
    pub dropped: Vec<String>,
}

/// One provider answer body with what the gateway read from its headers.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub body: &'a [u8],
    /// Bedrock's `x-amzn-bedrock-input-token-count`.
    pub input_tokens_header: Option<u64>,
}

/// The provider answered 2xx with a body the translator cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAnswer(pub String);

/// An OpenAI error for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: u16,
    /// The OpenAI envelope `{"error":{message,type,param,code}}`.
    pub body: Vec<u8>,
}

impl ErrorReply {
    /// The envelope with `type` chosen from the status (the SDKs act on the status).
    pub fn new(status: u16, message: &str, code: Option<&str>) -> ErrorReply {
        ErrorReply {
            status,
            body: error_body(message, error_type_for_status(status), None, code),
        }
    }
}

/// What the gateway read from an error response's headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorHints<'a> {
    /// Bedrock's `x-amzn-errortype` (e.g. `ThrottlingException:http://internal.amazon.com/…`).
    pub aws_error_type: Option<&'a str>,
}

/// How a provider stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Finished properly; `[DONE]` was written.
    Complete,
    /// The provider reported an error mid-stream; an OpenAI error event was written.
    ProviderError(String),
    /// The provider's stream stopped early or was corrupt; an error event was written.
    Truncated,
}

/// What a provider stream said about its answer (OpenTelemetry `gen_ai.response.id`,
/// `.model`, `.finish_reasons`), kept only once the gateway asked for it by setting `record`
/// (for a sampled trace): the provider's response id and model at first sight, each finish
/// reason when it comes. Nothing is parsed for it: the translators note what they read
/// anyway; while `record` is false each note is one branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamAnswer {
    pub record: bool,
    pub id: Option<String>,
    pub model: Option<String>,
    pub finish_reasons: Vec<String>,
}

/// Longest id or model kept (a span attribute, not a store of provider output).
const ANSWER_FIELD_MAX: usize = 256;
/// Most finish reasons kept (one per choice).
const ANSWER_REASONS_MAX: usize = 16;

fn bounded(s: &str) -> String {
    let mut end = s.len().min(ANSWER_FIELD_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl StreamAnswer {
    /// The provider's response id (the first non-empty one counts).
    pub fn note_id(&mut self, id: &str) {
        if self.record && self.id.is_none() && !id.is_empty() {
            self.id = Some(bounded(id));
        }
    }

    /// The model that answered (the first non-empty one counts).
    pub fn note_model(&mut self, model: &str) {
        if self.record && self.model.is_none() && !model.is_empty() {
            self.model = Some(bounded(model));
        }
    }

    /// A choice's finish reason.
    pub fn note_finish(&mut self, reason: &str) {
        if self.record && self.finish_reasons.len() < ANSWER_REASONS_MAX && !reason.is_empty() {
            self.finish_reasons.push(bounded(reason));
        }
    }
}

/// Translates one provider stream into the client's OpenAI SSE stream, chunk by chunk.
///
/// `feed` may be called with any split of the provider's bytes (mid-line, mid-UTF-8
/// character, mid-eventstream-frame) and must produce the same output as for the whole
/// stream; it only holds back the current incomplete frame.
pub trait StreamTranslator: Send {
    /// Feeds provider bytes; appends client bytes to `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>);
    /// The provider's stream ended: appends what the client is still owed (finish, usage,
    /// `[DONE]`, or an error event when the stream was incomplete).
    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd;
    /// Usage reported so far (final once the stream is complete).
    fn usage(&self) -> Option<Usage>;
    /// The client's stream has already been ended (finished, or an error event written,
    /// e.g. for an unreadable event): the rest of the provider's bytes would be ignored.
    fn ended(&self) -> bool;
    /// The final `response` object of a Responses stream once it completed (what
    /// [`crate::chat::ChunkWriter::final_response`] gives), for the gateway to store; None for
    /// the other front doors and relays.
    fn final_response(&self) -> Option<&[u8]> {
        None
    }
    /// The stream's [`StreamAnswer`]: the gateway sets `record` before the first `feed` and
    /// reads it at the end. None for relays that keep none.
    fn answer(&mut self) -> Option<&mut StreamAnswer> {
        None
    }
}

/// The refusal for an operation a dialect does not offer.
pub(crate) fn not_for(dialect: Dialect, what: &str) -> InvalidRequest {
    InvalidRequest::new(
        format!(
            "This model's provider API ({}) does not support {what}.",
            dialect.as_str()
        ),
        None,
    )
}

/// What one provider dialect does: a value in its provider module, found through
/// [`Dialect::translator`]. `t.dialect` is always a dialect whose translator is `self`.
///
/// Embeddings are optional: the default methods refuse them.
pub trait Translator: Sync {
    /// Whether `prepare_chat` sends `ChatRequest::top_k` (else it is named as dropped).
    fn maps_top_k(&self) -> bool {
        false
    }

    /// Builds the provider request for a chat (or legacy completion) request. The request's
    /// own `dropped` names are merged in by [`prepare_chat`], not here.
    fn prepare_chat(
        &self,
        t: &Target<'_>,
        req: &ChatRequest,
    ) -> Result<UpstreamRequest, InvalidRequest>;

    /// Reads a complete 2xx chat answer.
    fn parse_chat(&self, t: &Target<'_>, answer: &Answer<'_>) -> Result<Completion, BadAnswer>;

    /// A stream translator for a chat request's provider stream.
    fn chat_stream(&self, t: &Target<'_>, ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator>;

    /// Builds the provider call(s) for an embeddings request.
    fn prepare_embeddings(
        &self,
        t: &Target<'_>,
        _req: &EmbeddingsRequest,
    ) -> Result<EmbeddingsCall, InvalidRequest> {
        Err(not_for(t.dialect, "embeddings"))
    }

    /// Combines the answers of an [`EmbeddingsCall`] (one per body, in order).
    fn parse_embeddings(
        &self,
        t: &Target<'_>,
        _answers: &[Answer<'_>],
    ) -> Result<Embeddings, BadAnswer> {
        Err(BadAnswer(format!(
            "{} embeddings are not translated",
            t.dialect.as_str()
        )))
    }

    /// Maps a provider error (non-2xx status and body) to the client's OpenAI error.
    fn translate_error(
        &self,
        t: &Target<'_>,
        status: u16,
        body: &[u8],
        hints: &ErrorHints<'_>,
    ) -> ErrorReply;
}

impl Dialect {
    /// The dialect's translator: the one place a dialect is tied to its provider module.
    pub fn translator(self) -> &'static dyn Translator {
        use providers::anthropic::Anthropic;
        match self {
            Dialect::OpenAi | Dialect::Azure => &providers::openai::OpenAi,
            Dialect::Anthropic => &Anthropic::DIRECT,
            Dialect::BedrockAnthropic => &Anthropic::BEDROCK,
            Dialect::VertexAnthropic => &Anthropic::VERTEX,
            Dialect::BedrockConverse => &providers::bedrock::BedrockConverse,
            Dialect::BedrockEmbed => &providers::bedrock::BedrockEmbed,
            Dialect::VertexGemini => &providers::gemini::VertexGemini,
            Dialect::Watsonx => &providers::watsonx::Watsonx,
            Dialect::OciGeneric | Dialect::OciCohere => &providers::oci::Oci,
        }
    }
}

/// Builds the provider request for a chat (or legacy completion) request.
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    let translator = t.dialect.translator();
    let mut up = translator.prepare_chat(t, req)?;
    if req.top_k.is_some() && !translator.maps_top_k() {
        up.dropped.push("top_k".to_owned());
    }
    // Dropped names as the client wrote them (Messages `metadata.user_id`, not `user`;
    // Responses `max_output_tokens`, not `max_tokens`).
    let client_name: Option<fn(&str) -> Option<&'static str>> = match req.front {
        crate::front::FrontDoor::Messages => Some(crate::front::messages::request::client_name),
        crate::front::FrontDoor::Responses => Some(crate::front::responses::request::client_name),
        crate::front::FrontDoor::Chat | crate::front::FrontDoor::Completions => None,
    };
    if let Some(client_name) = client_name {
        for name in &mut up.dropped {
            if let Some(theirs) = client_name(name) {
                *name = theirs.to_owned();
            }
        }
    }
    // Prompt-cache markers: Claude hosts and Converse place them; OpenAI, Azure and Gemini
    // cache prompt prefixes on their own (nothing to send, nothing lost); watsonx and OCI have
    // no prompt cache to ask for, so the markers are named.
    if !req.cache.is_empty()
        && matches!(
            t.dialect,
            Dialect::Watsonx | Dialect::OciGeneric | Dialect::OciCohere
        )
        && !up.dropped.iter().any(|d| d == "cache_control")
    {
        up.dropped.push("cache_control".to_owned());
    }
    // A Messages client's signed thinking blocks of earlier turns: Claude on Converse takes
    // them; any other host cannot, which the client is told (OpenAI clients' `thinking_blocks`
    // are the gateway's own carrier, dropped silently).
    if req.front == crate::front::FrontDoor::Messages
        && req.messages.iter().any(|m| !m.thinking.is_empty())
        && !(t.dialect == Dialect::BedrockConverse
            && crate::providers::bedrock::is_claude(t.upstream_model))
        && !up.dropped.iter().any(|d| d == "thinking")
    {
        up.dropped.push("thinking".to_owned());
    }
    for name in &req.dropped {
        if !up.dropped.contains(name) {
            up.dropped.push(name.clone());
        }
    }
    Ok(up)
}

/// Reads a complete 2xx chat answer.
pub fn parse_chat(t: &Target<'_>, answer: &Answer<'_>) -> Result<Completion, BadAnswer> {
    t.dialect.translator().parse_chat(t, answer)
}

/// A stream translator for a chat request's provider stream.
pub fn chat_stream(t: &Target<'_>, ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    t.dialect.translator().chat_stream(t, ctx)
}

/// Builds the provider call(s) for an embeddings request.
pub fn prepare_embeddings(
    t: &Target<'_>,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsCall, InvalidRequest> {
    t.dialect.translator().prepare_embeddings(t, req)
}

/// Combines the answers of an [`EmbeddingsCall`] (one per body, in order).
pub fn parse_embeddings(t: &Target<'_>, answers: &[Answer<'_>]) -> Result<Embeddings, BadAnswer> {
    t.dialect.translator().parse_embeddings(t, answers)
}

/// Maps a provider error (non-2xx status and body) to the client's OpenAI error.
pub fn translate_error(
    t: &Target<'_>,
    status: u16,
    body: &[u8],
    hints: &ErrorHints<'_>,
) -> ErrorReply {
    t.dialect
        .translator()
        .translate_error(t, status, body, hints)
}

/// Test helpers shared by the translators' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Runs `input` through a fresh translator whole, then split at every byte position
    /// (and in 1-byte pieces), asserting identical output; returns the output and the end.
    pub fn every_split(
        make: impl Fn() -> Box<dyn StreamTranslator>,
        input: &[u8],
    ) -> (Vec<u8>, StreamEnd, Option<Usage>) {
        save_fuzz_seed(input);
        let run = |pieces: &[&[u8]]| {
            let mut t = make();
            let mut out = Vec::new();
            for p in pieces {
                t.feed(p, &mut out);
            }
            let end = t.finish(&mut out);
            (out, end, t.usage())
        };
        let whole = run(&[input]);
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(
                run(&[a, b]),
                whole,
                "output differs when split at byte {split}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "output differs when fed byte by byte");
        whole
    }

    /// With `SWITCHYARD_FUZZ_SEEDS=<dir>`, keeps every stream the unit tests translate as a
    /// seed for the stream fuzz targets (`tests/fuzz/run.sh`): no flags, no split points.
    fn save_fuzz_seed(input: &[u8]) {
        if let Some(dir) = std::env::var_os("SWITCHYARD_FUZZ_SEEDS") {
            let mut seed = vec![0u8, 0u8];
            seed.extend_from_slice(input);
            let name = format!("{:08x}", crate::eventstream::crc32(&seed));
            let _ = std::fs::write(std::path::Path::new(&dir).join(name), seed);
        }
    }

    /// The JSON payloads of an OpenAI SSE stream (`[DONE]` as the string "[DONE]").
    pub fn events(out: &[u8]) -> Vec<serde_json::Value> {
        std::str::from_utf8(out)
            .expect("client streams are UTF-8")
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e
                    .strip_prefix("data: ")
                    .expect("every event is one data line");
                if data == "[DONE]" {
                    serde_json::Value::String("[DONE]".into())
                } else {
                    serde_json::from_str(data).expect("every event is JSON")
                }
            })
            .collect()
    }

    /// Reassembles a client stream as the OpenAI SDK does: (content, tool calls as
    /// (id, name, arguments), finish_reason).
    pub fn reassemble(out: &[u8]) -> (String, Vec<(String, String, String)>, Option<String>) {
        let mut text = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut finish = None;
        for ev in events(out) {
            let Some(choice) = ev.get("choices").and_then(|c| c.get(0)) else {
                continue;
            };
            let delta = &choice["delta"];
            if let Some(t) = delta.get("content").and_then(|c| c.as_str()) {
                text.push_str(t);
            }
            if let Some(tcs) = delta.get("tool_calls").and_then(|c| c.as_array()) {
                for tc in tcs {
                    let i = tc["index"].as_u64().expect("index") as usize;
                    if i == calls.len() {
                        calls.push((
                            tc["id"]
                                .as_str()
                                .expect("first fragment has an id")
                                .to_owned(),
                            tc["function"]["name"]
                                .as_str()
                                .expect("and a name")
                                .to_owned(),
                            String::new(),
                        ));
                    }
                    if let Some(a) = tc["function"].get("arguments").and_then(|a| a.as_str()) {
                        calls[i].2.push_str(a);
                    }
                }
            }
            if let Some(f) = choice.get("finish_reason").and_then(|f| f.as_str()) {
                finish = Some(f.to_owned());
            }
        }
        (text, calls, finish)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::reassemble;
    use super::*;
    use crate::front::FrontDoor;
    use crate::openai::{parse_request, Endpoint};

    const ALL: [Dialect; 11] = [
        Dialect::OpenAi,
        Dialect::Azure,
        Dialect::Anthropic,
        Dialect::BedrockConverse,
        Dialect::BedrockAnthropic,
        Dialect::BedrockEmbed,
        Dialect::VertexGemini,
        Dialect::VertexAnthropic,
        Dialect::Watsonx,
        Dialect::OciGeneric,
        Dialect::OciCohere,
    ];

    fn target(dialect: Dialect) -> Target<'static> {
        Target {
            dialect,
            upstream_model: match dialect {
                Dialect::OciCohere => "cohere.command-r-plus",
                _ => "m",
            },
            project: Some("proj"),
            location: Some("us-central1"),
            api_version: None,
        }
    }

    fn chat(body: &str) -> ChatRequest {
        let parsed = parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
        ChatRequest::from_parsed(&parsed).unwrap()
    }

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "client",
            created: 1,
            fallback_id: "req_1",
            front: FrontDoor::Chat,
            include_usage: false,
            echo: "",
        }
    }

    fn run(mut s: Box<dyn StreamTranslator>, input: &[u8]) -> (Vec<u8>, StreamEnd) {
        let mut out = Vec::new();
        s.feed(input, &mut out);
        let end = s.finish(&mut out);
        (out, end)
    }

    #[test]
    fn only_embedding_dialects_embed_and_only_chat_dialects_chat() {
        let req = chat(r#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#);
        let embed = EmbeddingsRequest::from_body(
            serde_json::json!({"model": "e", "input": "hi"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let embeds = [
            Dialect::BedrockEmbed,
            Dialect::VertexGemini,
            Dialect::Watsonx,
        ];
        for d in ALL {
            let t = target(d);
            let chat = prepare_chat(&t, &req);
            let answer = Answer {
                body: b"{}",
                input_tokens_header: None,
            };
            if d == Dialect::BedrockEmbed {
                let e = chat.unwrap_err();
                assert_eq!(
                    e.message,
                    "This model's provider API (bedrock_embed) does not support chat translation."
                );
                assert_eq!(
                    parse_chat(&t, &answer).unwrap_err(),
                    BadAnswer("bedrock_embed answers are not translated".into())
                );
            } else {
                assert!(chat.is_ok(), "{d:?}: {:?}", chat.err());
            }
            if !embeds.contains(&d) {
                assert_eq!(
                    prepare_embeddings(&t, &embed).unwrap_err().message,
                    format!(
                        "This model's provider API ({}) does not support embeddings.",
                        d.as_str()
                    )
                );
                assert_eq!(
                    parse_embeddings(&t, &[answer]).unwrap_err(),
                    BadAnswer(format!("{} embeddings are not translated", d.as_str()))
                );
            }
        }
    }

    #[test]
    fn prepare_chat_merges_the_requests_dropped_names_once() {
        // watsonx drops `user` itself; the front door dropped `user` and `cache_control`.
        let mut req =
            chat(r#"{"model":"c","user":"u","messages":[{"role":"user","content":"hi"}]}"#);
        req.dropped = vec!["user".into(), "cache_control".into()];
        let up = prepare_chat(&target(Dialect::Watsonx), &req).unwrap();
        assert_eq!(up.dropped, ["user", "cache_control"]);
    }

    #[test]
    fn claude_on_a_cloud_keeps_the_clouds_own_errors() {
        use providers::{anthropic, bedrock, gemini};
        // Bodies on which the mappers disagree, so each assertion shows which one ran.
        let google = br#"{"error":{"code":400,"message":"Project not allowlisted.","status":"FAILED_PRECONDITION"}}"#;
        let aws_body = br#"{"message":"Too many requests"}"#;
        let aws = ErrorHints {
            aws_error_type: Some(
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
        };
        let none = ErrorHints::default();
        assert_ne!(anthropic::error(400, google), gemini::error(400, google));
        assert_ne!(
            anthropic::error(400, aws_body),
            bedrock::error(400, aws_body, &aws)
        );
        let err =
            |d, body: &[u8], hints: &ErrorHints<'_>| translate_error(&target(d), 400, body, hints);

        // An `x-amzn-errortype` header: Bedrock's own error.
        let from_aws = bedrock::error(400, aws_body, &aws);
        assert_eq!(err(Dialect::BedrockAnthropic, aws_body, &aws), from_aws);
        assert_eq!(err(Dialect::BedrockConverse, aws_body, &aws), from_aws);
        assert_eq!(err(Dialect::BedrockEmbed, aws_body, &aws), from_aws);
        // A Google error body: Vertex's own error.
        assert_eq!(
            err(Dialect::VertexAnthropic, google, &none),
            gemini::error(400, google)
        );
        // Otherwise Claude's error mapping, and always for Anthropic itself.
        assert_eq!(
            err(Dialect::BedrockAnthropic, aws_body, &none),
            anthropic::error(400, aws_body)
        );
        assert_eq!(
            err(Dialect::VertexAnthropic, aws_body, &aws),
            anthropic::error(400, aws_body)
        );
        assert_eq!(
            err(Dialect::Anthropic, aws_body, &aws),
            anthropic::error(400, aws_body)
        );
        assert_eq!(
            err(Dialect::Anthropic, google, &none),
            anthropic::error(400, google)
        );
    }

    #[test]
    fn openai_errors_name_their_dialect() {
        let body = b"upstream exploded";
        for d in [Dialect::OpenAi, Dialect::Azure] {
            let reply = translate_error(&target(d), 500, body, &ErrorHints::default());
            assert_eq!(reply.status, 500);
            assert_eq!(
                reply.body,
                crate::openai::upstream_error_body(500, body, d.as_str())
            );
        }
    }

    #[test]
    fn claude_on_bedrock_streams_eventstream_the_others_sse() {
        let events = [
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let mut sse = Vec::new();
        let mut frames = Vec::new();
        for e in events {
            sse.extend_from_slice(format!("data: {e}\n\n").as_bytes());
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD.encode(e);
            let payload = format!(r#"{{"bytes":"{bytes}"}}"#);
            frames.extend(crate::eventstream::encode_event(
                "chunk",
                payload.as_bytes(),
            ));
        }
        let c = ctx();
        for (d, input, wrong) in [
            (Dialect::Anthropic, &sse, &frames),
            (Dialect::VertexAnthropic, &sse, &frames),
            (Dialect::BedrockAnthropic, &frames, &sse),
        ] {
            let (out, end) = run(chat_stream(&target(d), &c), input);
            assert_eq!(end, StreamEnd::Complete, "{d:?}");
            assert_eq!(reassemble(&out).0, "Hi", "{d:?}");
            let (_, end) = run(chat_stream(&target(d), &c), wrong);
            assert_ne!(end, StreamEnd::Complete, "{d:?} read the other framing");
        }
    }
}
