use anyhow::Result;
use manirec_pipeline::quality::{QualityReport, SliceReport};
use manirec_store::Actor;

use super::live::{finish, start_jobs};
use super::Context;

/// The data-quality report now, the same job (and journal entry) as the scheduled one.
pub async fn run(ctx: &Context) -> Result<()> {
    let (jobs, thread) = start_jobs(ctx, false)?;
    let r = jobs.report(Actor::Cli).await;
    finish(jobs, thread);
    let r = r?;
    ctx.print(&r, || render(&r))
}

fn line(name: &str, s: &SliceReport) -> String {
    format!(
        "{:<14} {:>10} {:>8} {:>8} {:>9.1}% {:>10}\n",
        name,
        s.count,
        s.users,
        s.items,
        s.synthetic_share * 100.0,
        s.new
    )
}

fn render(r: &QualityReport) -> String {
    let mut out = format!(
        "Data quality {} (new since {})\n{:<14} {:>10} {:>8} {:>8} {:>10} {:>10}\n",
        r.date,
        r.previous
            .as_ref()
            .map_or("the beginning", |p| p.created_at.as_str()),
        "source",
        "rows",
        "users",
        "items",
        "synthetic",
        "new"
    );
    for (source, s) in &r.by_source {
        out.push_str(&line(source, s));
    }
    out.push_str(&line("total", &r.total));
    out.push_str(&format!(
        "events: {} stored ({} new), {} refused ({} new)\nwritten to {}\n",
        r.events.stored, r.events.new, r.events.rejected_total, r.events.rejected_new, r.key
    ));
    out
}
