//! Stored answers of the Responses API (`store: true`, the default): what
//! `previous_response_id`, `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items` read.
//!
//! With a governance store (`auth.store`) responses live in its `sy_responses` table
//! (SQLite, or PostgreSQL shared by a fleet of replicas: any replica continues any
//! conversation). Without one they live in this process's memory, bounded by
//! `responses.memory_max_bytes` (oldest evicted first) and lost at restart. Either way a
//! response belongs to the key that created it: another key's id is "not found", and entries
//! past `responses.retention_days` are never returned.
//!
//! Each entry holds the whole conversation it answered (the items of earlier turns and its
//! own input) plus its `response` object, so continuing a conversation is one lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::governance::Governance;
use crate::store::responses::ResponseRow;

/// `responses:` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSettings {
    /// Seconds a stored response is kept (0: stored responses are never kept).
    pub retention_secs: i64,
    /// In-memory store only: the most bytes of stored responses held.
    pub memory_max_bytes: usize,
}

impl Default for ResponseSettings {
    fn default() -> Self {
        ResponseSettings {
            retention_secs: 30 * 86_400,
            memory_max_bytes: 64 << 20,
        }
    }
}

/// Why a store operation failed (the store itself, never the caller's input).
#[derive(Debug)]
pub struct StoreFailed(pub String);

/// The response store shared by all requests.
#[derive(Default)]
pub struct ResponseStore {
    memory: Mutex<Memory>,
    /// When expired rows were last deleted from the SQL store (unix seconds).
    last_prune: AtomicI64,
}

#[derive(Default)]
struct Memory {
    by_id: HashMap<String, Arc<ResponseRow>>,
    /// Insertion order, for eviction (ids already deleted are skipped).
    order: VecDeque<String>,
    bytes: usize,
}

fn size(r: &ResponseRow) -> usize {
    r.id.len() + r.owner.len() + r.input_items.len() + r.response.len() + 64
}

impl Memory {
    fn remove(&mut self, id: &str) -> Option<Arc<ResponseRow>> {
        let old = self.by_id.remove(id)?;
        self.bytes -= size(&old);
        Some(old)
    }

    fn put(&mut self, row: ResponseRow, max_bytes: usize) {
        if size(&row) > max_bytes {
            return;
        }
        if let Some(old) = self.by_id.get(&row.id) {
            if old.owner != row.owner {
                return;
            }
            self.remove(&row.id.clone());
        }
        self.bytes += size(&row);
        self.order.push_back(row.id.clone());
        self.by_id.insert(row.id.clone(), Arc::new(row));
        while self.bytes > max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
        // Deleted ids linger in `order` until their turn; keep it from growing without bound.
        if self.order.len() > 2 * self.by_id.len() + 1024 {
            let live = &self.by_id;
            self.order.retain(|id| live.contains_key(id));
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ResponseStore {
    /// Stores a response for `owner` (replacing its earlier version of the same id).
    pub async fn put(
        &self,
        gov: &Arc<Governance>,
        settings: ResponseSettings,
        row: ResponseRow,
    ) -> Result<(), StoreFailed> {
        if settings.retention_secs <= 0 {
            return Ok(());
        }
        match gov.store.clone() {
            None => {
                self.memory
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .put(row, settings.memory_max_bytes);
                Ok(())
            }
            Some(store) => {
                self.prune_now_and_then(gov, row.created_at);
                gov.on_store(async move { store.put_response(&row).await })
                    .await
                    .map_err(|e| StoreFailed(e.to_string()))
            }
        }
    }

    /// The response `id` of `owner`, unless it expired.
    pub async fn get(
        &self,
        gov: &Governance,
        id: &str,
        owner: &str,
    ) -> Result<Option<Arc<ResponseRow>>, StoreFailed> {
        let now = now();
        match gov.store.clone() {
            None => {
                let mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                Ok(mem
                    .by_id
                    .get(id)
                    .filter(|r| r.owner == owner && r.expires_at > now)
                    .cloned())
            }
            Some(store) => {
                let (id, owner) = (id.to_owned(), owner.to_owned());
                gov.on_store(async move { store.get_response(&id, &owner, now).await })
                    .await
                    .map(|r| r.map(Arc::new))
                    .map_err(|e| StoreFailed(e.to_string()))
            }
        }
    }

    /// Deletes the response `id` of `owner`; false when there was none.
    pub async fn delete(
        &self,
        gov: &Governance,
        id: &str,
        owner: &str,
    ) -> Result<bool, StoreFailed> {
        match gov.store.clone() {
            None => {
                let mut mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                let now = now();
                match mem.by_id.get(id) {
                    Some(r) if r.owner == owner => {
                        let live = r.expires_at > now;
                        mem.remove(id);
                        Ok(live)
                    }
                    _ => Ok(false),
                }
            }
            Some(store) => {
                let (id, owner) = (id.to_owned(), owner.to_owned());
                gov.on_store(async move { store.delete_response(&id, &owner).await })
                    .await
                    .map_err(|e| StoreFailed(e.to_string()))
            }
        }
    }

    /// Deletes expired rows from the SQL store in the background, at most once an hour.
    fn prune_now_and_then(&self, gov: &Arc<Governance>, now: i64) {
        let last = self.last_prune.load(Ordering::Relaxed);
        if now - last < 3600
            || self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Some(store) = gov.store.clone() else {
            return;
        };
        let gov = gov.clone();
        tokio::spawn(async move {
            match gov
                .on_store(async move { store.delete_expired_responses(now).await })
                .await
            {
                Ok(0) => {}
                Ok(n) => log::info!("responses: {n} expired stored responses deleted"),
                Err(e) => log::warn!("responses: deleting expired stored responses failed: {e}"),
            }
        });
    }

    /// Bytes held by the in-memory store.
    pub fn memory_bytes(&self) -> usize {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, owner: &str, bytes: usize) -> ResponseRow {
        ResponseRow {
            id: id.into(),
            owner: owner.into(),
            created_at: now(),
            expires_at: now() + 60,
            input_items: "[]".into(),
            response: "x".repeat(bytes),
        }
    }

    #[test]
    fn memory_is_bounded_oldest_first_and_scoped_to_the_owner() {
        let mut m = Memory::default();
        for i in 0..10 {
            m.put(row(&format!("resp_{i}"), "key_a", 1000), 5000);
        }
        assert!(m.bytes <= 5000, "{}", m.bytes);
        assert!(!m.by_id.contains_key("resp_0"));
        assert!(m.by_id.contains_key("resp_9"));
        // Another owner cannot replace an entry under the same id.
        m.put(row("resp_9", "key_b", 10), 5000);
        assert_eq!(&*m.by_id["resp_9"].owner, "key_a");
        // Too big for the bound: not stored at all.
        m.put(row("big", "key_a", 10_000), 5000);
        assert!(!m.by_id.contains_key("big"));
        m.remove("resp_9");
        assert!(m.bytes <= 5000);
        let sum: usize = m.by_id.values().map(|r| size(r)).sum();
        assert_eq!(sum, m.bytes);
    }
}
