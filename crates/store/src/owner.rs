//! Who holds a reservation or a lease: `host/pid/start`, where `start` is the
//! process's start time in clock ticks since boot (so a reused pid is another
//! owner). A job run, a dataset version being built and a model version being
//! trained each record theirs, so one whose process died on this host (`kill
//! -9`, a crash) is known to be dead at once; another host's is judged by age.

use crate::sql::params;
use crate::{now_ms, Result, Store};

/// A reservation older than this is taken to have died with its process
/// when its owner cannot be judged (another host, or written before owners
/// were recorded): no build or training takes this long.
const RESERVATION_MS: i64 = 6 * 3600 * 1000;

/// Reservations [`Store::sweep_orphans`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Orphans {
    /// Dataset versions left `building`.
    pub datasets: Vec<String>,
    /// Model versions left `training`.
    pub models: Vec<String>,
}

impl Store {
    /// Removes the reservations of builds and trainings whose process died:
    /// a `building` dataset version or a `training` model version whose owner
    /// ran on this host and is gone, or (owner unknown or elsewhere) older
    /// than six hours. Their numbers are taken again by the next build; the
    /// partial files they may have left are overwritten then.
    pub fn sweep_orphans(&self) -> Result<Orphans> {
        let tx = self.conn.transaction()?;
        let old = now_ms() - RESERVATION_MS;
        // Dead on this host: at once. Alive on this host: never, however
        // long it takes. Unknown (another host, no owner recorded): by age.
        let orphan = |owner: Option<String>, created_at: i64| match owner {
            Some(owner) if owner_is_dead(&owner) => true,
            Some(owner) if owner_of_this_host_is_alive(&owner) => false,
            _ => created_at < old,
        };
        let mut swept = Orphans::default();
        for (table, status, out) in [
            ("dataset_versions", "building", &mut swept.datasets),
            ("model_versions", "training", &mut swept.models),
        ] {
            let reserved: Vec<(String, Option<String>, i64)> = tx.query_map(
                &format!("SELECT version, owner, created_at FROM {table} WHERE status = ?1"),
                params![status],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            for (version, owner, created_at) in reserved {
                if orphan(owner, created_at) {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE version = ?1 AND status = ?2"),
                        params![version, status],
                    )?;
                    out.push(version);
                }
            }
        }
        tx.commit()?;
        Ok(swept)
    }
}

/// This process as a lease owner: `host/pid/start`, where `start` is the
/// process's start time in clock ticks since boot (so a reused pid is another
/// owner).
pub(crate) fn this_owner() -> String {
    owner_of(std::process::id()).unwrap_or_else(|| format!("{}/{}/?", host(), std::process::id()))
}

pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The owner string of a live process `pid` on this host, if it is alive.
pub(crate) fn owner_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the parenthesised command name.
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{}/{pid}/{start}", host()))
}

/// Whether `owner` is a live process of this host.
fn owner_of_this_host_is_alive(owner: &str) -> bool {
    let Some(pid) = owner.rsplit('/').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    owner_of(pid).as_deref() == Some(owner)
}

/// Whether the process that wrote `owner` is known to be gone: it ran on this
/// host, and its pid is no longer that process. Unknown (another host, no
/// /proc): not known dead, so the time lease decides.
pub(crate) fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '/');
    let (Some(start), Some(pid), Some(owner_host)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if start == "?" || owner_host != host() || !std::path::Path::new("/proc/self").exists() {
        return false;
    }
    owner_of(pid).as_deref() != Some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DatasetVersion;

    #[test]
    fn reservations_of_dead_processes_are_swept_and_live_ones_kept() {
        let store = Store::open_in_memory().unwrap();
        store
            .reserve_dataset_version(&DatasetVersion::reservation(1, 0, now_ms()))
            .unwrap();
        store
            .reserve_dataset_version(&DatasetVersion::reservation(1, 1, now_ms()))
            .unwrap();
        let dead_model = store.reserve_model_version("als", "v1.0", "{}").unwrap();
        let live_model = store.reserve_model_version("ease", "v1.0", "{}").unwrap();
        // A process that has exited held v1.1 and the first model.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let dead = owner_of(pid).unwrap_or_else(|| format!("{}/{pid}/1", host()));
        child.wait().unwrap();
        for (table, version) in [
            ("dataset_versions", "v1.1"),
            ("model_versions", &dead_model),
        ] {
            store
                .conn
                .execute(
                    &format!("UPDATE {table} SET owner = ?2 WHERE version = ?1"),
                    params![version, dead],
                )
                .unwrap();
        }
        // Ours, alive, six hours old: still ours.
        store
            .conn
            .execute(
                "UPDATE model_versions SET created_at = 0 WHERE version = ?1",
                params![live_model],
            )
            .unwrap();
        // Another host's, six hours old, is judged by its age.
        store
            .conn
            .execute(
                "UPDATE dataset_versions SET owner = 'elsewhere/1/1', created_at = 0
                 WHERE version = 'v1.0'",
                params![],
            )
            .unwrap();
        let swept = store.sweep_orphans().unwrap();
        assert_eq!(swept.datasets, ["v1.0", "v1.1"]);
        assert_eq!(swept.models, [dead_model]);
        // Ours, alive, stays; sweeping again finds nothing.
        assert_eq!(
            store.model_version(&live_model).unwrap().unwrap().version,
            live_model
        );
        assert_eq!(store.sweep_orphans().unwrap(), Orphans::default());
    }
}
