use anyhow::Result;
use manirec_store::Actor;

use super::live::{finish, start_jobs};
use super::Context;
use crate::cli::CleanupArgs;

/// Retention now, the same job (and journal entry) as the scheduled one.
pub async fn run(ctx: &Context, args: CleanupArgs) -> Result<()> {
    let days = args
        .older_than
        .unwrap_or(ctx.settings.schedule.retention_days);
    let (jobs, thread) = start_jobs(ctx, false)?;
    let s = jobs.retention(days, Actor::Cli).await;
    finish(jobs, thread);
    let s = s?;
    ctx.print(&s, || {
        let mut out = format!("Deleted what is older than {}:\n", s.cutoff_time);
        for (table, n) in &s.deleted {
            out.push_str(&format!("  {table}: {n}\n"));
        }
        out
    })
}
