//! Switchyard's pure translation layer: bytes in, bytes out, no I/O.
//!
//! Everything here is deterministic and synchronous so it can be unit-tested, fuzzed and
//! benchmarked without a network. The gateway (`switchyard` crate) owns sockets, credentials
//! and timing; this crate owns wire formats:
//! - [`openai`]: the client-facing OpenAI dialect (request inspection, errors, usage),
//! - [`sse`]: an incremental Server-Sent-Events decoder that tolerates any chunk split,
//! - [`openai_upstream`]: preparing requests for, and filtering responses from, OpenAI-shaped upstreams,
//! - [`mock`]: the built-in deterministic `mock` provider.

pub mod eventstream;
pub mod mock;
pub mod openai;
pub mod openai_upstream;
pub mod sse;
pub mod usage;

pub use openai::{Endpoint, InvalidRequest, RequestSummary, Usage};
