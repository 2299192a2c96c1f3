//! The `bedrock` provider: the AWS Bedrock runtime, every request signed with SigV4
//! (service `bedrock`) by the gateway.
//!
//! ```yaml
//! bedrock:
//!   region: us-east-1                 # required
//!   endpoint: https://bedrock-runtime.us-east-1.amazonaws.com   # the default for the region
//!   auth: {method: default_chain}     # env, profile, web identity / IRSA, ECS, EC2 metadata
//!   # auth: {method: static, config: {access_key_id: "${AWS_ACCESS_KEY_ID}",
//!   #        secret_access_key: "${AWS_SECRET_ACCESS_KEY}", session_token: "${AWS_SESSION_TOKEN:-}"}}
//! ```

use aws_credential_types::Credentials;
use serde::Deserialize;

use super::credentials::sigv4::SigV4Signer;
use super::credentials::Credential;
use super::{ConfigPath, Upstream};
use crate::config::raw::RawProvider;
use crate::config::Problem;

/// The SigV4 signing name of the Bedrock runtime (not `bedrock-runtime`).
pub const SIGNING_NAME: &str = "bedrock";

/// `auth.config` for `method: static`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticConfig {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
}

/// `auth.config` for `method: default_chain` (may be omitted).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChainConfig {
    /// A named profile of the shared config files instead of `AWS_PROFILE` / `default`.
    #[serde(default)]
    profile: Option<String>,
}

/// A config string: trimmed, and None when empty (so `${VAR:-}` means "not set").
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// The default endpoint for a region.
pub fn default_endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

fn valid_region(r: &str) -> bool {
    r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && r.starts_with(|c: char| c.is_ascii_lowercase())
}

pub fn build(p: &RawProvider, at: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Upstream> {
    at.reject_unused(p, &["region", "ca_file"], problems);
    let region = match given(p.region.as_deref()) {
        None => {
            problems.push(Problem::new(
                at.join("region"),
                "is required: the AWS region to sign for (e.g. us-east-1)",
            ));
            None
        }
        Some(r) if !valid_region(r) => {
            problems.push(Problem::new(
                at.join("region"),
                format!("`{r}` is not an AWS region name (e.g. us-east-1)"),
            ));
            None
        }
        Some(r) => Some(r),
    };
    let endpoint = match (p.endpoint.as_deref(), region) {
        (Some(url), _) => at.endpoint(Some(url), None, problems),
        (None, Some(r)) => at.endpoint(None, Some(default_endpoint(r)), problems),
        (None, None) => None, // already reported: region
    };
    let auth = at.auth(p.auth.as_ref(), &["default_chain", "static"], problems)?;
    let signer = if auth.method == "static" {
        let c: StaticConfig = at.auth_config(auth, problems)?;
        let mut ok = true;
        for (field, value) in [
            ("access_key_id", &c.access_key_id),
            ("secret_access_key", &c.secret_access_key),
        ] {
            if given(Some(value)).is_none() {
                problems.push(Problem::new(
                    at.join(&format!("auth.config.{field}")),
                    "is empty",
                ));
                ok = false;
            }
        }
        let token = given(c.session_token.as_deref()).map(str::to_owned);
        if !ok {
            return None;
        }
        let credentials = Credentials::new(
            c.access_key_id.trim(),
            c.secret_access_key.trim(),
            token,
            None,
            "switchyard-config",
        );
        SigV4Signer::fixed(SIGNING_NAME, region?, credentials)
    } else {
        let c: ChainConfig = if auth.config.is_empty() {
            ChainConfig::default()
        } else {
            at.auth_config(auth, problems)?
        };
        let profile = given(c.profile.as_deref()).map(str::to_owned);
        SigV4Signer::default_chain(SIGNING_NAME, region?, profile)
    };
    Some(Upstream::new(
        endpoint?,
        Credential::Signed(Box::new(signer)),
    ))
}

/// The model id of a runtime path (`/model/{id}/...`), percent-decoded, for metrics and
/// prices; None for other paths.
pub fn model_from_path(rest: &str) -> Option<String> {
    let id = rest.strip_prefix("/model/")?.split('/').next()?;
    let id = id.split('?').next()?;
    if id.is_empty() || id.len() > 256 {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Readiness;

    /// Problems for one provider block (`yaml` is its mapping, flow style).
    fn problems(yaml: &str) -> Vec<String> {
        crate::providers::build_tests::build_yaml(build, "bedrock", yaml).1
    }

    fn has(problems: &[String], needle: &str) -> bool {
        problems.iter().any(|p| p.contains(needle))
    }

    #[test]
    fn valid_configs_are_accepted() {
        for ok in [
            "{region: us-east-1, auth: {method: default_chain}}",
            "{region: us-east-1, auth: {method: default_chain, config: {profile: prod}}}",
            "{region: eu-west-3, endpoint: \"http://127.0.0.1:9\", auth: {method: static, config: {access_key_id: AKID, secret_access_key: SECRET-xyz}}}",
            "{type: bedrock, region: us-west-2, auth: {method: static, config: {access_key_id: AKID, secret_access_key: S, session_token: T}}}",
        ] {
            let p = problems(ok);
            assert!(p.is_empty(), "{ok}: {p:?}");
        }
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path_and_no_secret() {
        let p = problems("{auth: {method: default_chain}}");
        assert!(has(&p, "providers.bedrock.region"), "{p:?}");

        let p = problems("{region: \"US East\", auth: {method: default_chain}}");
        assert!(has(&p, "providers.bedrock.region"), "{p:?}");

        let p = problems("{region: us-east-1}");
        assert!(has(&p, "providers.bedrock.auth"), "{p:?}");

        let p = problems("{region: us-east-1, auth: {method: api_key}}");
        assert!(has(&p, "providers.bedrock.auth.method"), "{p:?}");

        let p =
            problems("{region: us-east-1, auth: {method: static, config: {access_key_id: AKID}}}");
        assert!(has(&p, "providers.bedrock.auth.config"), "{p:?}");
        assert!(has(&p, "secret_access_key"), "{p:?}");

        let p = problems(
            "{region: us-east-1, auth: {method: static, config: {access_key_id: \" \", secret_access_key: \"\"}}}",
        );
        assert!(
            has(&p, "providers.bedrock.auth.config.access_key_id"),
            "{p:?}"
        );
        assert!(
            has(&p, "providers.bedrock.auth.config.secret_access_key"),
            "{p:?}"
        );

        let p = problems(
            "{region: us-east-1, auth: {method: static, config: {access_key_id: AKID, secret_access_key: TOPSECRET-1, extra: 1}}}",
        );
        assert!(has(&p, "providers.bedrock.auth.config"), "{p:?}");
        assert!(!p.iter().any(|l| l.contains("TOPSECRET-1")), "{p:?}");

        let p = problems("{region: us-east-1, auth: {method: default_chain, config: {role: x}}}");
        assert!(has(&p, "providers.bedrock.auth.config"), "{p:?}");

        let p = problems("{region: us-east-1, endpoint: \"ftp://x\", project_id: p, auth: {method: default_chain}}");
        assert!(has(&p, "providers.bedrock.endpoint"), "{p:?}");
        assert!(has(&p, "providers.bedrock.project_id"), "{p:?}");
    }

    #[test]
    fn the_default_endpoint_follows_the_region() {
        let mut problems = Vec::new();
        let raw: RawProvider = serde_yaml::from_str(
            "{region: ap-south-1, auth: {method: static, config: {access_key_id: A, secret_access_key: B}}}",
        )
        .unwrap();
        let up = build(&raw, &ConfigPath("providers.bedrock".into()), &mut problems).unwrap();
        assert!(problems.is_empty());
        assert_eq!(up.endpoint.host, "bedrock-runtime.ap-south-1.amazonaws.com");
        assert!(up.endpoint.tls);
        assert!(up.credential.signs_body());
        assert_eq!(up.credential.readiness(), Readiness::Ready);
        let dump = format!("{up:?}");
        assert!(!dump.contains("B\""), "{dump}");
    }

    #[test]
    fn model_ids_come_from_the_path() {
        assert_eq!(
            model_from_path("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke").as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert_eq!(
            model_from_path("/model/us.meta.llama3:0/converse-stream").as_deref(),
            Some("us.meta.llama3:0")
        );
        assert_eq!(model_from_path("/async-invoke"), None);
        assert_eq!(model_from_path("/model//invoke"), None);
    }
}
