//! The journal of jobs (the retrain loop, scheduled sync, report, retention):
//! one row per run with its steps, so the dashboard and the admin API can show
//! what happened and why a run failed. A running row is also the job's lease:
//! one run of a job at a time, across processes and hosts (replicas of `serve`
//! on one PostgreSQL). Its holder renews `heartbeat_at` while it runs
//! ([`Store::renew_job_leases`]); a lease whose heartbeat is older than
//! [`HEARTBEAT_STALE_MS`] is taken over by whoever asks next.

use crate::sql::{params, Row, ToParam};
use serde::Serialize;

use crate::owner::{owner_is_dead, this_owner};
use crate::{now_ms, Actor, Error, Job, JobStatus, Result, Store};

/// A run left `running` longer than this is taken to have died with its process
/// (the fallback for a row without a heartbeat, written before heartbeats).
const LEASE_MS: i64 = 6 * 3600 * 1000;

/// A running row whose heartbeat is older than this has lost its lease: its
/// holder renews it every [`HEARTBEAT_EVERY_MS`].
pub const HEARTBEAT_STALE_MS: i64 = 60_000;

/// How often a lease's holder renews its heartbeat.
pub const HEARTBEAT_EVERY_MS: i64 = 10_000;

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRun {
    /// Its number.
    pub id: i64,
    /// Which job.
    pub job: Job,
    /// Who started it.
    pub started_by: Actor,
    /// Where it is.
    pub status: JobStatus,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// `[{step, at, detail}]`, in order.
    pub steps: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
}

fn from_row(r: &Row) -> Result<JobRun> {
    let steps: String = r.get(6)?;
    Ok(JobRun {
        id: r.get(0)?,
        job: r.get(1)?,
        started_by: r.get(2)?,
        status: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        steps: serde_json::from_str(&steps).unwrap_or(serde_json::Value::Null),
        error: r.get(7)?,
    })
}

const COLUMNS: &str = "id, job, started_by, status, started_at, finished_at, steps, error";

/// Who starts a run, and whether it runs only when due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStart {
    /// Journaled as the run's starter.
    pub by: Actor,
    /// A scheduled start: the job runs only if no run of it finished within
    /// this many ms. Checked under the lease, so replicas whose schedulers
    /// wake together run a periodic job once.
    pub unless_finished_within_ms: Option<i64>,
}

impl JobStart {
    /// A scheduled start of a job that runs every `every_ms`.
    pub fn scheduled(every_ms: i64) -> JobStart {
        JobStart {
            by: Actor::Schedule,
            unless_finished_within_ms: Some(every_ms),
        }
    }
}

impl From<Actor> for JobStart {
    /// A start on request: runs whenever the lease is free.
    fn from(by: Actor) -> JobStart {
        JobStart {
            by,
            unless_finished_within_ms: None,
        }
    }
}

impl Store {
    /// Starts a run of `job`, unless one is already running, or (a scheduled
    /// start) one finished too recently: both [`Error::Conflict`]. A running
    /// row whose process died is marked failed first and taken over: at once
    /// when its owner ran on this host and is gone (`kill -9`, a crash), after
    /// the lease otherwise.
    pub fn start_job_run(&self, job: Job, start: impl Into<JobStart>) -> Result<i64> {
        let start = start.into();
        // Exclusive: two starters (two threads, two replicas) take turns here,
        // so only one of them finds no running row, and only one a job due.
        let tx = self.conn.transaction_exclusive()?;
        let now = now_ms();
        if let Some(within) = start.unless_finished_within_ms {
            let last: Option<i64> = tx.query_row(
                "SELECT MAX(finished_at) FROM job_runs WHERE job = ?1 AND status <> 'running'",
                params![job],
                |r| r.get(0),
            )?;
            if let Some(last) = last.filter(|at| now - at < within) {
                return Err(Error::Conflict(format!(
                    "{job} last finished {} s ago; not due again before {} s",
                    (now - last) / 1000,
                    within / 1000
                )));
            }
        }
        let running: Vec<(i64, i64, Option<String>, Option<i64>)> = tx.query_map(
            "SELECT id, started_at, owner, heartbeat_at FROM job_runs
             WHERE job = ?1 AND status = 'running'",
            params![job],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        for (id, started_at, owner, heartbeat_at) in running {
            let dead = owner.as_deref().is_some_and(owner_is_dead);
            let stale = match heartbeat_at {
                Some(at) => at < now - HEARTBEAT_STALE_MS,
                None => started_at < now - LEASE_MS,
            };
            if dead || stale {
                tx.execute(
                    "UPDATE job_runs SET status = 'failed', finished_at = ?2,
                         error = 'interrupted: its process stopped before the run finished'
                     WHERE id = ?1",
                    params![id, now],
                )?;
            } else {
                return Err(Error::Conflict(format!(
                    "{job} run {id} is still running; wait for it (manirec runs) and try again"
                )));
            }
        }
        let id: i64 = tx.query_row(
            "INSERT INTO job_runs (job, started_by, status, started_at, owner, heartbeat_at)
             VALUES (?1, ?2, 'running', ?3, ?4, ?3) RETURNING id",
            params![job, start.by, now, this_owner()],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Appends a step to run `id`.
    pub fn add_job_step(&self, id: i64, step: &str, detail: &serde_json::Value) -> Result<()> {
        // Read, append, write back: the same on every engine, and one run's
        // steps are written by that run alone.
        let tx = self.conn.transaction()?;
        let Some(steps) = tx.query_opt(
            "SELECT steps FROM job_runs WHERE id = ?1",
            params![id],
            |r| r.get::<String>(0),
        )?
        else {
            return Ok(());
        };
        let mut steps = match serde_json::from_str(&steps)? {
            serde_json::Value::Array(steps) => steps,
            _ => Vec::new(),
        };
        steps.push(serde_json::json!({"step": step, "at": now_ms(), "detail": detail}));
        tx.execute(
            "UPDATE job_runs SET steps = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(&steps)?],
        )?;
        tx.commit()
    }

    /// Ends run `id` as `ok`, `skipped` or `failed` (with the reason).
    pub fn finish_job_run(&self, id: i64, status: JobStatus, error: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE job_runs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, status, error, now_ms()],
        )?;
        Ok(())
    }

    /// Renews the heartbeat of every run this process holds (its running rows);
    /// returns how many. Called every [`HEARTBEAT_EVERY_MS`] while a job runs.
    pub fn renew_job_leases(&self) -> Result<u64> {
        Ok(self.conn.execute(
            "UPDATE job_runs SET heartbeat_at = ?1 WHERE status = 'running' AND owner = ?2",
            params![now_ms(), this_owner()],
        )? as u64)
    }

    /// One run.
    pub fn job_run(&self, id: i64) -> Result<Option<JobRun>> {
        self.conn.query_opt(
            &format!("SELECT {COLUMNS} FROM job_runs WHERE id = ?1"),
            params![id],
            from_row,
        )
    }

    /// The latest `limit` runs, of one job or all, newest first.
    pub fn job_runs(&self, job: Option<Job>, limit: usize) -> Result<Vec<JobRun>> {
        self.conn.query_map(
            &format!(
                "SELECT {COLUMNS} FROM job_runs WHERE CAST(?1 AS TEXT) IS NULL OR job = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            params![job, limit as i64],
            from_row,
        )
    }

    /// When `job` last finished with one of `statuses` (Unix ms).
    pub fn last_job_finish(&self, job: Job, statuses: &[JobStatus]) -> Result<Option<i64>> {
        if statuses.is_empty() {
            return Ok(None);
        }
        let slots: Vec<String> = (2..statuses.len() + 2).map(|i| format!("?{i}")).collect();
        let mut params: Vec<&dyn ToParam> = vec![&job];
        params.extend(statuses.iter().map(|s| s as &dyn ToParam));
        self.conn.query_row(
            &format!(
                "SELECT MAX(finished_at) FROM job_runs WHERE job = ?1 AND status IN ({})",
                slots.join(", ")
            ),
            &params,
            |r| r.get(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::{host, owner_of};

    #[test]
    fn a_run_is_a_lease_and_keeps_its_steps() {
        let store = Store::open_in_memory().unwrap();
        let id = store.start_job_run(Job::Retrain, Actor::Cli).unwrap();
        assert!(matches!(
            store.start_job_run(Job::Retrain, Actor::Schedule),
            Err(Error::Conflict(_))
        ));
        // Another job is not blocked.
        let other = store.start_job_run(Job::Quality, Actor::Schedule).unwrap();
        store.finish_job_run(other, JobStatus::Ok, None).unwrap();
        store
            .add_job_step(id, "trigger", &serde_json::json!({"should_retrain": true}))
            .unwrap();
        store
            .add_job_step(id, "dataset", &serde_json::json!({"version": "v1.1"}))
            .unwrap();
        store
            .finish_job_run(id, JobStatus::Failed, Some("boom"))
            .unwrap();
        let run = store.job_run(id).unwrap().unwrap();
        assert_eq!(run.status, JobStatus::Failed);
        assert_eq!(run.steps[1]["step"], "dataset");
        assert_eq!(run.steps[0]["detail"]["should_retrain"], true);
        assert_eq!(run.error.as_deref(), Some("boom"));
        assert!(store
            .last_job_finish(Job::Retrain, &[JobStatus::Failed])
            .unwrap()
            .is_some());
        assert!(store
            .last_job_finish(Job::Retrain, &[JobStatus::Ok])
            .unwrap()
            .is_none());
        // Finished: the next run may start.
        store.start_job_run(Job::Retrain, Actor::Cli).unwrap();
        assert_eq!(store.job_runs(Some(Job::Retrain), 10).unwrap().len(), 2);
    }

    #[test]
    fn a_run_whose_process_died_does_not_hold_the_lease_forever() {
        let store = Store::open_in_memory().unwrap();
        let id = store.start_job_run(Job::Retrain, Actor::Cli).unwrap();
        store
            .conn
            .execute(
                "UPDATE job_runs SET started_at = 0, heartbeat_at = NULL WHERE id = ?1",
                params![id],
            )
            .unwrap();
        store.start_job_run(Job::Retrain, Actor::Cli).unwrap();
        assert_eq!(
            store.job_run(id).unwrap().unwrap().status,
            JobStatus::Failed
        );
    }

    #[test]
    fn a_run_whose_process_was_killed_is_taken_over_at_once() {
        let store = Store::open_in_memory().unwrap();
        // A process that has exited: its lease is worthless.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let owner = owner_of(pid).unwrap_or_else(|| format!("{}/{pid}/1", host()));
        child.wait().unwrap();
        let id = store.start_job_run(Job::Retrain, Actor::Cli).unwrap();
        store
            .conn
            .execute(
                "UPDATE job_runs SET owner = ?2 WHERE id = ?1",
                params![id, owner],
            )
            .unwrap();
        let next = store.start_job_run(Job::Retrain, Actor::Cli).unwrap();
        let old = store.job_run(id).unwrap().unwrap();
        assert_eq!(old.status, JobStatus::Failed);
        assert!(old.error.unwrap().contains("interrupted"));
        // The new run is ours, and we are alive: it holds.
        assert!(matches!(
            store.start_job_run(Job::Retrain, Actor::Cli),
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            store.job_run(next).unwrap().unwrap().status,
            JobStatus::Running
        );
        // Another host's owner is not judged by our /proc: the time lease decides.
        store
            .conn
            .execute(
                "UPDATE job_runs SET owner = 'elsewhere/1/1' WHERE id = ?1",
                params![next],
            )
            .unwrap();
        assert!(store.start_job_run(Job::Retrain, Actor::Cli).is_err());
    }

    /// Two connections (two replicas) on one database, SQLite file and PostgreSQL.
    fn both_backends(f: impl Fn(Store, Store)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manirec.db");
        f(Store::open(&path).unwrap(), Store::open(&path).unwrap());
        let pg = crate::testing::postgres();
        f(
            Store::connect(pg.url()).unwrap(),
            Store::connect(pg.url()).unwrap(),
        );
    }

    #[test]
    fn replicas_racing_for_a_job_run_it_once() {
        both_backends(|a, b| {
            let barrier = std::sync::Barrier::new(2);
            let barrier = &barrier;
            let ((a, x), (b, y)) = std::thread::scope(|scope| {
                let x = scope.spawn(move || {
                    barrier.wait();
                    let r = a.start_job_run(Job::Retention, Actor::Schedule);
                    (a, r)
                });
                let y = scope.spawn(move || {
                    barrier.wait();
                    let r = b.start_job_run(Job::Retention, Actor::Schedule);
                    (b, r)
                });
                (x.join().unwrap(), y.join().unwrap())
            });
            assert!(
                x.is_ok() != y.is_ok(),
                "exactly one replica runs the job: {x:?} {y:?}"
            );
            let (winner, id, loser) = match (x, y) {
                (Ok(id), loser) => (a, id, loser),
                (loser, Ok(id)) => (b, id, loser),
                _ => unreachable!(),
            };
            assert!(matches!(loser, Err(Error::Conflict(_))), "{loser:?}");
            let run = winner.job_run(id).unwrap().unwrap();
            assert_eq!((run.job, run.status), (Job::Retention, JobStatus::Running));
        });
    }

    #[test]
    fn replicas_waking_together_run_a_scheduled_job_once_per_period() {
        both_backends(|a, b| {
            let every = JobStart::scheduled(3_600_000);
            // The first replica runs it and finishes before the second looks.
            let id = a.start_job_run(Job::Quality, every).unwrap();
            a.finish_job_run(id, JobStatus::Ok, None).unwrap();
            let late = b.start_job_run(Job::Quality, every);
            assert!(
                matches!(&late, Err(Error::Conflict(m)) if m.contains("not due")),
                "{late:?}"
            );
            // On request it runs regardless; a shorter period makes it due again.
            let asked = b.start_job_run(Job::Quality, Actor::Cli).unwrap();
            b.finish_job_run(asked, JobStatus::Ok, None).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            b.start_job_run(Job::Quality, JobStart::scheduled(10))
                .unwrap();
            let runs = a.job_runs(Some(Job::Quality), 10).unwrap();
            let by: Vec<Actor> = runs.iter().rev().map(|r| r.started_by).collect();
            assert_eq!(by, [Actor::Schedule, Actor::Cli, Actor::Schedule]);
        });
    }

    #[test]
    fn a_lease_with_a_stale_heartbeat_is_taken_over_from_any_host() {
        both_backends(|a, b| {
            let id = a.start_job_run(Job::Retrain, Actor::Schedule).unwrap();
            // Held by a replica on another host: our /proc cannot judge it.
            a.conn
                .execute(
                    "UPDATE job_runs SET owner = 'elsewhere/1/1' WHERE id = ?1",
                    params![id],
                )
                .unwrap();
            // Its heartbeat is fresh: the lease holds.
            assert!(matches!(
                b.start_job_run(Job::Retrain, Actor::Schedule),
                Err(Error::Conflict(_))
            ));
            // Renewing is per holder: ours renews nothing of theirs, and the
            // lease holds for as long as theirs is renewed.
            assert_eq!(b.renew_job_leases().unwrap(), 0);
            let stale = now_ms() - HEARTBEAT_STALE_MS - 1_000;
            a.conn
                .execute(
                    "UPDATE job_runs SET heartbeat_at = ?2 WHERE id = ?1",
                    params![id, stale],
                )
                .unwrap();
            let next = b.start_job_run(Job::Retrain, Actor::Schedule).unwrap();
            let old = b.job_run(id).unwrap().unwrap();
            assert_eq!(old.status, JobStatus::Failed);
            assert!(old.error.unwrap().contains("interrupted"));
            // The new holder renews its own heartbeat.
            assert_eq!(b.renew_job_leases().unwrap(), 1);
            assert_eq!(b.job_run(next).unwrap().unwrap().status, JobStatus::Running);
        });
    }
}
