use anyhow::Result;
use manirec_pipeline::retention::cleanup;

use super::Context;
use crate::cli::CleanupArgs;

pub fn run(ctx: &Context, args: CleanupArgs) -> Result<()> {
    let mut store = ctx.settings.open_store()?;
    let now = manirec_store::now_ms() / 1000;
    let s = cleanup(&mut store, args.older_than, now)?;
    ctx.print(&s, || {
        let mut out = format!("Deleted what is older than {}:\n", s.cutoff_time);
        for (table, n) in &s.deleted {
            out.push_str(&format!("  {table}: {n}\n"));
        }
        out
    })
}
