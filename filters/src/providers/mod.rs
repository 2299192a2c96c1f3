//! One module per provider API: request building, answer reading, stream translation and
//! error mapping between that API and the OpenAI dialect. Dispatched by [`crate::translate`].

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod json_scan;
pub(crate) mod json_tool;
pub mod messages_native;
pub mod oci;
pub mod openai;
pub mod watsonx;

#[cfg(test)]
mod prompt_cache_tests;
