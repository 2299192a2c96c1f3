//! The neutral middle of every translation: the client's request as typed data
//! ([`request`]), a provider's answer in neutral form and its OpenAI rendering ([`response`]),
//! the OpenAI stream writer ([`writer`]) and embeddings ([`embeddings`]).

pub mod embeddings;
pub mod request;
pub mod response;
pub mod writer;

pub use request::{
    CacheAt, CachePoint, CacheTtl, ChatRequest, Message, Part, ResponseFormat, Role, ThinkingBlock,
    Tool, ToolCall, ToolChoice,
};
pub use response::{Choice, Completion, FinishReason, OwnedResponseCtx, ResponseCtx};
pub use writer::ChunkWriter;
