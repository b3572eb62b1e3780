//! The model registry: every trained model is a version with its artifact key,
//! checksum, metrics, dataset version and hyper-parameters, and a status
//! (`training` while its artifact is written, then `candidate`, `active`,
//! `retired`). At most one version is active (a partial unique index says so).

use crate::sql::{params, Conn, Row};
use serde::Serialize;

use crate::{now_ms, Error, ModelStatus, Result, Store};

/// A model version as the registry holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVersion {
    /// `m1`, `m2`, …
    pub version: String,
    /// `popular`, `als`, `ease`.
    pub kind: String,
    /// The dataset version it was trained on.
    pub dataset_version: String,
    /// Hyper-parameters (the model spec), JSON.
    pub params: String,
    /// Warm-protocol report at training (metrics, metrics_ci, baseline), JSON.
    pub metrics: Option<String>,
    /// Object key of the artifact.
    pub artifact_key: Option<String>,
    /// SHA-256 of the artifact, hex.
    pub sha256: Option<String>,
    /// Where it is in its life.
    pub status: ModelStatus,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the promotion.
    pub promoted_at: Option<i64>,
}

const COLUMNS: &str = "version, kind, dataset_version, params, metrics, artifact_key, sha256, \
                       status, created_at, promoted_at";

fn from_row(r: &Row) -> Result<ModelVersion> {
    Ok(ModelVersion {
        version: r.get(0)?,
        kind: r.get(1)?,
        dataset_version: r.get(2)?,
        params: r.get(3)?,
        metrics: r.get(4)?,
        artifact_key: r.get(5)?,
        sha256: r.get(6)?,
        status: r.get(7)?,
        created_at: r.get(8)?,
        promoted_at: r.get(9)?,
    })
}

impl Store {
    /// Reserves the next version id (`m<N>`) for a model of `kind` trained on
    /// `dataset_version` with `params`; status `training` until
    /// [`Store::register_model_candidate`].
    pub fn reserve_model_version(
        &self,
        kind: &str,
        dataset_version: &str,
        params: &str,
    ) -> Result<String> {
        // Exclusive: two trainings started at once (two processes, two
        // replicas) read MAX(seq) in turn, so they get m(N+1) and m(N+2),
        // never one number twice.
        let tx = self.conn.transaction_exclusive()?;
        let next: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM model_versions",
            params![],
            |r| r.get(0),
        )?;
        let version = format!("m{next}");
        tx.execute(
            "INSERT INTO model_versions (seq, version, kind, dataset_version, params, status,
                 created_at, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, 'training', ?6, ?7)",
            params![
                next,
                version,
                kind,
                dataset_version,
                params,
                now_ms(),
                crate::owner::this_owner()
            ],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Records a reserved version's artifact and metrics and makes it a candidate.
    pub fn register_model_candidate(
        &self,
        version: &str,
        params: &str,
        metrics: &str,
        artifact_key: &str,
        sha256: &str,
    ) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE model_versions SET params = ?2, metrics = ?3, artifact_key = ?4, sha256 = ?5,
                    status = 'candidate'
              WHERE version = ?1 AND status = 'training'",
            params![version, params, metrics, artifact_key, sha256],
        )?;
        if n == 0 {
            return Err(Error::Invalid(format!(
                "model version {version} is not being trained"
            )));
        }
        Ok(())
    }

    /// Forgets a reserved version whose training failed.
    pub fn abandon_model_version(&self, version: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM model_versions WHERE version = ?1 AND status = 'training'",
            params![version],
        )?;
        Ok(())
    }

    /// Every model version, oldest first.
    pub fn model_versions(&self) -> Result<Vec<ModelVersion>> {
        self.conn.query_map(
            &format!("SELECT {COLUMNS} FROM model_versions ORDER BY seq"),
            params![],
            from_row,
        )
    }

    /// One model version.
    pub fn model_version(&self, version: &str) -> Result<Option<ModelVersion>> {
        self.conn.query_opt(
            &format!("SELECT {COLUMNS} FROM model_versions WHERE version = ?1"),
            params![version],
            from_row,
        )
    }

    /// The active version, if any.
    pub fn active_model_version(&self) -> Result<Option<ModelVersion>> {
        self.conn.query_opt(
            &format!("SELECT {COLUMNS} FROM model_versions WHERE status = 'active'"),
            params![],
            from_row,
        )
    }

    /// The most recently trained version with an artifact (any status but `training`).
    pub fn latest_model_version(&self) -> Result<Option<ModelVersion>> {
        self.conn.query_opt(
            &format!(
                "SELECT {COLUMNS} FROM model_versions WHERE status <> 'training'
                     ORDER BY seq DESC LIMIT 1"
            ),
            params![],
            from_row,
        )
    }

    /// Retires a candidate that lost (offline or in an A/B test). The active
    /// version cannot be retired this way: promote another one instead.
    pub fn retire_model_version(&self, version: &str) -> Result<()> {
        let changed = self.conn.execute(
            "UPDATE model_versions SET status = 'retired' WHERE version = ?1 AND status = 'candidate'",
            params![version],
        )?;
        if changed == 0 {
            return Err(Error::Invalid(format!(
                "model version {version} is not a candidate (see `manirec models list`)"
            )));
        }
        Ok(())
    }

    /// Makes `version` the active one, in one transaction: the previous active
    /// version is retired. Returns the version retired, if any. Promoting the
    /// active version changes nothing.
    pub fn promote_model_version(&self, version: &str) -> Result<Option<String>> {
        let tx = self.conn.transaction()?;
        let retired = promote_in(&tx, version)?;
        tx.commit()?;
        Ok(retired)
    }
}

/// Promotion inside the caller's transaction (an experiment's end promotes too).
pub(crate) fn promote_in(tx: &Conn, version: &str) -> Result<Option<String>> {
    let status: Option<ModelStatus> = tx.query_opt(
        "SELECT status FROM model_versions WHERE version = ?1",
        params![version],
        |r| r.get(0),
    )?;
    match status {
        None => {
            return Err(Error::Invalid(format!(
                "no model version {version} (see `manirec models list`)"
            )))
        }
        Some(ModelStatus::Active) => return Ok(None),
        Some(ModelStatus::Training) => {
            return Err(Error::Invalid(format!(
                "model version {version} has not finished training"
            )))
        }
        Some(_) => {}
    }
    let retired: Option<String> = tx.query_opt(
        "SELECT version FROM model_versions WHERE status = 'active'",
        params![],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE model_versions SET status = 'retired' WHERE status = 'active'",
        params![],
    )?;
    tx.execute(
        "UPDATE model_versions SET status = 'active', promoted_at = ?2 WHERE version = ?1",
        params![version, now_ms()],
    )?;
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use crate::Store;

    fn trained(store: &Store, kind: &str) -> String {
        let v = store.reserve_model_version(kind, "v1.0", "{}").unwrap();
        store
            .register_model_candidate(
                &v,
                "{}",
                "{}",
                &format!("models/{v}/model.safetensors"),
                "00",
            )
            .unwrap();
        v
    }

    #[test]
    fn versions_are_numbered_and_promotion_retires_the_previous_active() {
        let store = Store::open_in_memory().unwrap();
        let a = trained(&store, "popular");
        let b = trained(&store, "als");
        assert_eq!((a.as_str(), b.as_str()), ("m1", "m2"));
        assert_eq!(store.active_model_version().unwrap(), None);
        assert_eq!(store.promote_model_version(&a).unwrap(), None);
        assert_eq!(store.promote_model_version(&b).unwrap(), Some(a.clone()));
        let all = store.model_versions().unwrap();
        assert_eq!(all[0].status, crate::ModelStatus::Retired);
        assert_eq!(all[1].status, crate::ModelStatus::Active);
        assert!(all[1].promoted_at.is_some());
        assert_eq!(store.active_model_version().unwrap().unwrap().version, b);
        assert!(store.promote_model_version("m9").is_err());
        // Re-promoting the active one is a no-op.
        assert_eq!(store.promote_model_version(&b).unwrap(), None);
    }

    #[test]
    fn a_reserved_version_is_not_promotable_and_can_be_abandoned() {
        let store = Store::open_in_memory().unwrap();
        let v = store.reserve_model_version("ease", "v1.0", "{}").unwrap();
        assert!(store.promote_model_version(&v).is_err());
        assert_eq!(store.latest_model_version().unwrap(), None);
        store.abandon_model_version(&v).unwrap();
        assert!(store.model_versions().unwrap().is_empty());
    }
}
