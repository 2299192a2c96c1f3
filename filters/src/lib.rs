//! Switchyard's pure translation layer: bytes in, bytes out, no I/O.
//!
//! Everything here is deterministic and synchronous so it can be unit-tested, fuzzed and
//! benchmarked without a network. The gateway (`switchyard` crate) owns sockets, credentials
//! and timing; this crate owns wire formats:
//! - [`openai`]: the client-facing OpenAI dialect (request inspection, errors, usage),
//! - [`json_scan`]: an allocation-free, validating walk over a JSON document (no values built),
//! - [`json_shape`]: reading a body's top level and value kinds without building a tree,
//! - [`chat`]: the neutral middle — typed requests, neutral answers, the OpenAI stream writer,
//! - [`translate`]: the translator interface and its dispatch per provider [`translate::Dialect`],
//! - [`providers`]: one module per provider API (Anthropic, Bedrock, Gemini, watsonx, OCI),
//! - [`sse`] and [`eventstream`]: incremental decoders that tolerate any chunk split,
//! - [`openai_upstream`]: preparing requests for, and filtering responses from, OpenAI-shaped upstreams,
//! - [`usage`]: usage metering of native answers (passthrough),
//! - [`mock`]: the built-in deterministic `mock` provider,
//! - [`cache_key`]: the response cache's canonical request form and answer identity,
//! - [`model_name`]: what a model name may be (bounded, printable ASCII),
//! - `fuzzing`: the fuzz harnesses (for `tests/fuzz/` and the fuzz regression test only).

pub mod cache_key;
pub mod chat;
pub mod eventstream;
pub mod front;
#[doc(hidden)]
pub mod fuzzing;
pub mod json_scan;
pub mod json_shape;
pub mod mock;
pub mod model_name;
pub mod openai;
pub mod openai_responses;
pub mod openai_upstream;
pub mod providers;
pub mod sse;
pub mod translate;
pub mod usage;

pub use openai::{Endpoint, InvalidRequest, RequestSummary, Usage};
