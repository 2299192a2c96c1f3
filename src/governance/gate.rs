//! The gateway's calls into governance on the request path: scopes, budgets and rate
//! limits before the upstream call, and the audit of authentication failures.

use pingora::proxy::Session;

use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::proxy::Gateway;
use crate::route::Plan;

impl Gateway {
    /// Unified API, once the plan is made: the model must be in the key's scope, the plan
    /// keeps only the providers the key may use, then budgets and rate limits.
    pub(crate) async fn govern_unified<'a>(
        &self,
        ctx: &mut RequestCtx,
        model: &str,
        mut plan: Plan<'a>,
    ) -> Result<Plan<'a>, GatewayError> {
        ctx.client_model = Some(model.to_owned());
        let Some(caller) = ctx.caller.clone() else {
            return Ok(plan);
        };
        self.governance.check_model(&caller, model)?;
        if caller.policy.is_some() {
            plan.candidates
                .retain(|c| self.governance.allows_provider(&caller, &c.provider.name));
            if plan.candidates.is_empty() {
                return Err(GatewayError::Forbidden(format!(
                    "This API key is not allowed to use any provider that serves `{model}`."
                )));
            }
        }
        ctx.rate = self.governance.admit(&caller).await?.rate;
        Ok(plan)
    }

    /// Native passthrough: the provider must be in the key's scope. A key restricted to
    /// some models may only pass through where the model is in the path (Bedrock), since
    /// elsewhere it is in a body the gateway does not parse.
    pub(crate) async fn govern_passthrough(
        &self,
        ctx: &mut RequestCtx,
        provider: &str,
        model: Option<&str>,
    ) -> Result<(), GatewayError> {
        let Some(caller) = ctx.caller.clone() else {
            return Ok(());
        };
        if let Some(policy) = &caller.policy {
            if !policy.scope.allows_provider(provider) {
                return Err(GatewayError::Forbidden(format!(
                    "This API key is not allowed to use the provider `{provider}`."
                )));
            }
            if !policy.scope.models.is_empty() {
                match model {
                    Some(m) => self.governance.check_model(&caller, m)?,
                    None => {
                        return Err(GatewayError::Forbidden(format!(
                            "This API key is limited to some models; use the unified API (/v1/...) rather than native passthrough to `{provider}`."
                        )))
                    }
                }
            }
        }
        ctx.rate = self.governance.admit(&caller).await?.rate;
        Ok(())
    }

    /// An authentication failure, for the audit trail: where from, which route, why (the
    /// first from a source in a minute at once, the rest as one summary). The presented key
    /// is never recorded.
    pub(crate) fn audit_auth_failure(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        reason: &'static str,
    ) {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet().map(|i| i.ip().to_string()))
            .unwrap_or_default();
        let path: String = session.req_header().uri.path().chars().take(200).collect();
        self.governance.audit_failure(
            "auth_failure",
            &client,
            &path,
            reason,
            serde_json::json!({"reason": reason, "request_id": ctx.request_id, "route": ctx.route.as_str()}),
        );
    }
}
