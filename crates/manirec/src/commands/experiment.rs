//! `experiment`, `rule`, `runs`: the A/B tests, the catalogue rules and the
//! jobs' journal, as the admin API shows them.

use anyhow::Result;
use manirec_pipeline::experiments::{self, Arm, ExperimentStatus};
use manirec_store::{Actor, Outcome, RuleKind};
use serde_json::json;

use super::Context;
use crate::cli::{ExperimentCommand, RuleCommand, RunsArgs};

pub fn run(ctx: &Context, command: ExperimentCommand) -> Result<()> {
    let store = ctx.settings.open_store()?;
    let config = &ctx.settings.experiments;
    match command {
        ExperimentCommand::Start {
            control,
            treatment,
            traffic,
        } => {
            let e = experiments::start(&store, &control, &treatment, traffic, Actor::Cli)?;
            let summary = json!({"experiment_id": e.id, "experiment": e});
            ctx.print(&summary, || {
                format!(
                    "Experiment {} started: {} % of shoppers get {}, the rest {}.\n\
                     `serve` picks it up within 30 seconds; follow it with `manirec experiment status`.\n",
                    e.id, e.traffic, e.treatment, e.control
                )
            })
        }
        ExperimentCommand::Status { id } => {
            let status = experiments::status(&store, id, config)?;
            ctx.print(&status, || render(&status))
        }
        ExperimentCommand::Stop {
            id,
            promote,
            roll_back,
            force,
        } => {
            let outcome = match (promote, roll_back) {
                (true, _) => Outcome::Promoted,
                (_, true) => Outcome::RolledBack,
                _ => Outcome::Stopped,
            };
            let e = experiments::stop_checked(&store, id, outcome, force, config)?;
            let status = experiments::status(&store, Some(e.id), config)?;
            let active = store.active_model_version()?.map(|v| v.version);
            let mut summary = serde_json::to_value(&status)?;
            summary["active"] = json!(active);
            ctx.print(&summary, || {
                format!(
                    "{}Experiment {} stopped ({}); active model: {}\n",
                    render(&status),
                    e.id,
                    outcome.as_str(),
                    active.as_deref().unwrap_or("none")
                )
            })
        }
        ExperimentCommand::List => {
            let all = store.experiments()?;
            let summary = json!({"experiments": all});
            ctx.print(&summary, || {
                let mut out = String::new();
                for e in &all {
                    out.push_str(&format!(
                        "{:>4}  {} vs {}  {:>3} %  {}{}\n",
                        e.id,
                        e.control,
                        e.treatment,
                        e.traffic,
                        e.status,
                        e.outcome.map(|o| format!(" ({o})")).unwrap_or_default()
                    ));
                }
                if all.is_empty() {
                    out.push_str("No experiment yet.\n");
                }
                out
            })
        }
    }
}

fn render(s: &ExperimentStatus) -> String {
    let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.2} %", v * 100.0));
    let arm = |name: &str, version: &str, a: &Arm| {
        format!(
            "  {name:<9} {version:<6} {:>9} {:>11} {:>7} {:>8} {:>9} {:>10}\n",
            a.counts.requests,
            a.counts.impressions,
            a.counts.clicks,
            pct(a.ctr),
            a.counts.purchases,
            pct(a.conversion)
        )
    };
    let mut out = format!(
        "Experiment {} ({}{}), {} % to treatment, since {}\n  {:<9} {:<6} {:>9} {:>11} {:>7} {:>8} {:>9} {:>10}\n",
        s.experiment_id,
        s.status,
        s.outcome
            .map(|o| format!(", {o}"))
            .unwrap_or_default(),
        s.traffic,
        s.started_at,
        "arm",
        "model",
        "requests",
        "impressions",
        "clicks",
        "ctr",
        "purchases",
        "conversion"
    );
    out.push_str(&arm("control", &s.control, &s.arms.control));
    out.push_str(&arm("treatment", &s.treatment, &s.arms.treatment));
    match (s.lift, s.lift_ci, s.p_value) {
        (Some(l), Some([lo, hi]), Some(p)) => out.push_str(&format!(
            "  {} lift {:+.1} % (95 % CI {:+.1} % to {:+.1} %), p = {:.4}\n",
            s.metric,
            l * 100.0,
            lo * 100.0,
            hi * 100.0,
            p
        )),
        _ => out.push_str(&format!("  {}: not enough data to compare yet\n", s.metric)),
    }
    out.push_str(&format!(
        "  decision: {} ({})\n",
        serde_json::to_value(s.decision)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        s.reason
    ));
    out
}

pub fn rule(ctx: &Context, command: RuleCommand) -> Result<()> {
    let store = ctx.settings.open_store()?;
    let changed = match command {
        RuleCommand::List => None,
        RuleCommand::Hide { item } => {
            store.set_catalog_rule(&item, RuleKind::Hide, 0.0)?;
            Some(format!("{item} is hidden"))
        }
        RuleCommand::Pin { item, position } => {
            store.set_catalog_rule(&item, RuleKind::Pin, f64::from(position))?;
            Some(format!("{item} is pinned at position {position}"))
        }
        RuleCommand::Boost { item, strength } => {
            store.set_catalog_rule(&item, RuleKind::Boost, strength)?;
            Some(format!("{item} is boosted by {strength}"))
        }
        RuleCommand::Clear { item } => Some(if store.remove_catalog_rule(&item)? {
            format!("{item} has no rule any more")
        } else {
            format!("{item} had no rule")
        }),
    };
    let rules = store.catalog_rules()?;
    let hidden = store.hidden_items()?;
    let summary = json!({"rules": rules, "hidden": hidden});
    ctx.print(&summary, || {
        let mut out = changed.map(|c| format!("{c}\n")).unwrap_or_default();
        for r in &rules {
            out.push_str(&format!(
                "  {:<6} {}{}\n",
                r.rule.as_str(),
                r.item_id,
                match r.rule {
                    RuleKind::Hide => String::new(),
                    RuleKind::Pin => format!(" at {}", r.value),
                    RuleKind::Boost => format!(" by {}", r.value),
                }
            ));
        }
        out.push_str(&format!(
            "{} rules; {} items never shown (hidden or unpublished)\n",
            rules.len(),
            hidden.len()
        ));
        out
    })
}

pub fn runs(ctx: &Context, args: RunsArgs) -> Result<()> {
    let store = ctx.settings.open_store()?;
    let runs = store.job_runs(args.job, args.limit)?;
    let summary = json!({"runs": runs});
    ctx.print(&summary, || {
        let mut out = String::new();
        for r in &runs {
            out.push_str(&format!(
                "{:>5}  {:<9} {:<8} by {:<8} {}{}\n",
                r.id,
                r.job,
                r.status,
                r.started_by,
                manirec_pipeline::time::rfc3339_ms(r.started_at),
                r.error
                    .as_deref()
                    .map(|e| format!("\n       error: {e}"))
                    .unwrap_or_default()
            ));
            for step in r.steps.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "       - {}\n",
                    step["step"].as_str().unwrap_or("?")
                ));
            }
        }
        if runs.is_empty() {
            out.push_str("No job has run yet.\n");
        }
        out
    })
}
