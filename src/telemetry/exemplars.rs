//! Exemplars: trace ids on the request-duration and time-to-first-token histograms, for
//! scrapers that ask for OpenMetrics (`Accept: application/openmetrics-text`).
//!
//! The `prometheus` crate has no exemplars and writes only the 0.0.4 text format, so this
//! module keeps the last few sampled traces per histogram series itself and, for an
//! OpenMetrics scrape, rewrites the crate's text into OpenMetrics 1.0 (counter families named
//! without `_total`, `# EOF`) with an exemplar on each `_bucket` line whose bucket holds one
//! (`… 17 # {trace_id="…"} 0.83 1733530000.123`). Plain-text scrapes are unchanged.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The histograms that carry exemplars.
pub const DURATION: &str = "ai_proxy_request_duration_seconds";
pub const TTFT: &str = "ai_proxy_time_to_first_token_seconds";

/// Recent exemplars kept per series (one bucket each at most is shown).
const PER_SERIES: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: u128,
    value: f64,
    at: f64,
}

/// Recent exemplars by (metric, provider, model).
type Series = HashMap<(&'static str, String, String), Vec<Exemplar>>;

/// The recent sampled observations of the exemplar histograms.
#[derive(Default)]
pub struct Exemplars {
    series: Mutex<Series>,
}

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a scrape's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&[u8]>) -> bool {
    accept.is_some_and(|a| {
        a.windows(b"application/openmetrics-text".len())
            .any(|w| w.eq_ignore_ascii_case(b"application/openmetrics-text"))
    })
}

impl Exemplars {
    /// Notes an observation of `metric` (one of [`DURATION`], [`TTFT`]) for a sampled trace.
    pub fn observe(
        &self,
        metric: &'static str,
        provider: &str,
        model: &str,
        value: Duration,
        trace_id: u128,
    ) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let e = Exemplar {
            trace_id,
            value: value.as_secs_f64(),
            at,
        };
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let v = series
            .entry((metric, provider.to_owned(), model.to_owned()))
            .or_default();
        if v.len() >= PER_SERIES {
            v.remove(0);
        }
        v.push(e);
    }

    /// The most recent exemplar of a series with a value in `(above, upto]`.
    fn find(
        &self,
        series: &Series,
        metric: &'static str,
        provider: &str,
        model: &str,
        above: f64,
        upto: f64,
    ) -> Option<Exemplar> {
        series
            .get(&(metric, provider.to_owned(), model.to_owned()))?
            .iter()
            .rev()
            .find(|e| e.value > above && e.value <= upto)
            .copied()
    }

    /// Rewrites the Prometheus text exposition `text` as OpenMetrics with exemplars.
    pub fn openmetrics(&self, text: &str) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(text.len() + text.len() / 8 + 16);
        let mut exemplar_metric: Option<&'static str> = None;
        // The previous bucket's bound within one series.
        let mut prev_le = f64::NEG_INFINITY;
        // A family's HELP text, written once its TYPE says what the family is called.
        let mut help: Option<&str> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
                // A counter named `…_total` is the family without the suffix in OpenMetrics.
                let counter_total = kind == "counter" && name.ends_with("_total");
                exemplar_metric = [DURATION, TTFT].into_iter().find(|m| *m == name);
                let kind = match kind {
                    "counter" if !counter_total => "unknown",
                    "untyped" => "unknown",
                    k => k,
                };
                let name = family(name, counter_total);
                if let Some(h) = help.take() {
                    let _ = writeln!(out, "# HELP {name} {}", h.replace('"', "\\\""));
                }
                let _ = writeln!(out, "# TYPE {name} {kind}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                help = Some(rest.split_once(' ').map_or("", |(_, h)| h));
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            out.push_str(line);
            if let Some(metric) = exemplar_metric {
                if let Some((provider, model, le)) = bucket_labels(line, metric) {
                    if let Some(e) = self.find(&series, metric, provider, model, prev_le, le) {
                        let _ = write!(
                            out,
                            " # {{trace_id=\"{:032x}\"}} {} {:.3}",
                            e.trace_id, e.value, e.at
                        );
                    }
                    prev_le = if le.is_infinite() {
                        f64::NEG_INFINITY
                    } else {
                        le
                    };
                }
            }
            out.push('\n');
        }
        out.push_str("# EOF\n");
        out
    }
}

/// A family's OpenMetrics name: a counter's without `_total`.
fn family(name: &str, counter_total: bool) -> &str {
    if counter_total {
        name.strip_suffix("_total").unwrap_or(name)
    } else {
        name
    }
}

/// `provider`, `model` and `le` of a `{metric}_bucket{…}` sample line.
fn bucket_labels<'a>(line: &'a str, metric: &str) -> Option<(&'a str, &'a str, f64)> {
    let rest = line.strip_prefix(metric)?.strip_prefix("_bucket{")?;
    let labels = &rest[..rest.find('}')?];
    let (mut provider, mut model, mut le) = (None, None, None);
    // Label values here are provider and model names from configuration and bucket bounds:
    // no commas or escaped quotes (a value with either is simply not matched).
    for pair in labels.split(',') {
        let (k, v) = pair.split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        match k {
            "provider" => provider = Some(v),
            "model" => model = Some(v),
            "le" => {
                le = Some(if v == "+Inf" {
                    f64::INFINITY
                } else {
                    v.parse().ok()?
                })
            }
            _ => {}
        }
    }
    Some((provider?, model?, le?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP ai_proxy_requests_total Requests by provider, model and HTTP status.
# TYPE ai_proxy_requests_total counter
ai_proxy_requests_total{model=\"m\",provider=\"p\",status=\"200\"} 3
# HELP ai_proxy_request_duration_seconds Request latency, end to end.
# TYPE ai_proxy_request_duration_seconds histogram
ai_proxy_request_duration_seconds_bucket{model=\"m\",provider=\"p\",le=\"0.005\"} 0
ai_proxy_request_duration_seconds_bucket{model=\"m\",provider=\"p\",le=\"0.01\"} 1
ai_proxy_request_duration_seconds_bucket{model=\"m\",provider=\"p\",le=\"+Inf\"} 3
ai_proxy_request_duration_seconds_sum{model=\"m\",provider=\"p\"} 0.5
ai_proxy_request_duration_seconds_count{model=\"m\",provider=\"p\"} 3
# HELP ai_proxy_in_flight_requests Requests in flight.
# TYPE ai_proxy_in_flight_requests gauge
ai_proxy_in_flight_requests 0
";

    #[test]
    fn rewrites_as_openmetrics_with_exemplars_in_their_buckets() {
        let ex = Exemplars::default();
        ex.observe(DURATION, "p", "m", Duration::from_millis(7), 0xabc);
        ex.observe(DURATION, "p", "m", Duration::from_millis(400), 0xdef);
        ex.observe(DURATION, "other", "m", Duration::from_millis(3), 0x111);
        let om = ex.openmetrics(TEXT);
        assert!(om.contains("# TYPE ai_proxy_requests counter\n"), "{om}");
        assert!(om.contains("# HELP ai_proxy_requests Requests by"), "{om}");
        assert!(
            om.contains("ai_proxy_requests_total{model=\"m\",provider=\"p\",status=\"200\"} 3\n")
        );
        let line = |le: &str| {
            om.lines()
                .find(|l| l.contains(&format!("le=\"{le}\"")))
                .unwrap()
                .to_owned()
        };
        assert!(!line("0.005").contains('#'), "{om}");
        assert!(
            line("0.01").contains(&format!("# {{trace_id=\"{:032x}\"}} 0.007 ", 0xabc)),
            "{om}"
        );
        assert!(
            line("+Inf").contains(&format!("# {{trace_id=\"{:032x}\"}} 0.4 ", 0xdef)),
            "{om}"
        );
        assert!(!om.contains(&format!("{:032x}", 0x111)));
        assert!(om.ends_with("# EOF\n"));
        assert!(wants_openmetrics(Some(
            b"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some(b"text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
