//! The span queue and its export thread: request handlers hand finished spans over without
//! blocking (a full queue drops them and counts them); one background thread batches them
//! and sends them to the collector with the OTLP exporter (HTTP/protobuf or gRPC).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prometheus::IntCounter;

use super::{Protocol, TelemetrySettings};

/// Spans sent in one export call at most.
const MAX_BATCH: usize = 512;
/// How long a span may wait in the queue for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How often the export thread looks at the queue when nobody woke it. Request handlers do
/// not wake it per request: on a busy core every wake-up was a futex call and a context
/// switch per request (with `sample_ratio: 1.0` the worker's CPU per request went up by
/// ≈ 20 µs); they wake it only when a batch is full.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The handle request handlers push spans through. Dropping it ends the thread after it has
/// sent what is queued.
pub struct Exporter {
    tx: Sender<Vec<SpanData>>,
    /// The export thread, woken when a batch is full (and on drop, to flush).
    thread: std::thread::Thread,
    /// Spans queued and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    dropped: IntCounter,
}

impl Exporter {
    /// Starts the export thread for `settings`; spans that find the queue full are counted
    /// in `dropped`.
    pub fn start(settings: &TelemetrySettings, dropped: IntCounter) -> std::io::Result<Exporter> {
        let (tx, rx) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let thread_queued = queued.clone();
        let thread_settings = settings.clone();
        let handle = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || export_loop(&thread_settings, &rx, &thread_queued))?;
        Ok(Exporter {
            tx,
            thread: handle.thread().clone(),
            queued,
            max_queue: settings.max_queue_spans,
            dropped,
        })
    }

    /// Queues one request's spans, or drops and counts them when the queue is full. Never
    /// blocks: an atomic add and a channel push (the channel's receiver is never blocked in
    /// it, so the push wakes nobody); the thread is woken when a batch is full.
    pub fn submit(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.max_queue {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.dropped.inc_by(n as u64);
            return;
        }
        if self.tx.send(spans).is_err() {
            // The thread is gone (its exporter could not be built): nothing will send them.
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.dropped.inc_by(n as u64);
        } else if before < MAX_BATCH && before + n >= MAX_BATCH {
            self.thread.unpark();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // The channel closes right after this; the thread sends what is queued and ends.
        self.thread.unpark();
    }
}

/// The exporter and how to drive it: HTTP's blocking client must not run inside a Tokio
/// runtime; tonic needs one.
enum Transport {
    Http(opentelemetry_otlp::SpanExporter),
    Grpc(opentelemetry_otlp::SpanExporter, tokio::runtime::Runtime),
}

impl Transport {
    fn build(s: &TelemetrySettings) -> Result<Transport, String> {
        let timeout = s.export_timeout;
        let mut exporter = match s.protocol {
            Protocol::HttpProtobuf => {
                let e = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(s.traces_url())
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(timeout)
                    .with_headers(s.headers.iter().cloned().collect())
                    .build()
                    .map_err(|e| e.to_string())?;
                Transport::Http(e)
            }
            Protocol::Grpc => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &s.headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                        v.parse(),
                    ) {
                        metadata.insert(k, v);
                    }
                }
                let e = {
                    let _in_rt = rt.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(s.otlp_endpoint.clone())
                        .with_timeout(timeout)
                        .with_metadata(metadata)
                        .build()
                        .map_err(|e| e.to_string())?
                };
                Transport::Grpc(e, rt)
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(s.service_name.clone())
            .build();
        match &mut exporter {
            Transport::Http(e) | Transport::Grpc(e, _) => e.set_resource(&resource),
        }
        Ok(exporter)
    }

    fn export(&self, batch: Vec<SpanData>) {
        let n = batch.len();
        let result = match self {
            Transport::Http(e) => futures_executor::block_on(e.export(batch)),
            Transport::Grpc(e, rt) => rt.block_on(e.export(batch)),
        };
        if let Err(e) = result {
            log::warn!("tracing: {n} spans not exported: {e}");
        }
    }
}

fn export_loop(s: &TelemetrySettings, rx: &Receiver<Vec<SpanData>>, queued: &AtomicUsize) {
    let transport = match Transport::build(s) {
        Ok(t) => t,
        Err(e) => {
            log::error!("tracing: cannot export to {}: {e}", s.otlp_endpoint);
            return;
        }
    };
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut oldest: Option<Instant> = None;
    loop {
        // Parked, not blocked in the channel: a push does not wake this thread (see
        // LOOK_EVERY); a full batch or the handle's drop does.
        std::thread::park_timeout(LOOK_EVERY);
        let closed = loop {
            match rx.try_recv() {
                Ok(spans) => {
                    queued.fetch_sub(spans.len(), Ordering::Relaxed);
                    oldest.get_or_insert_with(Instant::now);
                    batch.extend(spans);
                    if batch.len() >= MAX_BATCH {
                        transport.export(std::mem::take(&mut batch));
                        oldest = None;
                    }
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if !batch.is_empty() && (closed || oldest.is_some_and(|t| t.elapsed() >= FLUSH_EVERY)) {
            transport.export(std::mem::take(&mut batch));
            oldest = None;
        }
        if closed {
            return;
        }
    }
}
