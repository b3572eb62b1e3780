//! The numbers of the daily data-quality report, and the reports already made.
//!
//! Distinct users are counted over people only: ids with the
//! [`ANONYMOUS_PREFIX`](crate::ANONYMOUS_PREFIX) are item-level signals and are
//! counted apart. The total counts every user once, whatever the number of
//! sources they appear in (the seed's report summed the sources' counts).

use std::collections::BTreeMap;

use crate::sql::{params, Row};
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

/// State key of the running count of storefront events refused at ingestion.
const REJECTED_EVENTS: &str = "quality.events_rejected_total";

/// Counts of one slice of `training_interactions` (a source, or all of them).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// Rows.
    pub count: i64,
    /// Distinct people (anonymous item-level ids excluded).
    pub users: i64,
    /// Distinct items.
    pub items: i64,
    /// Simulated rows.
    pub synthetic: i64,
    /// Rows of anonymous item-level signals (design-image views).
    pub anonymous: i64,
    /// Rows with an id above the previous report's watermark.
    pub new: i64,
}

/// Everything the report counts in the store, from one read transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct QualityCounts {
    /// Per source.
    pub by_source: BTreeMap<String, SourceCounts>,
    /// All sources together (users and items counted once).
    pub total: SourceCounts,
    /// Highest interaction id (the next report's watermark).
    pub max_interaction_id: i64,
    /// Behaviour events stored.
    pub events: i64,
    /// Behaviour events stored since the previous report's watermark.
    pub new_events: i64,
    /// Highest event sequence number.
    pub max_event_seq: i64,
    /// Storefront events refused at ingestion, since the store was created.
    pub events_rejected_total: i64,
}

/// A report made earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// YYYY-MM-DD.
    pub date: String,
    /// Unix ms.
    pub created_at: i64,
    /// Its interaction watermark.
    pub max_interaction_id: i64,
    /// Its event watermark.
    pub max_event_seq: i64,
    /// The report JSON.
    pub body: String,
}

const COUNTS: &str = "COUNT(*),
    COUNT(DISTINCT CASE WHEN substr(user_id, 1, 10) <> 'anonymous:' THEN user_id END),
    COUNT(DISTINCT item_id),
    COALESCE(SUM(CASE WHEN synthetic <> 0 THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN substr(user_id, 1, 10) = 'anonymous:' THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN id > ?1 THEN 1 ELSE 0 END), 0)";

fn counts_from(r: &Row, at: usize) -> Result<SourceCounts> {
    Ok(SourceCounts {
        count: r.get(at)?,
        users: r.get(at + 1)?,
        items: r.get(at + 2)?,
        synthetic: r.get(at + 3)?,
        anonymous: r.get(at + 4)?,
        new: r.get(at + 5)?,
    })
}

impl Store {
    /// Counts for the report; rows with an id above `after_id` and events with a
    /// sequence number above `after_seq` are new.
    pub fn quality_counts(&self, after_id: i64, after_seq: i64) -> Result<QualityCounts> {
        let tx = self.conn.snapshot()?;
        let mut out = QualityCounts::default();
        tx.query_each(
            &format!(
                "SELECT source, {COUNTS} FROM training_interactions GROUP BY source ORDER BY source"
            ),
            params![after_id],
            |r| {
                out.by_source.insert(r.get(0)?, counts_from(r, 1)?);
                Ok(())
            },
        )?;
        out.total = tx.query_row(
            &format!("SELECT {COUNTS} FROM training_interactions"),
            params![after_id],
            |r| counts_from(r, 0),
        )?;
        out.max_interaction_id = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM training_interactions",
            params![],
            |r| r.get(0),
        )?;
        (out.events, out.new_events, out.max_event_seq) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN seq > ?1 THEN 1 ELSE 0 END), 0), COALESCE(MAX(seq), 0)
             FROM behavior_events",
            params![after_seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        out.events_rejected_total = tx
            .query_opt(
                "SELECT value FROM state WHERE key = ?1",
                params![REJECTED_EVENTS],
                |r| r.get::<String>(0),
            )?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        tx.commit()?;
        Ok(out)
    }

    /// Adds `n` to the count of storefront events refused at ingestion (the
    /// events endpoint calls this for the events it answers with an error).
    pub fn add_rejected_events(&mut self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE
               SET value = CAST(CAST(state.value AS BIGINT) + ?4 AS TEXT), updated_at = ?3",
            params![REJECTED_EVENTS, n.to_string(), crate::now_ms(), n as i64],
        )?;
        Ok(())
    }

    /// The most recent report, if any.
    pub fn last_quality_report(&self) -> Result<Option<StoredReport>> {
        self.conn.query_opt(
            "SELECT date, created_at, max_interaction_id, max_event_seq, body
                 FROM quality_reports ORDER BY id DESC LIMIT 1",
            params![],
            |r| {
                Ok(StoredReport {
                    date: r.get(0)?,
                    created_at: r.get(1)?,
                    max_interaction_id: r.get(2)?,
                    max_event_seq: r.get(3)?,
                    body: r.get(4)?,
                })
            },
        )
    }

    /// Records a report, so that the next one can say what is new.
    pub fn record_quality_report(&self, report: &StoredReport) -> Result<()> {
        self.conn.execute(
            "INSERT INTO quality_reports (date, created_at, max_interaction_id, max_event_seq, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                report.date,
                report.created_at,
                report.max_interaction_id,
                report.max_event_seq,
                report.body
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interaction, InteractionKey, Source};

    fn row(user: &str, item: &str, ts: i64, source: Source, synthetic: bool) -> Interaction {
        Interaction {
            key: InteractionKey {
                user_id: user.into(),
                item_id: item.into(),
                timestamp: ts,
                interaction_type: "view".into(),
            },
            rating: 1.0,
            source,
            synthetic,
            quantity: 1,
            origin: None,
        }
    }

    #[test]
    fn users_are_counted_once_across_sources_and_anonymous_ids_apart() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .insert_interactions(&[
                row("a", "p1", 1, Source::ExistingData, false),
                row("a", "p2", 2, Source::ExistingData, true),
                row("b", "p1", 3, Source::ExistingData, false),
                row("anonymous:image:1", "p3", 4, Source::ExistingData, false),
                row("a", "p1", 5, Source::Realtime, false),
                row("c", "p4", 6, Source::Realtime, false),
            ])
            .unwrap();
        let c = store.quality_counts(0, 0).unwrap();
        let existing = &c.by_source["existing_data"];
        assert_eq!((existing.count, existing.users, existing.items), (4, 2, 3));
        assert_eq!((existing.synthetic, existing.anonymous), (1, 1));
        assert_eq!(c.by_source["realtime"].users, 2);
        assert_eq!(c.total.users, 3, "a is in both sources, counted once");
        assert_eq!(c.total.items, 4);
        assert_eq!(c.total.new, 6);
        let later = store.quality_counts(c.max_interaction_id, 0).unwrap();
        assert_eq!(later.total.new, 0);

        assert_eq!(c.events_rejected_total, 0);
        store.add_rejected_events(2).unwrap();
        store.add_rejected_events(3).unwrap();
        assert_eq!(store.quality_counts(0, 0).unwrap().events_rejected_total, 5);
    }
}
