//! Recommendations from the active model: who is asking (a customer, whose
//! email is hashed exactly as in training, or a session, through its identity
//! link when it has one), their history from the store, and the model's ranking
//! with what they bought left out. Models fall back to per-category popularity
//! for strangers on their own.

use manirec_models::{Model, Request, Scored};
use manirec_store::{session_user, Store};

use crate::identity::UserKey;
use crate::Result;

/// Interactions of a user read to rank for them.
const HISTORY: usize = 500;

/// A loaded model version, ready to answer.
pub struct LiveModel {
    /// Its registry version (`m3`).
    pub version: String,
    /// The model.
    pub model: Model,
}

/// Who a request is for, as the training data names them.
pub fn training_user(
    store: &Store,
    key: &UserKey,
    user_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Option<String>> {
    if let Some(user) = user_id.filter(|u| !u.trim().is_empty()) {
        return Ok(Some(key.user_id(user)));
    }
    let Some(session) = session_id.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let anonymous = session_user(session.trim());
    let linked = store.linked_users(std::slice::from_ref(&anonymous))?;
    Ok(Some(linked.get(&anonymous).cloned().unwrap_or(anonymous)))
}

/// What a request ranks from: the user's recent history, and everything they
/// ever bought (left out of the answer).
pub struct Past {
    /// Recent interactions, in the models' terms.
    pub history: Vec<manirec_models::Interaction>,
    /// Items bought.
    pub bought: Vec<String>,
}

/// The past of a training user.
pub fn past(store: &Store, user: &str) -> Result<Past> {
    Ok(Past {
        history: history(store, user)?,
        bought: store.purchased_items(user)?,
    })
}

fn history(store: &Store, user: &str) -> Result<Vec<manirec_models::Interaction>> {
    Ok(store
        .user_interactions(user, HISTORY)?
        .into_iter()
        .map(|r| manirec_models::Interaction {
            user_id: r.key.user_id,
            item_id: r.key.item_id,
            weight: r.rating as f32,
            timestamp: r.key.timestamp,
            interaction_type: r.key.interaction_type,
            synthetic: r.synthetic,
        })
        .collect())
}

/// Top `k` for `user` from their `past`: purchased items and `exclude` left out.
pub fn recommend(
    live: &LiveModel,
    user: Option<&str>,
    past: &Past,
    k: usize,
    category: Option<&str>,
    exclude: &[String],
) -> Vec<Scored> {
    let mut excluded: Vec<String> = exclude.to_vec();
    excluded.extend(past.bought.iter().cloned());
    live.model.recommend(&Request {
        user_id: user,
        history: &past.history,
        k,
        exclude: &excluded,
        exclude_history: false,
        category,
    })
}
