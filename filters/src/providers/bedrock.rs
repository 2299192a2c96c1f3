//! PLACEHOLDER until the translator lands (see /work/notes/translators.md).
#![allow(unused_variables, unused_imports)]
use crate::chat::embeddings::{Embeddings, EmbeddingsRequest};
use crate::chat::{ChatRequest, Completion, ResponseCtx};
use crate::openai::InvalidRequest;
use crate::translate::{
    Answer, BadAnswer, EmbeddingsCall, ErrorHints, ErrorReply, StreamTranslator, Target,
    UpstreamRequest,
};
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    Err(InvalidRequest::new("placeholder", None))
}
pub fn parse_chat(body: &[u8]) -> Result<Completion, BadAnswer> {
    Err(BadAnswer("placeholder".into()))
}
pub fn converse_stream(ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    unimplemented!("translator not merged yet")
}
pub fn prepare_embeddings(
    t: &Target<'_>,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsCall, InvalidRequest> {
    Err(InvalidRequest::new("placeholder", None))
}
pub fn parse_embeddings(t: &Target<'_>, answers: &[Answer<'_>]) -> Result<Embeddings, BadAnswer> {
    Err(BadAnswer("placeholder".into()))
}
pub fn error(status: u16, body: &[u8], hints: &ErrorHints<'_>) -> ErrorReply {
    ErrorReply::new(status, "placeholder", None)
}
