use anyhow::Result;
use manirec_pipeline::retention::forget;

use super::Context;
use crate::cli::ForgetArgs;

pub fn run(ctx: &Context, args: ForgetArgs) -> Result<()> {
    let mut store = ctx.settings.open_store()?;
    let key = ctx.settings.user_key()?;
    let s = forget(&mut store, &key, &args.user)?;
    ctx.print(&s, || {
        let mut out = format!("Forgot user {}:\n", s.user_id);
        for (table, n) in &s.deleted {
            out.push_str(&format!("  {table}: {n}\n"));
        }
        out
    })
}
