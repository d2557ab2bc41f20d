//! What the RLQS server records, written on `/metrics` at each scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::metrics::TextSource;

/// Most `floodgate_rlqs_admitted_ratio` series (domain and bucket pairs);
/// buckets past it are not shown (the other series still count them).
pub const MAX_RATIO_SERIES: usize = 1_000;

/// Longest `domain` or `bucket` label value, in bytes: a longer one is cut
/// and ends with `…` and a hash of the whole (so that two cut values stay
/// two series).
pub const MAX_LABEL_BYTES: usize = 256;

/// Assignment kinds, as the `kind` label says them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// A token bucket.
    TokenBucket,
    /// Deny all (the window's limit is used up, or the store is down
    /// under the `deny` policy).
    DenyAll,
    /// Allow all (no rule, or the store is down under `allow`).
    AllowAll,
    /// Abandon: the bucket was idle.
    Abandon,
}

impl Sent {
    const ALL: [Sent; 4] = [
        Sent::TokenBucket,
        Sent::DenyAll,
        Sent::AllowAll,
        Sent::Abandon,
    ];

    fn label(self) -> &'static str {
        match self {
            Sent::TokenBucket => "token_bucket",
            Sent::DenyAll => "deny_all",
            Sent::AllowAll => "allow_all",
            Sent::Abandon => "abandon",
        }
    }
}

/// The RLQS counters and gauges.
#[derive(Debug, Default)]
pub struct RlqsMetrics {
    streams: AtomicU64,
    buckets: AtomicU64,
    reports: AtomicU64,
    errors: AtomicU64,
    sent: [AtomicU64; 4],
    /// The admitted ratios, per (domain, bucket) label pair.
    ratios: Mutex<Ratios>,
}

/// The `floodgate_rlqs_admitted_ratio` series and who holds them.
#[derive(Debug, Default)]
struct Ratios {
    /// (domain, bucket) → used / limit in the current window.
    values: HashMap<(String, String), f64>,
    /// (domain, bucket) → the streams tracking it: its series goes when
    /// the last one abandons it or ends.
    holders: HashMap<(String, String), usize>,
}

impl RlqsMetrics {
    /// A stream opened (`+1`) or ended (`-1`).
    pub fn stream(&self, opened: bool) {
        if opened {
            self.streams.fetch_add(1, Ordering::Relaxed);
        } else {
            self.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `n` buckets started (`true`) or stopped (`false`) being tracked.
    pub fn buckets(&self, started: bool, n: u64) {
        if started {
            self.buckets.fetch_add(n, Ordering::Relaxed);
        } else {
            self.buckets.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// One bucket usage report received.
    pub fn report(&self) {
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream ended with an error (invalid report, over a bound).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// One action sent.
    pub fn sent(&self, kind: Sent) {
        let i = Sent::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.sent[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The window's used count over the limit, for a bucket.
    pub fn ratio(&self, domain: &str, bucket: &str, used: u64, limit: u64) {
        let ratio = used as f64 / limit.max(1) as f64;
        let mut ratios = self.ratios.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (label(domain), label(bucket));
        if ratios.values.len() < MAX_RATIO_SERIES || ratios.values.contains_key(&key) {
            ratios.values.insert(key, ratio);
        }
    }

    /// A stream started tracking a bucket.
    pub fn hold(&self, domain: &str, bucket: &str) {
        let mut ratios = self.ratios.lock().unwrap_or_else(PoisonError::into_inner);
        *ratios
            .holders
            .entry((label(domain), label(bucket)))
            .or_default() += 1;
    }

    /// A stream stopped tracking a bucket (abandoned, or the stream
    /// ended): the last one to stop removes its series.
    pub fn release(&self, domain: &str, bucket: &str) {
        let mut ratios = self.ratios.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (label(domain), label(bucket));
        let left = ratios.holders.get_mut(&key).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left.unwrap_or(0) == 0 {
            ratios.holders.remove(&key);
            ratios.values.remove(&key);
        }
    }

    /// The series, in the text format, for [`crate::metrics::Metrics::add_text`].
    pub fn text_source(self: &Arc<Self>) -> TextSource {
        let metrics = Arc::downgrade(self);
        Arc::new(move |out: &mut String| {
            if let Some(metrics) = metrics.upgrade() {
                metrics.render(out);
            }
        })
    }

    fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let one = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            out,
            "floodgate_rlqs_streams",
            "gauge",
            "RLQS streams open.",
            load(&self.streams),
        );
        one(
            out,
            "floodgate_rlqs_buckets",
            "gauge",
            "Buckets tracked over all RLQS streams.",
            load(&self.buckets),
        );
        one(
            out,
            "floodgate_rlqs_reports_total",
            "counter",
            "Bucket usage reports received.",
            load(&self.reports),
        );
        one(
            out,
            "floodgate_rlqs_stream_errors_total",
            "counter",
            "RLQS streams ended with an error (an invalid report, or over a bound).",
            load(&self.errors),
        );
        self.render_labelled(out);
    }

    /// The series with labels.
    fn render_labelled(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let name = "floodgate_rlqs_assignments_total";
        let _ = writeln!(
            out,
            "# HELP {name} Bucket actions sent, by kind.\n# TYPE {name} counter"
        );
        for (kind, count) in Sent::ALL.iter().zip(&self.sent) {
            let _ = writeln!(out, "{name}{{kind=\"{}\"}} {}", kind.label(), load(count));
        }
        let name = "floodgate_rlqs_admitted_ratio";
        let _ = writeln!(
            out,
            "# HELP {name} Requests admitted in the current window over the limit, per bucket.\n# TYPE {name} gauge"
        );
        let ratios = self.ratios.lock().unwrap_or_else(PoisonError::into_inner);
        let mut series: Vec<_> = ratios.values.iter().collect();
        series.sort_by(|a, b| a.0.cmp(b.0));
        for ((domain, bucket), ratio) in series {
            let _ = writeln!(
                out,
                "{name}{{domain=\"{}\",bucket=\"{}\"}} {ratio}",
                escape(domain),
                escape(bucket)
            );
        }
    }
}

/// A label value of at most [`MAX_LABEL_BYTES`] (see there).
fn label(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    if s.len() <= MAX_LABEL_BYTES {
        return s.to_owned();
    }
    let mut hasher = std::hash::DefaultHasher::new();
    s.hash(&mut hasher);
    let suffix = format!("…{:016x}", hasher.finish());
    let mut cut = MAX_LABEL_BYTES - suffix.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &s[..cut])
}

/// A label value, escaped for the text format.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_render_with_labels_escaped_and_bounded() {
        let m = Arc::new(RlqsMetrics::default());
        m.stream(true);
        m.buckets(true, 2);
        m.report();
        m.sent(Sent::DenyAll);
        m.ratio("edge", "user=\"u\"", 30, 60);
        for i in 0..(MAX_RATIO_SERIES + 5) {
            m.ratio("edge", &format!("b{i}"), 1, 1);
        }
        let mut out = String::new();
        (m.text_source())(&mut out);
        assert!(out.contains("floodgate_rlqs_streams 1\n"), "{out}");
        assert!(out.contains("floodgate_rlqs_buckets 2\n"), "{out}");
        assert!(out.contains("floodgate_rlqs_assignments_total{kind=\"deny_all\"} 1\n"));
        assert!(
            out.contains(
                "floodgate_rlqs_admitted_ratio{domain=\"edge\",bucket=\"user=\\\"u\\\"\"} 0.5\n"
            ),
            "{out}"
        );
        let ratios = out.matches("floodgate_rlqs_admitted_ratio{").count();
        assert_eq!(ratios, MAX_RATIO_SERIES);
    }

    #[test]
    fn a_series_goes_with_its_last_holder_and_long_labels_are_cut() {
        let m = Arc::new(RlqsMetrics::default());
        let render = || {
            let mut out = String::new();
            (m.text_source())(&mut out);
            out.lines()
                .filter(|l| l.starts_with("floodgate_rlqs_admitted_ratio{"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        m.hold("edge", "user=u");
        m.hold("edge", "user=u");
        m.ratio("edge", "user=u", 1, 2);
        m.release("edge", "user=u");
        assert_eq!(render().len(), 1, "one stream still tracks it");
        m.release("edge", "user=u");
        assert!(render().is_empty(), "{:?}", render());

        let long = |c: &str| format!("user={}", c.repeat(300));
        m.hold("edge", &long("é"));
        m.ratio("edge", &long("é"), 1, 2);
        m.ratio("edge", &long("ê"), 1, 2);
        let lines = render();
        assert_eq!(lines.len(), 2, "two cut values, two series: {lines:?}");
        for line in &lines {
            let bucket = line
                .split("bucket=\"")
                .nth(1)
                .and_then(|b| b.split('"').next())
                .unwrap_or_default();
            assert!(
                bucket.len() <= MAX_LABEL_BYTES && bucket.contains('…'),
                "{line}"
            );
        }
        m.release("edge", &long("é"));
        assert_eq!(render().len(), 1);
    }
}
