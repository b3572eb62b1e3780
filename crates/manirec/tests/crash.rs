//! Faults: a `kill -9` in the middle of the weekly loop does not block the next run.

mod common;

use std::time::{Duration, Instant};

use common::DataDir;

#[test]
fn kill_9_during_retrain_run_is_followed_by_a_retrain_run_that_runs() {
    let d = DataDir::new();
    d.json(&["demo", "--no-serve", "--seed", "5", "--as-of", "2026-06-30"]);
    std::fs::write(
        d.path().join("data/manirec.toml"),
        "[retrain]\nmodel = \"ease\"\n",
    )
    .unwrap();
    let running = |d: &DataDir| -> Option<i64> {
        d.db()
            .query_row(
                "SELECT id FROM job_runs WHERE job = 'retrain' AND status = 'running'",
                &[],
                |r| r.get(0),
            )
            .ok()
    };
    let mut child = d
        .command(&["--json", "retrain", "--run", "--force"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed = loop {
        if let Some(id) = running(&d) {
            child.kill().unwrap(); // SIGKILL: no cleanup runs
            child.wait().unwrap();
            break id;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "retrain finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "retrain never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    // The dead run still says running: its lease is what is tested.
    assert_eq!(running(&d), Some(killed));

    let run = d.json(&["retrain", "--run", "--force"]);
    assert_ne!(run["status"], "skipped", "{run}");
    let (status, error): (String, String) = d
        .db()
        .query_row(
            "SELECT status, error FROM job_runs WHERE id = ?1",
            &[killed.into()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("interrupted"), "{error}");
    assert_eq!(running(&d), None);
}
