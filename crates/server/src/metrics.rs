//! Counters for `/metrics` (Prometheus text format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

/// The service's counters.
pub struct Metrics {
    registry: Registry,
    events: Family<Outcome, Counter>,
    webhooks: Family<Webhook, Counter>,
    sync_lag: Gauge,
    sync_runs: Counter,
    synced: Counter,
    recommendations: Family<Answer, Counter>,
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

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
