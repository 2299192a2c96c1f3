//! Static API-key credentials: fixed headers set on every upstream request.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::config::raw::RawApiKeyConfig;
use crate::errors::GatewayError;

#[derive(Debug)]
pub struct StaticHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl StaticHeaders {
    /// A key sent as `header: prefix + key` (e.g. `authorization: Bearer sk-…`), plus extra
    /// non-secret headers.
    pub fn key(header: &'static str, prefix: &str, key: &str) -> Result<StaticHeaders, String> {
        let key = key.trim();
        if key.is_empty() {
            return Err("api_key is empty".into());
        }
        let mut value = HeaderValue::from_str(&format!("{prefix}{key}"))
            .map_err(|_| "api_key contains characters not allowed in a header".to_string())?;
        value.set_sensitive(true);
        Ok(StaticHeaders {
            headers: vec![(HeaderName::from_static(header), value)],
        })
    }

    /// Adds a non-secret header when `value` is set and not empty.
    pub fn with_optional(
        mut self,
        header: &'static str,
        value: Option<&str>,
    ) -> Result<StaticHeaders, String> {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            let v = HeaderValue::from_str(v)
                .map_err(|_| format!("{header} contains characters not allowed in a header"))?;
            self.headers.push((HeaderName::from_static(header), v));
        }
        Ok(self)
    }

    /// OpenAI: `Authorization: Bearer`, optional `OpenAI-Organization` and `OpenAI-Project`.
    pub fn openai(c: &RawApiKeyConfig) -> Result<StaticHeaders, String> {
        StaticHeaders::key("authorization", "Bearer ", &c.api_key)?
            .with_optional("openai-organization", c.organization.as_deref())?
            .with_optional("openai-project", c.project.as_deref())
    }

    pub fn apply(&self, req: &mut RequestHeader) -> Result<(), GatewayError> {
        for (k, v) in &self.headers {
            req.insert_header(k.clone(), v.clone())
                .map_err(|_| GatewayError::Internal)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Credential;
    use super::*;

    #[tokio::test]
    async fn caller_keys_are_replaced_by_the_provider_key() {
        let cred = Credential::Static(
            StaticHeaders::openai(&RawApiKeyConfig {
                api_key: "sk-upstream".into(),
                organization: Some("org-1".into()),
                project: None,
            })
            .unwrap(),
        );
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in [
            ("authorization", "Bearer sk-gateway"),
            ("x-api-key", "sk-gateway"),
            ("api-key", "sk-gateway"),
            ("x-goog-api-key", "sk-gateway"),
            ("x-switchyard-provider", "x"),
            ("content-type", "application/json"),
        ] {
            req.append_header(k, v).unwrap();
        }
        cred.apply("openai", &mut req, b"").await.unwrap();
        let dump = format!("{:?}", req.headers);
        assert!(!dump.contains("sk-gateway"), "{dump}");
        assert_eq!(
            req.headers.get("authorization").unwrap(),
            "Bearer sk-upstream"
        );
        assert_eq!(req.headers.get("openai-organization").unwrap(), "org-1");
        assert!(req.headers.get("x-switchyard-provider").is_none());
        assert!(req.headers.get("content-type").is_some());
    }
}
