use anyhow::Result;
use manirec_pipeline::export::{export, ExportOptions};

use super::Context;
use crate::cli::ExportArgs;
use crate::progress::Bars;

pub async fn run(ctx: &Context, args: ExportArgs) -> Result<()> {
    let store = ctx.settings.open_store()?;
    let objects = ctx.settings.objects()?;
    let options = ExportOptions {
        incremental: args.incremental,
        format: args.format,
    };
    let s = export(&store, &objects, options, &Bars::default()).await?;
    ctx.print(&s, || {
        if !s.written {
            return format!(
                "Nothing new since {}: no file written\n",
                s.since.as_deref().unwrap_or("the last export")
            );
        }
        format!(
            "Exported {} rows ({}{}) to {}\n  sha256 {}\n  metadata {}\n",
            s.rows,
            s.kind,
            s.since
                .as_ref()
                .map(|t| format!(" since {t}"))
                .unwrap_or_default(),
            s.key,
            s.sha256,
            s.meta_key
        )
    })
}
