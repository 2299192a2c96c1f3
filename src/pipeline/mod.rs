//! The request pipeline: every request's path from Pingora's hooks to the client's answer.
//!
//! ```text
//! hooks ──► route ──┬─ local routes (health, ready, models)
//!                   ├─ front_door ─► attempts ─► prepare ─► forward ─► relay (translated)
//!                   │   (body, plan,  (retries,   (fast path    (open,
//!                   │    governance)   fallback,   or neutral    send)
//!                   │                  hedging)    model)
//!                   │                     └──────► local_answers (mock, token estimates)
//!                   └─ passthrough ─► Pingora's proxy loop, or forward ─► relay_raw
//! ```
//!
//! docs/ARCHITECTURE.md tells the same flow in prose.

pub mod attempts;
pub mod body;
pub mod cache;
pub mod forward;
pub mod front_door;
pub mod gateway;
pub mod hooks;
pub mod images;
pub mod local_answers;
pub mod passthrough;
pub mod prepare;
pub mod relay;
pub mod relay_raw;
pub mod responses;
pub mod route;
pub mod translation;

pub use gateway::Gateway;
