//! The Anthropic Messages front door (`/v1/messages`, `/v1/messages/count_tokens`): requests
//! decoded into the neutral model ([`request`]), neutral answers rendered as `message` objects
//! ([`answer`]), neutral stream events written as Messages events ([`events`]), and errors in
//! Anthropic's envelope ([`errors`]).

pub mod answer;
pub mod errors;
pub mod events;
pub mod request;

pub use events::MessagesEvents;
