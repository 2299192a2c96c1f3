//! Image URLs for providers that take image bytes only: before an attempt at such a provider
//! the request's `http(s)` image URLs are fetched ([`crate::media_fetch`]), once per request;
//! [`super::prepare`] then hands that provider's translator the fetched request.

use super::attempts::Run;
use super::front_door::Typed;
use switchyard_filters::translate::Dialect;
use switchyard_filters::Endpoint;

use crate::media_fetch;
use crate::pipeline::translation;
use crate::route::Candidate;

impl Run<'_> {
    /// Fetches the request's image URLs if `cand` needs bytes and they are not fetched yet.
    /// A request without image URLs pays a scan of its parts, and only on an attempt at such
    /// a provider; with `media.fetch_image_urls: false`, nothing.
    pub(super) async fn fetch_images_for(&self, cand: &Candidate<'_>) {
        let (Some(fetcher), Typed::Chat(Ok(req))) = (&self.config.media, self.typed) else {
            return;
        };
        if self.images.get().is_some() || cand.provider.upstream.is_none() {
            return;
        }
        let needs = translation::dialect(
            cand.provider.kind,
            self.endpoint,
            cand.upstream_model,
            cand.options,
        )
        .is_some_and(|d| self.needs_image_bytes(d));
        if needs && media_fetch::has_image_urls(req) {
            self.images.fetch(fetcher, &self.gw.metrics, req).await;
        }
    }

    /// Whether this request's translation for `dialect` needs image bytes (a Messages request
    /// to a Claude host goes as the caller's body, untranslated).
    pub(super) fn needs_image_bytes(&self, dialect: Dialect) -> bool {
        media_fetch::needs_image_bytes(dialect)
            && !(translation::speaks_messages(dialect)
                && matches!(self.endpoint, Endpoint::Messages | Endpoint::CountTokens))
    }
}
