//! The gateway's calls into governance on the request path: scopes, budgets (a budgeted
//! caller may use priced models only) and rate limits before the upstream call, and the
//! audit of authentication failures.

use pingora::proxy::Session;

use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::pipeline::Gateway;
use crate::route::Plan;

/// 403 for a budgeted caller and a model without a price.
fn unpriced(model: &str) -> GatewayError {
    GatewayError::Forbidden(format!(
        "The model `{model}` has no price, so its cost cannot be counted against this API key's (or its user's) budget. Ask an administrator to add a price for it under `pricing:`."
    ))
}

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
        if self.governance.has_budget(&caller) {
            if let Some(config) = ctx.config.as_ref() {
                // An unpriced model costs 0 and would never exhaust the budget: a budgeted
                // caller may use only the candidates that have a price.
                plan.candidates
                    .retain(|c| config.prices.price(&[c.upstream_model, model]).is_some());
                if plan.candidates.is_empty() {
                    return Err(unpriced(model));
                }
            }
        }
        ctx.rate = self.governance.admit(&caller).await?.rate.map(Box::new);
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
        if let (Some(m), Some(config)) = (model, ctx.config.as_ref()) {
            if self.governance.has_budget(&caller) && config.prices.price(&[m]).is_none() {
                return Err(unpriced(m));
            }
        }
        ctx.rate = self.governance.admit(&caller).await?.rate.map(Box::new);
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
