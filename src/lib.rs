//! Switchyard: an AI gateway on Pingora.
//!
//! One OpenAI-compatible API routed by model name to any provider, and byte-exact native
//! passthrough at `/providers/{name}/*` with the gateway holding the providers' credentials.
//! Pure translation lives in the `switchyard-filters` crate; this crate holds everything
//! with I/O: the Pingora service ([`proxy`]), configuration, authentication, providers and
//! their credentials, routing, metrics and logs.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod body_budget;
pub mod cache;
pub mod cli;
pub mod config;
pub mod content_coding;
pub mod cors;
pub mod ctx;
pub mod errors;
pub mod governance;
pub mod limits;
pub mod media_fetch;
pub mod metrics;
pub mod pipeline;
pub mod pricing;
pub mod providers;
pub mod respond;
pub mod response_store;
pub mod route;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
