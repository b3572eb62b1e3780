use anyhow::Result;
use manirec_pipeline::dataset::{self, BuildOptions, DatasetBuild, VersionList};

use super::Context;
use crate::cli::DatasetCommand;
use crate::progress::Bars;

pub async fn run(ctx: &Context, command: DatasetCommand) -> Result<()> {
    let store = ctx.settings.open_store()?;
    match command {
        DatasetCommand::Build(args) => {
            let objects = ctx.settings.objects()?;
            let options = BuildOptions {
                full: args.full,
                csv: args.csv,
                include_public: args.include_public,
            };
            let summary = dataset::build(&store, &objects, options, &Bars::default()).await?;
            ctx.print(&summary, || render_build(&summary))
        }
        DatasetCommand::List => {
            let list = dataset::list(&store)?;
            ctx.print(&list, || render_list(&list))
        }
    }
}

fn render_build(s: &DatasetBuild) -> String {
    let mut out = if s.created {
        format!(
            "Built dataset {} ({}{})\n",
            s.version,
            s.kind,
            s.parent
                .as_ref()
                .map(|p| format!(" after {p}"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "Nothing changed since {}: no new version (use --full for a new major version)\n",
            s.version
        )
    };
    out.push_str(&format!(
        "{} rows ({} read, {} duplicates removed, {} of refunded orders left out)\n\
         train {} / test {} (split at {}; {} synthetic test-period rows left out)\n",
        s.rows,
        s.counts.input_rows,
        s.deduplicated,
        s.counts.excluded_refunded,
        s.train_rows,
        s.test_rows,
        s.split_timestamp
            .map_or_else(|| "-".to_owned(), |t| t.to_string()),
        s.counts.test_synthetic_dropped,
    ));
    for f in &s.files {
        out.push_str(&format!(
            "  {} ({} rows, sha256 {})\n",
            f.key,
            f.rows,
            &f.sha256[..16]
        ));
    }
    out.push_str(&format!("  {}\n", s.manifest));
    out
}

fn render_list(list: &VersionList) -> String {
    if list.versions.is_empty() {
        return "No dataset version yet: run `manirec dataset build`.\n".into();
    }
    let mut out = format!(
        "{:<8} {:<10} {:<8} {:<24} {:>10} {:>10} {:>10}\n",
        "version", "kind", "status", "created", "rows", "train", "test"
    );
    for v in &list.versions {
        out.push_str(&format!(
            "{:<8} {:<10} {:<8} {:<24} {:>10} {:>10} {:>10}\n",
            v.version, v.kind, v.status, v.created_at, v.rows, v.train_rows, v.test_rows
        ));
    }
    out
}
