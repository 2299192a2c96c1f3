//! The admin HTTP API on its own listener (`admin.listen`): keys, user budgets, usage
//! reports and the audit trail.
//!
//! Two factors on every call: the admin key (`Authorization: Bearer`, compared by SHA-256
//! in constant time) and either a TOTP code (`x-switchyard-totp`, RFC 6238, each time step
//! accepted once across replicas) or a session token (`x-switchyard-session`) obtained with a
//! code from `POST /admin/session` and valid 15 minutes on this replica, so a script can
//! make several calls with one code. `admin.totp: false` turns the second factor off
//! (tests, break-glass).
//!
//! Wrong TOTP codes are throttled per source IP and overall (429 with `Retry-After` and a
//! growing backoff, [`crate::governance::totp_throttle`]).
//!
//! Every call is audited (`admin_action`, or `admin_auth_failure`: the first from a source
//! in a minute at once, the rest as one summary; `admin_totp_lockout`); key lifecycle events
//! are audited as `key_created`, `key_revoked`, `key_rotated` with actor `admin-api`.
//! Responses never contain a key except the one just created or rotated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminSettings;
use crate::governance::audit::event;
use crate::governance::budgets::{parse_duration, Period};
use crate::governance::keys::{self, KeySpec};
use crate::governance::totp_throttle::{Judged, Lockout};
use crate::governance::{totp, usage, Governance};
use crate::store::GroupBy;

const SESSION_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_BODY: usize = 64 * 1024;

pub struct AdminApp {
    settings: AdminSettings,
    gov: Arc<Governance>,
    /// SHA-256 of session tokens -> expiry.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
}

struct Reply {
    status: u16,
    body: Value,
    /// `Retry-After` seconds (429).
    retry_after: Option<u64>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body,
        retry_after: None,
    }
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 | 400 | 405 => "invalid_request_error",
        429 => "requests",
        _ => "server_error",
    };
    reply(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn store_error(e: impl std::fmt::Display) -> Reply {
    log::error!("admin API: store: {e}");
    error(
        500,
        "store_error",
        "The store could not complete the operation.",
    )
}

impl AdminApp {
    pub fn new(settings: AdminSettings, gov: Arc<Governance>) -> Self {
        AdminApp {
            settings,
            gov,
            sessions: Mutex::default(),
        }
    }

    /// Admin key, then TOTP code or session token. Err: the refusal and the audit reason.
    async fn authorize(
        &self,
        session: &ServerSession,
        client: &str,
    ) -> Result<(), (Reply, &'static str)> {
        let headers = &session.req_header().headers;
        let Some(key) = crate::auth::presented_key(headers) else {
            return Err((
                error(
                    401,
                    "invalid_api_key",
                    "Send the admin key in Authorization: Bearer.",
                ),
                "missing_key",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(key).into();
        if !bool::from(digest.ct_eq(&self.settings.key_sha256)) {
            return Err((
                error(401, "invalid_api_key", "Incorrect admin key."),
                "wrong_key",
            ));
        }
        if !self.settings.totp {
            return Ok(());
        }
        if let Some(token) = headers.get("x-switchyard-session") {
            let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let mut sessions = self.sessions.lock().expect("not poisoned");
            let now = Instant::now();
            sessions.retain(|_, exp| *exp > now);
            return if sessions.contains_key(&d) {
                Ok(())
            } else {
                Err((
                    error(
                        401,
                        "invalid_session",
                        "The admin session is unknown or expired; open a new one with a TOTP code.",
                    ),
                    "bad_session",
                ))
            };
        }
        let Some(code) = headers
            .get("x-switchyard-totp")
            .and_then(|v| v.to_str().ok())
        else {
            return Err((error(401, "totp_required", "Send a TOTP code in x-switchyard-totp (or a session token in x-switchyard-session)."), "missing_totp"));
        };
        self.check_totp(code.to_owned(), client).await
    }

    /// A TOTP code, unless its source (or everyone) is locked out after too many wrong
    /// codes (see [`crate::governance::totp_throttle`]): 429 with Retry-After then, the
    /// right code refused too.
    async fn check_totp(&self, code: String, client: &str) -> Result<(), (Reply, &'static str)> {
        let Some(store) = self.gov.store.clone() else {
            return Err((
                error(503, "no_store", "The admin API needs auth.store."),
                "no_store",
            ));
        };
        let throttle = &self.gov.totp_throttle;
        let now = keys::now_secs() as u64;
        let locked = |wait: u64| {
            let mut r = error(
                429,
                "totp_locked",
                &format!("Too many wrong TOTP codes; try again in {wait} s."),
            );
            r.retry_after = Some(wait);
            (r, "totp_throttled")
        };
        // Locked out: refused before the store is asked anything.
        if let Err(wait) = throttle.check(client, now) {
            throttle.failures.with_label_values(&["throttled"]).inc();
            return Err(locked(wait));
        }
        let s2 = store.clone();
        let secret = match self
            .gov
            .on_store(async move { s2.totp_secret().await })
            .await
        {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return Err((
                    error(
                        503,
                        "totp_not_set_up",
                        "No TOTP secret is set up: run `switchyard admin totp-setup`.",
                    ),
                    "totp_not_set_up",
                ))
            }
            Err(e) => return Err((store_error(e), "store_error")),
        };
        let step = match throttle.judge(client, now, || totp::matching_step(&secret, &code, now)) {
            Judged::Valid(step) => step,
            Judged::Locked(wait) => return Err(locked(wait)),
            Judged::Invalid(lockouts) => {
                self.audit_lockouts(client, &lockouts);
                return Err((
                    error(401, "totp_invalid", "Invalid or expired TOTP code."),
                    "invalid_totp",
                ));
            }
        };
        let result = self
            .gov
            .on_store(async move {
                Ok::<_, sqlx::Error>(if store.consume_totp_step(step).await? {
                    Ok(())
                } else {
                    Err("replayed_totp")
                })
            })
            .await;
        if let Ok(Err(_)) = result {
            throttle.failures.with_label_values(&["replayed"]).inc();
            let lockouts = throttle.failure(client, now);
            self.audit_lockouts(client, &lockouts);
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err((
                error(
                    401,
                    "totp_replayed",
                    "This TOTP code was already used; wait for the next one.",
                ),
                "replayed_totp",
            )),
            Err(e) => Err((store_error(e), "store_error")),
        }
    }

    /// Each lockout a wrong code started, in the audit trail.
    fn audit_lockouts(&self, client: &str, lockouts: &[Lockout]) {
        for l in lockouts {
            log::warn!(
                "admin API: too many wrong TOTP codes ({} lockout, {} s, last from {client})",
                l.scope,
                l.seconds
            );
            self.gov.audit(event(
                "admin_totp_lockout",
                client,
                l.scope,
                json!({"scope": l.scope, "seconds": l.seconds}),
            ));
        }
    }

    async fn route(&self, method: &http::Method, path: &str, query: &str, body: &[u8]) -> Reply {
        let Some(store) = self.gov.store.clone() else {
            return error(503, "no_store", "The admin API needs auth.store.");
        };
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let q = parse_query(query);
        use http::Method as M;
        match (method, parts.as_slice()) {
            (&M::POST, ["admin", "session"]) => {
                let token = format!("sys-{}", hex::encode(keys::random::<24>()));
                let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                self.sessions
                    .lock()
                    .expect("not poisoned")
                    .insert(d, Instant::now() + SESSION_TTL);
                reply(
                    201,
                    json!({"session": token, "expires_in": SESSION_TTL.as_secs()}),
                )
            }
            (&M::GET, ["admin", "keys"]) => {
                let all = q.get("all").is_some_and(|v| v == "true" || v == "1");
                match self
                    .gov
                    .on_store(async move { store.list_keys(all).await })
                    .await
                {
                    Ok(keys) => reply(
                        200,
                        json!({"data": keys.iter().map(keys::describe).collect::<Vec<_>>()}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            (&M::POST, ["admin", "keys"]) => {
                let spec: KeySpec = match serde_json::from_slice(body) {
                    Ok(s) => s,
                    Err(e) => {
                        return error(
                            400,
                            "invalid_body",
                            &format!(
                                "Invalid key request: {}",
                                crate::config::redact_serde_message(&e.to_string())
                            ),
                        )
                    }
                };
                let s2 = spec.clone();
                match self
                    .gov
                    .on_store(async move { keys::create(&store, &s2).await })
                    .await
                {
                    Ok(created) => {
                        self.gov.audit(event(
                            "key_created",
                            "admin-api",
                            &created.record.id,
                            json!({"user": created.record.user}),
                        ));
                        self.gov.refresh_soon();
                        let mut v = keys::describe(&created.record);
                        v["key"] = json!(created.secret);
                        reply(201, v)
                    }
                    Err(e) => error(400, "invalid_key_request", &e),
                }
            }
            (&M::GET, ["admin", "keys", id]) => {
                let id = id.to_string();
                match self
                    .gov
                    .on_store(async move { store.get_key(&id).await })
                    .await
                {
                    Ok(Some(k)) => reply(200, keys::describe(&k)),
                    Ok(None) => error(404, "not_found", "No such key."),
                    Err(e) => store_error(e),
                }
            }
            (&M::POST, ["admin", "keys", id, "revoke"]) | (&M::DELETE, ["admin", "keys", id]) => {
                let id = id.to_string();
                let id2 = id.clone();
                match self
                    .gov
                    .on_store(async move { store.revoke_key(&id2, keys::now_secs()).await })
                    .await
                {
                    Ok(true) => {
                        self.gov
                            .audit(event("key_revoked", "admin-api", &id, json!({})));
                        self.gov.refresh_soon();
                        reply(200, json!({"id": id, "status": "revoked"}))
                    }
                    Ok(false) => error(404, "not_found", "No such live key."),
                    Err(e) => store_error(e),
                }
            }
            (&M::POST, ["admin", "keys", id, "rotate"]) => {
                let id = id.to_string();
                let id2 = id.clone();
                match self
                    .gov
                    .on_store(async move { keys::rotate(&store, &id2).await })
                    .await
                {
                    Ok(Some(created)) => {
                        self.gov
                            .audit(event("key_rotated", "admin-api", &id, json!({})));
                        self.gov.refresh_soon();
                        let mut v = keys::describe(&created.record);
                        v["key"] = json!(created.secret);
                        reply(200, v)
                    }
                    Ok(None) => error(404, "not_found", "No such live key."),
                    Err(e) => error(500, "store_error", &e),
                }
            }
            (&M::GET, ["admin", "users"]) => {
                match self
                    .gov
                    .on_store(async move { store.list_users().await })
                    .await
                {
                    Ok(users) => reply(
                        200,
                        json!({"data": users.iter().map(|u| json!({"user": u.name, "budget_usd": u.budget_usd, "period": u.period})).collect::<Vec<_>>()}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            (&M::PUT, ["admin", "users", name, "budget"]) => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct B {
                    budget_usd: Option<f64>,
                    #[serde(default)]
                    period: Option<String>,
                }
                let Ok(b) = serde_json::from_slice::<B>(body) else {
                    return error(400, "invalid_body", "Send {\"budget_usd\": 100, \"period\": \"month\"} (budget_usd null removes it).");
                };
                if b.budget_usd.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    return error(
                        400,
                        "invalid_body",
                        "budget_usd must be a non-negative number.",
                    );
                }
                let period = match b.period.as_deref().map(Period::parse) {
                    Some(None) => {
                        return error(
                            400,
                            "invalid_body",
                            "period must be day, week, month or total.",
                        )
                    }
                    Some(Some(p)) => p,
                    None => Period::Month,
                };
                let name = name.to_string();
                let n2 = name.clone();
                let budget = b.budget_usd;
                match self
                    .gov
                    .on_store(async move {
                        store
                            .set_user_budget(
                                &n2,
                                budget,
                                budget.map(|_| period.as_str()),
                                keys::now_secs(),
                            )
                            .await
                    })
                    .await
                {
                    Ok(()) => {
                        self.gov.audit(event(
                            "user_budget_set",
                            "admin-api",
                            &name,
                            json!({"budget_usd": budget, "period": period.as_str()}),
                        ));
                        self.gov.refresh_soon();
                        reply(
                            200,
                            json!({"user": name, "budget_usd": budget, "period": budget.map(|_| period.as_str())}),
                        )
                    }
                    Err(e) => store_error(e),
                }
            }
            (&M::GET, ["admin", "usage"]) => {
                let by = q.get("by").map_or("user", String::as_str);
                let Some(by) = GroupBy::parse(by) else {
                    return error(
                        400,
                        "invalid_query",
                        "by must be user, key, model or provider.",
                    );
                };
                let since = q.get("since").cloned().unwrap_or_else(|| "7d".into());
                let Some(secs) = parse_duration(&since) else {
                    return error(400, "invalid_query", "since must look like 7d, 24h or 30m.");
                };
                let since_ms = crate::governance::audit::now_ms() - secs * 1000;
                match self
                    .gov
                    .on_store(async move { store.usage_report(by, since_ms).await })
                    .await
                {
                    Ok(rows) => reply(200, usage::json(by, &since, &rows)),
                    Err(e) => store_error(e),
                }
            }
            (&M::GET, ["admin", "audit"]) => {
                let since = q.get("since").cloned().unwrap_or_else(|| "1d".into());
                let Some(secs) = parse_duration(&since) else {
                    return error(400, "invalid_query", "since must look like 7d, 24h or 30m.");
                };
                let limit = q
                    .get("limit")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000i64)
                    .clamp(1, 10_000);
                let since_ms = crate::governance::audit::now_ms() - secs * 1000;
                match self
                    .gov
                    .on_store(async move { store.audit_since(since_ms, limit).await })
                    .await
                {
                    Ok(events) => reply(
                        200,
                        json!({"data": events.iter().map(|e| json!({
                        "ts": crate::access_log::now_rfc3339_at(e.ts_ms), "event": e.event, "actor": e.actor,
                        "subject": e.subject, "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or_default()})).collect::<Vec<_>>()}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            _ => error(404, "not_found", "Unknown admin route."),
        }
    }
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| {
            (
                k.to_owned(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let query = session.req_header().uri.query().unwrap_or("").to_owned();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet().map(|i| i.ip().to_string()))
            .unwrap_or_default();
        let r = match self.authorize(session, &client).await {
            Err((r, reason)) => {
                self.gov.audit_failure(
                    "admin_auth_failure",
                    &client,
                    &path,
                    reason,
                    json!({"reason": reason, "method": method.as_str()}),
                );
                r
            }
            Ok(()) => {
                let mut body = BytesMut::new();
                let mut too_large = false;
                while let Ok(Some(chunk)) = session.read_request_body().await {
                    if body.len() + chunk.len() > MAX_BODY {
                        too_large = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                let r = if too_large {
                    error(413, "request_too_large", "The body is too large.")
                } else {
                    self.route(&method, &path, &query, &body).await
                };
                self.gov.audit(event(
                    "admin_action",
                    &format!("admin@{client}"),
                    &path,
                    json!({"method": method.as_str(), "status": r.status}),
                ));
                r
            }
        };
        let body = serde_json::to_vec_pretty(&r.body).unwrap_or_default();
        let mut resp = Response::builder()
            .status(r.status)
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .header("content-length", body.len());
        if let Some(secs) = r.retry_after {
            resp = resp.header("retry-after", secs);
        }
        resp.body(body).expect("static response parts are valid")
    }
}
