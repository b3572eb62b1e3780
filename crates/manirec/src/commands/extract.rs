use anyhow::Result;
use manirec_pipeline::extract::{extract, ExtractOptions, Extraction};

use super::import::render_problems;
use super::Context;
use crate::cli::ExtractArgs;
use crate::progress::Bars;

pub async fn run(ctx: &Context, args: ExtractArgs) -> Result<()> {
    let summary = run_extract(ctx, args.seed, !args.no_simulated).await?;
    ctx.print(&summary, || render(&summary))
}

pub async fn run_extract(ctx: &Context, seed: u64, simulate: bool) -> Result<Extraction> {
    let mut store = ctx.settings.open_store()?;
    let objects = ctx.settings.objects()?;
    let key = ctx.settings.user_key()?;
    let options = ExtractOptions { simulate, seed };
    Ok(extract(&mut store, &objects, &key, options, &Bars::default()).await?)
}

pub fn render(s: &Extraction) -> String {
    let mut out = format!(
        "Extracted {} purchases, {} pre-purchase views, {} same-category views (synthetic), \
         {} design-image views\n\
         Store: {} new, {} updated, {} removed, {} unchanged\n",
        s.purchases,
        s.views,
        s.similar_views,
        s.image_views,
        s.inserted,
        s.updated,
        s.removed,
        s.unchanged
    );
    if let Some(e) = &s.export {
        out.push_str(&format!(
            "{} {} ({} rows, sha256 {})\n",
            if e.written { "Wrote" } else { "Unchanged:" },
            e.key,
            e.rows,
            &e.sha256[..16]
        ));
    }
    render_problems(
        &mut out,
        "Skipped",
        &std::iter::once(("extract".to_owned(), s.skipped.clone()))
            .filter(|(_, p)| !p.is_empty())
            .collect(),
    );
    out
}
