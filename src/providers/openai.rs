//! The `openai` provider: OpenAI's API (or any OpenAI-compatible one) with a bearer API key.

use super::credentials::{Credential, StaticHeaders};
use super::{ConfigPath, Upstream};
use crate::config::raw::{RawApiKeyConfig, RawProvider};
use crate::config::Problem;

pub const DEFAULT_ENDPOINT: &str = "https://api.openai.com";

pub fn build(p: &RawProvider, at: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Upstream> {
    let endpoint = at.endpoint(
        p.endpoint.as_deref(),
        Some(DEFAULT_ENDPOINT.into()),
        problems,
    );
    let auth = at.auth(p.auth.as_ref(), &["api_key"], problems)?;
    let config: RawApiKeyConfig = at.auth_config(auth, problems)?;
    let headers = StaticHeaders::openai(&config)
        .map_err(|why| problems.push(Problem::new(at.join("auth.config"), why)))
        .ok()?;
    Some(Upstream::new(endpoint?, Credential::Static(headers)))
}
