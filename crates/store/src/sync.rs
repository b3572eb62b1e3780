//! The store side of sync and identity stitching: watermarks advance in the same
//! transaction as the rows they account for.

use std::collections::HashMap;

use crate::sql::params;

use crate::{now_ms, Interaction, Result, Store};

const SYNC_WATERMARK: &str = "sync.watermark";
const STITCH_WATERMARK: &str = "stitch.watermark";

/// What stitching did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stitched {
    /// New links applied.
    pub links: u64,
    /// Interactions moved from an anonymous id to the customer.
    pub moved: u64,
}

impl Store {
    /// The last event sequence number that sync has accounted for.
    pub fn sync_watermark(&self) -> Result<i64> {
        Ok(self
            .state_get(SYNC_WATERMARK)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Inserts interactions derived from events up to `watermark` and advances the
    /// watermark, atomically: a crash leaves both or neither. The watermark never
    /// moves back. Returns the rows inserted (the rest were already there).
    pub fn commit_sync(&mut self, rows: &[Interaction], watermark: i64) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let created_at = now_ms();
        let mut inserted = 0;
        for row in crate::interactions::without_forgotten(&tx, rows)? {
            inserted += crate::interactions::insert_in(&tx, row, created_at)? as u64;
        }
        tx.execute(
            "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
             WHERE CAST(excluded.value AS BIGINT) > CAST(state.value AS BIGINT)",
            params![SYNC_WATERMARK, watermark.to_string(), created_at],
        )?;
        tx.commit()?;
        Ok(inserted)
    }

    /// The customers that anonymous ids (`session:…`, `device:…`) are linked to.
    pub fn linked_users(&self, anonymous_ids: &[String]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for id in anonymous_ids {
            if out.contains_key(id) {
                continue;
            }
            if let Some(user) = self.conn.query_opt(
                "SELECT user_id FROM identity_links WHERE anonymous_id = ?1",
                params![id],
                |r| r.get::<String>(0),
            )? {
                out.insert(id.clone(), user);
            }
        }
        Ok(out)
    }

    /// Applies identity links made since the last call: interactions recorded under
    /// a linked session or device id move to the customer. A row the customer
    /// already has (same item, time and type) is merged, not doubled. Each link is
    /// applied once; the watermark moves in the same transaction.
    pub fn apply_identity_links(&mut self) -> Result<Stitched> {
        let tx = self.conn.transaction()?;
        let after: i64 = tx
            .query_opt(
                "SELECT value FROM state WHERE key = ?1",
                params![STITCH_WATERMARK],
                |r| r.get::<String>(0),
            )?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let links: Vec<(i64, String, String)> = tx.query_map(
            "SELECT linked_seq, anonymous_id, user_id FROM identity_links
                 WHERE linked_seq > ?1 ORDER BY linked_seq",
            params![after],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut stitched = Stitched::default();
        for (_, anonymous, user) in &links {
            stitched.links += 1;
            stitched.moved += tx.execute(
                "UPDATE training_interactions SET user_id = ?2
                 WHERE user_id = ?1 AND NOT EXISTS (
                     SELECT 1 FROM training_interactions mine
                     WHERE mine.user_id = ?2 AND mine.item_id = training_interactions.item_id
                       AND mine.timestamp = training_interactions.timestamp
                       AND mine.interaction_type = training_interactions.interaction_type)",
                params![anonymous, user],
            )? as u64;
            // What could not move is already the customer's: drop the anonymous copy.
            tx.execute(
                "DELETE FROM training_interactions WHERE user_id = ?1",
                params![anonymous],
            )?;
        }
        if let Some((last, _, _)) = links.last() {
            tx.execute(
                "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![STITCH_WATERMARK, last.to_string(), now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(stitched)
    }
}
