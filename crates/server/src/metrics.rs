//! Counters and latency histograms for `/metrics` (Prometheus text format).
//!
//! Request durations are kept per route template (`/v1/items/{id}/similar`,
//! never the raw path, so a scanner cannot grow the label set) in fixed
//! buckets; the dashboard's p50/p99 are read off the same buckets, so the page
//! and a Prometheus server agree.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Upper bounds of the latency buckets, seconds: fine below 10 ms, where the
/// answers are meant to be, coarse above.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Webhook {
    topic: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    endpoint: &'static str,
    variant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
    method: String,
}

/// Our own copy of each route's bucket counts: prometheus-client's histogram
/// cannot be read back, and the dashboard wants quantiles.
#[derive(Default)]
struct LatencyCounts {
    routes: Vec<(Route, [u64; LATENCY_BUCKETS.len() + 1])>,
}

/// One route's latency quantiles, estimated from the histogram buckets (the
/// upper bound of the bucket the quantile falls in, as Prometheus'
/// `histogram_quantile` would interpolate to at most that).
#[derive(Debug, Clone, Serialize)]
pub struct RouteLatency {
    /// Route template, e.g. `/v1/recommendations`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Requests measured since start.
    pub requests: u64,
    /// Median, milliseconds (bucket upper bound).
    pub p50_ms: f64,
    /// 99th percentile, milliseconds (bucket upper bound; `null` above the last bucket).
    pub p99_ms: Option<f64>,
}

/// The service's counters.
pub struct Metrics {
    registry: Registry,
    events: Family<Outcome, Counter>,
    webhooks: Family<Webhook, Counter>,
    sync_lag: Gauge,
    sync_runs: Counter,
    synced: Counter,
    recommendations: Family<Answer, Counter>,
    unlogged: Counter,
    latency: Family<Route, Histogram>,
    latency_counts: Mutex<LatencyCounts>,
    refused: Family<Refusal, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("manirec");
        let events = Family::<Outcome, Counter>::default();
        let webhooks = Family::<Webhook, Counter>::default();
        let sync_lag = Gauge::default();
        let sync_runs = Counter::default();
        let synced = Counter::default();
        let recommendations = Family::<Answer, Counter>::default();
        let unlogged = Counter::default();
        let latency = Family::<Route, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer's headers, by route template and method",
            latency.clone(),
        );
        let refused = Family::<Refusal, Counter>::default();
        registry.register(
            "refused_requests",
            "Requests refused by the edge's limits (rate_limited, overloaded, timeout)",
            refused.clone(),
        );
        registry.register(
            "recommendations",
            "Recommendation answers by endpoint and A/B arm",
            recommendations.clone(),
        );
        registry.register(
            "answers_unlogged",
            "Answers outside experiments left out of the recommendation log ([limits] answers_logged_per_second)",
            unlogged.clone(),
        );
        registry.register(
            "events",
            "Storefront events by outcome (accepted, duplicate, rejected)",
            events.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook deliveries by topic and outcome",
            webhooks.clone(),
        );
        registry.register(
            "sync_lag_events",
            "Stored events not yet synced into interactions",
            sync_lag.clone(),
        );
        registry.register("sync_runs", "Sync runs", sync_runs.clone());
        registry.register(
            "synced_events",
            "Events synced into interactions",
            synced.clone(),
        );
        Metrics {
            registry,
            events,
            webhooks,
            sync_lag,
            sync_runs,
            synced,
            recommendations,
            unlogged,
            latency,
            latency_counts: Mutex::default(),
            refused,
        }
    }
}

/// Topics we expect; anything else is counted as `other` so a sender cannot
/// grow the label set without bound.
const KNOWN_TOPICS: &[&str] = &[
    "orders/create",
    "orders/update",
    "orders/paid",
    "orders/cancelled",
    "orders/delete",
    "orders/fulfilled",
    "orders/partially_refunded",
    "orders/refunded",
    "orders/poll",
    "products/create",
    "products/update",
    "products/delete",
    "app/uninstalled",
];

impl Metrics {
    /// Counts a recommendation answer.
    pub fn recommendation(&self, endpoint: &'static str, variant: &'static str) {
        self.recommendations
            .get_or_create(&Answer { endpoint, variant })
            .inc();
    }

    /// Counts an answer left out of the log (over its budget).
    pub fn unlogged_answer(&self) {
        self.unlogged.inc();
    }

    /// Counts a request refused by a limit (`rate_limited`, `overloaded`, `timeout`).
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Refusal { reason }).inc();
    }

    /// Counts event outcomes.
    pub fn events(&self, accepted: u64, duplicates: u64, rejected: u64) {
        self.events
            .get_or_create(&Outcome {
                outcome: "accepted",
            })
            .inc_by(accepted);
        self.events
            .get_or_create(&Outcome {
                outcome: "duplicate",
            })
            .inc_by(duplicates);
        self.events
            .get_or_create(&Outcome {
                outcome: "rejected",
            })
            .inc_by(rejected);
    }

    /// Counts one webhook outcome.
    pub fn webhook(&self, topic: &str, outcome: &'static str) {
        let topic = if KNOWN_TOPICS.contains(&topic) {
            topic
        } else {
            "other"
        };
        self.webhooks
            .get_or_create(&Webhook {
                topic: topic.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records a sync run.
    pub fn synced(&self, events: u64) {
        self.sync_runs.inc();
        self.synced.inc_by(events);
    }

    /// Sets the sync lag.
    pub fn set_sync_lag(&self, events: i64) {
        self.sync_lag.set(events);
    }

    /// Records how long a request to `route` (its template) took.
    pub fn request(&self, route: &str, method: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let key = Route {
            route: route.to_owned(),
            method: method.to_owned(),
        };
        self.latency.get_or_create(&key).observe(seconds);
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&upper| seconds <= upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut counts = self
            .latency_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match counts.routes.iter_mut().find(|(r, _)| *r == key) {
            Some((_, buckets)) => buckets[bucket] += 1,
            None => {
                let mut buckets = [0; LATENCY_BUCKETS.len() + 1];
                buckets[bucket] = 1;
                counts.routes.push((key, buckets));
            }
        }
    }

    /// p50 and p99 of every route seen, busiest first.
    pub fn latencies(&self) -> Vec<RouteLatency> {
        let counts = self
            .latency_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<RouteLatency> = counts
            .routes
            .iter()
            .map(|(key, buckets)| {
                let requests = buckets.iter().sum();
                RouteLatency {
                    route: key.route.clone(),
                    method: key.method.clone(),
                    requests,
                    p50_ms: quantile(buckets, requests, 0.5).map_or(f64::INFINITY, |s| s * 1e3),
                    p99_ms: quantile(buckets, requests, 0.99).map(|s| s * 1e3),
                }
            })
            .collect();
        out.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
        out
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// The upper bound (seconds) of the bucket holding quantile `q`; `None` when it
/// falls in the overflow bucket.
fn quantile(buckets: &[u64; LATENCY_BUCKETS.len() + 1], total: u64, q: f64) -> Option<f64> {
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return LATENCY_BUCKETS.get(i).copied();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let m = Metrics::default();
        for _ in 0..98 {
            m.request("/v1/popular", "GET", Duration::from_micros(800));
        }
        m.request("/v1/popular", "GET", Duration::from_millis(20));
        m.request("/v1/popular", "GET", Duration::from_secs(9));
        m.request("/healthz", "GET", Duration::from_micros(100));
        let l = m.latencies();
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].route.as_str(), l[0].requests), ("/v1/popular", 100));
        assert_eq!(l[0].p50_ms, 1.0);
        assert_eq!(l[0].p99_ms, Some(25.0));
        assert_eq!(l[1].p99_ms, Some(0.5));
        let text = m.render();
        assert!(
            text.contains(
                r#"manirec_request_duration_seconds_bucket{le="0.001",route="/v1/popular",method="GET"} 98"#
            ),
            "{text}"
        );
    }

    #[test]
    fn overflow_has_no_upper_bound() {
        let m = Metrics::default();
        m.request("/v1/popular", "GET", Duration::from_secs(9));
        assert_eq!(m.latencies()[0].p99_ms, None);
    }
}
