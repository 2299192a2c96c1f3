//! The credential the gateway presents to a provider, injected into every upstream request
//! after the caller's own key headers have been removed.

use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::auth::KEY_HEADERS;
use crate::config::raw::RawApiKeyConfig;

#[derive(Debug)]
pub enum Credential {
    /// `Authorization: Bearer <api_key>` (OpenAI), with optional organization and project.
    Bearer {
        authorization: HeaderValue,
        organization: Option<HeaderValue>,
        project: Option<HeaderValue>,
    },
}

impl Credential {
    pub fn bearer(c: &RawApiKeyConfig) -> Result<Credential, String> {
        if c.api_key.trim().is_empty() {
            return Err("api_key is empty".into());
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", c.api_key.trim()))
            .map_err(|_| "api_key contains characters not allowed in a header".to_string())?;
        authorization.set_sensitive(true);
        let optional = |v: &Option<String>, what: &str| -> Result<Option<HeaderValue>, String> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => HeaderValue::from_str(s)
                    .map(Some)
                    .map_err(|_| format!("{what} contains characters not allowed in a header")),
            }
        };
        Ok(Credential::Bearer {
            authorization,
            organization: optional(&c.organization, "organization")?,
            project: optional(&c.project, "project")?,
        })
    }

    /// Replaces whatever credential headers the request carries with the provider's.
    pub fn apply(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        strip_caller_credentials(req);
        match self {
            Credential::Bearer {
                authorization,
                organization,
                project,
            } => {
                req.insert_header(http::header::AUTHORIZATION, authorization.clone())?;
                if let Some(org) = organization {
                    req.insert_header("openai-organization", org.clone())?;
                }
                if let Some(p) = project {
                    req.insert_header("openai-project", p.clone())?;
                }
            }
        }
        Ok(())
    }
}

/// Removes every header that may carry the caller's gateway key, and the gateway's own
/// control headers, so none of them reaches a provider.
pub fn strip_caller_credentials(req: &mut RequestHeader) {
    for name in KEY_HEADERS {
        req.remove_header(name);
    }
    let control: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-switchyard-"))
        .cloned()
        .collect();
    for name in control {
        req.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_keys_are_replaced_by_the_provider_key() {
        let cred = Credential::bearer(&RawApiKeyConfig {
            api_key: "sk-upstream".into(),
            organization: Some("org-1".into()),
            project: None,
        })
        .unwrap();
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
        cred.apply(&mut req).unwrap();
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
