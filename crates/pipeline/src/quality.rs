//! The daily data-quality report (ORIGIN §7, without its double counting).
//!
//! Per source: rows, distinct users, distinct items, the share of simulated
//! rows, anonymous item-level rows, and what is new since the previous report;
//! the total counts each user and item once across sources (the seed summed the
//! sources' distinct counts, so a customer seen in two sources counted twice).
//! Also the storefront events stored and refused. Written to
//! `reports/data-quality-<date>.json` in the object store and recorded in the
//! database, whose last report is the baseline of "new".

use std::collections::BTreeMap;

use bytes::Bytes;
use manirec_store::{Objects, SourceCounts, Store, StoredReport};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One slice of the interactions (a source, or the total).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceReport {
    /// Rows.
    pub count: i64,
    /// Distinct people (anonymous item-level ids not counted).
    pub users: i64,
    /// Distinct items.
    pub items: i64,
    /// Simulated rows.
    pub synthetic: i64,
    /// Simulated rows / rows (0 when there are no rows).
    pub synthetic_share: f64,
    /// Anonymous item-level rows (design-image views).
    pub anonymous: i64,
    /// Rows written since the previous report.
    pub new: i64,
}

impl From<&SourceCounts> for SliceReport {
    fn from(c: &SourceCounts) -> Self {
        SliceReport {
            count: c.count,
            users: c.users,
            items: c.items,
            synthetic: c.synthetic,
            synthetic_share: if c.count > 0 {
                (c.synthetic as f64 / c.count as f64 * 1e4).round() / 1e4
            } else {
                0.0
            },
            anonymous: c.anonymous,
            new: c.new,
        }
    }
}

/// Storefront events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsReport {
    /// Stored.
    pub stored: i64,
    /// Stored since the previous report.
    pub new: i64,
    /// Refused at ingestion, ever.
    pub rejected_total: i64,
    /// Refused since the previous report.
    pub rejected_new: i64,
}

/// The previous report, the baseline of "new".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousReport {
    /// Its date.
    pub date: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// The data-quality report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// YYYY-MM-DD (UTC).
    pub date: String,
    /// RFC 3339.
    pub created_at: String,
    /// Per source.
    pub by_source: BTreeMap<String, SliceReport>,
    /// All sources; users and items counted once.
    pub total: SliceReport,
    /// Storefront events.
    pub events: EventsReport,
    /// The baseline of `new`, if there was an earlier report.
    pub previous: Option<PreviousReport>,
    /// Object key the report was written to.
    pub key: String,
}

/// Makes the report, writes it to the object store and records it.
pub async fn report(store: &Store, objects: &Objects) -> Result<QualityReport> {
    let previous = store.last_quality_report()?;
    let (after_id, after_seq) = previous
        .as_ref()
        .map_or((0, 0), |p| (p.max_interaction_id, p.max_event_seq));
    let counts = store.quality_counts(after_id, after_seq)?;
    let previous_rejected = previous
        .as_ref()
        .and_then(|p| serde_json::from_str::<QualityReport>(&p.body).ok())
        .map_or(0, |r| r.events.rejected_total);
    let now = manirec_store::now_ms();
    let created = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    let date = created.format("%Y-%m-%d").to_string();
    let key = format!("reports/data-quality-{date}.json");
    let report = QualityReport {
        date: date.clone(),
        created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        by_source: counts
            .by_source
            .iter()
            .map(|(s, c)| (s.clone(), SliceReport::from(c)))
            .collect(),
        total: SliceReport::from(&counts.total),
        events: EventsReport {
            stored: counts.events,
            new: counts.new_events,
            rejected_total: counts.events_rejected_total,
            rejected_new: (counts.events_rejected_total - previous_rejected).max(0),
        },
        previous: previous.as_ref().map(|p| PreviousReport {
            date: p.date.clone(),
            created_at: chrono::DateTime::from_timestamp_millis(p.created_at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
        key: key.clone(),
    };
    let body = serde_json::to_string_pretty(&report).map_err(|e| Error::Data(e.to_string()))?;
    objects.put(&key, Bytes::from(body.clone())).await?;
    store.record_quality_report(&StoredReport {
        date,
        created_at: now,
        max_interaction_id: counts.max_interaction_id,
        max_event_seq: counts.max_event_seq,
        body,
    })?;
    Ok(report)
}
