//! The front doors: the client-facing API dialects a request can arrive in. Each front door
//! decodes its requests into the neutral model ([`crate::chat`]) and encodes neutral answers,
//! stream events and errors back into its own wire format; the provider translators in
//! [`crate::providers`] never know which front door a request came through.

/// The API a client called, which decides how answers, stream events and errors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FrontDoor {
    /// OpenAI `/v1/chat/completions`: `chat.completion` / `chat.completion.chunk`.
    #[default]
    Chat,
    /// OpenAI legacy `/v1/completions`: `text_completion`.
    Completions,
    /// Anthropic `/v1/messages`: `message` objects and Messages stream events.
    Messages,
    /// OpenAI `/v1/responses`: `response` objects and Responses stream events.
    Responses,
}

pub mod messages;
pub mod responses;

impl FrontDoor {
    /// `Completions` when `legacy`, else `Chat`.
    pub fn legacy(legacy: bool) -> FrontDoor {
        if legacy {
            FrontDoor::Completions
        } else {
            FrontDoor::Chat
        }
    }

    /// Whether answers take the legacy `text_completion` shape.
    pub fn is_legacy(self) -> bool {
        self == FrontDoor::Completions
    }
}
