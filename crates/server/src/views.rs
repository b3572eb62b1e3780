//! The API's JSON shapes of what the store and the jobs hold. Store structs
//! change with the schema; these change only with the contract
//! (`assets/openapi.json`), and each test below pins one shape's fields so
//! that a store refactor cannot silently change an answer.

use manirec_jobs::{PollSummary, Tick};
use manirec_pipeline::export::ExportSummary;
use manirec_pipeline::sync::SyncSummary;
use manirec_pipeline::trigger::TriggerCheck;
use manirec_store::{
    Actor, CatalogRule, Experiment, ExperimentStatus, Job, JobRun, JobStatus, Outcome,
};
use serde::Serialize;

/// One run of a job (`/admin/runs`, `/admin/overview`).
#[derive(Debug, Serialize)]
pub struct JobRunView<'a> {
    /// Its number.
    pub id: i64,
    /// `retrain`, `quality`, `retention`.
    pub job: Job,
    /// `schedule`, `cli` or `admin`.
    pub started_by: Actor,
    /// `running`, `ok`, `skipped` or `failed`.
    pub status: JobStatus,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// `[{step, at, detail}]`, in order.
    pub steps: &'a serde_json::Value,
    /// Why it failed.
    pub error: Option<&'a str>,
}

impl<'a> From<&'a JobRun> for JobRunView<'a> {
    fn from(r: &'a JobRun) -> Self {
        JobRunView {
            id: r.id,
            job: r.job,
            started_by: r.started_by,
            status: r.status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            steps: &r.steps,
            error: r.error.as_deref(),
        }
    }
}

/// Views of a list of runs.
pub fn job_runs(runs: &[JobRun]) -> Vec<JobRunView<'_>> {
    runs.iter().map(JobRunView::from).collect()
}

/// One A/B experiment (`/admin/experiments`).
#[derive(Debug, Serialize)]
pub struct ExperimentView<'a> {
    /// Its number.
    pub id: i64,
    /// The control arm's model version.
    pub control: &'a str,
    /// The treatment arm's model version.
    pub treatment: &'a str,
    /// Percent of shoppers sent to the treatment.
    pub traffic: u8,
    /// `running` or `stopped`.
    pub status: ExperimentStatus,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub stopped_at: Option<i64>,
    /// `promoted`, `rolled_back` or `stopped`, once stopped.
    pub outcome: Option<Outcome>,
    /// `cli`, `admin` or `retrain`.
    pub started_by: Actor,
}

impl<'a> From<&'a Experiment> for ExperimentView<'a> {
    fn from(e: &'a Experiment) -> Self {
        ExperimentView {
            id: e.id,
            control: &e.control,
            treatment: &e.treatment,
            traffic: e.traffic,
            status: e.status,
            started_at: e.started_at,
            stopped_at: e.stopped_at,
            outcome: e.outcome,
            started_by: e.started_by,
        }
    }
}

/// Views of a list of experiments.
pub fn experiments(list: &[Experiment]) -> Vec<ExperimentView<'_>> {
    list.iter().map(ExperimentView::from).collect()
}

/// One catalogue rule (`/admin/rules`).
#[derive(Debug, Serialize)]
pub struct CatalogRuleView<'a> {
    /// The item.
    pub item_id: &'a str,
    /// `hide`, `pin` or `boost`.
    pub rule: &'static str,
    /// Pin position or boost strength; 0 for a hide.
    pub value: f64,
    /// Unix ms.
    pub updated_at: i64,
}

impl<'a> From<&'a CatalogRule> for CatalogRuleView<'a> {
    fn from(r: &'a CatalogRule) -> Self {
        CatalogRuleView {
            item_id: &r.item_id,
            rule: r.rule.as_str(),
            value: r.value,
            updated_at: r.updated_at,
        }
    }
}

/// Views of a list of rules.
pub fn catalog_rules(rules: &[CatalogRule]) -> Vec<CatalogRuleView<'_>> {
    rules.iter().map(CatalogRuleView::from).collect()
}

/// What one scheduler tick did (`POST /admin/sync`).
#[derive(Debug, Serialize)]
pub struct TickView<'a> {
    /// The poll, when configured.
    pub poll: Option<&'a PollSummary>,
    /// The sync.
    pub sync: &'a SyncSummary,
    /// The trigger's verdict after the sync.
    pub trigger: &'a TriggerCheck,
    /// The increment exported when the trigger fired.
    pub fired: Option<&'a ExportSummary>,
}

impl<'a> From<&'a Tick> for TickView<'a> {
    fn from(t: &'a Tick) -> Self {
        TickView {
            poll: t.poll.as_ref(),
            sync: &t.sync,
            trigger: &t.trigger,
            fired: t.fired.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use manirec_store::RuleKind;
    use serde_json::{json, Value};

    use super::*;

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn a_job_run_answers_these_fields() {
        let run = JobRun {
            id: 3,
            job: Job::Retention,
            started_by: Actor::Schedule,
            status: JobStatus::Ok,
            started_at: 1,
            finished_at: Some(2),
            steps: json!([{"step": "retention", "at": 2, "detail": {}}]),
            error: None,
        };
        let v = serde_json::to_value(JobRunView::from(&run)).unwrap();
        assert_eq!(
            v,
            json!({"id": 3, "job": "retention", "started_by": "schedule", "status": "ok",
                   "started_at": 1, "finished_at": 2,
                   "steps": [{"step": "retention", "at": 2, "detail": {}}], "error": null})
        );
    }

    #[test]
    fn an_experiment_answers_these_fields() {
        let e = Experiment {
            id: 1,
            control: "m1".into(),
            treatment: "m2".into(),
            traffic: 50,
            status: ExperimentStatus::Running,
            started_at: 10,
            stopped_at: None,
            outcome: None,
            started_by: Actor::Admin,
        };
        let v = serde_json::to_value(ExperimentView::from(&e)).unwrap();
        assert_eq!(
            v,
            json!({"id": 1, "control": "m1", "treatment": "m2", "traffic": 50,
                   "status": "running", "started_at": 10, "stopped_at": null,
                   "outcome": null, "started_by": "admin"})
        );
    }

    #[test]
    fn a_catalogue_rule_answers_these_fields() {
        let r = CatalogRule {
            item_id: "p1".into(),
            rule: RuleKind::Pin,
            value: 2.0,
            updated_at: 5,
        };
        let v = serde_json::to_value(CatalogRuleView::from(&r)).unwrap();
        assert_eq!(
            v,
            json!({"item_id": "p1", "rule": "pin", "value": 2.0, "updated_at": 5})
        );
    }

    #[test]
    fn a_tick_answers_these_fields() {
        let tick = Tick {
            poll: None,
            sync: SyncSummary::default(),
            trigger: TriggerCheck {
                should_retrain: false,
                reasons: vec![],
                new_interactions: 0,
                days_since_last: None,
                quality_drop: None,
                already_fired: false,
            },
            fired: None,
        };
        let v = serde_json::to_value(TickView::from(&tick)).unwrap();
        assert_eq!(keys(&v), ["fired", "poll", "sync", "trigger"]);
        assert!(v["poll"].is_null() && v["fired"].is_null());
        assert!(v["sync"].get("synced").is_some());
        assert!(v["trigger"].get("should_retrain").is_some());
    }
}
