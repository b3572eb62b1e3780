//! Behaviour events into training interactions (ORIGIN §3B, without its flaws).
//!
//! The watermark is the events' ingestion sequence number, advanced in the same
//! transaction as the rows it accounts for: whatever the clients' clocks or the
//! arrival order, every stored event is synced exactly once. User = the shop's
//! user id (hashed at ingestion), else the customer a session or device is linked
//! to, else `session:<id>`, else `device:<id>`. After each run, new identity links
//! move earlier anonymous rows to their customer (once: the links have their own
//! watermark).

use std::collections::BTreeMap;

use manirec_store::{
    device_user, session_user, Interaction, InteractionKey, Source, Stitched, Store,
};
use serde::{Deserialize, Serialize};

use crate::{Progress, Result};

/// Events read per transaction.
const BATCH: usize = 20_000;

/// Rating of each event type; a weight of 0 means "not a preference" (skipped).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Weights {
    /// Per event type.
    pub by_type: BTreeMap<String, f64>,
    /// Any other type.
    pub other: f64,
}

impl Default for Weights {
    fn default() -> Self {
        let by_type = [
            ("purchase", 5.0),
            ("add_to_cart", 4.0),
            ("add_to_wishlist", 3.0),
            ("product_click", 2.0),
            ("rec_click", 2.0),
            ("product_view", 1.0),
            // Being shown something is no preference; impressions feed A/B tests only.
            ("rec_impression", 0.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Weights {
            by_type,
            other: 0.5,
        }
    }
}

impl Weights {
    /// The weight of an event type.
    pub fn of(&self, event_type: &str) -> f64 {
        self.by_type.get(event_type).copied().unwrap_or(self.other)
    }
}

/// What a sync did.
#[derive(Debug, Default, Serialize)]
pub struct SyncSummary {
    /// Events accounted for by this run.
    pub synced: u64,
    /// Interactions written.
    pub inserted: u64,
    /// Events that are no preference (weight 0), or already present as a row.
    pub skipped: u64,
    /// The last event sequence number accounted for.
    pub watermark: i64,
    /// Anonymous history moved to customers.
    pub stitched: Stitched,
}

/// Syncs every event stored since the last run.
pub fn sync(store: &mut Store, weights: &Weights, progress: &dyn Progress) -> Result<SyncSummary> {
    let mut summary = SyncSummary::from_watermark(store)?;
    let backlog = (store.last_event_seq()? - summary.watermark).max(0) as u64;
    progress.begin("syncing events", backlog);
    loop {
        let before = summary.synced;
        if !sync_batch(store, weights, &mut summary)? {
            break;
        }
        progress.advance(summary.synced - before);
    }
    progress.end();
    summary.stitched = store.apply_identity_links()?;
    Ok(summary)
}

impl SyncSummary {
    /// A sync about to start from the stored watermark.
    pub fn from_watermark(store: &Store) -> Result<SyncSummary> {
        Ok(SyncSummary {
            watermark: store.sync_watermark()?,
            ..Default::default()
        })
    }
}

/// Syncs the next batch of events past `summary.watermark`, in one
/// transaction, and adds it to `summary`; false when there was none. `serve`
/// runs one batch per turn on the store's thread, so event writes queued
/// meanwhile go in between instead of waiting for the whole backlog; finish
/// with [`Store::apply_identity_links`].
pub fn sync_batch(store: &mut Store, weights: &Weights, summary: &mut SyncSummary) -> Result<bool> {
    {
        let events = store.events_after(summary.watermark, BATCH)?;
        let Some(&(last, _)) = events.last() else {
            return Ok(false);
        };
        let anonymous: Vec<String> = events
            .iter()
            .filter(|(_, e)| e.user_id.is_none())
            .flat_map(|(_, e)| {
                e.session_id
                    .as_deref()
                    .map(session_user)
                    .into_iter()
                    .chain(e.device_id.as_deref().map(device_user))
            })
            .collect();
        let linked = store.linked_users(&anonymous)?;
        let mut rows = Vec::with_capacity(events.len());
        for (_, e) in &events {
            let rating = weights.of(&e.event_type);
            if rating <= 0.0 {
                continue;
            }
            let session = e.session_id.as_deref().map(session_user);
            let device = e.device_id.as_deref().map(device_user);
            let user = e
                .user_id
                .clone()
                .or_else(|| session.as_ref().and_then(|s| linked.get(s).cloned()))
                .or_else(|| device.as_ref().and_then(|d| linked.get(d).cloned()))
                .or(session)
                .or(device);
            let Some(user_id) = user else { continue };
            rows.push(Interaction {
                key: InteractionKey {
                    user_id,
                    item_id: e.product_id.clone(),
                    timestamp: e.timestamp_ms.div_euclid(1000),
                    interaction_type: e.event_type.clone(),
                },
                rating,
                source: Source::Realtime,
                synthetic: false,
                quantity: 1,
                origin: Some(format!("event:{}", e.event_id)),
            });
        }
        let inserted = store.commit_sync(&rows, last)?;
        summary.synced += events.len() as u64;
        summary.inserted += inserted;
        summary.skipped += events.len() as u64 - inserted;
        summary.watermark = last;
    }
    Ok(true)
}
