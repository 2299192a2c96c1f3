//! The OpenAI Responses front door (`/v1/responses`): requests decoded into the neutral model
//! ([`request`]), neutral answers rendered as `response` objects ([`answer`]), and neutral
//! stream events written as Responses stream events ([`events`]). Errors use OpenAI's
//! envelope ([`crate::openai::error_body`]), as on the chat door.

pub mod answer;
pub mod events;
pub mod request;

pub use answer::output_items;
pub use events::ResponsesEvents;
