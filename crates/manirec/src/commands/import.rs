use std::fmt::Write;

use anyhow::Result;
use manirec_pipeline::identity::UserKey;
use manirec_pipeline::import::interactions_csv::{
    import_interactions, CsvImport, CsvImportOptions,
};
use manirec_pipeline::import::shop::{import_shop, ShopImport};
use manirec_pipeline::Problems;
use manirec_store::Store;

use super::Context;
use crate::cli::ImportArgs;
use crate::progress::Bars;

pub fn run(ctx: &Context, args: ImportArgs) -> Result<()> {
    let mut store = ctx.settings.open_store()?;
    if let Some(path) = &args.store {
        let key = ctx.settings.user_key()?;
        let report = import_shop(&mut store, path, &key, &Bars::default())?;
        ctx.print(&report, || {
            render_shop(&path.display().to_string(), &report)
        })
    } else if let Some(path) = &args.interactions {
        let key = ctx.settings.user_key()?;
        let report = import_csv(&mut store, path, &key, &args)?;
        if let Some(w) = &report.warning {
            eprintln!("warning: {w}");
        }
        ctx.print(&report, || render_csv(&path.display().to_string(), &report))
    } else {
        unreachable!("clap requires --store or --interactions")
    }
}

fn import_csv(
    store: &mut Store,
    path: &std::path::Path,
    key: &UserKey,
    args: &ImportArgs,
) -> Result<CsvImport> {
    let options = CsvImportOptions {
        source: args.source,
        default_type: args.interaction_type.clone(),
    };
    Ok(import_interactions(
        store,
        path,
        key,
        &options,
        &Bars::default(),
    )?)
}

pub fn render_shop(path: &str, r: &ShopImport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Imported {path} ({})", r.format);
    let _ = writeln!(
        out,
        "  {:<14} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9}",
        "table", "rows", "new", "changed", "unchanged", "rejected", "warnings"
    );
    for (table, c) in &r.changes {
        let count =
            |m: &std::collections::BTreeMap<String, Problems>| m.get(table).map_or(0, |p| p.count);
        let _ = writeln!(
            out,
            "  {:<14} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9}",
            table,
            c.total(),
            c.inserted,
            c.updated,
            c.unchanged,
            count(&r.rejected),
            count(&r.warnings)
        );
    }
    for table in &r.missing_tables {
        let _ = writeln!(out, "  {table:<14} (not in this shop)");
    }
    render_problems(&mut out, "Rejected rows (not imported)", &r.rejected);
    render_problems(&mut out, "Warnings (imported)", &r.warnings);
    if !r.dump_errors.is_empty() {
        render_problems(
            &mut out,
            "Dump statements that failed",
            &std::iter::once(("dump".to_owned(), r.dump_errors.clone())).collect(),
        );
    }
    out
}

pub fn render_problems(
    out: &mut String,
    title: &str,
    problems: &std::collections::BTreeMap<String, Problems>,
) {
    if problems.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for (table, p) in problems {
        for (reason, n) in &p.reasons {
            let example = p.examples.iter().find(|e| &e.reason == reason);
            let _ = write!(out, "  {table}: {n} × {reason}");
            if let Some(e) = example {
                let _ = write!(out, "  (e.g. {}", e.row);
                if let Some(d) = &e.detail {
                    let _ = write!(out, ": {d}");
                }
                out.push(')');
            }
            out.push('\n');
        }
    }
}

fn render_csv(path: &str, r: &CsvImport) -> String {
    let mut out = format!(
        "Imported {path}: {} rows, {} new, {} duplicates, {} rejected\n",
        r.rows, r.inserted, r.duplicates, r.rejected
    );
    render_problems(
        &mut out,
        "Rejected rows",
        &std::iter::once(("file".to_owned(), r.problems.clone()))
            .filter(|(_, p)| !p.is_empty())
            .collect(),
    );
    out
}
