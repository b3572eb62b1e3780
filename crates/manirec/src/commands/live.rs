//! The live-data commands: `serve`, `sync`, `retrain`, `poll`. `serve` runs the
//! server crate over the jobs crate; the others run the same jobs
//! (`manirec_jobs::Jobs`) without a server, so the command line and the
//! scheduler inside `serve` run exactly the same code.

use anyhow::{bail, Context as _, Result};
use manirec_jobs::{Db, Jobs};
use manirec_pipeline::trigger;
use manirec_server::AppState;
use manirec_store::{Actor, JobStatus};
use serde_json::json;

use super::Context;
use crate::cli::{RecommendArgs, RetrainArgs, ServeArgs};

/// Starts the store thread and the jobs over it, with the reconciliation poll
/// only when `poll` (and configured). The thread ends in [`finish`].
pub(super) fn start_jobs(ctx: &Context, poll: bool) -> Result<(Jobs, std::thread::JoinHandle<()>)> {
    let store = ctx.settings.open_store()?;
    let (db, thread) = Db::start(store);
    let mut config = ctx.settings.jobs_config()?;
    if !poll {
        config.poll = None;
    }
    Ok((Jobs::new(config, db, ctx.settings.objects()?), thread))
}

/// Drops the jobs and waits for the store thread to finish its queued work.
pub(super) fn finish(jobs: Jobs, thread: std::thread::JoinHandle<()>) {
    drop(jobs);
    let _ = thread.join();
}

pub async fn serve(ctx: &Context, args: ServeArgs) -> Result<()> {
    serve_then(ctx, &args.addr, None, |_| {}).await
}

/// Serves on `addr` (with `admin_token` instead of the configured one, when
/// given), calling `listening` with the bound address first.
pub async fn serve_then(
    ctx: &Context,
    addr: &str,
    admin_token: Option<String>,
    listening: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    let store = ctx.settings.open_store()?;
    let (db, thread) = Db::start(store);
    let mut config = ctx.settings.server_config()?;
    if admin_token.is_some() {
        config.admin_token = admin_token;
    }
    let state = AppState::new(config, db, ctx.settings.objects()?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; pick another with --addr"))?;
    let addr = listener.local_addr()?;
    if state.config().shoplazza_secret.is_none() {
        tracing::warn!(
            "MANIREC_SHOPLAZZA_SECRET is not set: webhooks are refused (503) until it is"
        );
    }
    // Scripts and tests read this line to find the port.
    eprintln!("manirec listening on http://{addr}");
    listening(addr);
    manirec_server::serve(state.clone(), listener, shutdown_signal()).await?;
    eprintln!("manirec stopped");
    drop(state);
    let _ = thread.join();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

pub async fn sync(ctx: &Context) -> Result<()> {
    let (jobs, thread) = start_jobs(ctx, false)?;
    let tick = jobs.tick().await;
    finish(jobs, thread);
    let tick = tick?;
    let summary = json!({
        "synced": tick.sync.synced,
        "inserted": tick.sync.inserted,
        "skipped": tick.sync.skipped,
        "watermark": tick.sync.watermark,
        "stitched": tick.sync.stitched,
        "trigger": tick.trigger,
        "fired": tick.fired,
    });
    ctx.print(&summary, || {
        let mut out = format!(
            "Synced {} events: {} new interactions, {} skipped (no preference or already there); watermark {}\n\
             Stitched {} anonymous ids to customers, {} interactions moved\n",
            tick.sync.synced,
            tick.sync.inserted,
            tick.sync.skipped,
            tick.sync.watermark,
            tick.sync.stitched.links,
            tick.sync.stitched.moved
        );
        out.push_str(&render_trigger(&tick.trigger, tick.fired.as_ref()));
        out
    })
}

pub async fn retrain(ctx: &Context, args: RetrainArgs) -> Result<()> {
    if args.run {
        return retrain_run(ctx, args.force).await;
    }
    let store = ctx.settings.open_store()?;
    let quality = match manirec_pipeline::training::quality(&store, &ctx.settings.objects()?).await
    {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "no quality signal for the retrain trigger");
            None
        }
    };
    let check = trigger::check(&store, &ctx.settings.trigger, quality)?;
    let fired = if check.should_retrain && !check.already_fired {
        let increment = trigger::fire(&store, &ctx.settings.objects()?).await?;
        let notice = json!({"event": "retrain_triggered", "reasons": check.reasons,
            "new_interactions": check.new_interactions, "days_since_last": check.days_since_last,
            "export": increment});
        if let Some(handle) = manirec_jobs::notify::spawn(ctx.settings.notify_url.clone(), notice) {
            // A command ends here: wait for the notifier (it gives up on its own).
            let _ = handle.await;
        }
        Some(increment)
    } else {
        None
    };
    let mut summary = serde_json::to_value(&check)?;
    summary["fired"] = serde_json::to_value(&fired)?;
    ctx.print(&summary, || render_trigger(&check, fired.as_ref()))
}

/// The weekly loop once, on the same jobs `serve` schedules.
async fn retrain_run(ctx: &Context, force: bool) -> Result<()> {
    let (jobs, thread) = start_jobs(ctx, false)?;
    let run = jobs.retrain(force, Actor::Cli).await;
    finish(jobs, thread);
    let run = run?;
    let failed = run.status == JobStatus::Failed;
    ctx.print(&run, || {
        let mut out = format!("Retrain run {}: {}\n", run.run_id, run.outcome);
        for step in run.steps.as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  - {}: {}\n",
                step["step"].as_str().unwrap_or("?"),
                step["detail"]
            ));
        }
        if let Some(e) = &run.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        out.push_str(&format!(
            "Active model: {}\n",
            run.active.as_deref().unwrap_or("none")
        ));
        out
    })?;
    if failed {
        bail!(
            "the retrain run failed: {}; the active model keeps serving",
            run.error.unwrap_or_default()
        );
    }
    Ok(())
}

fn render_trigger(
    check: &trigger::TriggerCheck,
    fired: Option<&manirec_pipeline::export::ExportSummary>,
) -> String {
    let mut out = if check.should_retrain {
        format!("Retrain due: {}\n", check.reasons.join("; "))
    } else {
        format!(
            "No retrain due ({} new interactions, {} since the last training)\n",
            check.new_interactions,
            check
                .days_since_last
                .map_or("never trained".into(), |d| format!("{d:.1} days"))
        )
    };
    if let Some(drop) = check.quality_drop {
        out.push_str(&format!(
            "Active model: ndcg@10 on the latest dataset is {:.1} % {} its value at training\n",
            drop.abs() * 100.0,
            if drop > 0.0 { "below" } else { "at or above" }
        ));
    }
    match fired {
        Some(i) => out.push_str(&format!(
            "Exported the increment: {} ({} rows)\n",
            i.key, i.rows
        )),
        None if check.should_retrain && check.already_fired => {
            out.push_str("The trigger already fired in this training cycle; not exported again\n")
        }
        None => {}
    }
    out
}

pub async fn poll(ctx: &Context) -> Result<()> {
    if ctx.settings.poll_config().is_none() {
        bail!("set MANIREC_SHOPLAZZA_API (the shop's API base, e.g. https://SHOP.myshoplaza.com) and MANIREC_SHOPLAZZA_TOKEN");
    }
    let (jobs, thread) = start_jobs(ctx, true)?;
    let summary = jobs.poll().await;
    finish(jobs, thread);
    let Some(summary) = summary? else {
        bail!("the reconciliation poll is not configured");
    };
    ctx.print(&summary, || {
        format!(
            "Polled {} pages: {} orders, {} applied, {} already known, {} rejected\n\
             Polled {} pages: {} products, {} applied, {} already known, {} rejected\n",
            summary.pages,
            summary.orders,
            summary.applied,
            summary.unchanged,
            summary.rejected,
            summary.products.pages,
            summary.products.seen,
            summary.products.applied,
            summary.products.unchanged,
            summary.products.rejected
        )
    })
}

pub async fn recommend(ctx: &Context, args: RecommendArgs) -> Result<()> {
    use manirec_models::evaluate::Protocol;
    use manirec_pipeline::serving::{
        self, measured_to_win, route, Ask, CatalogRules, Catalogue, LiveModel, Routed, Serving,
        ServingVersions,
    };
    use manirec_pipeline::training;
    use std::collections::HashMap;
    use std::sync::Arc;
    let store = ctx.settings.open_store()?;
    let objects = ctx.settings.objects()?;
    let versions = ServingVersions::read(&store)?;
    if versions.active.is_none() && versions.experiment.is_none() {
        bail!("no active model yet: train one (manirec train) and promote it (manirec models promote V)");
    }
    let rules = CatalogRules::load(&store)?;
    let catalogue = Catalogue::load(&store, &rules.hidden)?;
    // Every version that may answer, each loaded once, as the server loads
    // them (one answer: scoring every item once is cheaper than an index).
    let mut loaded: HashMap<String, Arc<LiveModel>> = HashMap::new();
    for v in versions.each() {
        let model = match training::load_model(&objects, v).await {
            Ok(model) => model,
            Err(err) if versions.is_active(v) => {
                return Err(err).with_context(|| format!("loading the active model {}", v.version));
            }
            Err(err) => {
                tracing::error!(version = %v.version, error = %err, "cannot load a model; the active model answers the requests it would have");
                continue;
            }
        };
        let live = LiveModel::without_index(v.version.clone(), model)
            .answering_first_visits(measured_to_win(v, Protocol::FirstVisit));
        loaded.insert(v.version.clone(), Arc::new(live));
    }
    let serving = Serving::assemble(&versions, Arc::new(rules), Arc::new(catalogue), &loaded);
    let category = match args.category.as_deref() {
        Some(c) => Some(
            serving
                .catalogue
                .resolve_category(c)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };
    let key = ctx.settings.user_key()?;
    let Routed {
        user,
        past: known,
        chosen,
    } = route(
        &store,
        &serving,
        &key,
        args.user.as_deref(),
        args.session.as_deref(),
        &ctx.settings.sync.weights,
    )?;
    let Some((live, experiment, variant)) = chosen else {
        bail!(
            "no model answers this shopper: no version is active (train one with manirec \
               train, promote it with manirec models promote V), and a running experiment \
               answers only the shoppers it assigns to an arm"
        );
    };
    let items = serving::recommend(
        &live,
        &Ask {
            user: user.as_deref(),
            past: &known,
            k: args.k,
            category: category.as_deref(),
            exclude: &args.exclude,
        },
        &serving.rules,
        &serving.catalogue,
    );
    let summary = json!({
        "model_version": live.version,
        "experiment_id": experiment,
        "variant": variant,
        "items": items,
    });
    ctx.print(&summary, || {
        let arm = match experiment {
            Some(id) => format!(", {} of experiment {id}", variant.as_str()),
            None => String::new(),
        };
        let mut out = format!(
            "Model {}{arm} ({} history rows read, {} bought items left out):\n",
            live.version,
            known.history.len(),
            known.bought.len()
        );
        for (i, s) in items.iter().enumerate() {
            out.push_str(&format!("{:>3}. {}  {:.4}\n", i + 1, s.item_id, s.score));
        }
        out
    })
}
