//! The `oci` provider: Oracle OCI Generative AI, every request signed with an OCI API key
//! (HTTP signature version 1, see [`credentials::oci`](super::credentials::oci)).
//!
//! ```yaml
//! oci:
//!   endpoint: https://inference.generativeai.us-chicago-1.oci.oraclecloud.com  # or region: us-chicago-1
//!   compartment_id: ocid1.compartment.oc1..aaaa…
//!   auth:
//!     method: oci_api_key
//!     config: {tenancy: ocid1.tenancy.oc1..aaaa…, user: ocid1.user.oc1..aaaa…,
//!              fingerprint: "12:34:…", key_file: /etc/switchyard/oci_api_key.pem}
//! ```

use serde::Deserialize;

use super::credentials::oci::OciApiKey;
use super::credentials::Credential;
use super::{ConfigPath, Upstream};
use crate::config::raw::RawProvider;
use crate::config::Problem;

/// `auth.config` for `method: oci_api_key` (the fields of an OCI SDK config profile).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyConfig {
    tenancy: String,
    user: String,
    fingerprint: String,
    key_file: String,
    /// Only for encrypted keys, which are refused (see `OciApiKey::load`).
    #[serde(default)]
    passphrase: Option<String>,
}

/// The inference endpoint of an OCI region.
pub fn region_endpoint(region: &str) -> String {
    format!("https://inference.generativeai.{region}.oci.oraclecloud.com")
}

pub fn build(p: &RawProvider, at: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Upstream> {
    at.reject_unused(p, &["region", "compartment_id"], problems);
    let region = p.region.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let region_ok = match region {
        Some(r)
            if !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                || !r.contains('-') =>
        {
            problems.push(Problem::new(
                at.join("region"),
                "must be an OCI region identifier such as `us-chicago-1`",
            ));
            false
        }
        _ => true,
    };
    let endpoint = if p.endpoint.is_none() && region.is_none() {
        problems.push(Problem::new(
            at.join("endpoint"),
            "is required (e.g. https://inference.generativeai.us-chicago-1.oci.oraclecloud.com), or set `region`",
        ));
        None
    } else {
        at.endpoint(p.endpoint.as_deref(), region.map(region_endpoint), problems)
    };
    if let Some(c) = p.compartment_id.as_deref() {
        let c = c.trim();
        let ok = (c.starts_with("ocid1.compartment.") || c.starts_with("ocid1.tenancy."))
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            problems.push(Problem::new(
                at.join("compartment_id"),
                "must be a compartment OCID (`ocid1.compartment.…`, or the tenancy OCID for the root compartment)",
            ));
        }
    }
    let auth = at.auth(p.auth.as_ref(), &["oci_api_key"], problems)?;
    let config: ApiKeyConfig = at.auth_config(auth, problems)?;
    let key = OciApiKey::load(
        &config.tenancy,
        &config.user,
        &config.fingerprint,
        config.key_file.trim(),
        config.passphrase.as_deref(),
    )
    .map_err(|e| {
        problems.push(Problem::new(
            at.join(&format!("auth.config.{}", e.field)),
            e.why,
        ))
    })
    .ok()?;
    if !region_ok {
        return None;
    }
    Some(Upstream::new(endpoint?, Credential::Signed(Box::new(key))))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::raw::RawProvider;
    use crate::config::Problem;
    use crate::providers::ProviderRegistry;

    const FINGERPRINT: &str = include_str!("../../tests/fixtures/oci/test_key.fingerprint");
    const KEY: &str = "tests/fixtures/oci/test_key_pkcs1.pem";

    fn problems(yaml: &str) -> Vec<Problem> {
        let raw: BTreeMap<String, RawProvider> = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let reg = ProviderRegistry::from_raw(&raw, &mut problems);
        if problems.is_empty() {
            assert!(reg.get("oci").is_some_and(|p| p
                .upstream
                .as_ref()
                .unwrap()
                .credential
                .signs_body()));
        }
        problems
    }

    fn config(extra: &str, auth: &str) -> String {
        format!("oci:\n  {extra}\n  auth:\n    method: oci_api_key\n    config:\n{auth}\n",)
    }

    fn good_auth() -> String {
        format!(
            "      tenancy: ocid1.tenancy.oc1..aaaa\n      user: ocid1.user.oc1..bbbb\n      fingerprint: \"{}\"\n      key_file: {KEY}",
            FINGERPRINT.trim()
        )
    }

    fn paths(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_complete_config_builds() {
        let ok = config(
            "endpoint: https://inference.generativeai.us-chicago-1.oci.oraclecloud.com\n  compartment_id: ocid1.compartment.oc1..cccc",
            &good_auth(),
        );
        assert_eq!(problems(&ok), vec![]);
        assert_eq!(
            problems(&config("region: us-chicago-1", &good_auth())),
            vec![]
        );
        let pkcs8 = good_auth().replace("pkcs1", "pkcs8");
        assert_eq!(problems(&config("region: us-chicago-1", &pkcs8)), vec![]);
    }

    #[test]
    fn each_missing_or_wrong_field_is_named() {
        let p = problems(&config(
            "compartment_id: ocid1.compartment.oc1..c",
            &good_auth(),
        ));
        assert_eq!(paths(&p), ["providers.oci.endpoint"]);
        let p = problems(&config("region: Chicago", &good_auth()));
        assert_eq!(paths(&p), ["providers.oci.region"]);
        let p = problems(&config(
            "endpoint: ftp://x\n  compartment_id: nope",
            &good_auth(),
        ));
        assert_eq!(
            paths(&p),
            ["providers.oci.endpoint", "providers.oci.compartment_id"]
        );
        let p = problems(&config(
            "region: us-chicago-1\n  api_version: x",
            &good_auth(),
        ));
        assert_eq!(paths(&p), ["providers.oci.api_version"]);
        for field in ["tenancy", "user", "fingerprint", "key_file"] {
            let auth: String = good_auth()
                .lines()
                .filter(|l| !l.trim_start().starts_with(&format!("{field}:")))
                .collect::<Vec<_>>()
                .join("\n");
            let p = problems(&config("region: us-chicago-1", &auth));
            assert_eq!(paths(&p), ["providers.oci.auth.config"], "{field}");
            assert!(p[0].why.contains(field), "{p:?}");
        }
        for (from, to, path) in [
            ("ocid1.tenancy.oc1..aaaa", "tenancy-x", "tenancy"),
            ("ocid1.user.oc1..bbbb", "ocid1.group.oc1..b", "user"),
            (FINGERPRINT.trim(), "00:11", "fingerprint"),
            (KEY, "/nonexistent.pem", "key_file"),
            (KEY, "tests/fixtures/tls/localhost.key", "key_file"),
        ] {
            let p = problems(&config(
                "region: us-chicago-1",
                &good_auth().replace(from, to),
            ));
            assert_eq!(
                paths(&p),
                [format!("providers.oci.auth.config.{path}").as_str()],
                "{to}"
            );
        }
        let p = problems(&config(
            "region: us-chicago-1",
            &format!("{}\n      pass_phrase: x", good_auth()),
        ));
        assert_eq!(paths(&p), ["providers.oci.auth.config.pass_phrase"]);
        let p = problems("oci:\n  region: us-chicago-1\n  auth: {method: api_key, config: {}}\n");
        assert_eq!(paths(&p), ["providers.oci.auth.method"]);
        let p = problems("oci:\n  region: us-chicago-1\n");
        assert_eq!(paths(&p), ["providers.oci.auth"]);
        let p = problems(&config(
            "region: us-chicago-1\n  ca_file: /nonexistent/ca.pem",
            &good_auth(),
        ));
        assert_eq!(paths(&p), ["providers.oci.ca_file"]);
    }
}
