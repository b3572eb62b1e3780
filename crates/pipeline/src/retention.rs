//! Deleting data: retention by age (`cleanup`) and one customer on request
//! (`forget`, a GDPR erasure or Shoplazza's customer-redact webhook).
//!
//! Both delete from the store in one transaction. Files already written to the
//! object store (exports, dataset versions, models) are immutable and are not
//! rewritten: the next dataset version no longer holds the deleted rows.

use std::collections::BTreeMap;

use manirec_store::{ForgetTarget, Store};
use serde::Serialize;

use crate::identity::{looks_like_email, UserKey};
use crate::Result;

/// The default retention of ORIGIN §7: a year.
pub const DEFAULT_RETENTION_DAYS: u32 = 365;

/// What `cleanup` deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    /// The retention asked.
    pub older_than_days: u32,
    /// Rows before this time (Unix seconds) were deleted.
    pub cutoff: i64,
    /// The cutoff, RFC 3339.
    pub cutoff_time: String,
    /// Rows deleted, by table.
    pub deleted: BTreeMap<String, u64>,
}

/// Deletes training interactions, behaviour events and logged recommendation
/// answers (`recommendation_log`) older than `days` days before `now` (Unix
/// seconds). `manirec cleanup` and scheduled retention both come here (through
/// `manirec_jobs::Jobs::retention`, which journals the run).
pub fn cleanup(store: &mut Store, days: u32, now: i64) -> Result<Cleanup> {
    let cutoff = now - i64::from(days) * 86_400;
    let mut deleted = store.delete_older_than(cutoff)?;
    deleted.insert(
        "recommendation_log".into(),
        store.delete_recommendation_log_before(cutoff.saturating_mul(1000))?,
    );
    // Remembered so that `extract` does not derive again what retention deleted.
    if retention_cutoff(store)?.is_none_or(|previous| cutoff > previous) {
        store.state_set(RETENTION_CUTOFF, &cutoff.to_string())?;
    }
    Ok(Cleanup {
        older_than_days: days,
        cutoff,
        cutoff_time: chrono::DateTime::from_timestamp(cutoff, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        deleted,
    })
}

/// State key: the latest retention cut (Unix s); nothing older is derived again.
pub const RETENTION_CUTOFF: &str = "retention.cutoff";

/// The latest retention cut, if `cleanup` ever ran.
pub fn retention_cutoff(store: &Store) -> Result<Option<i64>> {
    Ok(store
        .state_get(RETENTION_CUTOFF)?
        .and_then(|v| v.parse().ok()))
}

/// What `forget` deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Forgotten {
    /// The customer's training user id (the keyed hash for an email), never the email.
    pub user_id: String,
    /// Rows deleted, by table.
    pub deleted: BTreeMap<String, u64>,
}

/// Deletes one customer's data: mirror orders, items and accounts, behaviour
/// events (and the sessions and devices they link to the customer), training
/// interactions. `who` is an email or any id (the shop's customer id, a
/// session or device id, a training user id).
pub fn forget(store: &mut Store, key: &UserKey, who: &str) -> Result<Forgotten> {
    let who = who.trim();
    let target = if looks_like_email(who) {
        ForgetTarget {
            emails: vec![who.to_owned()],
            ids: vec![],
        }
    } else {
        ForgetTarget {
            emails: vec![],
            ids: vec![who.to_owned()],
        }
    };
    let deleted = store.forget(&target, &|email| key.user_id_for_email(email))?;
    Ok(Forgotten {
        user_id: key.user_id(who),
        deleted,
    })
}
