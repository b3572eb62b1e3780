use anyhow::{bail, Result};
use manirec_pipeline::Progress;

use super::Context;
use crate::cli::StoreCommand;
use crate::config::open_database;
use crate::progress::Bars;

pub fn run(ctx: &Context, command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Copy { to } => copy(ctx, &to),
    }
}

fn copy(ctx: &Context, to: &str) -> Result<()> {
    let source = ctx.settings.open_store()?;
    if manirec_store::redacted_url(to) == manirec_store::redacted_url(&ctx.settings.database_url) {
        bail!(
            "--to names the store being copied ({}): give another database",
            manirec_store::redacted_url(to)
        );
    }
    let target = open_database(to)?;
    let bars = Bars::default();
    let mut last = 0;
    let report = source.copy_to(&target, &mut |table, done, total| {
        if done == 0 {
            bars.end();
            bars.begin(table, total);
            last = 0;
        }
        bars.advance(done - last);
        last = done;
    });
    bars.end();
    let report = report?;
    ctx.print(&report, || {
        let mut out = format!(
            "Copied {} rows into {} (schema version {}); every table's count matches:\n",
            report.source_rows(),
            manirec_store::redacted_url(to),
            report.schema_version
        );
        for t in &report.tables {
            out.push_str(&format!("  {:<24} {:>10}\n", t.table, t.target_rows));
        }
        out.push_str(
            "Datasets and models stay in the object store: point the new deployment's \
             MANIREC_OBJECT_STORE at the same place.\n",
        );
        out
    })
}
