//! A/B experiments between two model versions, and what each arm collected:
//! recommendation requests (from `recommendation_log`), impressions and clicks
//! (storefront events carrying a `request_id`), and purchases of a recommended
//! item by the same shopper within the attribution window.

use std::collections::BTreeMap;

use crate::sql::{params, Conn, Row};
use serde::Serialize;

use crate::{now_ms, Actor, Error, ExperimentStatus, ModelStatus, Outcome, Result, Store};

/// One experiment as the store holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    /// Its number.
    pub id: i64,
    /// The model version of the control arm.
    pub control: String,
    /// The model version of the treatment arm.
    pub treatment: String,
    /// Percent of shoppers sent to the treatment.
    pub traffic: u8,
    /// Whether it still splits traffic.
    pub status: ExperimentStatus,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub stopped_at: Option<i64>,
    /// How it ended, once stopped.
    pub outcome: Option<Outcome>,
    /// Who started it.
    pub started_by: Actor,
}

/// What one arm collected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ArmCounts {
    /// Recommendation answers given.
    pub requests: u64,
    /// Distinct (request, item) impressions reported, of items that answer
    /// actually contained.
    pub impressions: u64,
    /// Distinct (request, item) clicks reported, of items that answer
    /// actually contained.
    pub clicks: u64,
    /// The most impressions one shopper (user, session or device) accounts for.
    #[serde(skip)]
    pub top_shopper_impressions: u64,
    /// The most clicks one shopper accounts for.
    #[serde(skip)]
    pub top_shopper_clicks: u64,
    /// Distinct (shopper, item, second) purchases of an item recommended to that
    /// shopper within the window before.
    pub purchases: u64,
}

const COLUMNS: &str =
    "id, control, treatment, traffic, status, started_at, stopped_at, outcome, started_by";

fn from_row(r: &Row) -> Result<Experiment> {
    Ok(Experiment {
        id: r.get(0)?,
        control: r.get(1)?,
        treatment: r.get(2)?,
        traffic: r.get(3)?,
        status: r.get(4)?,
        started_at: r.get(5)?,
        stopped_at: r.get(6)?,
        outcome: r.get(7)?,
        started_by: r.get(8)?,
    })
}

impl Store {
    /// Starts an experiment. Both versions must be trained (candidate, active or
    /// retired) and differ; only one experiment runs at a time.
    pub fn start_experiment(
        &self,
        control: &str,
        treatment: &str,
        traffic: u8,
        started_by: Actor,
    ) -> Result<Experiment> {
        if control == treatment {
            return Err(Error::Invalid(format!(
                "control and treatment are both {control}: an experiment needs two versions"
            )));
        }
        if !(1..=99).contains(&traffic) {
            return Err(Error::Invalid(format!(
                "traffic is the percent of shoppers sent to the treatment: 1 to 99, not {traffic}"
            )));
        }
        let tx = self.conn.transaction()?;
        for v in [control, treatment] {
            let status: Option<ModelStatus> = tx.query_opt(
                "SELECT status FROM model_versions WHERE version = ?1",
                params![v],
                |r| r.get(0),
            )?;
            match status {
                None => {
                    return Err(Error::Invalid(format!(
                        "no model version {v} (see `manirec models list`)"
                    )))
                }
                Some(ModelStatus::Training) => {
                    return Err(Error::Invalid(format!(
                        "model version {v} has not finished training"
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(running) = running(&tx)? {
            return Err(Error::Conflict(format!(
                "experiment {} ({} vs {}) is still running: stop it first (manirec experiment stop {})",
                running.id, running.control, running.treatment, running.id
            )));
        }
        let id: i64 = tx.query_row(
            "INSERT INTO experiments (control, treatment, traffic, status, started_at, started_by)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5) RETURNING id",
            params![control, treatment, i64::from(traffic), now_ms(), started_by],
            |r| r.get(0),
        )?;
        tx.commit()?;
        self.experiment(id)?
            .ok_or_else(|| Error::Invalid(format!("experiment {id} vanished")))
    }

    /// The running experiment, if any.
    pub fn running_experiment(&self) -> Result<Option<Experiment>> {
        running(&self.conn)
    }

    /// One experiment.
    pub fn experiment(&self, id: i64) -> Result<Option<Experiment>> {
        self.conn.query_opt(
            &format!("SELECT {COLUMNS} FROM experiments WHERE id = ?1"),
            params![id],
            from_row,
        )
    }

    /// Every experiment, newest first.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        self.conn.query_map(
            &format!("SELECT {COLUMNS} FROM experiments ORDER BY id DESC"),
            params![],
            from_row,
        )
    }

    /// Ends a running experiment, in one transaction with its consequence: the
    /// treatment promoted (the previous active version retired), or the
    /// treatment retired (rolled back), or nothing. Stopping a stopped
    /// experiment is an error that says how it ended.
    pub fn stop_experiment(&self, id: i64, outcome: Outcome) -> Result<Experiment> {
        let tx = self.conn.transaction()?;
        let Some(exp) = tx.query_opt(
            &format!("SELECT {COLUMNS} FROM experiments WHERE id = ?1"),
            params![id],
            from_row,
        )?
        else {
            return Err(Error::Invalid(format!(
                "no experiment {id} (see `manirec experiment status`)"
            )));
        };
        if exp.status != ExperimentStatus::Running {
            return Err(Error::Conflict(format!(
                "experiment {id} already stopped ({})",
                exp.outcome.unwrap_or(Outcome::Stopped)
            )));
        }
        match outcome {
            Outcome::Promoted => {
                crate::models::promote_in(&tx, &exp.treatment)?;
            }
            Outcome::RolledBack => {
                tx.execute(
                    "UPDATE model_versions SET status = 'retired'
                     WHERE version = ?1 AND status = 'candidate'",
                    params![&exp.treatment],
                )?;
            }
            Outcome::Stopped => {}
        }
        tx.execute(
            "UPDATE experiments SET status = 'stopped', stopped_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, now_ms(), outcome],
        )?;
        tx.commit()?;
        self.experiment(id)?
            .ok_or_else(|| Error::Invalid(format!("experiment {id} vanished")))
    }

    /// Per arm (`control`, `treatment`) of experiment `id`: requests, impressions,
    /// clicks, and purchases attributed within `window_ms` of a recommendation
    /// that showed the item to the same shopper (a session and the customer it
    /// was linked to count as one shopper). Purchases are verified orders only
    /// (webhook, poll, import); storefront `purchase` events never count.
    pub fn arm_counts(&self, id: i64, window_ms: i64) -> Result<BTreeMap<String, ArmCounts>> {
        let mut arms: BTreeMap<String, ArmCounts> = ["control", "treatment"]
            .into_iter()
            .map(|a| (a.to_string(), ArmCounts::default()))
            .collect();
        let started_at: i64 = match self.experiment(id)? {
            Some(e) => e.started_at,
            None => return Ok(arms),
        };
        let requests = self.conn.query_map(
            "SELECT variant, COUNT(*) FROM recommendation_log WHERE experiment_id = ?1 GROUP BY variant",
            params![id],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?;
        for (variant, n) in requests {
            arms.entry(variant).or_default().requests = n as u64;
        }
        let dialect = self.conn.dialect();
        let sep = dialect.unit_separator();
        let items = dialect.json_elements("r.items", "j");
        // Feedback counts once per (request, item), and only for an item the
        // answer with that request id contained: a storefront can report
        // anything, the log says what was shown. Per shopper too, so the loop
        // can see one shopper (or bot) carrying an arm.
        let feedback = self.conn.query_map(
            &format!(
                "SELECT variant, event_type, SUM(n), MAX(n) FROM (
                     SELECT r.variant, e.event_type,
                            COALESCE(e.user_id, 'session:' || e.session_id, 'device:' || e.device_id) AS who,
                            COUNT(DISTINCT e.request_id || {sep} || e.product_id) AS n
                     FROM behavior_events e JOIN recommendation_log r ON r.request_id = e.request_id
                     WHERE r.experiment_id = ?1 AND e.event_type IN ('rec_impression', 'rec_click')
                       AND EXISTS (SELECT 1 FROM {items} WHERE j.value = e.product_id)
                     GROUP BY 1, 2, 3
                 ) AS per_shopper GROUP BY variant, event_type"
            ),
            params![id],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<i64>(2)?,
                    r.get::<i64>(3)?,
                ))
            },
        )?;
        for (variant, kind, n, top) in feedback {
            let arm = arms.entry(variant).or_default();
            match kind.as_str() {
                "rec_impression" => {
                    arm.impressions = n as u64;
                    arm.top_shopper_impressions = top as u64;
                }
                _ => {
                    arm.clicks = n as u64;
                    arm.top_shopper_clicks = top as u64;
                }
            }
        }
        let purchases = self.conn.query_map(
            &format!(
                "WITH purchases(user_id, item_id, at_s) AS (
                     -- Verified orders only (webhook, poll, import, the shop's
                     -- data): a storefront `purchase` event is anyone's claim.
                     SELECT user_id, item_id, timestamp FROM training_interactions
                     WHERE interaction_type = 'purchase' AND synthetic = 0 AND source <> 'realtime'
                       AND timestamp >= CAST(?2 AS BIGINT) / 1000
                 ),
                 shoppers(user_id, item_id, at_s) AS (
                     SELECT COALESCE(l.user_id, p.user_id), p.item_id, p.at_s
                     FROM purchases p LEFT JOIN identity_links l ON l.anonymous_id = p.user_id
                 ),
                 shown(variant, user_id, item_id, at_ms) AS (
                     SELECT r.variant, COALESCE(l.user_id, r.user_id), j.value, r.created_at
                     FROM recommendation_log r CROSS JOIN {items}
                     LEFT JOIN identity_links l ON l.anonymous_id = r.user_id
                     WHERE r.experiment_id = ?1 AND r.user_id IS NOT NULL
                 )
                 SELECT s.variant, COUNT(DISTINCT p.user_id || {sep} || p.item_id || {sep} || p.at_s)
                 FROM shown s JOIN shoppers p ON p.user_id = s.user_id AND p.item_id = s.item_id
                 WHERE p.at_s * 1000 >= s.at_ms - 999 AND p.at_s * 1000 <= s.at_ms + CAST(?3 AS BIGINT)
                 GROUP BY s.variant"
            ),
            params![id, started_at, window_ms],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?;
        for (variant, n) in purchases {
            arms.entry(variant).or_default().purchases = n as u64;
        }
        Ok(arms)
    }
}

fn running(conn: &Conn) -> Result<Option<Experiment>> {
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM experiments WHERE status = 'running'"),
        params![],
        from_row,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BehaviorEvent, Interaction, InteractionKey, RecommendationLog, Source};

    fn trained(store: &Store) -> String {
        let v = store.reserve_model_version("als", "v1.0", "{}").unwrap();
        store
            .register_model_candidate(&v, "{}", "{}", "k", "00")
            .unwrap();
        v
    }

    fn log(
        id: &str,
        user: &str,
        variant: &'static str,
        exp: i64,
        at: i64,
        items: &[&str],
    ) -> RecommendationLog {
        RecommendationLog {
            request_id: id.into(),
            created_at: at,
            user_id: Some(user.into()),
            endpoint: "recommendations",
            model_version: None,
            experiment_id: Some(exp),
            variant,
            items: items.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn event(
        id: &str,
        kind: &str,
        item: &str,
        session: &str,
        request: Option<&str>,
        at: i64,
    ) -> BehaviorEvent {
        BehaviorEvent {
            event_id: id.into(),
            event_type: kind.into(),
            product_id: item.into(),
            user_id: None,
            session_id: Some(session.into()),
            device_id: None,
            timestamp_ms: at,
            request_id: request.map(str::to_owned),
            properties: None,
        }
    }

    #[test]
    fn one_experiment_at_a_time_and_stopping_promotes_or_rolls_back() {
        let store = Store::open_in_memory().unwrap();
        let (a, b) = (trained(&store), trained(&store));
        store.promote_model_version(&a).unwrap();
        assert!(store.start_experiment(&a, &a, 50, Actor::Cli).is_err());
        assert!(store.start_experiment(&a, "m9", 50, Actor::Cli).is_err());
        assert!(store.start_experiment(&a, &b, 100, Actor::Cli).is_err());
        let e = store.start_experiment(&a, &b, 50, Actor::Cli).unwrap();
        assert!(matches!(
            store.start_experiment(&a, &b, 50, Actor::Cli),
            Err(Error::Conflict(_))
        ));
        assert_eq!(store.running_experiment().unwrap().unwrap().id, e.id);
        let stopped = store.stop_experiment(e.id, Outcome::Promoted).unwrap();
        assert_eq!(stopped.outcome, Some(Outcome::Promoted));
        assert_eq!(store.active_model_version().unwrap().unwrap().version, b);
        assert!(store.stop_experiment(e.id, Outcome::Stopped).is_err());
        let c = trained(&store);
        let e2 = store.start_experiment(&b, &c, 10, Actor::Retrain).unwrap();
        store.stop_experiment(e2.id, Outcome::RolledBack).unwrap();
        assert_eq!(store.active_model_version().unwrap().unwrap().version, b);
        assert_eq!(
            store.model_version(&c).unwrap().unwrap().status,
            ModelStatus::Retired
        );
    }

    #[test]
    fn arms_count_feedback_once_and_purchases_within_the_window() {
        let mut store = Store::open_in_memory().unwrap();
        let (a, b) = (trained(&store), trained(&store));
        let e = store.start_experiment(&a, &b, 50, Actor::Cli).unwrap();
        let t0 = e.started_at + 1_000;
        store
            .insert_recommendation_log(&[
                log("r1", "session:s1", "control", e.id, t0, &["x", "y"]),
                log("r2", "session:s2", "treatment", e.id, t0, &["x", "z"]),
                log("r3", "session:s2", "treatment", e.id, t0 + 5, &["z"]),
            ])
            .unwrap();
        store
            .insert_events(&[
                event("i1", "rec_impression", "x", "s1", Some("r1"), t0),
                event("i2", "rec_impression", "y", "s1", Some("r1"), t0),
                event("i2b", "rec_impression", "y", "s1", Some("r1"), t0), // same item again
                event("i3", "rec_impression", "x", "s2", Some("r2"), t0),
                event("c1", "rec_click", "x", "s2", Some("r2"), t0 + 10),
                // Storefront purchase events are claims, not orders: never counted.
                event("p1", "purchase", "z", "s2", None, t0 + 60_000),
                event("p2", "purchase", "x", "s1", None, t0 + 3 * 86_400_000),
            ])
            .unwrap();
        // Forged feedback: 100 clicks on an item r2 did not contain, 100
        // repeats of the one real click, a click with an unknown request id.
        let mut forged = Vec::new();
        for i in 0..100 {
            forged.push(event(
                &format!("f{i}"),
                "rec_click",
                "q",
                "s2",
                Some("r2"),
                t0 + 20,
            ));
            forged.push(event(
                &format!("d{i}"),
                "rec_click",
                "x",
                "s2",
                Some("r2"),
                t0 + 20,
            ));
        }
        forged.push(event(
            "u1",
            "rec_click",
            "x",
            "s2",
            Some("r-unknown"),
            t0 + 20,
        ));
        store.insert_events(&forged).unwrap();
        let purchase = |user: &str, item: &str, at_ms: i64, source: Source| Interaction {
            key: InteractionKey {
                user_id: user.into(),
                item_id: item.into(),
                timestamp: at_ms / 1000,
                interaction_type: "purchase".into(),
            },
            rating: 5.0,
            source,
            synthetic: false,
            quantity: 1,
            origin: None,
        };
        // A synced storefront purchase does not count; a verified order of z
        // (shown twice) counts once; x bought by s1 after the window does not.
        store
            .insert_interactions(&[
                purchase("session:s1", "y", t0 + 1_000, Source::Realtime),
                purchase("session:s2", "z", t0 + 60_000, Source::Webhook),
                purchase("session:s1", "x", t0 + 3 * 86_400_000, Source::Webhook),
            ])
            .unwrap();
        let arms = store.arm_counts(e.id, 86_400_000).unwrap();
        let (c, t) = (arms["control"], arms["treatment"]);
        assert_eq!(
            (c.requests, c.impressions, c.clicks, c.purchases),
            (1, 2, 0, 0)
        );
        assert_eq!(
            (t.requests, t.impressions, t.clicks, t.purchases),
            (2, 1, 1, 1)
        );
        assert_eq!((t.top_shopper_clicks, c.top_shopper_impressions), (1, 2));
    }
}
