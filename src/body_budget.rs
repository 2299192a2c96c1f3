//! The memory that request bodies the gateway holds may take together
//! (`server.max_inflight_body_bytes`).
//!
//! A body the gateway reads (unified API, signed passthrough) is kept until its request ends
//! (retries resend it), so many large bodies at once could exhaust memory even though each is
//! under `server.max_request_body_bytes`. Reading one takes its bytes from this budget — the
//! declared `Content-Length` up front, or chunk by chunk for a chunked body — and the request
//! context gives them back when the request ends. A request that does not fit is refused at
//! once with 503 and `Retry-After` rather than queued: a queue would hold the client's
//! connection and its unread body anyway, and the caller's retry spreads the load.
//!
//! Hand-rolled on one atomic counter rather than `tokio::sync::Semaphore`: nothing ever
//! waits, the limit may change with a reload, and a semaphore's permits are `u32`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of request bodies held now.
#[derive(Debug, Default)]
pub struct BodyBudget {
    held: AtomicU64,
}

/// Bytes taken from a [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl BodyBudget {
    /// Takes `bytes` for a new body; None when the bodies held would exceed `limit`.
    pub fn take(self: &Arc<Self>, bytes: u64, limit: u64) -> Option<BodyPermit> {
        let mut permit = BodyPermit {
            budget: self.clone(),
            bytes: 0,
        };
        permit.grow(bytes, limit).then_some(permit)
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

impl BodyPermit {
    /// Takes `more` bytes for the same body; false (nothing taken) when they do not fit.
    pub fn grow(&mut self, more: u64, limit: u64) -> bool {
        let ok = self
            .budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|&n| n <= limit)
            })
            .is_ok();
        if ok {
            self.bytes += more;
        }
        ok
    }

    /// Bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_the_limit_and_give_it_back() {
        let b = Arc::new(BodyBudget::default());
        let first = b.take(600, 1000).unwrap();
        assert!(b.take(600, 1000).is_none());
        let mut second = b.take(300, 1000).unwrap();
        assert!(!second.grow(200, 1000));
        assert!(second.grow(100, 1000));
        assert_eq!((b.held(), second.bytes()), (1000, 400));
        drop(first);
        assert_eq!(b.held(), 400);
        drop(second);
        assert_eq!(b.held(), 0);
        assert!(b.take(u64::MAX, u64::MAX).is_some());
        assert_eq!(b.held(), 0);
    }
}
