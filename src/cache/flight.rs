//! Request coalescing: one call in flight per cache key. The leader records what it sends
//! its client (head, chunks, how it ended); followers replay the record so far and then
//! follow it live. A leader that ends without an answer (its client went away) leaves the
//! flight `Abandoned`, and a follower that has sent nothing yet makes the call itself.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use switchyard_filters::Usage;
use tokio::sync::Notify;

use super::{Key, ResponseCache};
use crate::errors::GatewayError;

/// A call in flight and what it has sent so far.
#[derive(Default)]
pub struct Flight {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Default)]
struct State {
    head: Option<Head>,
    chunks: Vec<Bytes>,
    bytes: usize,
    /// The leader sent the last byte of its answer.
    bytes_ended: bool,
    end: FlightEnd,
    followers: usize,
}

/// The status and content type the leader's answer started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_type: String,
}

/// How a flight ended.
#[derive(Debug, Clone, Default)]
pub enum FlightEnd {
    #[default]
    Running,
    /// The leader's request ended with its answer sent (success or the provider's error).
    Complete {
        usage: Option<Usage>,
        provider: Option<Arc<str>>,
    },
    /// The leader's request failed before answering; followers fail alike.
    Failed(GatewayError),
    /// The leader went away (its client closed) before its answer was complete.
    Abandoned,
}

impl FlightEnd {
    pub fn is_running(&self) -> bool {
        matches!(self, FlightEnd::Running)
    }
}

/// What a follower sees when it looks again.
pub struct Progress {
    pub head: Option<Head>,
    /// Chunks after those the follower had.
    pub chunks: Vec<Bytes>,
    pub bytes_ended: bool,
    pub end: FlightEnd,
}

impl Flight {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a new request may still follow this flight.
    pub(super) fn joinable(&self) -> bool {
        let mut s = self.state();
        let ok = s.end.is_running();
        if ok {
            s.followers += 1;
        }
        ok
    }

    /// Waits until there is something new after `have` chunks (or the head, when
    /// `seen_head` is false; the answer's last byte, when `seen_last` is false; or the end),
    /// and returns it.
    pub async fn progress(&self, have: usize, seen_head: bool, seen_last: bool) -> Progress {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.state();
                let news = s.chunks.len() > have
                    || !s.end.is_running()
                    || (s.bytes_ended && !seen_last)
                    || (!seen_head && s.head.is_some());
                if news {
                    return Progress {
                        head: s.head.clone(),
                        chunks: s.chunks.get(have..).unwrap_or_default().to_vec(),
                        bytes_ended: s.bytes_ended,
                        end: s.end.clone(),
                    };
                }
            }
            notified.await;
        }
    }

    /// How many requests joined this flight.
    pub fn followers(&self) -> usize {
        self.state().followers
    }
}

/// The leader's handle on its flight: records what the leader sends; leaves the flight
/// `Abandoned` if dropped before [`FlightGuard::finish`].
pub struct FlightGuard {
    flight: Arc<Flight>,
    /// The cache and key it is registered under (None: a private recording).
    registered: Option<(Arc<ResponseCache>, Key)>,
}

impl FlightGuard {
    pub(super) fn new(flight: Arc<Flight>, registered: Option<(Arc<ResponseCache>, Key)>) -> Self {
        FlightGuard { flight, registered }
    }

    /// Records the answer's head (the first one only: an answer starts once).
    pub fn record_head(&self, status: u16, content_type: &str) {
        let mut s = self.flight.state();
        if s.head.is_none() {
            s.head = Some(Head {
                status,
                content_type: content_type.to_owned(),
            });
            drop(s);
            self.flight.notify.notify_waiters();
        }
    }

    /// Records a chunk sent to the client (`end`: the last).
    pub fn record(&self, chunk: &Bytes, end: bool) {
        let mut s = self.flight.state();
        if s.bytes_ended || !s.end.is_running() {
            return;
        }
        if !chunk.is_empty() {
            s.bytes += chunk.len();
            s.chunks.push(chunk.clone());
        }
        s.bytes_ended |= end;
        drop(s);
        self.flight.notify.notify_waiters();
    }

    /// The head, and whether the whole answer was recorded.
    pub fn head(&self) -> (Option<Head>, bool) {
        let s = self.flight.state();
        (s.head.clone(), s.bytes_ended)
    }

    /// The recorded answer in one piece, if it is complete and at most `max` bytes.
    pub fn answer(&self, max: usize) -> Option<Bytes> {
        let s = self.flight.state();
        if !s.bytes_ended || s.bytes > max {
            return None;
        }
        if s.chunks.len() == 1 {
            return Some(s.chunks[0].clone());
        }
        let mut b = BytesMut::with_capacity(s.bytes);
        for c in &s.chunks {
            b.extend_from_slice(c);
        }
        Some(b.freeze())
    }

    /// Ends the flight (followers are told) and forgets it: later requests look in the
    /// cache again.
    pub fn finish(&mut self, end: FlightEnd) {
        {
            let mut s = self.flight.state();
            if !s.end.is_running() {
                return;
            }
            s.end = end;
        }
        self.flight.notify.notify_waiters();
        if let Some((cache, key)) = &self.registered {
            cache.land(key, &self.flight);
        }
    }

    pub fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.finish(FlightEnd::Abandoned);
    }
}
